// Estimators and greedy ordering: parity with the authors' reference code (golden vectors), the
// alpha = 2 fast path, the native (LAPACK) path against the TypeScript one, and the noise floor.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';

import { jointKernel, tsBackend, unpackKernel, type EntropyBackend } from '../src/cmi/backend.js';
import { symmetricEigenvalues } from '../src/cmi/eigen.js';
import {
  conditionalMutualInformation,
  gramOf,
  jointEntropy,
  labelGram,
  medianSigma,
  mutualInformation,
  referenceSigma,
  renyiEntropy2,
  renyiEntropyEigen,
  traceNormalise,
} from '../src/cmi/estimators.js';
import { naiveOrder } from '../src/cmi/naive.js';
import { RANK_ALGORITHM_VERSION, rankLayer, resolveBackend, TS_FALLBACK_MAX_N, type LayerInput } from '../src/cmi/rank.js';
import { UserError } from '../src/util/errors.js';
import { addonSkip } from './support/addon.js';
import { assertClose } from './support/assert.js';
import { goldenCases, goldenInput } from './support/golden.js';
import { gaussian, Rng } from './support/random.js';

/** the tolerance against the reference code and between paths: 1e-10 absolute or 1e-8 relative */
const TOL = { abs: 1e-10, rel: 1e-8 };

const BACKENDS = ['ts', 'native'] as const;
type BackendName = (typeof BACKENDS)[number];

/** the native entropy backend with 2 threads; only tests skipped by addonSkip call it */
async function native(): Promise<EntropyBackend> {
  const { nativeBackend } = await import('../src/cmi/native.js');
  return nativeBackend(2);
}

const backendOf = async (name: BackendName): Promise<EntropyBackend> => (name === 'ts' ? tsBackend : native());
/** a test on the native backend needs the addon */
const skipFor = (name: BackendName) => ({ skip: name === 'native' && addonSkip });

for (const backendName of BACKENDS) {
  for (const g of goldenCases()) {
    test(`golden ${g.name}: ${backendName} path reproduces the reference`, skipFor(backendName), async () => {
      const backend = await backendOf(backendName);
      const r = await rankLayer(goldenInput(g), { backend, alpha: g.alpha });
      assert.deepEqual(r.order, g.expected.order);
      assert.equal(r.noiseFloorStep, null, 'golden cases stay above the noise floor');
      assert.equal(r.tieBreak, 'none');
      assertClose(r.cmi, g.expected.cmi, 'cmi', TOL);
      assertClose(r.miSelected, g.expected.miSelectedLabels, 'miSelectedLabels', TOL);
      assertClose(r.miInputSelected!, g.expected.miInputSelected, 'miInputSelected', TOL);
      assertClose([r.sigma.labels, r.sigma.maps, r.entropyLabels], [g.expected.sigmaLabels, g.expected.sigmaMaps, g.expected.entropyLabels], 'sigma/entropy', TOL);
      assert.equal(r.remaining.length, 1);
      assert.deepEqual([...r.order, ...r.remaining].sort((a, b) => a - b), Array.from({ length: g.C }, (_, i) => i));
    });
  }
}

test('CMI curve from the chain rule equals the direct four-entropy CMI', () => {
  const g = goldenCases().find((c) => c.name.startsWith('compact'))!;
  const input = goldenInput(g, false);
  const { n, c, hw } = input.maps;
  const sigma = referenceSigma(n, hw);
  const grams = Array.from({ length: c }, (_, f) => {
    const x = new Float64Array(n * hw);
    for (let i = 0; i < n; i++) for (let k = 0; k < hw; k++) x[i * hw + k] = input.maps.data[(i * c + f) * hw + k];
    return gramOf(x, n, hw, sigma);
  });
  const b = input.before![0];
  const before = Array.from({ length: b.c }, (_, f) => {
    const x = new Float64Array(n * b.hw);
    for (let i = 0; i < n; i++) for (let k = 0; k < b.hw; k++) x[i * b.hw + k] = b.data[(i * b.c + f) * b.hw + k];
    return gramOf(x, n, b.hw, referenceSigma(n, b.hw));
  });
  const onehot = new Float64Array(n * g.classes);
  g.labels.forEach((l, i) => (onehot[i * g.classes + l] = 1));
  const y = [gramOf(onehot, n, g.classes, referenceSigma(n, g.classes))];
  const sel = g.expected.order.slice(0, 2);
  const rest = [...Array(c).keys()].filter((f) => !sel.includes(f));
  const direct = conditionalMutualInformation(y, rest.map((f) => grams[f]), [...before, ...sel.map((f) => grams[f])], 1.01);
  assertClose([direct], [g.expected.cmi[1]], 'direct CMI', TOL);
  // I(X;Y) is symmetric and the entropy of a single set is the joint entropy of its members
  const mi1 = mutualInformation(y, [grams[0], grams[1]], 1.01);
  const mi2 = mutualInformation([grams[1], grams[0]], y, 1.01);
  assert.ok(Math.abs(mi1 - mi2) < 1e-12);
  assert.ok(mi1 > 0);
});

/** seeded: a 40 x 40 Gram of 6-d points, then a 40-sample, 5-filter layer of 2x2 maps over 3 classes */
function alpha2Case(): { k: Float64Array; layer: LayerInput } {
  const rng = new Rng(7);
  const n = 40;
  const k = gramOf(gaussian(rng, n * 6), n, 6, 2);
  const maps = gaussian(rng, n * 5 * 4);
  const labels = Array.from({ length: n }, (_, i) => i % 3);
  return { k, layer: { maps: { data: maps, n, c: 5, hw: 4 }, labels, classes: 3 } };
}

test('alpha = 2 fast path equals the eigenvalue path', async () => {
  const { k, layer } = alpha2Case();
  const n = layer.maps.n;
  const a = traceNormalise(k, n);
  const fast = renyiEntropy2(a);
  const eig = renyiEntropyEigen(a, 2);
  assert.ok(Math.abs(fast - eig) < 1e-12 * Math.abs(eig), `${fast} vs ${eig}`);
  // and through the ordering: alpha = 2 orders identically whichever way the entropy is computed
  // a backend that forces the eigenvalue path at alpha = 2
  const viaEigen: EntropyBackend = {
    name: 'ts',
    filterKernels: tsBackend.filterKernels,
    async entropies(req) {
      const m = req.candidates.length;
      const out = { entropy: new Float64Array(m), entropyOther: req.other ? new Float64Array(m) : null };
      req.candidates.forEach((cand, i) => {
        const joint = jointKernel(req, cand);
        out.entropy[i] = renyiEntropyEigen(traceNormalise(joint, req.n), req.alpha);
        if (req.other && out.entropyOther) {
          for (let j = 0; j < joint.length; j++) joint[j] *= req.other[j];
          out.entropyOther[i] = renyiEntropyEigen(traceNormalise(joint, req.n), req.alpha);
        }
      });
      return out;
    },
  };
  const r1 = await rankLayer(layer, { alpha: 2, backend: 'ts', tail: 'greedy' });
  const r2 = await rankLayer(layer, { alpha: 2, backend: viaEigen, tail: 'greedy' });
  assert.deepEqual(r1.order, r2.order);
  assertClose(r1.cmi, r2.cmi, 'alpha=2 cmi', TOL);
});

test('alpha = 2: the native backend orders as the TypeScript path', { skip: addonSkip }, async () => {
  const { layer } = alpha2Case();
  const r1 = await rankLayer(layer, { alpha: 2, backend: 'ts', tail: 'greedy' });
  const r3 = await rankLayer(layer, { alpha: 2, backend: await native(), tail: 'greedy' });
  assert.deepEqual(r3.order, r1.order);
  assertClose(r3.cmi, r1.cmi, 'native alpha=2 cmi', TOL);
});

const sortedValues = (x: Float64Array) => [...x].sort((a, b) => a - b);

/** a seeded symmetric 30 x 30 matrix X + X^T */
function randomSymmetric(): { s: Float64Array; n: number } {
  const rng = new Rng(3);
  const n = 30;
  const x = gaussian(rng, n * n);
  const s = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) s[i * n + j] = x[i * n + j] + x[j * n + i];
  return { s, n };
}

test('TypeScript eigenvalues: analytic cases, and they sum to the trace', () => {
  assert.deepEqual(sortedValues(symmetricEigenvalues(Float64Array.of(2, 1, 1, 2), 2)).map((v) => Math.round(v * 1e12) / 1e12), [1, 3]);
  assert.deepEqual(sortedValues(symmetricEigenvalues(Float64Array.of(5, 0, 0, 0, -1, 0, 0, 0, 2), 3)), [-1, 2, 5]);
  const { s, n } = randomSymmetric();
  const ev = sortedValues(symmetricEigenvalues(s, n));
  let trace = 0;
  for (let i = 0; i < n; i++) trace += s[i * n + i];
  assert.ok(Math.abs(ev.reduce((a, b) => a + b, 0) - trace) < 1e-10);
});

test('TypeScript eigenvalues agree with LAPACK (cmiEigvalsh)', { skip: addonSkip }, async () => {
  const { s, n } = randomSymmetric();
  const ev = sortedValues(symmetricEigenvalues(s, n));
  const { loadLinalg } = await import('../src/cmi/native.js');
  const lap = [...loadLinalg().cmiEigvalsh(s, n)];
  assert.equal(lap.length, n);
  lap.forEach((v, i) => assert.ok(Math.abs(v - ev[i]) < 1e-12, `eig ${i}: ${v} vs ${ev[i]}`));
});

test('an all-ones Gram (a dead, constant filter) has entropy 0', () => {
  const n = 24;
  const ones = new Float64Array(n * n).fill(1);
  assert.ok(Math.abs(jointEntropy([ones], 1.01)) < 1e-12);
});

for (const backendName of BACKENDS) {
  test(`dead (constant) filters do not crash the ordering (${backendName})`, skipFor(backendName), async () => {
    const n = 24;
    const rng = new Rng(5);
    const maps = gaussian(rng, n * 4 * 9);
    for (let i = 0; i < n; i++) for (let k = 0; k < 9; k++) maps[(i * 4 + 2) * 9 + k] = 0.5; // filter 2 dead
    const labels = Array.from({ length: n }, (_, i) => i % 4);
    const r = await rankLayer({ maps: { data: maps, n, c: 4, hw: 9 }, labels, classes: 4 }, { backend: await backendOf(backendName) });
    assert.equal(r.order.length, 3);
    assert.ok(r.cmi.every(Number.isFinite) && r.miSelected.every(Number.isFinite));
  });
}

test('a saturating layer reports its noise-floor step and breaks ties by own MI, not silently', async () => {
  // SPEC section 8: unit-scale maps, many filters -> the joint kernel tends to I/N
  const rng = new Rng(11);
  const n = 32;
  const c = 12;
  const hw = 16;
  const maps = gaussian(rng, n * c * hw, 2.5);
  const labels = Array.from({ length: n }, () => rng.int(10));
  const layer: LayerInput = { maps: { data: maps, n, c, hw }, labels, classes: 10 };
  const greedy = await rankLayer(layer, { backend: 'ts', tail: 'greedy' });
  assert.ok(greedy.noiseFloorStep !== null, `expected saturation, margins ${greedy.margins}`);
  assert.equal(greedy.tieBreak, 'greedy-roundoff');
  const step = greedy.noiseFloorStep!;
  assert.ok(greedy.margins[step]! < greedy.noiseFloor[step]);
  for (let i = 0; i < step; i++) assert.ok(greedy.margins[i]! >= greedy.noiseFloor[i]);
  const tied = await rankLayer(layer, { backend: 'ts' });
  assert.equal(tied.noiseFloorStep, step);
  assert.equal(tied.tieBreak, 'own-mi-with-labels');
  assert.deepEqual(tied.order.slice(0, step), greedy.order.slice(0, step));
  const tail = [...tied.order.slice(step), ...tied.remaining];
  const mi = tied.ownMI!;
  for (let i = 1; i < tail.length; i++) assert.ok(mi[tail[i - 1]] >= mi[tail[i]], 'tail sorted by own MI');
  assert.ok(tied.evaluated < greedy.evaluated, 'no candidate evaluations after the floor');
  assert.equal(tied.cmi.length, c - 1);
});

test('maxSelect stops early; log2 output is the natural-log output / ln 2', async () => {
  const g = goldenCases().find((c) => c.name.startsWith('perlayer_small'))!;
  const r = await rankLayer(goldenInput(g, false), { backend: 'ts', maxSelect: 3, logBase: '2' });
  assert.deepEqual(r.order, g.expected.order.slice(0, 3));
  assert.equal(r.remaining.length, g.C - 3);
  assertClose(r.cmi, g.expected.cmi.slice(0, 3).map((v) => v / Math.LN2), 'cmi log2', TOL);
  assert.equal(r.logBase, '2');
  await assert.rejects(rankLayer(goldenInput(g, false), { backend: 'ts', alpha: 1 }), /alpha/);
});

for (const backendName of BACKENDS) {
  test(`exact duplicates and dead filters are evaluated once and order as the naive implementation (${backendName})`, skipFor(backendName), async () => {
    const rng = new Rng(21);
    const n = 30;
    const c = 7;
    const hw = 4;
    const maps = gaussian(rng, n * c * hw, 0.8);
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < hw; k++) {
        maps[(i * c + 4) * hw + k] = maps[(i * c + 1) * hw + k]; // 4 duplicates 1
        maps[(i * c + 2) * hw + k] = 0; // 2 and 6 dead
        maps[(i * c + 6) * hw + k] = 0;
      }
    }
    const labels = Array.from({ length: n }, () => rng.int(3));
    const layer: LayerInput = { maps: { data: maps, n, c, hw }, labels, classes: 3 };
    const naive = naiveOrder(layer, 1.01, symmetricEigenvalues);
    const r = await rankLayer(layer, { backend: await backendOf(backendName), tail: 'greedy' });
    assert.deepEqual(r.order, naive.order);
    assertClose(r.scores, naive.scores, 'scores', TOL);
    // per step: one evaluation per distinct kernel among the remaining filters
    assert.ok(r.evaluated < (c * (c + 1)) / 2 - 1, `evaluated ${r.evaluated}`);
  });
}

test('native entropies equal the TypeScript ones for every request shape (base/other/candidate -1, alpha 2, 1.01, 3)', { skip: addonSkip }, async () => {
  const nb = await native();
  const { loadLinalg } = await import('../src/cmi/native.js');
  const rng = new Rng(31);
  const n = 40;
  const c = 5;
  const hw = 6;
  const maps = gaussian(rng, n * c * hw, 0.5);
  const sigma = referenceSigma(n, hw);
  const kTs = await tsBackend.filterKernels(maps, n, c, hw, sigma);
  const kNative = await nb.filterKernels(Float32Array.from(maps), n, c, hw, sigma);
  const kNative64 = await nb.filterKernels(maps, n, c, hw, sigma);
  assert.equal(kNative64.length, kTs.length);
  kTs.forEach((v, i) => assert.ok(Math.abs(v - kNative64[i]) < 1e-15, `kernel entry ${i}`));
  assert.ok(kNative.every((v, i) => Math.abs(v - kTs[i]) < 1e-6), 'float32 maps give float32-accurate kernels');
  const base = unpackKernel(kTs, 3, n);
  const other = gramOf(gaussian(rng, n * 3), n, 3, 1.5);
  // (alpha < 1 is left out: |lambda|^alpha lifts round-off eigenvalues of ~1e-17 to ~1e-9 each)
  for (const alpha of [2, 1.01, 3]) {
    for (const b of [null, base]) {
      for (const o of [null, other]) {
        const req = { n, alpha, base: b, other: o, kernels: kTs, candidates: Int32Array.of(0, -1, 4, 2, 2) };
        const rt = await tsBackend.entropies(req);
        for (const lapack of [false, true]) {
          // both native reductions: the 4-lane AVX2 kernel (default) and LAPACK dsytrd per matrix
          const rn = await loadLinalg().cmiEntropies({ ...req, threads: 2, lapack });
          const what = `alpha ${alpha} base ${!!b} other ${!!o} lapack ${lapack}`;
          assertClose([...rn.entropy], [...rt.entropy], `${what} entropy`, TOL);
          if (o) assertClose([...rn.entropyOther!], [...rt.entropyOther!], `${what} entropyOther`, TOL);
          else assert.equal(rn.entropyOther, null);
        }
      }
    }
  }
});

test('native 4-lane reduction + rational QL agree with LAPACK dsytrd + dsterf at a realistic size', { skip: addonSkip }, async () => {
  const nb = await native();
  const { loadLinalg } = await import('../src/cmi/native.js');
  const rng = new Rng(41);
  const n = 200;
  const c = 7;
  const hw = 16;
  const maps = gaussian(rng, n * c * hw, 0.3).map((v) => Math.max(0, v));
  const kernels = await nb.filterKernels(maps, n, c, hw, referenceSigma(n, hw));
  const labels = Array.from({ length: n }, () => rng.int(10));
  const other = labelGram(labels, referenceSigma(n, 10));
  const base = unpackKernel(kernels, 6, n);
  const req = { n, alpha: 1.01, base, other, kernels, candidates: Int32Array.of(0, 1, 2, 3, 4, 5, -1), threads: 2 };
  const lanes = await loadLinalg().cmiEntropies(req);
  const lapack = await loadLinalg().cmiEntropies({ ...req, lapack: true });
  for (let k = 0; k < req.candidates.length; k++) {
    assert.ok(Math.abs(lanes.entropy[k] - lapack.entropy[k]) < 1e-11, `entropy ${k}: ${lanes.entropy[k]} vs ${lapack.entropy[k]}`);
    assert.ok(Math.abs(lanes.entropyOther![k] - lapack.entropyOther![k]) < 1e-11, `entropyOther ${k}`);
  }
});

// ---- kernel width: the median heuristic -----------------------------------------------------------

/** post-ReLU maps [N, C, HW] with a little label signal per filter */
function reluLayer(seed: number, n: number, c: number, hw: number, classes: number): LayerInput {
  const rng = new Rng(seed);
  const noise = gaussian(rng, n * c * hw, 0.5);
  const labels = Array.from({ length: n }, (_, i) => i % classes);
  const data = new Float64Array(n * c * hw);
  for (let i = 0; i < n; i++) {
    for (let f = 0; f < c; f++) {
      for (let k = 0; k < hw; k++) {
        const at = (i * c + f) * hw + k;
        data[at] = Math.max(0, (0.4 * ((labels[i] + f) % classes)) / classes + noise[at]);
      }
    }
  }
  return { maps: { data, n, c, hw }, labels, classes };
}

test("sigma 'median': one width per layer from the median of the summed per-filter distances", async () => {
  const layer = reluLayer(9, 40, 6, 9, 4);
  const { n, c, hw, data } = layer.maps;
  // direct: every pair i < j, every filter's ||x_ic - x_jc||^2 summed, sorted, median
  const sums: number[] = [];
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      let s = 0;
      for (let f = 0; f < c; f++) {
        for (let k = 0; k < hw; k++) {
          const t = data[(i * c + f) * hw + k] - data[(j * c + f) * hw + k];
          s += t * t;
        }
      }
      sums.push(s);
    }
  }
  sums.sort((a, b) => a - b);
  const m = sums.length; // 780: even, mean of the middle two
  const median = (sums[m / 2 - 1] + sums[m / 2]) / 2;
  const expected = Math.sqrt(median / 2);
  const r = await rankLayer(layer, { backend: 'ts', sigma: 'median', maxSelect: 2 });
  assert.equal(r.sigma.rule, 'median');
  assert.ok(Math.abs(r.sigma.maps - expected) < 1e-12 * expected, `${r.sigma.maps} vs ${expected}`);
  assert.equal(r.sigma.labels, referenceSigma(n, layer.classes), 'labels keep the reference width');
  assert.match(r.rules.sigma, /median/);
  // before-layers get their own median width; the default stays the reference rule
  const b = reluLayer(10, 40, 3, 4, 4).maps;
  const withBefore = await rankLayer({ ...layer, before: [b] }, { backend: 'ts', sigma: 'median', maxSelect: 1 });
  assert.ok(Math.abs(withBefore.sigma.before[0] - medianSigma(b.data, n, b.c * b.hw).sigma) < 1e-15);
  const ref = await rankLayer(layer, { backend: 'ts', maxSelect: 1 });
  assert.equal(ref.sigma.rule, 'reference');
  assert.equal(ref.sigma.maps, referenceSigma(n, hw));
  // a dead layer (all maps constant) has no distances: sigma falls back to 1, the order still runs
  assert.deepEqual(medianSigma(new Float64Array(20).fill(0.5), 5, 4), { sigma: 1, median: 0, basis: 'constant' });
  await assert.rejects(rankLayer(layer, { backend: 'ts', sigma: 'widest' as 'median' }), /sigma must be one of reference, median, mean/);
});

test("sigma 'median' is scale-invariant; the reference width saturates at a different rate", async () => {
  const layer = reluLayer(9, 40, 6, 9, 4);
  const scaled: LayerInput = { ...layer, maps: { ...layer.maps, data: layer.maps.data.map((v) => v * 10) } };
  const a = await rankLayer(layer, { backend: 'ts', sigma: 'median', tail: 'greedy' });
  const b = await rankLayer(scaled, { backend: 'ts', sigma: 'median', tail: 'greedy' });
  assert.deepEqual(b.order, a.order);
  assert.ok(Math.abs(b.sigma.maps - 10 * a.sigma.maps) < 1e-12 * b.sigma.maps);
  assertClose(b.cmi, a.cmi, 'median-rule cmi under x10', TOL);
  const ra = await rankLayer(layer, { backend: 'ts', tail: 'greedy' });
  const rb = await rankLayer(scaled, { backend: 'ts', tail: 'greedy' });
  assert.equal(ra.sigma.maps, rb.sigma.maps, 'the reference width ignores the scale');
  // x10 -> per-filter exponents x100: the curve collapses within a few selections
  assert.ok(rb.cmi[1] < 1e-3 * ra.cmi[1], `reference cmi[1]: ${rb.cmi[1]} (x10) vs ${ra.cmi[1]}`);
  assert.ok(rb.noiseFloorStep !== null && ra.noiseFloorStep === null, `noise floor steps ${ra.noiseFloorStep}, ${rb.noiseFloorStep}`);
});

// ---- permutation test -----------------------------------------------------------------------------

/** filters 0-2 each carry one bit of an 8-class label (plus small noise); filters 3.. are noise */
function bitsLayer(seed: number, n: number, c: number, hw: number): LayerInput {
  const rng = new Rng(seed);
  const labels = Array.from({ length: n }, (_, i) => i % 8);
  const noise = gaussian(rng, n * c * hw);
  const data = new Float64Array(n * c * hw);
  for (let i = 0; i < n; i++) {
    for (let f = 0; f < c; f++) {
      for (let k = 0; k < hw; k++) {
        const at = (i * c + f) * hw + k;
        data[at] = f < 3 ? 1.5 * ((labels[i] >> f) & 1) + 0.3 * noise[at] : noise[at];
      }
    }
  }
  return { maps: { data, n, c, hw }, labels, classes: 8 };
}

test('permutation test: small p for the informative picks, stops right after them, order unchanged', async () => {
  const layer = bitsLayer(1, 64, 8, 4);
  const plain = await rankLayer(layer, { backend: 'ts' });
  const r = await rankLayer(layer, { backend: 'ts', permutationTest: { permutations: 40, seed: 7 } });
  assert.deepEqual([...r.order.slice(0, 3)].sort(), [0, 1, 2], `informative filters first: ${r.order}`);
  assert.deepEqual(r.order, plain.order, 'the test does not change the order');
  assertClose(r.cmi, plain.cmi, 'cmi', TOL);
  // pValues[i] belongs to order[i]; the first p >= eta is at the 4th selection (index 3): keep 3
  assert.deepEqual(r.pValues!.slice(0, 3), [0, 0, 0]);
  assert.equal(r.permutationTest!.stopIndex, 3);
  assert.ok(r.pValues![3] >= 0.05);
  assert.equal(r.pValues!.length, 4, 'no p-values after the stop');
  assert.equal(r.order.length, 7, 'ordering continues after the stop');
  assert.deepEqual({ ...r.permutationTest, evaluated: 0 }, { permutations: 40, eta: 0.05, seed: 7, stopIndex: 3, evaluated: 0 });
  assert.equal(r.permutationTest!.evaluated, 4 * 2 * 41, 'two batched requests of P + 1 candidates per tested selection');
  assert.match(r.rules.permutationTest!, /\(i\+1\)-th selection/);
  assert.equal(plain.pValues, undefined);
  // seeded: the same seed gives the same p-values
  const again = await rankLayer(layer, { backend: 'ts', permutationTest: { permutations: 40, seed: 7 } });
  assert.deepEqual(again.pValues, r.pValues);
  await assert.rejects(rankLayer(layer, { backend: 'ts', permutationTest: { permutations: 0 } }), /permutations/);
});

test('permutation test: the native backend batches the same requests to the same order and p-values', { skip: addonSkip }, async () => {
  const layer = bitsLayer(1, 64, 8, 4);
  const r = await rankLayer(layer, { backend: 'ts', permutationTest: { permutations: 40, seed: 7 } });
  const rn = await rankLayer(layer, { backend: await native(), permutationTest: { permutations: 40, seed: 7 } });
  assert.deepEqual(rn.order, r.order);
  assert.deepEqual(rn.pValues, r.pValues);
  assert.equal(rn.permutationTest!.stopIndex, 3);
});

test('permutation test statistic = I(Y; remaining | B u selected with the last pick permuted), four entropies', async () => {
  // P = 1 and eta > 1: one permutation per selection, drawn in turn from the seeded stream; each
  // p is 1 exactly when the directly computed permuted CMI is <= the actual CMI
  const layer = bitsLayer(3, 32, 6, 4);
  const b = reluLayer(4, 32, 2, 4, 8).maps;
  const input: LayerInput = { ...layer, before: [b] };
  const r = await rankLayer(input, { backend: 'ts', permutationTest: { permutations: 1, seed: 5, eta: 2 }, tail: 'greedy' });
  assert.equal(r.pValues!.length, r.order.length);
  assert.equal(r.permutationTest!.stopIndex, null);
  const { n, c } = layer.maps;
  const gramsOf = (m: typeof b) =>
    Array.from({ length: m.c }, (_, f) => {
      const x = new Float64Array(n * m.hw);
      for (let i = 0; i < n; i++) for (let k = 0; k < m.hw; k++) x[i * m.hw + k] = m.data[(i * m.c + f) * m.hw + k];
      return gramOf(x, n, m.hw, referenceSigma(n, m.hw));
    });
  const grams = gramsOf(layer.maps);
  const before = gramsOf(b);
  const y = [labelGram(layer.labels, referenceSigma(n, 8))];
  const rng = new Rng(5);
  let decided = 0;
  for (let i = 0; i < r.order.length; i++) {
    const perm = rng.permutation(n);
    const f = r.order[i];
    const permuted = new Float64Array(n * n);
    for (let a = 0; a < n; a++) for (let bb = 0; bb < n; bb++) permuted[a * n + bb] = grams[f][perm[a] * n + perm[bb]];
    const rest = [...Array(c).keys()].filter((g) => !r.order.slice(0, i + 1).includes(g)).map((g) => grams[g]);
    const z = [...before, ...r.order.slice(0, i).map((g) => grams[g])];
    const actual = conditionalMutualInformation(y, rest, [...z, grams[f]], 1.01);
    const perm1 = conditionalMutualInformation(y, rest, [...z, permuted], 1.01);
    assert.ok(Math.abs(actual - r.cmi[i]) < 1e-9, `actual ${actual} vs cmi ${r.cmi[i]}`);
    if (Math.abs(perm1 - actual) < 1e-9) continue; // too close to call through round-off
    decided++;
    assert.equal(r.pValues![i], perm1 <= actual ? 1 : 0, `selection ${i}: permuted ${perm1}, actual ${actual}`);
  }
  assert.ok(decided >= 3, `only ${decided} selections decided`);
  assert.ok(r.pValues!.includes(1), 'some noise pick is not significant');
});

// ---- backend 'auto' -------------------------------------------------------------------------------

test("backend 'auto' without the addon: TypeScript only for small N, said once on stderr, else a UserError naming the fix", async () => {
  const fail = async () => {
    throw new Error('cannot find cmiprune_engine.node');
  };
  assert.equal(await resolveBackend('auto', 2, TS_FALLBACK_MAX_N, fail), tsBackend);
  assert.equal(await resolveBackend(undefined, 2, 10, fail), tsBackend);
  // the fallback is never silent: one stderr line per process, the first time (a fresh process, so
  // no earlier test has used up the one line)
  const orderJs = new URL('../src/cmi/rank.js', import.meta.url).href;
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', `
    const { resolveBackend } = await import(${JSON.stringify(orderJs)});
    const fail = async () => { throw new Error('cannot find cmiprune_engine.node'); };
    await resolveBackend('auto', 2, 10, fail);
    await resolveBackend('auto', 2, 20, fail);
  `], { encoding: 'utf8' });
  assert.equal(child.status, 0, child.stderr);
  const said = child.stderr.trim().split('\n');
  assert.equal(said.length, 1, child.stderr);
  assert.match(said[0]!, /native CMI engine could not be loaded \(cannot find cmiprune_engine\.node\); using the TypeScript backend/);
  await assert.rejects(resolveBackend('auto', 2, TS_FALLBACK_MAX_N + 1, fail), (e: unknown) => {
    assert.ok(e instanceof UserError);
    assert.match(e.message, /native CMI engine is needed for N = 65/);
    assert.match(e.message, /npm run build:native/);
    assert.match(e.message, /cannot find cmiprune_engine\.node/);
    return true;
  });
  await assert.rejects(resolveBackend('native', 2, 10, fail), /cannot find/);
  assert.equal(await resolveBackend('ts', 2, 100000, fail), tsBackend);
  assert.equal(typeof RANK_ALGORITHM_VERSION, 'string');
});
