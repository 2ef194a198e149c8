import { lstat, mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

/** Write via a temp file in the same directory, then rename, so readers never see partial output. */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/** Where downloaded and decoded data lives: $CMIPRUNE_CACHE, else $XDG_CACHE_HOME/cmiprune, else ~/.cache/cmiprune. */
export function cacheDir(): string {
  if (process.env.CMIPRUNE_CACHE) return process.env.CMIPRUNE_CACHE;
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'cmiprune');
}

/**
 * Writes a set of outputs into `out` as a whole: `build` writes every file into a fresh staging
 * directory inside `out` (so the same filesystem, and no write access beyond `out` is needed), and
 * only when it has succeeded are its entries renamed into `out`, each replacing the entry of the
 * same name; the entries named in `remove` go too (an output this run does not produce must not
 * survive from an earlier one). Replaced entries wait aside until every rename is done and are put
 * back if one fails. A failure while building leaves `out` as it was (a directory this call
 * created is removed), so an existing directory never ends with a new model beside an old report.
 * Entries of `out` that are neither written nor named are left alone.
 */
export async function writeDirAtomic(out: string, build: (staging: string) => Promise<void>, remove: readonly string[] = []): Promise<void> {
  const existed = await exists(out);
  await mkdir(out, { recursive: true });
  // a staging directory left by a killed run (its process is gone) is only partial output
  for (const name of existed ? await readdir(out) : []) {
    const pid = /^\.cmiprune-staging-(\d+)-\d+$/.exec(name)?.[1];
    if (pid !== undefined && !processAlive(Number(pid))) await rm(join(out, name), { recursive: true, force: true });
  }
  const tag = `${process.pid}-${Date.now()}`;
  const staging = join(out, `.cmiprune-staging-${tag}`);
  const aside = join(out, `.cmiprune-replaced-${tag}`);
  let restored = true;
  try {
    await mkdir(staging);
    await build(staging);
    await mkdir(aside);
    const written = await readdir(staging);
    const moved: string[] = [];
    try {
      for (const name of new Set([...written, ...remove])) {
        const target = join(out, name);
        if (await exists(target)) await rename(target, join(aside, name));
        if (written.includes(name)) await rename(join(staging, name), target);
        moved.push(name);
      }
    } catch (e) {
      // put back what was there before; if that fails too, the originals stay in `aside`
      restored = false;
      for (const name of moved) if (written.includes(name)) await rm(join(out, name), { recursive: true, force: true });
      for (const name of await readdir(aside)) await rename(join(aside, name), join(out, name));
      restored = true;
      throw e;
    }
  } catch (e) {
    await rm(staging, { recursive: true, force: true });
    if (!restored) throw new Error(`${(e as Error).message}; the files it replaced are kept in ${aside}`, { cause: e });
    await rm(aside, { recursive: true, force: true });
    if (!existed) await rm(out, { recursive: true, force: true });
    throw e;
  }
  await rm(staging, { recursive: true, force: true });
  await rm(aside, { recursive: true, force: true });
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

// lstat: a dangling symlink is an entry too (rename replaces it)
const exists = (p: string) => lstat(p).then(() => true, () => false);
