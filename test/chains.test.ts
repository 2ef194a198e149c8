// rankChains (src/cmi/rank-chains.ts): the cross-layer formulations against the naive reference with
// the same conditioning sets, resume after an interrupted run, and concurrent bidirectional chains.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { collectActivations, type LayerActivations } from '../src/activations/collect.js';
import { packedSize } from '../src/cmi/backend.js';
import { naiveOrder } from '../src/cmi/naive.js';
import { loadLinalg, nativeBackend } from '../src/cmi/native.js';
import type { MapsTensor } from '../src/cmi/rank.js';
import type { ImageDataset } from '../src/data/dataset.js';
import { TorchModel } from '../src/engine/index.js';
import { SequentialBuilder } from '../src/ir/builder.js';
import { convUnits, type ConvUnit } from '../src/ir/graph.js';
import type { Model } from '../src/ir/model.js';
import { chainCheckpointKey, rankChains, type ChainsResult, type Formulation, type PruneOrder } from '../src/cmi/rank-chains.js';
import { rankConvUnits, type LayerRanking } from '../src/cmi/rank-model.js';
import { Rng } from '../src/util/rng.js';
import { randomImages } from './support/images.js';
import { addonSkip } from './support/addon.js';

process.env.CMIPRUNE_NO_PROGRESS = '1';

const norm = { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] };

/** four conv layers (5, 6, 4, 5 filters; 4x4, 4x4, 2x2, 2x2 maps) and 24 random 3x8x8 images of 4 classes */
function net(): { model: Model; units: ConvUnit[]; sample: ImageDataset } {
  const rng = new Rng(5);
  const model = new SequentialBuilder('chains', [3, 8, 8], { random: () => rng.next() })
    .conv(5, 3, { padding: 1, stride: 2 })
    .bn()
    .relu()
    .conv(6, 3, { padding: 1 })
    .relu()
    .conv(4, 3, { padding: 1, stride: 2 })
    .bn()
    .relu()
    .conv(5, 3, { padding: 1 })
    .relu()
    .flatten()
    .linear(4)
    .build();
  return { model, units: convUnits(model), sample: randomImages(rng, 24, [3, 8, 8], 4, 'chains') };
}

/** keeps per layer: pruning fractions 0.4, 0.67, 0.25, 0.4, so the bidirectional start is layer 1 */
const KEEP = [3, 2, 3, 3];
const fixedDecide = (units: ConvUnit[]) => async (u: ConvUnit) => KEEP[units.findIndex((v) => v.name === u.name)]!;

/**
 * The conditioning each mode must use, written out by hand (layer indices, in order): forward chains
 * 0 -> 1 -> 2 -> 3; bidirectional from the start layer 1: forward 2 -> 3, backward 0.
 */
const EXPECTED: Record<string, { pruneOrder: number[]; cond: number[][]; chain: string[] }> = {
  'per-layer/forward': { pruneOrder: [0, 1, 2, 3], cond: [[], [], [], []], chain: ['independent', 'independent', 'independent', 'independent'] },
  'per-layer/bidirectional': { pruneOrder: [0, 1, 2, 3], cond: [[], [], [], []], chain: ['independent', 'independent', 'independent', 'independent'] },
  'compact/forward': { pruneOrder: [0, 1, 2, 3], cond: [[], [0], [1], [2]], chain: ['start', 'forward', 'forward', 'forward'] },
  'full/forward': { pruneOrder: [0, 1, 2, 3], cond: [[], [0], [0, 1], [0, 1, 2]], chain: ['start', 'forward', 'forward', 'forward'] },
  'compact/bidirectional': { pruneOrder: [1, 2, 3, 0], cond: [[1], [], [1], [2]], chain: ['backward', 'start', 'forward', 'forward'] },
  'full/bidirectional': { pruneOrder: [1, 2, 3, 0], cond: [[1], [], [1], [1, 2]], chain: ['backward', 'start', 'forward', 'forward'] },
};

async function unprunedActivations(model: Model, units: ConvUnit[], sample: ImageDataset): Promise<LayerActivations[]> {
  const engine = TorchModel.create(model);
  try {
    return await collectActivations(engine, sample, units, { ...norm, batch: 64 });
  } finally {
    engine.dispose();
  }
}

/** channels `keep` of one layer's maps, [N, |keep|, HW], copied independently of the library */
function select(a: LayerActivations, keep: number[]): MapsTensor {
  const data = new Float32Array(a.n * keep.length * a.spatial);
  let q = 0;
  for (let i = 0; i < a.n; i++) {
    for (const c of keep) for (let p = 0; p < a.spatial; p++) data[q++] = a.maps[(i * a.channels + c) * a.spatial + p]!;
  }
  return { data, n: a.n, c: keep.length, hw: a.spatial };
}

test('chainCheckpointKey: the base key without conditioning; otherwise changes with the layers, their order and their kept channels', () => {
  const base = '0123456789abcdef';
  const a = { layer: 'conv0', index: 0, channels: 5, keepIndices: [0, 2, 3] };
  const b = { layer: 'conv3', index: 1, channels: 6, keepIndices: [1, 4] };
  assert.equal(chainCheckpointKey(base, []), base);
  const k = chainCheckpointKey(base, [a, b]);
  assert.match(k, /^[0-9a-f]{16}$/);
  assert.equal(chainCheckpointKey(base, [{ ...a }, { ...b, keepIndices: [1, 4] }]), k);
  assert.notEqual(chainCheckpointKey(base, [b, a]), k);
  assert.notEqual(chainCheckpointKey(base, [a]), k);
  assert.notEqual(chainCheckpointKey(base, [a, { ...b, keepIndices: [1, 5] }]), k);
  assert.notEqual(chainCheckpointKey('fedcba9876543210', [a, b]), k);
});

test('every formulation and order: each layer is ordered exactly as naiveOrder with the same conditioning set', { skip: addonSkip }, async () => {
  const { model, units, sample } = net();
  assert.equal(units.length, 4);
  const eig = loadLinalg().cmiEigvalsh;
  const acts = await unprunedActivations(model, units, sample);
  assert.deepEqual(acts.map((a) => [a.channels, a.spatial]), [[5, 16], [6, 16], [4, 4], [5, 4]]);

  for (const formulation of ['per-layer', 'compact', 'full'] as Formulation[]) {
    for (const order of ['forward', 'bidirectional'] as PruneOrder[]) {
      const mode = `${formulation}/${order}`;
      const exp = EXPECTED[mode]!;
      const r = await rankChains(model, units, sample, { ...norm, threads: 2, formulation, order, decide: fixedDecide(units) });
      assert.equal(r.formulation, formulation);
      assert.equal(r.order, order);
      assert.deepEqual(r.layers.map((l) => l.layer), units.map((u) => u.name), `${mode}: network order`);
      assert.deepEqual(r.layers.map((l) => l.chain), exp.chain, `${mode}: chains`);
      assert.equal(r.startLayer, formulation === 'per-layer' ? null : units[exp.pruneOrder[0]!]!.name, `${mode}: start layer`);

      // the reference, independently: naive greedy order of each layer in pruning order, B built
      // from the unpruned maps of the conditioning layers' kept channels
      const keptByNaive = new Map<number, number[]>();
      for (const k of exp.pruneOrder) {
        const before = exp.cond[k]!.map((j) => select(acts[j]!, keptByNaive.get(j)!));
        const a = acts[k]!;
        const naive = naiveOrder(
          { maps: { data: a.maps, n: a.n, c: a.channels, hw: a.spatial }, labels: sample.labels, classes: sample.classes, before },
          1.01,
          eig,
        );
        const full = [...naive.order, ...Array.from({ length: a.channels }, (_, i) => i).filter((i) => !naive.order.includes(i))];
        const kept = full.slice(0, KEEP[k]).sort((x, y) => x - y);
        keptByNaive.set(k, kept);
        const l = r.layers[k]!;
        assert.equal(l.noiseFloorStep, null, `${mode} layer ${k}: above the noise floor throughout (else the order comparison is meaningless)`);
        assert.deepEqual(l.conditionedOn, exp.cond[k]!.map((j) => units[j]!.name), `${mode} layer ${k}: conditioned on`);
        assert.deepEqual(l.order, naive.order, `${mode} layer ${k}: order`);
        l.scores.forEach((s, i) => assert.ok(Math.abs(s - naive.scores[i]!) <= 1e-9, `${mode} layer ${k} score ${i}: ${s} vs ${naive.scores[i]}`));
        assert.equal(l.keep, KEEP[k]);
        assert.deepEqual(l.keepIndices, kept, `${mode} layer ${k}: kept channels`);
        assert.deepEqual(l.conditioning.map((c) => c.keepIndices), exp.cond[k]!.map((j) => keptByNaive.get(j)!));
        assert.equal(l.sigma.before.length, exp.cond[k]!.length);
      }
      if (order === 'bidirectional' && formulation !== 'per-layer') {
        assert.deepEqual(r.chains.map((c) => [c.name, c.layers]), [
          ['per-layer', units.map((u) => u.name)],
          ['forward', [units[2]!.name, units[3]!.name]],
          ['backward', [units[0]!.name]],
        ]);
        assert.deepEqual(r.layers.map((l) => l.perLayerKeep), KEEP);
      }
    }
  }
});

test('an interrupted bidirectional run resumes from its checkpoints and gives the uninterrupted result', { skip: addonSkip }, async () => {
  const { model, units, sample } = net();
  const dir = await mkdtemp(join(tmpdir(), 'cmiprune-chains-'));
  const pick = (r: ChainsResult) => r.layers.map((l) => ({ layer: l.layer, order: l.order, remaining: l.remaining, keep: l.keep, keepIndices: l.keepIndices, on: l.conditionedOn, chain: l.chain }));
  try {
    const opts = { ...norm, threads: 2, formulation: 'full' as const, order: 'bidirectional' as const };
    const reference = await rankChains(model, units, sample, { ...opts, decide: fixedDecide(units) });

    // calls 1-4: the per-layer pass; 5 and 6: the first layer of each chain (concurrently)
    let calls = 0;
    const failing = async (u: ConvUnit, _l: LayerRanking) => {
      if (++calls === 5) throw new Error('killed');
      return fixedDecide(units)(u);
    };
    await assert.rejects(rankChains(model, units, sample, { ...opts, checkpointDir: dir, decide: failing }), /killed/);
    const files = (await readdir(dir)).sort();
    // 4 per-layer orderings (rankConvUnits's names) and both chains' first layers; layer 3 never started
    assert.equal(files.length, 6, files.join(' '));
    assert.equal(files.filter((f) => /^layer-\d{3}\.json$/.test(f)).length, 4);
    assert.ok(files.some((f) => /^layer-000-[0-9a-f]{16}\.json$/.test(f)) && files.some((f) => /^layer-002-[0-9a-f]{16}\.json$/.test(f)));

    // the per-layer orderings are rankConvUnits's own checkpoints
    const perLayer = await rankConvUnits(model, units, sample, { ...norm, checkpointDir: dir });
    assert.deepEqual(perLayer.layers.map((l) => l.resumed), [true, true, true, true]);
    assert.deepEqual(perLayer.layers[1]!.order, reference.layers[1]!.order, 'the start layer keeps its per-layer ordering');

    let decided = 0;
    const resumed = await rankChains(model, units, sample, { ...opts, checkpointDir: dir, decide: async (u) => (decided++, fixedDecide(units)(u)) });
    assert.deepEqual(pick(resumed), pick(reference));
    assert.deepEqual(resumed.layers.map((l) => l.resumed), [true, true, true, false]);
    assert.equal(decided, 7, 'decide is still called on resumed layers (4 per-layer + 3 chained)');
    resumed.layers.forEach((l, i) => assert.deepEqual(l.cmi, reference.layers[i]!.cmi));

    // everything is checkpointed now; another cut-off changes the conditioning, so chained layers are recomputed
    const again = await rankChains(model, units, sample, { ...opts, checkpointDir: dir, decide: fixedDecide(units) });
    assert.deepEqual(again.layers.map((l) => l.resumed), [true, true, true, true]);
    const other = await rankChains(model, units, sample, {
      ...opts,
      checkpointDir: dir,
      decide: async (u) => (u.name === units[2]!.name ? 2 : fixedDecide(units)(u)),
    });
    // layer 2's per-layer keep drops from 3 to 2 (fraction 0.5 < 0.67): the start stays layer 1;
    // layers 0 and 2 condition only on layer 1 (resumed); layer 3 conditions on layer 2's new keep
    assert.deepEqual(other.layers.map((l) => l.resumed), [true, true, true, false]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('compact bidirectional: the forward and backward chains run concurrently, one thread each until one ends, with their own times', { skip: addonSkip }, async () => {
  const { model, units, sample } = net();
  // the first decide of each chain (layers 2 and 0) waits for the other chain's: run one after
  // the other, they could not both be in flight and the wait would time out
  const inFlight = new Set<string>();
  let overlapped = false;
  const waiters: (() => void)[] = [];
  const events: string[] = [];
  const decide = async (u: ConvUnit) => {
    const i = units.findIndex((v) => v.name === u.name);
    events.push(`decide ${i}`);
    if (events.length > 4 && (i === 0 || i === 2)) {
      const other = units[i === 0 ? 2 : 0]!.name;
      inFlight.add(u.name);
      if (inFlight.has(other)) {
        overlapped = true;
        waiters.splice(0).forEach((w) => w());
      } else {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 10_000);
          waiters.push(() => (clearTimeout(timer), resolve()));
        });
      }
      inFlight.delete(u.name);
      // the forward chain (layers 2, 3) goes on only after the backward chain (layer 0 alone) has
      // ended: its remaining steps are promise continuations, all run before the next macrotask
      if (i === 2) for (let k = 0; k < 3; k++) await new Promise<void>((resolve) => setImmediate(resolve));
    }
    return KEEP[i]!;
  };
  const r = await rankChains(model, units, sample, { ...norm, threads: 2, formulation: 'compact', order: 'bidirectional', decide });
  assert.ok(overlapped, `the two chains' first decisions overlapped (${events.join(', ')})`);
  const byName = new Map(r.chains.map((c) => [c.name, c]));
  assert.equal(byName.get('forward')!.threads, 1);
  assert.equal(byName.get('backward')!.threads, 1);
  // once the backward chain has ended, the forward chain's next layer gets both threads
  assert.deepEqual(byName.get('forward')!.threadsPerLayer, [1, 2]);
  assert.deepEqual(byName.get('backward')!.threadsPerLayer, [1]);
  for (const c of r.chains) assert.ok(c.seconds > 0 && c.seconds <= r.seconds, `${c.name}: ${c.seconds} s of ${r.seconds}`);
  assert.equal(r.startLayer, units[1]!.name);
});

test('the native entropy backend answers two concurrent requests exactly as two sequential ones', { skip: addonSkip }, async (t) => {
  const n = 160;
  const c = 16;
  const rng = new Rng(9);
  const be = nativeBackend(1);
  const maps = (seed: number) => Float32Array.from({ length: n * c * 4 }, () => rng.next() * seed);
  const req = async (m: Float32Array) => {
    const kernels = await be.filterKernels(m, n, c, 4, 1.5);
    assert.equal(kernels.length, c * packedSize(n));
    const labels = Float64Array.from({ length: n * n }, (_, k) => (Math.floor(k / n) % 3 === (k % n) % 3 ? 1 : 0.2));
    return { n, alpha: 1.01, base: null, other: labels, kernels, candidates: Int32Array.from({ length: c }, (_, i) => i) };
  };
  const [a, b] = [await req(maps(1)), await req(maps(2))];
  let s0 = performance.now();
  const ra = await be.entropies(a);
  const rb = await be.entropies(b);
  const sequential = performance.now() - s0;
  s0 = performance.now();
  const [ca, cb] = await Promise.all([be.entropies(a), be.entropies(b)]);
  const concurrent = performance.now() - s0;
  assert.deepEqual([...ca.entropy], [...ra.entropy]);
  assert.deepEqual([...ca.entropyOther!], [...ra.entropyOther!]);
  assert.deepEqual([...cb.entropy], [...rb.entropy]);
  assert.deepEqual([...cb.entropyOther!], [...rb.entropyOther!]);
  t.diagnostic(`two requests of ${c} candidates, N = ${n}, 1 thread each: sequential ${sequential.toFixed(1)} ms, concurrent ${concurrent.toFixed(1)} ms`);
});
