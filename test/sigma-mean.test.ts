// The 'mean' kernel-width rule (src/cmi/joint.ts meanRule): K_S = exp(-(mean_{c in S} D_c) / (2 sigma^2)),
// 2 sigma^2 = median over pairs of (1/C) sum_c D_c. Parity of the TypeScript and native paths with the
// naive definition, scale invariance, and that it does not saturate where the paper's rule does.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { tsBackend, type EntropyBackend, type EntropyRequest } from '../src/cmi/backend.js';
import { symmetricEigenvalues } from '../src/cmi/eigen.js';
import { labelGram, referenceSigma, squaredDistances } from '../src/cmi/estimators.js';
import { meanRule, productRule, type JointRule } from '../src/cmi/joint.js';
import { naiveOrder } from '../src/cmi/naive.js';
import { rankLayer, type LayerInput, type MapsTensor, type RankLayerOptions } from '../src/cmi/rank.js';
import { writeNpy } from '../src/data/npy.js';
import { checkpointKey, type CheckpointKeyParts } from '../src/cmi/rank-model.js';
import { cmiCriterion } from '../src/prune/cmi-criterion.js';
import { addonSkip } from './support/addon.js';
import { assertClose } from './support/assert.js';
import { randn, Rng } from './support/random.js';
import { CLI } from './support/shared.js';

async function nativeBackend(): Promise<EntropyBackend> {
  const { nativeBackend: nb } = await import('../src/cmi/native.js');
  return nb(2);
}

/**
 * Seeded maps [N, C, HW] (after a ReLU unless relu = false) whose filter c carries a little of the
 * label (mean shifted by `signal` when label = c mod classes), so some filters are informative and
 * the order is not a tie.
 */
function layer(seed: number, n: number, c: number, hw: number, classes: number, scale = 1, signal = 0.6, relu = true): LayerInput {
  const rng = new Rng(seed);
  const labels = Array.from({ length: n }, () => rng.int(classes));
  const noise = randn(rng, n * c * hw);
  const data = new Float64Array(n * c * hw);
  for (let i = 0; i < n; i++) {
    for (let f = 0; f < c; f++) {
      const shift = labels[i] === f % classes ? signal : 0;
      for (let k = 0; k < hw; k++) {
        const v = noise[(i * c + f) * hw + k] + shift;
        data[(i * c + f) * hw + k] = (relu ? Math.max(0, v) : v) * scale;
      }
    }
  }
  return { maps: { data, n, c, hw }, labels, classes };
}

function scaled(m: MapsTensor, s: number): MapsTensor {
  return { ...m, data: m.data.map((v) => v * s) };
}

/** Median of the strictly upper-triangular entries of an N x N matrix. */
function offDiagonalMedian(k: Float64Array, n: number): number {
  const v: number[] = [];
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) v.push(k[i * n + j]);
  v.sort((a, b) => a - b);
  return v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
}

/** Kernel of each prefix set {order[0..k-1]}, k = 1..C, by a rule (layer alone, no B). */
function prefixKernels(rule: JointRule, order: number[]): Float64Array[] {
  const out: Float64Array[] = [];
  let set = rule.empty(false);
  for (const f of order) {
    set = rule.plus(set, [f]);
    out.push(rule.kernel(set));
  }
  return out;
}

test("native log-mode entropies equal the TypeScript ones for every request shape (base/offset/other, candidates, alpha 2, 1.01, 3)", { skip: addonSkip }, async () => {
  const { loadLinalg } = await import('../src/cmi/native.js');
  const lin = loadLinalg();
  const { maps } = layer(3, 40, 5, 6, 3);
  const { n, c, hw } = maps;
  const sigma = 1.3;
  const lTs = await tsBackend.filterKernels(maps.data, n, c, hw, sigma, true);
  const lNative = await (await nativeBackend()).filterKernels(maps.data, n, c, hw, sigma, true);
  assertClose(lNative, lTs, 'log-kernels', { abs: 1e-13 });
  assert.ok(lTs.every((v) => v <= 0), 'log-kernels are <= 0');
  const base = new Float64Array(n * n);
  const off = new Float64Array(n * n);
  const rng = new Rng(4);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      const b = i === j ? 0 : -3 * rng.next();
      const o = i === j ? 0 : -0.5 * rng.next();
      base[i * n + j] = base[j * n + i] = b;
      off[i * n + j] = off[j * n + i] = o;
    }
  }
  const other = labelGram(Array.from({ length: n }, (_, i) => i % 3), referenceSigma(n, 3));
  for (const alpha of [2, 1.01, 3]) {
    for (const b of [null, base]) {
      for (const o of [null, off]) {
        for (const y of [null, other]) {
          const req: EntropyRequest = { n, alpha, base: b, other: y, kernels: lTs, candidates: Int32Array.of(0, 4, 2, 2, 1), logScale: 1 / 3, logOffset: o };
          const rt = await tsBackend.entropies(req);
          for (const lapack of [false, true]) {
            const rn = await lin.cmiEntropies({ ...req, threads: 2, lapack });
            const what = `alpha ${alpha} base ${!!b} offset ${!!o} other ${!!y} lapack ${lapack}`;
            assertClose(rn.entropy, rt.entropy, `${what} entropy`, { abs: 1e-11 });
            if (y) assertClose(rn.entropyOther!, rt.entropyOther!, `${what} entropyOther`, { abs: 1e-11 });
            else assert.equal(rn.entropyOther, null);
          }
        }
      }
    }
  }
  await assert.rejects(async () => lin.cmiEntropies({ n, alpha: 2, base: null, other: null, kernels: lTs, candidates: Int32Array.of(0), logOffset: off, threads: 1 }), /logOffset needs logScale/);
});

for (const withBefore of [false, true]) {
  test(`'mean' order equals the naive definition and the native path (${withBefore ? 'conditioned on a before-layer' : 'per-layer'}), curve = I(Y; all u B) - I(Y; B u selected)`, async () => {
    const l = layer(11, 36, 7, 5, 3);
    if (withBefore) l.before = [layer(12, 36, 3, 4, 3).maps];
    for (const alpha of [1.01, 2]) {
      const naive = naiveOrder(l, alpha, symmetricEigenvalues, undefined, 'mean');
      const opts: RankLayerOptions = { sigma: 'mean', alpha, tail: 'greedy' };
      const ts = await rankLayer(l, { ...opts, backend: 'ts' });
      assert.equal(ts.sigma.rule, 'mean');
      assert.equal(ts.noiseFloorStep, null, 'every pick is decided above the noise floor');
      assert.deepEqual(ts.order, naive.order, `alpha ${alpha}: TypeScript order`);
      assertClose(ts.scores, naive.scores, `alpha ${alpha}: TypeScript scores`, { abs: 1e-10 });
      assertClose([ts.miAll], [naive.miAll], `alpha ${alpha}: I(Y; all u B)`, { abs: 1e-10 });
      assertClose(ts.cmi, naive.scores.map((s) => naive.miAll - s), `alpha ${alpha}: curve`, { abs: 1e-10 });
      // the rule differs from the paper's: otherwise this test would not test it
      const product = naiveOrder(l, alpha, symmetricEigenvalues, undefined, 'median');
      assert.ok(Math.abs(product.scores[0] - naive.scores[0]) > 1e-6, 'mean and median rules give different scores');
      if (addonSkip) continue;
      const nat = await rankLayer(l, { ...opts, backend: await nativeBackend() });
      assert.equal(nat.backend, 'native');
      assert.deepEqual(nat.order, ts.order, `alpha ${alpha}: native order`);
      assertClose(nat.scores, ts.scores, `alpha ${alpha}: native scores`, { abs: 1e-10 });
      assertClose(nat.cmi, ts.cmi, `alpha ${alpha}: native curve`, { abs: 1e-10 });
    }
  });
}

test("'mean' with the permutation test: native p-values equal the TypeScript ones", { skip: addonSkip }, async () => {
  const l = layer(13, 30, 6, 4, 3);
  l.before = [layer(14, 30, 2, 4, 3).maps];
  const opts: RankLayerOptions = { sigma: 'mean', alpha: 1.01, tail: 'greedy', permutationTest: { permutations: 12, eta: 2, seed: 3 } };
  const ts = await rankLayer(l, { ...opts, backend: 'ts' });
  const nat = await rankLayer(l, { ...opts, backend: await nativeBackend() });
  assert.equal(ts.pValues!.length, 5);
  assert.deepEqual(nat.pValues, ts.pValues);
});

test("'mean' is scale invariant: maps (and before-maps) x 7 give the same order and curve", async () => {
  const l = layer(21, 32, 6, 6, 4);
  l.before = [layer(22, 32, 3, 4, 4).maps];
  const l7: LayerInput = { ...l, maps: scaled(l.maps, 7), before: [scaled(l.before[0], 7)] };
  const backends: EntropyBackend[] = [tsBackend, ...(addonSkip ? [] : [await nativeBackend()])];
  for (const backend of backends) {
    const r = await rankLayer(l, { sigma: 'mean', backend, tail: 'greedy' });
    const r7 = await rankLayer(l7, { sigma: 'mean', backend, tail: 'greedy' });
    assert.deepEqual(r7.order, r.order, `${backend.name}: order`);
    assertClose(r7.cmi, r.cmi, `${backend.name}: curve`, { abs: 1e-10 });
    assertClose([r7.miAll], [r.miAll], `${backend.name}: I(Y; all u B)`, { abs: 1e-10 });
    assertClose([r7.sigma.maps / r.sigma.maps, r7.sigma.before[0] / r.sigma.before[0]], [7, 7], `${backend.name}: widths scale with the maps`, { abs: 1e-12 });
  }
  // the reference rule is not: the same x 7 moves its curve
  const ref = await rankLayer(l, { sigma: 'reference', backend: 'ts', maxSelect: 2 });
  const ref7 = await rankLayer(l7, { sigma: 'reference', backend: 'ts', maxSelect: 2 });
  assert.ok(Math.abs(ref7.cmi[0] - ref.cmi[0]) > 1e-6, 'reference rule: scaling changes the curve');
});

test("'mean' does not saturate where the sum rule does: every prefix kernel's off-diagonal median stays >= exp(-median_ij max_c D_c / (2 sigma^2)), the curve stays above the noise floor", async (t) => {
  // SPEC section 8's setting, smaller: unit-scale activations (no ReLU), 8x8 maps. N = 63 makes the
  // number of pairs (1953) odd, so a median is one entry.
  const n = 63;
  const c = 16;
  const hw = 64;
  const l = layer(31, n, c, hw, 4, 1, 0.4, false);
  const alpha = 1.01;

  // Derived bound. mean_{c in S} D_c[i,j] <= max_c D_c[i,j] for every S and pair, and the median is
  // monotone, so median_ij K_S[i,j] = exp(-median_ij mean_S D_c / 2 sigma^2) >= exp(-median_ij max_c D_c / 2 sigma^2)
  // =: bound, for every set size. 2 sigma^2 = median_ij (1/C) sum_c D_c, computed here from the
  // definition (not by the code under test).
  const dist = Array.from({ length: c }, (_, f) => squaredDistances(l.maps.data, n, hw, f * hw, c * hw));
  const meanDist = new Float64Array(n * n);
  const maxDist = new Float64Array(n * n);
  for (const d of dist) {
    for (let i = 0; i < d.length; i++) {
      meanDist[i] += d[i] / c;
      maxDist[i] = Math.max(maxDist[i], d[i]);
    }
  }
  const twoSigma2 = offDiagonalMedian(meanDist, n);
  const bound = Math.exp(-offDiagonalMedian(maxDist, n) / twoSigma2);
  assert.ok(bound > 0.1, `bound ${bound}`);

  const mean = await rankLayer(l, { sigma: 'mean', alpha, backend: 'ts' });
  assertClose([2 * mean.sigma.maps ** 2], [twoSigma2], "the rule's width is 2 sigma^2 = median of the mean distance", { abs: 1e-12 * twoSigma2 });
  const meanRuleOf = await meanRule(tsBackend, n, alpha, { data: l.maps.data, c, hw, sigma: mean.sigma.maps }, []);
  const meanKernels = prefixKernels(meanRuleOf, [...mean.order, ...mean.remaining]);
  meanKernels.forEach((k, i) => {
    const med = offDiagonalMedian(k, n);
    assert.ok(med >= bound * (1 - 1e-12), `mean rule, ${i + 1} filters: off-diagonal median ${med} < bound ${bound}`);
  });
  // all C filters: the median exponent is exactly 1
  assertClose([offDiagonalMedian(meanKernels[c - 1], n)], [Math.exp(-1)], 'median of K_all', { abs: 1e-12 });
  // the curve does not collapse: every pick wins by more than the noise floor
  assert.equal(mean.noiseFloorStep, null);
  mean.margins.forEach((m, i) => assert.ok(m !== null && m > mean.noiseFloor[i], `mean rule step ${i}: margin ${m} <= floor ${mean.noiseFloor[i]}`));

  // the paper's rule on the same layer: the joint kernel goes to I/N and the order to round-off
  const ref = await rankLayer(l, { sigma: 'reference', alpha, backend: 'ts' });
  const refRule = await productRule(tsBackend, n, alpha, { data: l.maps.data, c, hw, sigma: referenceSigma(n, hw) }, []);
  const refMedians = prefixKernels(refRule, [...ref.order, ...ref.remaining]).map((k) => offDiagonalMedian(k, n));
  t.diagnostic(`off-diagonal medians of the prefix kernels: reference rule ${refMedians.map((v) => v.toExponential(1)).join(' ')}`);
  t.diagnostic(`mean rule ${meanKernels.map((k) => offDiagonalMedian(k, n).toFixed(3)).join(' ')} (bound ${bound.toFixed(3)})`);
  t.diagnostic(`noise-floor steps: reference ${ref.noiseFloorStep}, mean ${mean.noiseFloorStep}`);
  assert.ok(refMedians[c - 1] < 1e-6, `reference rule, all filters: off-diagonal median ${refMedians[c - 1]}`);
  assert.notEqual(ref.noiseFloorStep, null, 'the reference rule reaches the noise floor on this layer');
  assert.ok(ref.noiseFloorStep! < c / 2, `reference noise-floor step ${ref.noiseFloorStep}`);
});

test("'mean' gets its own checkpoint and criterion keys", () => {
  const parts: CheckpointKeyParts = {
    version: '3',
    model: 'm',
    sample: 's',
    alpha: 2,
    log2: false,
    maxSelect: null,
    greedyTail: false,
    sigma: 'mean',
    permutationTest: null,
    mean: [0],
    std: [1],
  };
  const keys = new Set((['reference', 'median', 'mean'] as const).map((sigma) => checkpointKey({ ...parts, sigma })));
  assert.equal(keys.size, 3);
  const crit = (sigma: 'median' | 'mean') => cmiCriterion({ alpha: 2, sigma, samples: 256, seed: 0, threads: 1 }).key;
  assert.notEqual(crit('mean'), crit('median'));
  assert.match(crit('mean'), /sigma=mean/);
});

test('cmiprune rank --sigma mean: the rule and its width in the output; an unknown rule is refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cmiprune-sigma-mean-'));
  const l = layer(41, 24, 5, 4, 3);
  await writeNpy(join(dir, 'maps.npy'), [24, 5, 2, 2], Float32Array.from(l.maps.data));
  await writeNpy(join(dir, 'labels.npy'), [24], BigInt64Array.from(Array.from(l.labels, (v) => BigInt(v))));
  const run = (sigma: string) =>
    spawnSync(process.execPath, [CLI, 'rank', '--activations', join(dir, 'maps.npy'), '--labels', join(dir, 'labels.npy'), '--backend', 'ts', '--sigma', sigma], {
      encoding: 'utf8',
      env: { ...process.env, CMIPRUNE_NO_PROGRESS: '1' },
    });
  const r = run('mean');
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { order: number[]; sigma: { rule: string; maps: number }; rules: { sigma: string } };
  assert.equal(out.sigma.rule, 'mean');
  assert.match(out.rules.sigma, /mean rule/);
  const direct = await rankLayer({ ...l, maps: { ...l.maps, data: Float32Array.from(l.maps.data) } }, { sigma: 'mean', backend: 'ts' });
  assert.deepEqual(out.order, direct.order);
  assertClose([out.sigma.maps], [direct.sigma.maps], 'width', { abs: 0 });
  const bad = run('widest');
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /--sigma.*reference, median, mean/);
  assert.equal(bad.stdout, '');
});
