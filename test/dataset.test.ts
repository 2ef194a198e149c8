import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  batchLabels,
  classBalancedIndices,
  classBalancedSample,
  classCounts,
  type ImageDataset,
  limit,
  normalizeBatch,
  subset,
} from '../src/data/dataset.js';
import { UserError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';

/** n images of c x h x w whose bytes encode (image, channel, pixel); labels cycle unevenly over `classes`. */
function synthetic(n: number, c = 3, h = 2, w = 2, classes = 4): ImageDataset {
  const size = c * h * w;
  const images = new Uint8Array(n * size);
  for (let i = 0; i < n; i++) for (let j = 0; j < size; j++) images[i * size + j] = (i * 7 + j * 13) % 256;
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) labels[i] = (i + Math.floor(i / 7)) % classes;
  return { images, labels, n, channels: c, height: h, width: w, classes, name: 'synthetic' };
}

test('Rng: deterministic per seed, different across seeds, uniform-ish', () => {
  const a = new Rng(42);
  const b = new Rng(42);
  const c = new Rng(43);
  const xa = Array.from({ length: 5 }, () => a.next());
  assert.deepEqual(xa, Array.from({ length: 5 }, () => b.next()));
  assert.notDeepEqual(xa, Array.from({ length: 5 }, () => c.next()));
  const r = new Rng(1);
  const counts = new Array(10).fill(0);
  for (let i = 0; i < 100000; i++) counts[r.int(10)]++;
  for (const k of counts) assert.ok(Math.abs(k - 10000) < 500, `bucket count ${k}`);
  for (let i = 0; i < 1000; i++) {
    const v = r.next();
    assert.ok(v >= 0 && v < 1);
  }
  const p = new Rng(7).permutation(100);
  assert.deepEqual(Array.from(p).sort((x, y) => x - y), Array.from({ length: 100 }, (_, i) => i));
  assert.notDeepEqual(Array.from(p), Array.from({ length: 100 }, (_, i) => i));
  assert.deepEqual(Array.from(new Rng(7).shuffle([1, 2, 3, 4, 5, 6])), Array.from(new Rng(7).shuffle([1, 2, 3, 4, 5, 6])));
});

test('classBalancedIndices: balanced, deterministic per seed, distinct, ascending', () => {
  const labels = new Uint8Array(1000);
  for (let i = 0; i < 1000; i++) labels[i] = (i * 37) % 10;
  const a = classBalancedIndices(labels, 10, { perClass: 7 }, 5);
  assert.equal(a.length, 70);
  assert.deepEqual(Array.from(classCounts(Array.from(a, (i) => labels[i]), 10)), new Array(10).fill(7));
  assert.deepEqual(Array.from(a), Array.from(classBalancedIndices(labels, 10, { perClass: 7 }, 5)));
  assert.notDeepEqual(Array.from(a), Array.from(classBalancedIndices(labels, 10, { perClass: 7 }, 6)));
  assert.equal(new Set(a).size, 70);
  for (let i = 1; i < a.length; i++) assert.ok(a[i] > a[i - 1]);

  // a total that does not divide: the remainder goes to the lowest class ids
  const t = classBalancedIndices(labels, 10, 256, 1);
  assert.equal(t.length, 256);
  assert.deepEqual(
    Array.from(classCounts(Array.from(t, (i) => labels[i]), 10)),
    [26, 26, 26, 26, 26, 26, 25, 25, 25, 25],
  );
  assert.deepEqual(Array.from(classBalancedIndices(labels, 10, { total: 256 }, 1)), Array.from(t));

  // every sample of a class can be drawn: over many seeds all 100 members of class 0 appear
  const seen = new Set<number>();
  for (let s = 0; s < 200; s++) for (const i of classBalancedIndices(labels, 10, { perClass: 5 }, s)) if (labels[i] === 0) seen.add(i);
  assert.equal(seen.size, 100);

  assert.throws(() => classBalancedIndices(labels, 10, { perClass: 101 }, 0), (e: Error) => e instanceof UserError && /class 0 has 100/.test(e.message));
});

test('classBalancedSample copies the chosen images and labels', () => {
  const ds = synthetic(40);
  const s = classBalancedSample(ds, { perClass: 2 }, 3);
  const idx = classBalancedIndices(ds.labels, ds.classes, { perClass: 2 }, 3);
  assert.equal(s.n, 8);
  const size = 12;
  idx.forEach((i, k) => {
    assert.equal(s.labels[k], ds.labels[i]);
    assert.deepEqual(s.images.subarray(k * size, (k + 1) * size), ds.images.subarray(i * size, (i + 1) * size));
  });
  assert.deepEqual(Array.from(classCounts(s.labels, 4)), [2, 2, 2, 2]);
});

test('subset and limit', () => {
  const ds = synthetic(10);
  const s = subset(ds, [3, 1, 3]);
  assert.equal(s.n, 3);
  assert.deepEqual(Array.from(s.labels), [ds.labels[3], ds.labels[1], ds.labels[3]]);
  assert.deepEqual(s.images.subarray(12, 24), ds.images.subarray(12, 24));
  s.images[0] = 255 - s.images[0];
  assert.notEqual(s.images[0], ds.images[36], 'subset is a copy');
  assert.throws(() => subset(ds, [10]), /index 10 out of range/);
  const l = limit(ds, 4);
  assert.equal(l.n, 4);
  assert.equal(l.images.length, 48);
  assert.deepEqual(Array.from(l.labels), Array.from(ds.labels.subarray(0, 4)));
  assert.equal(limit(ds, 50), ds);
});

test('normalizeBatch: (x/255 - mean)/std, planar, by indices or range, into a reused buffer', () => {
  const ds = synthetic(5);
  const mean = [0.5, 0.25, 0.1];
  const std = [0.2, 0.5, 1];
  const x = normalizeBatch(ds, [4, 0], mean, std);
  assert.equal(x.length, 2 * 12);
  for (const [k, i] of [[0, 4], [1, 0]])
    for (let c = 0; c < 3; c++)
      for (let p = 0; p < 4; p++) {
        const raw = ds.images[i * 12 + c * 4 + p];
        assert.ok(Math.abs(x[k * 12 + c * 4 + p] - (raw / 255 - mean[c]) / std[c]) < 1e-6);
      }
  const buf = new Float32Array(100);
  const y = normalizeBatch(ds, { start: 1, end: 4 }, mean, std, buf);
  assert.equal(y.length, 36);
  assert.equal(y.buffer, buf.buffer);
  assert.deepEqual(y, normalizeBatch(ds, [1, 2, 3], mean, std));
  assert.deepEqual(Array.from(batchLabels(ds, { start: 1, end: 4 })), Array.from(ds.labels.subarray(1, 4)));
  assert.throws(() => normalizeBatch(ds, [0], [0.5], std), /mean\/std need 3 values/);
  assert.throws(() => normalizeBatch(ds, { start: 3, end: 6 }, mean, std), /range \[3, 6\)/);
  assert.throws(() => normalizeBatch(ds, [0], mean, [1, 0, 1]), /std values must be > 0/);
});
