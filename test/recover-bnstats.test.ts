// BatchNorm re-estimation through the engine's batchNormStatsStep (a train-mode forward without
// autograd) against the former way, an lr-0 trainStep: the same running statistics, and the
// engine entry itself (weights untouched, running stats moved, inference sees the new stats).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { normalizeBatch } from '../src/data/dataset.js';
import { setThreads, TorchModel } from '../src/engine/index.js';
import { SequentialBuilder } from '../src/ir/builder.js';
import { cloneModel, type Model, type Tensor } from '../src/ir/model.js';
import { reestimateBatchNorm } from '../src/recover/index.js';
import { UserError } from '../src/util/errors.js';
import { addonSkip } from './support/addon.js';
import { withFastPaths } from './support/env.js';
import { bnNodes } from './support/graph.js';
import { randomImages } from './support/images.js';
import { randomizeBatchNorm, Rng, randomSource } from './support/random.js';

if (!addonSkip) setThreads(2);

const MEAN = [0.5, 0.45, 0.4];
const STD = [0.25, 0.2, 0.3];

/**
 * 3x8x8 -> 5 with odd widths and every kind of BN the engine treats differently in training:
 * BN+ReLU fused (4-d and, after a Linear, 2-d), a BN followed by max pooling (libtorch's
 * batch_norm), a BatchNorm1d straight after Flatten; a Winograd conv (37 -> 37 on 8x8) and a
 * tiny-image conv (2x2 maps) on the way.
 */
function oddNet(seed: number): Model {
  const b = new SequentialBuilder('oddnet', [3, 8, 8], { random: randomSource(seed) });
  b.conv(13, 3, { padding: 1 }).bn().relu();
  b.conv(37, 3, { padding: 1, bias: false }).bn().relu();
  b.conv(37, 3, { padding: 1 }).bn().maxpool(2).relu(); // 4x4; this BN is not fused
  b.conv(13, 3, { padding: 1 }).bn().relu().maxpool(2); // 2x2
  b.conv(13, 3, { padding: 1 }).bn().relu(); // tiny-image conv
  const m = b.flatten().bn().linear(19).bn().relu().linear(5).build();
  return randomizeBatchNorm(m, new Rng(seed + 100), { weight: [0.5, 1.5], bias: [-0.5, 0.5], mean: [-1, 1], var: [0.5, 3] });
}

function statNames(m: Model): string[] {
  return bnNodes(m).flatMap((n) => [n.params.runningMean!, n.params.runningVar!]);
}

/** largest |a - b| / max(1e-30, |b|) over the tensors, and how many values differ at all */
function compare(a: Record<string, Tensor>, b: Record<string, Tensor>, names: string[]): { worst: number; differing: number; values: number } {
  let worst = 0;
  let differing = 0;
  let values = 0;
  for (const k of names) {
    const x = a[k].data;
    const y = b[k].data;
    assert.equal(x.length, y.length, `${k}: length`);
    for (let i = 0; i < y.length; i++) {
      values++;
      if (Object.is(x[i], y[i])) continue;
      differing++;
      worst = Math.max(worst, Number.isFinite(x[i]) && Number.isFinite(y[i]) ? Math.abs(x[i] - y[i]) / Math.max(1e-30, Math.abs(y[i])) : Infinity);
    }
  }
  return { worst, differing, values };
}

test('reestimateBatchNorm via batchNormStatsStep = via lr-0 trainStep, bit-identical running stats (fast paths on and off)', { skip: addonSkip }, async () => {
  const model = oddNet(1);
  assert.equal(bnNodes(model).length, 7);
  assert.deepEqual(bnNodes(model).map((n) => n.attrs.numFeatures), [13, 37, 37, 13, 13, 52, 19]);
  const ds = randomImages(new Rng(2), 200, [3, 8, 8], 5);
  const opts = { mean: MEAN, std: STD, images: 200, batch: 16, seed: 3 };
  const names = statNames(model);
  const got: Record<string, Record<string, Tensor>> = {};
  for (const fast of [true, false]) {
    const viaStats = await withFastPaths(fast, () => reestimateBatchNorm(model, ds, { ...opts, via: 'batchNormStatsStep' }));
    const viaTrain = await withFastPaths(fast, () => reestimateBatchNorm(model, ds, { ...opts, via: 'trainStep' }));
    assert.equal(viaStats.images, 192);
    assert.equal(viaTrain.images, 192);
    assert.equal(viaStats.layers, 7);
    // re-estimated at all: the stats moved away from the input model's
    const moved = compare(viaStats.model.tensors, model.tensors, names);
    assert.equal(moved.differing, moved.values, `fast paths ${fast}: every running stat re-estimated`);
    const d = compare(viaStats.model.tensors, viaTrain.model.tensors, names);
    assert.equal(d.differing, 0, `fast paths ${fast}: ${d.differing} of ${d.values} values differ, max relative ${d.worst}`);
    // and the weights are the input's, whichever way
    for (const k of Object.keys(model.tensors))
      if (!names.includes(k)) assert.ok(viaStats.model.tensors[k].data.every((v, i) => Object.is(v, model.tensors[k].data[i])), k);
    got[String(fast)] = viaStats.model.tensors;
  }
  // the fused BN+ReLU op (fast paths on) under NoGradGuard against libtorch's batch_norm + relu:
  // the same statistics up to float rounding
  const f = compare(got.true!, got.false!, names);
  assert.ok(f.worst <= 1e-4, `fused vs libtorch ops: max relative ${f.worst}`);
});

test('TorchModel.batchNormStatsStep: running stats as an lr-0 trainStep leaves them, weights untouched, inference sees the new stats', { skip: addonSkip }, async () => {
  const model = oddNet(5);
  const names = statNames(model);
  const ds = randomImages(new Rng(6), 32, [3, 8, 8], 5);
  const shape = [32, 3, 8, 8];
  const x = normalizeBatch(ds, { start: 0, end: 32 }, MEAN, STD);

  const a = TorchModel.create(model);
  const before = await a.forward(x, shape); // packs weights with the old stats folded in
  const step = a.batchNormStatsStep(x, shape);
  assert.throws(() => a.readTensors(), /in progress/, 'busy while the step runs');
  assert.equal(await step, undefined);

  const b = TorchModel.create(model);
  b.configureOptimizer({ momentum: 0, nesterov: false, weightDecay: 0 });
  await b.trainStep(x, shape, new Int32Array(32), 0);

  const ta = a.readTensors();
  const tb = b.readTensors();
  const d = compare(ta, tb, names);
  assert.equal(d.differing, 0, `${d.differing} of ${d.values} running-stat values differ from trainStep's, max relative ${d.worst}`);
  const moved = compare(ta, model.tensors, names);
  assert.equal(moved.differing, moved.values, 'momentum 0.1 moved every running stat');
  const w = compare(ta, model.tensors, Object.keys(model.tensors).filter((k) => !names.includes(k)));
  assert.equal(w.differing, 0, 'weights untouched');

  // inference after the step uses the new statistics (the packed, BN-folded weights were dropped)
  const after = await a.forward(x, shape);
  const fresh = TorchModel.create(a.toModel());
  const want = await fresh.forward(x, shape);
  const o = model.outputs[0];
  assert.ok(after.outputs[o].data.every((v, i) => Object.is(v, want.outputs[o].data[i])), 'forward after the step = a fresh engine with the new stats');
  assert.ok(!before.outputs[o].data.every((v, i) => Object.is(v, after.outputs[o].data[i])), 'and differs from the forward before it');

  // input checked like forward's; a disposed model refuses
  await assert.rejects(async () => a.batchNormStatsStep(x, [16, 3, 8, 8]), UserError);
  await assert.rejects(async () => a.batchNormStatsStep(x, [32, 3, 4, 16]), UserError);
  for (const e of [a, b, fresh]) e.dispose();
  await assert.rejects(async () => a.batchNormStatsStep(x, shape), /disposed/);
  // a model without BN: a forward, nothing changes
  const plain = new SequentialBuilder('plain', [3, 8, 8], { random: randomSource(4) }).conv(2, 3).flatten().linear(5).build();
  const p = TorchModel.create(cloneModel(plain));
  await p.batchNormStatsStep(x, shape);
  const tp = p.readTensors();
  assert.equal(compare(tp, plain.tensors, Object.keys(plain.tensors)).differing, 0);
  p.dispose();
});
