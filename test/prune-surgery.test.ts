// Channel groups, surgery and cost accounting on small graphs run by the float64 reference
// interpreter: the pruned model must compute what the unpruned one computes with the removed
// filters' weights zeroed (their constant folded), exactly without padding.
import assert from 'node:assert/strict';
import test from 'node:test';
import { type Model, OP_TYPES } from '../src/ir/model.js';
import { modelCost, inferShapes } from '../src/ir/shapes.js';
import { costModel } from '../src/prune/cost.js';
import { channelGroups, OP_RULES } from '../src/prune/groups.js';
import { applyPlan, foldingNotes, maskPlan, PLAN_METADATA_KEY } from '../src/prune/surgery.js';
import type { PruningPlan } from '../src/prune/types.js';
import { GraphBuilder } from './support/graph.js';
import { randn, Rng } from './support/random.js';
import { maxAbsDiff, referenceForward } from './support/reference.js';

/** conv(no pad) -> BN -> relu -> conv -> BN -> relu -> maxpool -> conv 1x1 -> relu -> flatten -> linear */
function plainNet(pad: number, seed = 1): Model {
  const g = new GraphBuilder(new Rng(seed));
  let x = g.conv('c1', 'input', 3, 13, 3, { pad });
  x = g.simple('Relu', 'r1', g.bn('b1', x, 13));
  x = g.conv('c2', x, 13, 37, 3, { pad, bias: false });
  x = g.simple('Relu', 'r2', g.bn('b2', x, 37));
  x = g.pool('MaxPool', 'p2', x, 2, 2);
  x = g.simple('Relu', 'r3', g.conv('c3', x, 37, 6, 1));
  x = g.flatten('f', x);
  const side = pad ? 5 : 3; // 10 -> 8 -> 6 -> 3 spatial (padded: 10 -> 10 -> 10 -> 5)
  const o = g.linear('fc', x, 6 * side * side, 5);
  // BN betas large enough that removed channels carry non-zero constants after the ReLU
  for (const b of ['b1', 'b2']) g.tensors[`${b}.bias`]!.data.forEach((_, i, a) => (a[i] = 0.3 + 0.05 * i));
  return g.model(`plain-pad${pad}`, [3, 10, 10], o);
}

const plan: PruningPlan = {
  keep: { c1: [0, 2, 3, 5, 8, 12], c2: Array.from({ length: 37 }, (_, i) => i).filter((i) => i % 3 !== 1), c3: [1, 4] },
};

function run(m: Model, x: Float32Array, taps: string[] = []) {
  return referenceForward(m, x, [2, 3, 10, 10], { taps });
}

test('groups: the rule table has exactly one rule per op of the IR, and VGG-like chains are prunable', () => {
  // OP_TYPES is the IR's runtime list of ops (complete at compile time, src/ir/model.ts)
  assert.deepEqual(Object.keys(OP_RULES).sort(), [...OP_TYPES].sort());
  for (const op of OP_TYPES) assert.ok(['producer', 'passthrough', 'consumer', 'flatten', 'couple'].includes(OP_RULES[op].role), op);
  const m = plainNet(0);
  const groups = channelGroups(m);
  assert.deepEqual(groups.map((g) => [g.name, g.channels, g.prunable]), [['c1', 13, true], ['c2', 37, true], ['c3', 6, true]]);
  assert.deepEqual(groups[0]!.consumers, ['c2']);
  // c3's channels reach the Linear through Flatten: each channel owns 3*3 features
  const fcIn = groups[2]!.members.find((x) => x.node === 'fc')!;
  assert.deepEqual([fcIn.axis, fcIn.span, fcIn.role], [1, 9, 'in']);
  assert.deepEqual(groups[1]!.members.filter((x) => x.node === 'b2').map((x) => x.slot), ['weight', 'bias', 'runningMean', 'runningVar']);
});

test('surgery without padding equals the masked model (removed filters zeroed, constants folded)', () => {
  const m = plainNet(0);
  const x = randn(new Rng(3), 2 * 3 * 100);
  const pruned = applyPlan(m, plan);
  const masked = maskPlan(m, plan);
  const want = run(masked, x).outputs.fc!;
  const got = run(pruned, x).outputs.fc!;
  const scale = Math.max(...want.data.map(Math.abs));
  // float32 storage of the folded biases is the only difference
  assert.ok(maxAbsDiff(got.data, want.data) <= 1e-5 * scale, `diff ${maxAbsDiff(got.data, want.data)}`);
  // the constants matter: without folding the logits move (guards against a no-op fold)
  const unfolded = applyPlan(m, plan);
  unfolded.tensors['b2.running_mean']!.data.set(plan.keep.c2!.map((k) => m.tensors['b2.running_mean']!.data[k]!));
  assert.ok(maxAbsDiff(run(unfolded, x).outputs.fc!.data, want.data) > 1e-3);
  // and the masked model is not the unpruned one
  assert.ok(maxAbsDiff(run(m, x).outputs.fc!.data, want.data) > 1e-3);
  assert.deepEqual(foldingNotes(m, plan).map((n) => n.inexactAt), [[], [], []]);
});

test('surgery shrinks every member tensor and attribute, records the plan, and leaves the input untouched', () => {
  const m = plainNet(0);
  const before = JSON.stringify(m.nodes) + m.tensors['c2.weight']!.data.join(',');
  const pruned = applyPlan(m, plan);
  assert.equal(JSON.stringify(m.nodes) + m.tensors['c2.weight']!.data.join(','), before);
  const node = (n: string) => pruned.nodes.find((x) => x.name === n)!;
  assert.deepEqual(pruned.tensors['c1.weight']!.shape, [6, 3, 3, 3]);
  assert.deepEqual(pruned.tensors['c2.weight']!.shape, [25, 6, 3, 3]);
  assert.deepEqual(pruned.tensors['b2.running_var']!.shape, [25]);
  assert.deepEqual(pruned.tensors['fc.weight']!.shape, [5, 2 * 9]);
  assert.equal((node('c2').attrs as { inChannels: number }).inChannels, 6);
  assert.equal((node('fc').attrs as { inFeatures: number }).inFeatures, 18);
  // c2 has no bias: c1's constants went into b2's running mean instead of a new parameter
  assert.equal((node('c2').params as Record<string, string>).bias, undefined);
  assert.notDeepEqual(Array.from(pruned.tensors['b2.running_mean']!.data), plan.keep.c2!.map((k) => m.tensors['b2.running_mean']!.data[k]));
  // kept slices are the original rows: filter 8 of c1 is row 4 of the pruned weight
  const w0 = m.tensors['c1.weight']!.data.subarray(8 * 27, 9 * 27);
  assert.deepEqual(Array.from(pruned.tensors['c1.weight']!.data.subarray(4 * 27, 5 * 27)), Array.from(w0));
  // fc keeps the features of channels 1 and 4 of c3 (9 each): pruned feature 13 is original 4*9+4
  const fcw = m.tensors['fc.weight']!;
  assert.equal(pruned.tensors['fc.weight']!.data[13], fcw.data[4 * 9 + 4]);
  assert.equal(pruned.tensors['fc.weight']!.data[18 + 2], fcw.data[54 + 1 * 9 + 2]);
  const meta = JSON.parse(pruned.metadata[PLAN_METADATA_KEY]!);
  assert.deepEqual(meta.kept, { c1: 6, c2: 25, c3: 2 });
  inferShapes(pruned);
});

test('surgery with zero padding: exact in the interior, only border pixels differ', () => {
  const m = plainNet(1, 4);
  const x = randn(new Rng(5), 2 * 3 * 100);
  const pruned = applyPlan(m, plan);
  const masked = maskPlan(m, plan);
  // after b2: c1's constants went into b2's running mean (c2 has no bias)
  const a = run(pruned, x, ['b2']).taps.b2!;
  const b = run(masked, x, ['b2']).taps.b2!;
  const [n, c, h, w] = a.shape as [number, number, number, number];
  const keep2 = plan.keep.c2!;
  let interior = 0;
  let border = 0;
  for (let i = 0; i < n; i++)
    for (let k = 0; k < c; k++)
      for (let y = 0; y < h; y++)
        for (let z = 0; z < w; z++) {
          const d = Math.abs(a.data[((i * c + k) * h + y) * w + z]! - b.data[((i * b.shape[1]! + keep2[k]!) * h + y) * w + z]!);
          if (y === 0 || z === 0 || y === h - 1 || z === w - 1) border = Math.max(border, d);
          else interior = Math.max(interior, d);
        }
  assert.ok(interior <= 1e-5, `interior ${interior}`);
  assert.ok(border > 1e-4, `border ${border}: padding should make the fold inexact there`);
  assert.deepEqual(foldingNotes(m, plan).find((f) => f.group === 'c1')!.inexactAt, ['c2']);
});

test('groups that reach an Add, a grouped conv or a model output are refused with the node named', () => {
  const g = new GraphBuilder(new Rng(2));
  const a = g.simple('Relu', 'ra', g.conv('ca', 'input', 3, 4, 3, { pad: 1 }));
  const b = g.conv('cb', a, 4, 4, 3, { pad: 1 });
  const s = g.add('sum', a, b);
  const d = g.conv('cd', s, 4, 4, 3, { pad: 1, groups: 2 });
  const e = g.conv('ce', d, 4, 3, 1);
  const m = g.model('res', [3, 6, 6], e);
  const groups = channelGroups(m);
  const by = new Map(groups.map((x) => [x.name, x]));
  assert.equal(by.get('ca')!.prunable, false);
  assert.match(by.get('ca')!.reason!, /'sum' \(Add\)/);
  assert.match(by.get('cb')!.reason!, /'sum' \(Add\)/);
  assert.match(by.get('cd')!.reason!, /'cd' \(Conv2d\) is a grouped conv/);
  assert.match(by.get('ce')!.reason!, /model output/);
  // surgery treats ca and cb as one coupled group (as --residual all does), which the grouped
  // conv reading their sum still refuses
  const all = channelGroups(m, 'all');
  assert.deepEqual(all.find((x) => x.name === 'ca')!.coupled, { convs: ['ca', 'cb'], couplers: ['sum'] });
  assert.ok(!all.some((x) => x.name === 'cb'));
  assert.throws(() => applyPlan(m, { keep: { ca: [0, 1] } }), /layer 'ca' cannot be pruned: node 'cd' \(Conv2d\) is a grouped conv/);
  assert.throws(() => applyPlan(m, { keep: { cb: [0, 1] } }), /layer 'cb' is coupled with the group 'ca' \(through sum\)/);
});

test('plans are validated: unknown layer, empty, unsorted, out of range', () => {
  const m = plainNet(0);
  assert.throws(() => applyPlan(m, { keep: { nope: [0] } }), /'nope' is not a conv layer/);
  assert.throws(() => applyPlan(m, { keep: { c1: [] } }), /keep no channel/);
  assert.throws(() => applyPlan(m, { keep: { c1: [3, 1] } }), /sorted and distinct/);
  assert.throws(() => applyPlan(m, { keep: { c1: [0, 13] } }), /outside 0..12/);
});

test('costModel matches modelCost of the surgically pruned model', () => {
  for (const pad of [0, 1]) {
    const m = plainNet(pad);
    const groups = channelGroups(m);
    const cm = costModel(m, groups);
    const full = modelCost(m);
    assert.deepEqual([cm.params, cm.macs], [full.params, full.macs]);
    const counts = Object.fromEntries(Object.entries(plan.keep).map(([k, v]) => [k, v.length]));
    const after = modelCost(applyPlan(m, plan));
    const est = cm.of(counts);
    assert.deepEqual([est.params, est.macs], [after.params, after.macs]);
    assert.ok(est.params < full.params * 0.6 && est.macs < full.macs * 0.6);
  }
});
