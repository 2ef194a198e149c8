import { mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';

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
 * directory beside `out` (same filesystem), and only when it has succeeded are its entries renamed
 * into `out`, each replacing the entry of the same name (kept aside until all are in, and put back
 * if a rename fails). A failure while building leaves `out` as it was, so an existing directory
 * never ends with a new model beside an old report. Entries of `out` that the build does not
 * write are left alone.
 */
export async function writeDirAtomic(out: string, build: (staging: string) => Promise<void>): Promise<void> {
  const parent = dirname(resolve(out));
  await mkdir(parent, { recursive: true });
  const tag = `${process.pid}-${Date.now()}`;
  const staging = join(parent, `.${basename(out)}.staging-${tag}`);
  const aside = join(parent, `.${basename(out)}.replaced-${tag}`);
  await mkdir(staging);
  try {
    await build(staging);
    await mkdir(out, { recursive: true });
    await mkdir(aside);
    const moved: string[] = [];
    try {
      for (const name of await readdir(staging)) {
        const target = join(out, name);
        if (await exists(target)) await rename(target, join(aside, name));
        await rename(join(staging, name), target);
        moved.push(name);
      }
    } catch (e) {
      // put back what was there before
      for (const name of moved) await rm(join(out, name), { recursive: true, force: true });
      for (const name of await readdir(aside)) await rename(join(aside, name), join(out, name));
      throw e;
    }
  } finally {
    await rm(staging, { recursive: true, force: true });
    await rm(aside, { recursive: true, force: true });
  }
}

const exists = (p: string) => stat(p).then(() => true, () => false);
