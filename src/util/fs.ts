import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
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
