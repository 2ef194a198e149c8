// Anchored BatchNorm statistics (recover/bn.ts anchorBatchNorm): the trained statistics moved by
// the difference of two re-estimates, so re-estimation's own error on the original model is not
// passed on to the pruned one.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { setThreads } from '../src/engine/index.js';
import { SequentialBuilder } from '../src/ir/builder.js';
import { cloneModel, type Model } from '../src/ir/model.js';
import { channelGroups } from '../src/prune/groups.js';
import { applyPlan } from '../src/prune/surgery.js';
import type { PruningPlan } from '../src/prune/types.js';
import { anchorBatchNorm, chooseBnStats, reestimateBatchNorm } from '../src/recover/index.js';
import { UserError } from '../src/util/errors.js';
import { addonSkip } from './support/addon.js';
import { bnNodes } from './support/graph.js';
import { randomImages } from './support/images.js';
import { randomizeBatchNorm, Rng, randomSource } from './support/random.js';

if (!addonSkip) setThreads(2);

const NORM = { mean: [0.5, 0.45, 0.4], std: [0.25, 0.2, 0.3] };

/** 3x8x8 -> 5, odd widths, a BatchNorm1d after Flatten (a member of the last conv's group, 4 features per channel) */
function net(seed: number): Model {
  const b = new SequentialBuilder('anchornet', [3, 8, 8], { random: randomSource(seed) });
  b.conv(13, 3, { padding: 1, bias: false }).bn().relu();
  b.conv(37, 3, { padding: 1, bias: false }).bn().relu().maxpool(2); // 4x4
  b.conv(13, 3, { padding: 1 }).bn().relu().maxpool(2); // 2x2
  const m = b.flatten().bn().linear(5).build();
  return randomizeBatchNorm(m, new Rng(seed + 100), { weight: [0.5, 1.5], bias: [-0.5, 0.5], mean: [-1, 1], var: [0.5, 3] });
}

const data = randomImages(new Rng(5), 192, [3, 8, 8], 5);
const reestimate = async (m: Model) => (await reestimateBatchNorm(m, data, { ...NORM, images: 192, batch: 64, seed: 3 })).model;
const stats = (m: Model, name: string) => {
  const n = bnNodes(m).find((x) => x.name === name)!;
  return { mean: m.tensors[n.params.runningMean!]!.data, variance: m.tensors[n.params.runningVar!]!.data };
};

/**
 * The original's "trained" statistics made from its re-estimate with a known per-channel error:
 * mean + delta, variance x kappa. Returns the model and the error.
 */
async function trainedWithKnownError(seed: number) {
  const base = net(seed);
  const re = await reestimate(base);
  const trained = cloneModel(base);
  const rng = new Rng(seed + 7);
  const error = new Map<string, { delta: number[]; kappa: number[] }>();
  for (const n of bnNodes(trained)) {
    const r = stats(re, n.name);
    const c = r.mean.length;
    const delta = Array.from({ length: c }, () => rng.uniform(-0.5, 0.5));
    const kappa = Array.from({ length: c }, () => rng.uniform(0.5, 2));
    trained.tensors[n.params.runningMean!] = { shape: [c], data: Float32Array.from(r.mean, (v, i) => v + delta[i]!) };
    trained.tensors[n.params.runningVar!] = { shape: [c], data: Float32Array.from(r.variance, (v, i) => v * kappa[i]!) };
    error.set(n.name, { delta, kappa });
  }
  return { trained, error };
}

test('anchorBatchNorm: with an empty plan the trained statistics come back exactly', { skip: addonSkip }, async () => {
  const { trained } = await trainedWithKnownError(1);
  const re = await reestimate(trained);
  const anchored = anchorBatchNorm(trained, re, { keep: {} }, re);
  for (const n of bnNodes(trained)) {
    assert.deepEqual(stats(anchored, n.name).mean, stats(trained, n.name).mean, `${n.name} mean`);
    assert.deepEqual(stats(anchored, n.name).variance, stats(trained, n.name).variance, `${n.name} variance`);
    // and re-estimation alone does not (the constructed error is there to be removed)
    assert.notDeepEqual(stats(re, n.name).mean, stats(trained, n.name).mean, `${n.name}: re-estimate equals trained`);
  }
});

test('anchorBatchNorm: the pruned model gets its own re-estimate with the original re-estimate’s error, channel by kept channel', { skip: addonSkip }, async () => {
  const { trained, error } = await trainedWithKnownError(2);
  const groups = channelGroups(trained, 'all');
  const [g1, g2, g3] = groups.map((g) => g.name);
  // odd channels out of every group, including the one feeding the BatchNorm1d after Flatten
  const plan: PruningPlan = {
    keep: {
      [g1!]: [0, 2, 3, 5, 8, 12],
      [g2!]: Array.from({ length: 37 }, (_, i) => i).filter((i) => i % 3 !== 1),
      [g3!]: [1, 4, 6, 7, 11],
    },
  };
  const pruned = applyPlan(trained, plan);
  const rePruned = await reestimate(pruned);
  const anchored = anchorBatchNorm(trained, await reestimate(trained), plan, rePruned);

  const bns = bnNodes(trained);
  assert.equal(bns.length, 4);
  // BN i belongs to group i's channels; the last (after Flatten, 2x2 maps) to g3's, 4 features each
  const keptOf = [plan.keep[g1!]!, plan.keep[g2!]!, plan.keep[g3!]!, plan.keep[g3!]!.flatMap((c) => [0, 1, 2, 3].map((f) => c * 4 + f))];
  bns.forEach((n, b) => {
    const a = stats(anchored, n.name);
    const p = stats(rePruned, n.name);
    const { delta, kappa } = error.get(n.name)!;
    const kept = keptOf[b]!;
    assert.equal(a.mean.length, kept.length, `${n.name}: channels`);
    kept.forEach((src, j) => {
      const wantMean = p.mean[j]! + delta[src]!;
      const wantVar = p.variance[j]! * kappa[src]!;
      assert.ok(Math.abs(a.mean[j]! - wantMean) <= 1e-5 * (1 + Math.abs(wantMean)), `${n.name}[${j}] (channel ${src}) mean ${a.mean[j]} vs ${wantMean}`);
      assert.ok(Math.abs(a.variance[j]! - wantVar) <= 1e-5 * wantVar, `${n.name}[${j}] (channel ${src}) variance ${a.variance[j]} vs ${wantVar}`);
    });
  });
  // the weights are the pruned model's, untouched
  for (const [k, t] of Object.entries(rePruned.tensors)) {
    if (bns.some((n) => n.params.runningMean === k || n.params.runningVar === k)) continue;
    assert.deepEqual(anchored.tensors[k]!.data, t.data, k);
  }
});

test('anchorBatchNorm: a pruned model that is not the plan applied to the original is refused, naming the BatchNorm', { skip: addonSkip }, async () => {
  const { trained } = await trainedWithKnownError(3);
  const g1 = channelGroups(trained, 'all')[0]!.name;
  const re = await reestimate(trained);
  const rePruned = await reestimate(applyPlan(trained, { keep: { [g1]: [0, 1, 2] } }));
  assert.throws(
    () => anchorBatchNorm(trained, re, { keep: { [g1]: [0, 1, 2, 3] } }, rePruned),
    (e: unknown) => e instanceof UserError && /BatchNorm '[^']+' has 3 channels in the pruned model, the plan keeps 4 of 13/.test((e as Error).message),
  );
});

test("chooseBnStats ('auto'): re-estimation alone only when it is strictly more accurate on the held-out images", () => {
  assert.equal(chooseBnStats({ anchored: 0.9, reestimated: 0.91 }), 'reestimated');
  assert.equal(chooseBnStats({ anchored: 0.91, reestimated: 0.9 }), 'anchored');
  assert.equal(chooseBnStats({ anchored: 0.9, reestimated: 0.9 }), 'anchored');
});
