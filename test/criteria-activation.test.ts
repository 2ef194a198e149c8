// HRank and CHIP (src/prune/activation-criteria.ts) on constructed cases with known answers: the
// rank rule and the nuclear-norm drop against hand values and a Jacobi SVD, then rank() end to end
// on tiny hand-weighted models through the engine.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ImageDataset } from '../src/data/dataset.js';
import { SequentialBuilder } from '../src/ir/builder.js';
import { convUnits } from '../src/ir/graph.js';
import type { Model } from '../src/ir/model.js';
import {
  channelIndependence,
  chipCriterion,
  eigvalsh,
  FLOAT32_EPS,
  hrankCriterion,
  matrixRank,
  nuclearNormSvd,
  singularValues,
} from '../src/prune/activation-criteria.js';
import { channelGroups } from '../src/prune/groups.js';
import { CRITERIA, CRITERION_TRAITS, makeCriterion } from '../src/pipeline/prune.js';
import type { Calibration, GroupRanking } from '../src/prune/types.js';
import { addonSkip } from './support/addon.js';
import { randomImages } from './support/images.js';
import { randomSource, Rng } from './support/random.js';

const close = (a: number, b: number, tol: number, what: string) => assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b} (tol ${tol})`);

/** rows x cols matrix with the given rank: sum of `rank` random outer products */
function lowRank(rng: Rng, rows: number, cols: number, rank: number): Float64Array {
  const a = new Float64Array(rows * cols);
  for (let k = 0; k < rank; k++) {
    const u = Array.from({ length: rows }, () => rng.uniform(-1, 1));
    const v = Array.from({ length: cols }, () => rng.uniform(-1, 1));
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) a[i * cols + j] += u[i]! * v[j]!;
  }
  return a;
}

/** CHIP by definition with the reference SVD: ||A||_* - ||A with row c zeroed||_* */
function ciReference(a: ArrayLike<number>, rows: number, cols: number): number[] {
  const full = nuclearNormSvd(a, rows, cols);
  return Array.from({ length: rows }, (_, c) => {
    const b = Float64Array.from(a);
    b.fill(0, c * cols, (c + 1) * cols);
    return full - nuclearNormSvd(b, rows, cols);
  });
}

test('singularValues (Jacobi reference): identity, diagonal, outer product', () => {
  const eye = new Float64Array(16).map((_, k) => (k % 5 === 0 ? 1 : 0));
  assert.deepEqual(Array.from(singularValues(eye, 4, 4)), [1, 1, 1, 1]);
  const diag = Float64Array.from([3, 0, 0, 0, -5, 0]); // 2x3, diag(3, -5)
  const s = singularValues(diag, 2, 3);
  close(s[0]!, 5, 1e-15, 's0');
  close(s[1]!, 3, 1e-15, 's1');
  const outer = Float64Array.from({ length: 12 }, (_, k) => [1, 2, 3][Math.floor(k / 4)]! * [1, -1, 2, 0.5][k % 4]!);
  const so = singularValues(outer, 3, 4);
  close(so[0]!, Math.hypot(1, 2, 3) * Math.hypot(1, -1, 2, 0.5), 1e-13, 'outer s0');
  assert.ok(so[1]! < 1e-14 && so[2]! < 1e-14);
});

test('matrixRank: identity, outer product, zeros, low rank, the matrix_rank tolerance', () => {
  for (const n of [1, 2, 3, 8, 17, 32]) {
    const eye = new Float32Array(n * n);
    for (let i = 0; i < n; i++) eye[i * n + i] = 1;
    assert.equal(matrixRank(eye, n, n), n, `rank(I_${n})`);
    assert.equal(matrixRank(eye.map((x) => -x), n, n), n, `rank(-I_${n})`);
  }
  const rng = new Rng(5);
  for (const [h, w] of [[8, 8], [16, 16], [32, 32], [4, 9]] as const) {
    const u = Array.from({ length: h }, () => rng.uniform(0.1, 2));
    const v = Array.from({ length: w }, () => rng.uniform(0.1, 2));
    const outer = Float32Array.from({ length: h * w }, (_, k) => u[Math.floor(k / w)]! * v[k % w]!);
    assert.equal(matrixRank(outer, h, w), 1, `outer product ${h}x${w}`);
    assert.equal(matrixRank(new Float32Array(h * w), h, w), 0, `zeros ${h}x${w}`);
    assert.equal(matrixRank(new Float32Array(h * w).fill(0.7), h, w), 1, `constant ${h}x${w}`);
  }
  for (const [h, w, r] of [[32, 32, 5], [32, 32, 32], [16, 16, 9], [8, 8, 3], [6, 10, 4], [2, 2, 1], [2, 2, 2]] as const) {
    assert.equal(matrixRank(Float32Array.from(lowRank(rng, h, w, r)), h, w), r, `${h}x${w} of rank ${r}`);
  }
  // a map read at an offset inside a larger buffer (maps [N, C, H*W])
  const buf = new Float32Array(3 * 16);
  for (let i = 0; i < 4; i++) buf[16 + i * 4 + i] = 2; // second map = 2 I_4
  assert.equal(matrixRank(buf, 4, 4, 16), 4);
  assert.equal(matrixRank(buf, 4, 4, 0), 0);
  // tolerance max(H, W) * eps32 * sigma_max: 2x2 tol = 2.4e-7
  assert.equal(matrixRank(Float32Array.from([1, 0, 0, 1e-7]), 2, 2), 1);
  assert.equal(matrixRank(Float32Array.from([1, 0, 0, 1e-6]), 2, 2), 2);
  // the tolerance uses the map's own size, not the block left after dropping zero rows/columns:
  // in a 32x32 map tol = 32 * eps32 = 3.8e-6, so a 1e-6 singular value does not count
  const big = new Float32Array(32 * 32);
  big[5 * 32 + 7] = 1;
  big[20 * 32 + 11] = 1e-6;
  assert.equal(matrixRank(big, 32, 32), 1);
  big[20 * 32 + 11] = 1e-5;
  assert.equal(matrixRank(big, 32, 32), 2);
  assert.ok(32 * FLOAT32_EPS > 1e-6 && 32 * FLOAT32_EPS < 1e-5);
});

test('eigvalsh: TS and LAPACK paths agree with the Jacobi SVD on a Gram matrix', () => {
  const rng = new Rng(11);
  for (const n of [2, 3, 40, 100]) {
    const a = lowRank(rng, n, n + 3, n);
    const g = new Float64Array(n * n);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let t = 0; t < n + 3; t++) s += a[i * (n + 3) + t]! * a[j * (n + 3) + t]!;
        g[i * n + j] = s;
      }
    const ev = Array.from(eigvalsh(g, n)).sort((x, y) => y - x);
    const sv = singularValues(a, n, n + 3);
    const scale = ev[0]!;
    ev.forEach((l, i) => close(l, sv[i]! ** 2, 1e-10 * scale, `n=${n} eigenvalue ${i}`));
  }
});

test('channelIndependence: duplicated rows score low, an orthogonal row scores its norm, a zero row 0 (both Gram sides)', () => {
  // rows a, a, b, 0 in R^6 with a, b orthonormal: ||A||_* = sqrt2 + 1; without one a: 2; without b: sqrt2
  const a = [0.6, 0, 0.8, 0, 0, 0];
  const b = [0, 0, 0, 0, 1, 0];
  const rowSide = Float64Array.from([...a, ...a, ...b, 0, 0, 0, 0, 0, 0]);
  const ci = new Float64Array(4);
  channelIndependence(rowSide, 4, 6, ci);
  close(ci[0]!, Math.SQRT2 - 1, 1e-12, 'dup 0');
  close(ci[1]!, Math.SQRT2 - 1, 1e-12, 'dup 1');
  close(ci[2]!, 1, 1e-12, 'orthogonal');
  assert.equal(ci[3], 0);
  ciReference(rowSide, 4, 6).forEach((r, c) => close(ci[c]!, r, 1e-9, `row side vs SVD, channel ${c}`));
  // more rows than columns (the H*W-side rank-one downdate): e1, e1, e1, e2 in R^2, and a zero row
  const hwSide = Float64Array.from([1, 0, 0, 0, 1, 0, 1, 0, 0, 1]);
  const ci2 = new Float64Array(5);
  channelIndependence(hwSide, 5, 2, ci2);
  for (const c of [0, 2, 3]) close(ci2[c]!, Math.sqrt(3) - Math.SQRT2, 1e-12, `triplicate ${c}`);
  close(ci2[4]!, 1, 1e-12, 'orthogonal (hw side)');
  assert.equal(ci2[1], 0);
  ciReference(hwSide, 5, 2).forEach((r, c) => close(ci2[c]!, r, 1e-9, `hw side vs SVD, channel ${c}`));
  // one column fewer than live rows (row side with a non-square Gram): e1, e2, e1 + e2
  // ||A||_* = sqrt3 + 1; without e1 (or e2): sqrt5; without e1 + e2: 2
  const edge = Float64Array.from([1, 0, 0, 1, 1, 1]);
  const ci3 = new Float64Array(3);
  channelIndependence(edge, 3, 2, ci3);
  close(ci3[0]!, Math.sqrt(3) + 1 - Math.sqrt(5), 1e-12, 'e1');
  close(ci3[1]!, Math.sqrt(3) + 1 - Math.sqrt(5), 1e-12, 'e2');
  close(ci3[2]!, Math.sqrt(3) - 1, 1e-12, 'e1 + e2');
  // it accumulates into out (the criterion sums over images)
  channelIndependence(hwSide, 5, 2, ci2);
  close(ci2[4]!, 2, 1e-12, 'accumulated');
});

test('channelIndependence equals the SVD definition to 1e-9 on random ReLU-like matrices of both shapes', () => {
  const rng = new Rng(23);
  // [rows, cols]: row side (cols >= rows - 1), H*W side (cols < rows - 1), a 2-column case, a
  // square case, cols = live rows - 1 and cols = live rows (one row is dead), and 100 rows (eigenvalues by LAPACK when the addon is built)
  for (const [rows, cols] of [[6, 16], [12, 4], [9, 2], [8, 8], [20, 7], [7, 5], [6, 6]] as const) {
    const m = Float64Array.from(lowRank(rng, rows, cols, Math.min(rows, cols)), (x) => Math.max(0, x));
    m.fill(0, 2 * cols, 3 * cols); // a dead channel
    m.copyWithin(4 * cols, 0, cols); // row 4 duplicates row 0
    const ci = new Float64Array(rows);
    channelIndependence(m, rows, cols, ci);
    const ref = ciReference(m, rows, cols);
    ref.forEach((r, c) => close(ci[c]!, r, 1e-9, `${rows}x${cols} channel ${c}`));
    assert.equal(ci[2], 0);
  }
  const rows = 100, cols = 110;
  const m = Float64Array.from(lowRank(rng, rows, cols, 60), (x) => Math.max(0, x));
  const ci = new Float64Array(rows);
  channelIndependence(m, rows, cols, ci);
  const full = nuclearNormSvd(m, rows, cols);
  for (const c of [0, 37, 99]) {
    const b = Float64Array.from(m);
    b.fill(0, c * cols, (c + 1) * cols);
    close(ci[c]!, full - nuclearNormSvd(b, rows, cols), 1e-9 * full, `100x110 channel ${c}`);
  }
});

// ---------------------------------------------------------------------------------------------
// rank() end to end on tiny models with hand-set 1x1 convs (mean 0, std 1: the input is p / 255)

const NORM = { mean: [0, 0, 0], std: [1, 1, 1] };

/** conv(c1, 1x1) -> BN (identity stats) -> ReLU -> conv(c2, 1x1) -> ReLU -> linear, weights as given, biases 0 */
function handModel(w1: number[][], w2: number[][]): Model {
  // seeded weights; the convs' are overwritten below, the Linear's do not reach the conv activations ranked
  const model = new SequentialBuilder('hand', [3, 8, 8], { random: randomSource(1) })
    .conv(w1.length, 1)
    .bn()
    .relu()
    .conv(w2.length, 1)
    .relu()
    .flatten()
    .linear(3)
    .build();
  const [u1, u2] = convUnits(model);
  for (const [u, w] of [[u1!, w1], [u2!, w2]] as const) {
    model.tensors[u.conv.params.weight!]!.data.set(w.flat());
    model.tensors[u.conv.params.bias!]!.data.fill(0);
  }
  return model;
}

function dataset(images: Uint8Array, n: number): ImageDataset {
  return { images, labels: new Uint8Array(n), n, channels: 3, height: 8, width: 8, classes: 1, name: 'hand' };
}

function calibration(data: ImageDataset): Calibration {
  return { data, ...NORM, seed: 3, threads: 1 };
}

function checkRanking(r: GroupRanking, channels: number): void {
  assert.equal(r.channels, channels);
  assert.deepEqual([...r.order].sort((x, y) => x - y), Array.from({ length: channels }, (_, i) => i));
  assert.equal(r.curve!.length, channels - 1);
  assert.equal(r.curveTotal, 1);
  for (let i = 1; i < r.curve!.length; i++) assert.ok(r.curve![i]! <= r.curve![i - 1]! + 1e-12, 'curve non-increasing');
}

test('hrankCriterion: rank-1 maps (constant, separable), full-rank maps and a dead map rank as built', { skip: addonSkip }, async () => {
  // input channels: K constant, U = u v^T separable (rank 1), N random (rank 8)
  const rng = new Rng(41);
  const n = 4;
  const images = new Uint8Array(n * 3 * 64);
  for (let i = 0; i < n; i++) {
    const u = Array.from({ length: 8 }, () => 1 + rng.int(15));
    const v = Array.from({ length: 8 }, () => 1 + rng.int(15));
    for (let p = 0; p < 64; p++) {
      images[i * 192 + p] = 50 + 40 * i;
      images[i * 192 + 64 + p] = u[Math.floor(p / 8)]! * v[p % 8]!;
      images[i * 192 + 128 + p] = 1 + rng.int(255);
    }
  }
  // layer 1: K, U, N, U+N, -K (dead after ReLU), K+U (rank 2) -> mean ranks 1, 1, 8, 8, 0, 2
  const w1 = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1], [-1, 0, 0], [1, 1, 0]];
  // layer 2: a copy of the K map (rank 1), a copy of the N map (rank 8) -> order [1, 0]
  const w2 = [[1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0]];
  const model = handModel(w1, w2);
  const groups = channelGroups(model);
  assert.equal(groups.length, 2);
  const seen: number[] = [];
  // groups passed in reverse: results follow the groups, each read from its own unit (by name)
  const res = await hrankCriterion({ batch: 3 }).rank(model, [groups[1]!, groups[0]!], { ...calibration(dataset(images, n)), onProgress: (d) => seen.push(d) });
  assert.deepEqual(res.map((r) => r.group), [groups[1]!.name, groups[0]!.name]);
  const [second, first] = res as [GroupRanking, GroupRanking];
  assert.deepEqual(first.evidence!.rank, [1, 1, 8, 8, 0, 2]);
  assert.deepEqual(first.order, [2, 3, 5, 0, 1, 4]);
  checkRanking(first, 6);
  // left out after keeping 2, 3, 5, 0, 1 of total 20
  assert.deepEqual(first.curve!.map((x) => +x.toFixed(12)), [12 / 20, 4 / 20, 2 / 20, 1 / 20, 0]);
  assert.deepEqual(second.evidence!.rank, [1, 8]);
  assert.deepEqual(second.order, [1, 0]);
  checkRanking(second, 2);
  assert.equal(first.evidence!.images, n);
  assert.equal(seen.at(-1), 2 * n);
});

test('chipCriterion: on a tiny model it matches the SVD definition, the dead channel last, the independent channel first', { skip: addonSkip }, async () => {
  const rng = new Rng(43);
  const n = 4;
  const images = new Uint8Array(n * 3 * 64).map(() => 1 + rng.int(255));
  // layer 1: P, P again (a duplicate), Q (independent of P), -(P+Q+R) (dead)
  const w1 = [[1, 0, 0], [1, 0, 0], [0, 1, 0], [-1, -1, -1]];
  // layer 2 on the four maps: Q, P, P + Q
  const w2 = [[0, 0, 1, 0], [1, 0, 0, 0], [1, 0, 1, 0]];
  const model = handModel(w1, w2);
  const groups = channelGroups(model);
  const res = await chipCriterion({ batch: 3 }).rank(model, groups, calibration(dataset(images, n)));
  // reference: the maps in float64 (BN with identity statistics scales by 1/sqrt(1 + 1e-5))
  const s = 1 / Math.sqrt(1 + 1e-5);
  const want = [new Array<number>(4).fill(0), new Array<number>(3).fill(0)];
  for (let i = 0; i < n; i++) {
    const x = (c: number, p: number) => images[i * 192 + c * 64 + p]! / 255;
    const a1 = new Float64Array(4 * 64);
    w1.forEach((w, o) => {
      for (let p = 0; p < 64; p++) a1[o * 64 + p] = Math.max(0, s * (w[0]! * x(0, p) + w[1]! * x(1, p) + w[2]! * x(2, p)));
    });
    const a2 = new Float64Array(3 * 64);
    w2.forEach((w, o) => {
      for (let p = 0; p < 64; p++) a2[o * 64 + p] = Math.max(0, w.reduce((acc, wc, c) => acc + wc * a1[c * 64 + p]!, 0));
    });
    ciReference(a1, 4, 64).forEach((v, c) => (want[0]![c]! += v / n));
    ciReference(a2, 3, 64).forEach((v, c) => (want[1]![c]! += v / n));
  }
  res.forEach((r, k) => {
    assert.equal(r.group, groups[k]!.name);
    checkRanking(r, groups[k]!.channels);
    const ci = r.evidence!.ci as number[];
    ci.forEach((v, c) => close(v, want[k]![c]!, 1e-4 * Math.max(...want[k]!), `layer ${k} channel ${c}`));
  });
  const first = res[0]!;
  assert.equal(first.order[0], 2, 'the independent channel Q is the most important');
  assert.deepEqual(first.order.slice(1, 3).sort(), [0, 1], 'the duplicates P, P come next');
  assert.equal(first.order[3], 3, 'the dead channel is last');
  assert.equal((first.evidence!.ci as number[])[3], 0);
  // P and Q have about the same norm, but P's direction survives in its duplicate: ~0.48 of Q's here
  assert.ok((first.evidence!.ci as number[])[0]! < 0.6 * (first.evidence!.ci as number[])[2]!);
  // samples: a seeded subset of the calibration images
  const sub = await chipCriterion({ samples: 2 }).rank(model, [groups[0]!], calibration(dataset(images, n)));
  assert.equal(sub[0]!.evidence!.images, 2);
  assert.notEqual(chipCriterion({ samples: 2 }).key, chipCriterion().key);
});

test('CRITERION_TRAITS: every criterion\u2019s ranking carries a curve and p-values exactly where its row says', { skip: addonSkip }, async () => {
  const b = new SequentialBuilder('traits', [3, 8, 8], { random: randomSource(3) });
  b.conv(13, 3, { padding: 1 }).bn().relu().conv(9, 3, { padding: 1 }).bn().relu().maxpool(2);
  const model = b.flatten().linear(4).build();
  const groups = channelGroups(model).filter((g) => g.prunable);
  const data = randomImages(new Rng(8), 48, [3, 8, 8], 4);
  const calibration: Calibration = { data, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25], seed: 0, threads: 1 };
  assert.deepEqual(Object.keys(CRITERION_TRAITS).sort(), [...CRITERIA].sort());
  for (const name of CRITERIA) {
    const traits = CRITERION_TRAITS[name];
    // p-values only when asked for (the ptest cut-off asks): permutations on for every criterion
    const criterion = makeCriterion(name, { alpha: 2, sigma: 'median', samples: 48, seed: 0, threads: 1, permutations: 5, eta: 0.05 });
    for (const r of await criterion.rank(model, groups, calibration)) {
      assert.equal(Array.isArray(r.curve) && r.curve.length > 0, traits.curve, `${name} ${r.group}: curve`);
      assert.equal(Array.isArray(r.pValues), traits.pValues, `${name} ${r.group}: p-values`);
    }
  }
});
