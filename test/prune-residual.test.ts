// Pruning across residual Adds (--residual all): coupled channel spaces, their surgery (exact
// against the masked model without padding, option-A and option-B shortcuts), the Pad's new
// padding, costs, criteria and plans of coupled groups.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'node:test';
import { resnetCifar } from '../src/ir/builder.js';
import type { Model } from '../src/ir/model.js';
import { inferShapes, modelCost } from '../src/ir/shapes.js';
import { exportOnnx } from '../src/onnx/index.js';
import { costModel } from '../src/prune/cost.js';
import { l1Criterion } from '../src/prune/criteria.js';
import { channelGroups, keptChannels, stratifiedOrder, uniformRankings } from '../src/prune/groups.js';
import { applyPlan, foldingNotes, maskPlan } from '../src/prune/surgery.js';
import { sweep } from '../src/pipeline/sweep.js';
import type { ChannelGroup, PruningPlan } from '../src/prune/types.js';
import { addonSkip } from './support/addon.js';
import { GraphBuilder } from './support/graph.js';
import { writeImageFolder } from './support/images.js';
import { runOrt } from './support/ort.js';
import { randn, randomizeBatchNorm, randomSource, Rng } from './support/random.js';
import { maxAbsDiff, referenceForward } from './support/reference.js';

/** ResNet-8 (one block per stage) with 1x1 convs (no padding: folding is exact) and BN away from identity. */
function residualNet(shortcut: 'A' | 'B', seed: number, depth = 8): Model {
  const m = resnetCifar({ random: randomSource(seed) }, { depth, shortcut, kernel: 1 });
  return randomizeBatchNorm(m, new Rng(seed + 1), { weight: [0.5, 1.5], bias: [-0.5, 0.5], mean: [-0.3, 0.3], var: [0.5, 1.5] });
}

/** A seeded keep list of a group: about `fraction` of its channels, at least one in every tensor it touches. */
function randomKeep(g: ChannelGroup, fraction: number, seed: number): number[] {
  const order = Array.from(new Rng(seed).permutation(g.channels));
  return keptChannels(order, Math.max(1, Math.round(fraction * g.channels)), g);
}

const N = 2;
const x = randn(new Rng(99), N * 3 * 32 * 32);
const logits = (m: Model) => referenceForward(m, x, [N, 3, 32, 32]).outputs[m.outputs[0]!]!.data;

test('option A: the residual stream of every stage is one coupled group of 64 channels, Pads included', () => {
  const m = residualNet('A', 1);
  const inner = channelGroups(m, 'inner');
  // inner: the stem and each block's second conv reach an Add; only the blocks' first convs are prunable
  assert.deepEqual(
    inner.filter((g) => g.prunable).map((g) => g.name),
    ['/layer1/layer1.0/conv1/Conv', '/layer2/layer2.0/conv1/Conv', '/layer3/layer3.0/conv1/Conv'],
  );
  assert.match(inner.find((g) => g.name === '/conv1/Conv')!.reason!, /\(Add\) couples these channels .*--residual all/);
  const all = channelGroups(m, 'all');
  const stream = all.find((g) => g.coupled)!;
  assert.equal(all.filter((g) => g.coupled).length, 1);
  assert.equal(stream.name, '/conv1/Conv');
  assert.ok(stream.prunable, stream.reason);
  // stage 3's 64 channels; stage 2 sits at 16..47 (its Pad adds 16 on each side), stage 1 at 24..39
  assert.equal(stream.channels, 64);
  assert.deepEqual(stream.coupled!.convs, ['/conv1/Conv', '/layer1/layer1.0/conv2/Conv', '/layer2/layer2.0/conv2/Conv', '/layer3/layer3.0/conv2/Conv']);
  const at = (node: string, slot: string) => stream.members.find((mm) => mm.node === node && mm.slot === slot)!;
  assert.deepEqual([at('/conv1/Conv', 'weight').offset, at('/conv1/Conv', 'weight').width], [24, 16]);
  assert.deepEqual([at('/layer2/layer2.0/conv2/Conv', 'weight').offset, at('/layer2/layer2.0/conv2/Conv', 'weight').width], [16, 32]);
  assert.deepEqual([at('/layer3/layer3.0/conv2/Conv', 'weight').offset, at('/layer3/layer3.0/conv2/Conv', 'weight').width], [0, 64]);
  // every block's first conv reads the stream (axis 1), and so does the classifier
  assert.deepEqual(stream.consumers, ['/layer1/layer1.0/conv1/Conv', '/layer2/layer2.0/conv1/Conv', '/layer3/layer3.0/conv1/Conv', '/linear/Gemm']);
  // the criteria read the last Add's output after its ReLU
  assert.equal(stream.tap, '/layer3/layer3.0/Relu_1_output_0');
});

for (const shortcut of ['A', 'B'] as const) {
  test(`option ${shortcut}: pruning coupled groups equals the masked model (removed filters zeroed in every conv of the group), onnxruntime agrees`, async () => {
    const m = residualNet(shortcut, 3);
    const groups = channelGroups(m, 'all').filter((g) => g.prunable);
    // option B: a 1x1 conv shortcut separates the stages: one coupled group per stage
    assert.equal(groups.filter((g) => g.coupled).length, shortcut === 'A' ? 1 : 3);
    const plan: PruningPlan = { keep: Object.fromEntries(groups.map((g, i) => [g.name, randomKeep(g, 0.6, 10 + i)])) };
    const pruned = applyPlan(m, plan);
    const masked = maskPlan(m, plan);
    const y = logits(pruned);
    assert.ok(maxAbsDiff(y, logits(masked)) < 1e-4, `pruned vs masked ${maxAbsDiff(y, logits(masked))}`);
    assert.ok(maxAbsDiff(y, logits(m)) > 1e-2, 'the plan removed something that mattered');
    assert.deepEqual(
      foldingNotes(m, plan).flatMap((f) => f.inexactAt),
      [],
    );
    // every Add meets equal widths, and the stream keeps exactly the plan's channels at each stage
    const shapes = inferShapes(pruned, 1);
    for (const g of groups.filter((gg) => gg.coupled)) {
      for (const mm of g.members.filter((mm) => mm.role === 'out' && mm.slot === 'weight')) {
        const conv = pruned.nodes.find((n) => n.name === mm.node)!;
        const kept = plan.keep[g.name]!.filter((j) => j >= mm.offset && j < mm.offset + mm.width).length;
        assert.equal(shapes.get(conv.outputs[0]!)![1], kept, mm.node);
      }
    }
    if (shortcut === 'A') {
      // each Pad now adds as many channels on each side as the plan keeps of those it added
      const keep = plan.keep['/conv1/Conv']!;
      const pads = pruned.nodes.filter((n) => n.op === 'Pad').map((n) => (n.op === 'Pad' ? [n.attrs.pads[1], n.attrs.pads[5]] : []));
      const count = (lo: number, hi: number) => keep.filter((j) => j >= lo && j < hi).length;
      assert.deepEqual(pads, [
        [count(16, 24), count(40, 48)],
        [count(0, 16), count(48, 64)],
      ]);
    }
    const ort = await runOrt(exportOnnx(pruned), 'input', x, [N, 3, 32, 32]);
    assert.ok(maxAbsDiff(ort, y) < 1e-4, `onnxruntime vs reference ${maxAbsDiff(ort, y)}`);
    // costs: exact for plans that keep a prefix of an order the cost model is given
    const cm = costModel(m, groups, new Map(groups.map((g, i) => [g.name, { order: Array.from(new Rng(10 + i).permutation(g.channels)) }])));
    const counts = Object.fromEntries(groups.map((g, i) => [g.name, Math.max(1, Math.round(0.6 * g.channels))] as const).map(([k, v], i) => [k, v + 0 * i]));
    const est = cm.of(counts);
    const real = modelCost(pruned);
    assert.deepEqual([est.params, est.macs], [real.params, real.macs]);
  });
}

test('a plan that would empty one stage of a coupled group is refused naming the node; keptChannels prevents it', () => {
  const m = residualNet('A', 5);
  const stream = channelGroups(m, 'all').find((g) => g.coupled)!;
  // classes 0..15 and 48..63 are stage 3's own (its shortcut pads zeros there): stage 1 keeps nothing
  const outer = [...Array.from({ length: 16 }, (_, i) => i), ...Array.from({ length: 16 }, (_, i) => 48 + i)];
  assert.throws(() => applyPlan(m, { keep: { '/conv1/Conv': outer } }), /keeps none of channels 24..39, all that node '\/conv1\/Conv' carries/);
  // an order ranking those first: the prefix gains the best-ranked channel of each emptied range
  // (24, the first of stage 1's range, lies in stage 2's as well)
  const order = [...outer, ...Array.from({ length: 32 }, (_, i) => 16 + i)];
  const kept = keptChannels(order, 4, stream);
  assert.deepEqual(kept, [0, 1, 2, 3, 24]);
  assert.deepEqual(keptChannels([...outer, 17, 40, 33], 3, stream), [0, 1, 2, 33]);
  assert.doesNotThrow(() => applyPlan(m, { keep: { '/conv1/Conv': kept } }));
  // a plain group's prefix is the prefix
  assert.deepEqual(keptChannels([5, 2, 9], 2), [2, 5]);
});

test('uniform orders: every prefix of a coupled group takes each stratum in proportion, best first; every conv of the stream loses the same fraction', () => {
  const m = residualNet('A', 5);
  const groups = channelGroups(m, 'all');
  const stream = groups.find((g) => g.coupled)!;
  // an order that ranks stage 1's channels (24..39) last: its plain prefixes would cut stage 1 first
  const stage1 = (j: number) => j >= 24 && j < 40;
  const stage2only = (j: number) => (j >= 16 && j < 24) || (j >= 40 && j < 48);
  const order = [...Array.from({ length: 64 }, (_, j) => 63 - j).filter((j) => !stage1(j)), ...Array.from({ length: 16 }, (_, i) => 24 + i)];
  const s = stratifiedOrder(order, stream);
  assert.deepEqual([...s].sort((a, b) => a - b), Array.from({ length: 64 }, (_, j) => j), 'a permutation of the channels');
  // within a stratum, the criterion's order
  for (const inStratum of [stage1, stage2only, (j: number) => !stage1(j) && !stage2only(j)]) assert.deepEqual(s.filter(inStratum), order.filter(inStratum));
  // every prefix holds each stratum (16, 16, 32 channels) to within one of its share
  for (let k = 1; k <= 64; k++) {
    const p = s.slice(0, k);
    for (const [inStratum, n] of [[stage1, 16], [stage2only, 16]] as const) assert.ok(Math.abs(p.filter(inStratum).length - (k * n) / 64) < 1, `k=${k}`);
  }
  // so every conv writing the stream keeps the same fraction of what it carries: half at k = 32
  const plan: PruningPlan = { keep: { [stream.name]: keptChannels(s, 32, stream) } };
  const pruned = applyPlan(m, plan);
  const width = (model: Model, conv: string) => (model.nodes.find((n) => n.name === conv)!.attrs as { outChannels: number }).outChannels;
  for (const conv of stream.coupled!.convs) assert.equal(width(pruned, conv), width(m, conv) / 2, conv);
  // the plain order's prefix of 32 would have kept none of stage 1's channels but keptChannels' one
  assert.equal(width(applyPlan(m, { keep: { [stream.name]: keptChannels(order, 32, stream) } }), '/conv1/Conv'), 1);
  // uniformRankings: coupled groups' orders stratified, other groups' untouched
  const rankings = new Map(groups.filter((g) => g.prunable).map((g) => [g.name, { group: g.name, channels: g.channels, order: g === stream ? order : Array.from({ length: g.channels }, (_, j) => g.channels - 1 - j) }]));
  const u = uniformRankings(rankings, groups);
  for (const g of groups.filter((x) => x.prunable)) assert.deepEqual(u.get(g.name)!.order, g === stream ? s : rankings.get(g.name)!.order, g.name);
  assert.deepEqual(rankings.get(stream.name)!.order, order, 'the input is not changed');
});

test('L1 of a coupled channel sums the filters of every conv writing it', async () => {
  const m = residualNet('A', 7);
  const stream = channelGroups(m, 'all').find((g) => g.coupled)!;
  const [r] = await l1Criterion.rank(m, [stream], undefined as never);
  const l1 = (conv: string, c: number) => {
    const w = m.tensors[(m.nodes.find((n) => n.name === conv)!.params as Record<string, string>).weight!]!;
    const per = w.data.length / w.shape[0]!;
    let s = 0;
    for (let k = c * per; k < (c + 1) * per; k++) s += Math.abs(w.data[k]!);
    return s;
  };
  const scores = (r!.evidence as { l1: number[] }).l1;
  // class 30: stage 1's channel 6, stage 2's 14, stage 3's 30; class 5: stage 3's only
  const c30 = l1('/conv1/Conv', 6) + l1('/layer1/layer1.0/conv2/Conv', 6) + l1('/layer2/layer2.0/conv2/Conv', 14) + l1('/layer3/layer3.0/conv2/Conv', 30);
  assert.ok(Math.abs(scores[30]! - c30) < 1e-4 * c30);
  assert.ok(Math.abs(scores[5]! - l1('/layer3/layer3.0/conv2/Conv', 5)) < 1e-6);
});

test('--residual inner leaves every Add its width', () => {
  const m = residualNet('B', 9);
  const groups = channelGroups(m, 'inner').filter((g) => g.prunable);
  assert.ok(groups.every((g) => !g.coupled && /\/conv1\/Conv$/.test(g.name) && g.name.startsWith('/layer')));
  const pruned = applyPlan(m, { keep: Object.fromEntries(groups.map((g, i) => [g.name, randomKeep(g, 0.5, i)])) });
  const before = inferShapes(m, 1);
  const after = inferShapes(pruned, 1);
  for (const n of m.nodes.filter((nn) => nn.op === 'Add')) assert.deepEqual(after.get(n.outputs[0]!), before.get(n.outputs[0]!), n.name);
  assert.ok(maxAbsDiff(logits(pruned), logits(maskPlan(m, { keep: Object.fromEntries(groups.map((g, i) => [g.name, randomKeep(g, 0.5, i)])) }))) < 1e-4);
});

/** Pruned vs masked logits (and vs the unpruned ones) of a small graph built with GraphBuilder, on a seeded batch. */
function prunedVsMasked(m: Model, plan: PruningPlan, inShape: number[]): { masked: number; original: number } {
  const xs = randn(new Rng(5), 2 * inShape.reduce((a, b) => a * b, 1));
  const run = (mm: Model) => {
    const r = referenceForward(mm, xs, [2, ...inShape]);
    return mm.outputs.map((o) => r.outputs[o]!.data);
  };
  const p = run(applyPlan(m, plan));
  const diff = (ys: Float64Array[]) => Math.max(...p.map((v, i) => maxAbsDiff(v, ys[i]!)));
  return { masked: diff(run(maskPlan(m, plan))), original: diff(run(m)) };
}

test('pre-activation block: a bias-free conv writing the stream gets a folded bias, sliced with its filters', () => {
  // x = c0(input); y = c2(relu(bn2(c1(relu(bn1(x)))))); x + y. c1's removed filters emit
  // relu(bn2(0)) != 0, folded into c2, which has no bias and no BN after it: surgery creates
  // c2's bias, and c2 loses the stream's removed filters too (it used to keep a full-length bias:
  // "parameter 'bias' has shape [4], expected [3]")
  const b = new GraphBuilder(new Rng(8));
  const s = b.conv('c0', 'input', 3, 4, 1, { bias: false });
  const h = b.simple('Relu', 'r2', b.bn('bn2', b.conv('c1', b.simple('Relu', 'r1', b.bn('bn1', s, 4)), 4, 4, 1, { bias: false }), 4));
  const a = b.add('add', s, b.conv('c2', h, 4, 4, 1, { bias: false }));
  const m = b.model('preact', [3, 6, 6], b.linear('fc', b.flatten('fl', b.simple('GlobalAvgPool', 'gap', b.simple('Relu', 'r3', b.bn('bn3', a, 4)))), 4, 3));
  const groups = channelGroups(m, 'all');
  assert.deepEqual(groups.map((g) => [g.name, g.prunable, g.coupled?.convs ?? null]), [['c0', true, ['c0', 'c2']], ['c1', true, null]]);
  const plan: PruningPlan = { keep: { c0: [0, 2, 3], c1: [1, 2] } };
  const pruned = applyPlan(m, plan);
  const c2 = pruned.nodes.find((n) => n.name === 'c2')!;
  assert.deepEqual(pruned.tensors[(c2.params as Record<string, string>).bias!]!.shape, [3]);
  const d = prunedVsMasked(m, plan, [3, 6, 6]);
  assert.ok(d.masked < 1e-6, `pruned vs masked ${d.masked}`);
  assert.ok(d.original > 1e-2, 'the plan removed something that mattered');
});

test('sweep --residual all: global budgets remove what they say (the cost model follows each criterion\'s orders)', { skip: addonSkip }, async () => {
  // option A: L1 ranks the middle classes (carried by every stage, so summed over more convs)
  // first, so a coupled group's early stages keep more than their share. A cost model without the
  // orders removed 37% of the filters for filters:0.5 and 30% of the MACs for flops:0.5.
  const dir = await mkdtemp(join(tmpdir(), 'cmiprune-residual-sweep-'));
  const cache = process.env.CMIPRUNE_CACHE;
  process.env.CMIPRUNE_CACHE = join(dir, 'cache');
  try {
    const m = residualNet('A', 11);
    m.metadata = { mean: '[0.5,0.5,0.5]', std: '[0.25,0.25,0.25]' };
    await writeFile(join(dir, 'r8.onnx'), exportOnnx(m));
    writeImageFolder(join(dir, 'images'), { classes: Array.from({ length: 10 }, (_, i) => `c${i}`), perClass: { train: 3, test: 1 }, width: 32, height: 32, seed: 2 });
    const budgets = ['filters:0.5', 'params:0.5', 'flops:0.5'];
    const s = await sweep({ model: join(dir, 'r8.onnx'), data: join(dir, 'images'), criteria: ['l1'], budgets, residual: 'all', samples: 10, bnImages: 0, threads: 1, out: join(dir, 'out') });
    const removed = s.points.map((p) => [p.budget, p.removed]);
    for (const [i, p] of s.points.entries()) {
      const [kind, fraction] = budgets[i]!.split(':') as ['filters' | 'params' | 'flops', string];
      const got = p.removed[kind === 'flops' ? 'macs' : kind];
      assert.ok(got >= Number(fraction) && got < Number(fraction) + 0.05, `${budgets[i]}: removed ${got} (${JSON.stringify(removed)})`);
    }
  } finally {
    if (cache === undefined) delete process.env.CMIPRUNE_CACHE;
    else process.env.CMIPRUNE_CACHE = cache;
    await rm(dir, { recursive: true, force: true });
  }
});

test('--residual inner names the Add each conv\'s own channels reach, not the first Add of its stream', () => {
  // a stream's convs share one channel space; the refusal used to name that space's first Add
  // ('/layer1/layer1.0/Add') for every conv of it, e.g. for '/layer3/layer3.1/conv2/Conv'
  for (const shortcut of ['A', 'B'] as const) {
    const m = resnetCifar({ random: randomSource(4) }, { depth: 14, shortcut, kernel: 1 });
    for (const g of channelGroups(m, 'inner').filter((gg) => !gg.prunable)) {
      const block = /^\/(layer\d\/layer\d\.\d)\//.exec(g.name)?.[1] ?? 'layer1/layer1.0'; // the stem's channels reach the first block's Add
      assert.match(g.reason!, new RegExp(`^node '/${block.replace('.', '\\.')}/Add' \\(Add\\) couples these channels`), `${shortcut} ${g.name}: ${g.reason}`);
    }
  }
});

for (const [shortcut, depth] of [['A', 14], ['B', 20]] as const) {
  test(`option ${shortcut}, ResNet-${depth} (several blocks per stage): pruned = masked, and costs from the orders = modelCost even where keptChannels adds channels`, () => {
    const m = residualNet(shortcut, depth, depth);
    const groups = channelGroups(m, 'all').filter((g) => g.prunable);
    const rng = new Rng(depth);
    for (let trial = 0; trial < 3; trial++) {
      const orders = new Map(groups.map((g) => [g.name, { order: Array.from(rng.permutation(g.channels)) }]));
      // trial 0 keeps 1 channel of each coupled group: every stage whose range misses it gains one
      const counts = Object.fromEntries(groups.map((g) => [g.name, g.coupled && trial === 0 ? 1 : 1 + Math.floor(rng.next() * g.channels)]));
      const plan: PruningPlan = { keep: Object.fromEntries(groups.map((g) => [g.name, keptChannels(orders.get(g.name)!.order, counts[g.name]!, g)])) };
      if (trial === 0 && shortcut === 'A') assert.ok(groups.some((g) => g.coupled && plan.keep[g.name]!.length > 1), 'keptChannels added channels');
      const pruned = applyPlan(m, plan);
      const d = maxAbsDiff(logits(pruned), logits(maskPlan(m, plan)));
      assert.ok(d < 1e-4, `pruned vs masked ${d}`);
      const est = costModel(m, groups, orders).of(counts);
      const real = modelCost(pruned);
      const filters = pruned.nodes.reduce((sum, n) => sum + (n.op === 'Conv2d' ? n.attrs.outChannels : 0), 0);
      assert.deepEqual([est.params, est.macs, est.filters], [real.params, real.macs, filters]);
    }
  });
}

test('a Pad that only pads spatially carries channels like a passthrough: its conv stays a plain prunable group, folding there is border-inexact', () => {
  const g = new GraphBuilder(new Rng(31));
  const p = g.pad('border', g.conv('c0', 'input', 3, 5, 1), [0, 0, 1, 1, 0, 0, 1, 1]);
  const m = g.model('padded', [3, 6, 6], g.linear('fc', g.flatten('flat', g.conv('c1', p, 5, 4, 3)), 4 * 6 * 6, 3));
  for (const mode of ['inner', 'all'] as const) {
    const c0 = channelGroups(m, mode).find((x) => x.name === 'c0')!;
    assert.ok(c0.prunable, c0.reason);
    assert.equal(c0.coupled, undefined);
    assert.equal(c0.tap, 'c0');
  }
  const plan = { keep: { c0: [0, 2, 3] } };
  assert.deepEqual(inferShapes(applyPlan(m, plan), 1).get('border'), [1, 3, 8, 8]);
  // c0's bias makes the removed maps non-zero constants, which the zero border breaks
  assert.deepEqual(foldingNotes(m, plan).find((f) => f.group === 'c0')!.inexactAt, ['border']);
});
