// Recovery after pruning: BatchNorm re-estimation, distillation in the engine's train step,
// resumable fine-tuning. Small generated models and data throughout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { normalizeBatch } from '../src/data/dataset.js';
import { setThreads, TorchModel } from '../src/engine/index.js';
import { SequentialBuilder } from '../src/ir/builder.js';
import { cloneModel, type Model, type Tensor } from '../src/ir/model.js';
import { finetune, reestimateBatchNorm } from '../src/recover/index.js';
import type { TrainableEngine } from '../src/train/engine.js';
import { train } from '../src/train/train.js';
import { UserError } from '../src/util/errors.js';
import { addonSkip } from './support/addon.js';
import { assertClose } from './support/assert.js';
import { bnNodes } from './support/graph.js';
import { randomImages } from './support/images.js';
import { randomizeBatchNorm, Rng, randomSource } from './support/random.js';
import { referenceForward } from './support/reference.js';

if (!addonSkip) setThreads(2);

const MEAN = [0.5, 0.45, 0.4];
const STD = [0.25, 0.2, 0.3];

/** conv-BN-relu, conv-BN-relu, maxpool, flatten, linear-BN1d-relu, linear: 3x8x8 -> classes */
function bnNet(seed: number, classes = 5): Model {
  const b = new SequentialBuilder('bnnet', [3, 8, 8], { random: randomSource(seed) });
  b.conv(4, 3, { padding: 1 }).bn().relu().conv(6, 3, { padding: 1, bias: false }).bn().relu().maxpool(2);
  const m = b.flatten().linear(12).bn().relu().linear(classes).build();
  // non-trivial affine BN parameters and running stats, so every layer's input depends on them
  return randomizeBatchNorm(m, new Rng(seed + 100), { weight: [0.5, 1.5], bias: [-0.5, 0.5], mean: [-1, 1], var: [0.5, 3] });
}

function assertSameTensors(a: Record<string, Tensor>, b: Record<string, Tensor>, what: string, skip: Set<string> = new Set()): void {
  assert.deepEqual(Object.keys(a).sort(), Object.keys(b).sort(), `${what}: tensor names`);
  for (const k of Object.keys(a)) {
    if (skip.has(k)) continue;
    assert.deepEqual(a[k].shape, b[k].shape, `${what}: ${k} shape`);
    assert.ok(a[k].data.every((v, i) => Object.is(v, b[k].data[i])), `${what}: ${k} differs`);
  }
}

// ---------------------------------------------------------------- BatchNorm re-estimation

test('reestimateBatchNorm: running stats are the batch-averaged train-mode statistics; weights and input untouched', { skip: addonSkip }, async () => {
  const model = bnNet(1);
  const before = cloneModel(model);
  const ds = randomImages(new Rng(2), 50, [3, 8, 8], 5);
  const seed = 3;
  const B = 8;
  const res = await reestimateBatchNorm(model, ds, { mean: MEAN, std: STD, images: 45, batch: B, seed });
  assert.equal(res.images, 40, '45 images in batches of 8: 5 whole batches, the remaining 5 dropped');
  assert.equal(res.layers, 3);
  assert.ok(res.seconds >= 0);
  assertSameTensors(model.tensors, before.tensors, 'input model'); // pure
  assert.deepEqual(model.nodes, before.nodes);

  const bns = bnNodes(model);
  const statNames = new Set(bns.flatMap((n) => [n.params.runningMean!, n.params.runningVar!]));
  assertSameTensors(res.model.tensors, model.tensors, 'weights', statNames);
  assert.deepEqual(bnNodes(res.model).map((n) => n.attrs.momentum), bns.map((n) => n.attrs.momentum), 'original momenta');

  // the documented sample: the first 40 of Rng(seed).permutation(n), in that order, 5 batches of 8
  const sample = new Rng(seed).permutation(ds.n).subarray(0, 40);
  const batches = Array.from({ length: 5 }, (_, k) => normalizeBatch(ds, sample.subarray(k * B, (k + 1) * B), MEAN, STD));
  const shape = [B, 3, 8, 8];

  // (1) the first BN, from its input tapped in eval mode (it depends on no other BN): mean of
  // the batch means, mean of the unbiased batch variances
  const first = bns[0];
  const engine = TorchModel.create(model);
  const C = first.attrs.numFeatures;
  const mean = new Float64Array(C);
  const varU = new Float64Array(C);
  const biasedAvg = new Float64Array(C);
  for (const x of batches) {
    const { taps } = await engine.forward(x, shape, { taps: [first.inputs[0]] });
    const t = taps[first.inputs[0]];
    const S = t.shape[2] * t.shape[3];
    for (let c = 0; c < C; c++) {
      let s = 0;
      for (let n = 0; n < B; n++) for (let i = 0; i < S; i++) s += t.data[(n * C + c) * S + i];
      const m = s / (B * S);
      let s2 = 0;
      for (let n = 0; n < B; n++) for (let i = 0; i < S; i++) s2 += (t.data[(n * C + c) * S + i] - m) ** 2;
      mean[c] += m / batches.length;
      varU[c] += s2 / (B * S - 1) / batches.length;
      biasedAvg[c] += s2 / (B * S) / batches.length;
    }
  }
  engine.dispose();
  assertClose(res.model.tensors[first.params.runningMean!].data, mean, 'first BN running mean', 1e-5);
  assertClose(res.model.tensors[first.params.runningVar!].data, varU, 'first BN running var (unbiased)', 1e-5);
  // the check can tell the unbiased from the biased variance (factor 512/511 here)
  assert.ok(varU.some((v, c) => Math.abs(v - biasedAvg[c]) > 1e-4 * v), 'biased and unbiased averages differ measurably');

  // (2) every BN against the float64 reference interpreter in train mode (each BN on its batch statistics)
  for (const n of bns) {
    const C = n.attrs.numFeatures;
    const m = new Float64Array(C);
    const v = new Float64Array(C);
    for (const x of batches) {
      const st = referenceForward(model, x, shape, { train: true }).batchStats![n.name];
      for (let c = 0; c < C; c++) {
        m[c] += st.mean[c] / batches.length;
        v[c] += st.varUnbiased[c] / batches.length;
      }
    }
    assertClose(res.model.tensors[n.params.runningMean!].data, m, `${n.name} running mean`, 1e-4);
    assertClose(res.model.tensors[n.params.runningVar!].data, v, `${n.name} running var`, 1e-4);
  }

  // one batch of everything: the statistics of the whole set, whatever the order
  const all = await reestimateBatchNorm(model, ds, { mean: MEAN, std: STD, images: 50, batch: 50, seed: 9 });
  assert.equal(all.images, 50);
  const whole = referenceForward(model, normalizeBatch(ds, { start: 0, end: 50 }, MEAN, STD), [50, 3, 8, 8], { train: true }).batchStats!;
  for (const n of bns) {
    assertClose(all.model.tensors[n.params.runningMean!].data, whole[n.name].mean, `${n.name} whole-set mean`, 1e-4);
    assertClose(all.model.tensors[n.params.runningVar!].data, whole[n.name].varUnbiased, `${n.name} whole-set var`, 1e-4);
  }

  // a model without BatchNorm comes back as a copy; bad options are named
  const plain = new SequentialBuilder('plain', [3, 8, 8], { random: randomSource(4) }).conv(2, 3).flatten().linear(5).build();
  const none = await reestimateBatchNorm(plain, ds, { mean: MEAN, std: STD, seed: 0 });
  assert.equal(none.layers, 0);
  assert.equal(none.images, 0);
  assertSameTensors(none.model.tensors, plain.tensors, 'no-BN copy');
  await assert.rejects(reestimateBatchNorm(model, ds, { mean: MEAN, std: STD, seed: 0, batch: 1 }), UserError);
  await assert.rejects(reestimateBatchNorm(model, ds, { mean: [0.5], std: STD, seed: 0 }), /mean\/std/);
});

// ---------------------------------------------------------------- distillation

/** log-softmax of a row in float64 */
function logSoftmax(row: ArrayLike<number>, T: number): number[] {
  const z = Array.from(row, (v) => v / T);
  const m = Math.max(...z);
  const lse = m + Math.log(z.reduce((s, v) => s + Math.exp(v - m), 0));
  return z.map((v) => v - lse);
}

/** batch-mean KL(softmax(teacher/T) || softmax(student/T)), and the batch-mean cross-entropy */
function klAndCe(student: ArrayLike<number>, teacher: ArrayLike<number>, labels: Int32Array, K: number, T: number): { kl: number; ce: number } {
  const B = labels.length;
  let kl = 0;
  let ce = 0;
  for (let i = 0; i < B; i++) {
    const s = Array.from({ length: K }, (_, j) => student[i * K + j]);
    const t = Array.from({ length: K }, (_, j) => teacher[i * K + j]);
    const ls = logSoftmax(s, T);
    const lt = logSoftmax(t, T);
    for (let j = 0; j < K; j++) kl += Math.exp(lt[j]) * (lt[j] - ls[j]);
    ce -= logSoftmax(s, 1)[labels[i]];
  }
  return { kl: kl / B, ce: ce / B };
}

test('distillation in trainStep: weight 0 is the plain step, self-distillation has no gradient, the loss is (1-w) CE + w T^2 KL', { skip: addonSkip }, async () => {
  const K = 5;
  const model = bnNet(5, K);
  const ds = randomImages(new Rng(6), 16, [3, 8, 8], K);
  const B = 16;
  const shape = [B, 3, 8, 8];
  const x = normalizeBatch(ds, { start: 0, end: B }, MEAN, STD);
  const labels = Int32Array.from(ds.labels);
  const r = new Rng(7);
  const randomTeacher = Float32Array.from({ length: B * K }, () => r.uniform(-3, 3));
  // the student's own train-mode logits (BN on batch statistics), from the float64 reference
  const own = Float32Array.from(referenceForward(model, x, shape, { train: true }).outputs[model.outputs[0]].data);
  const trainable = new Set(model.nodes.flatMap((n) => [(n.params as Record<string, string>).weight, (n.params as Record<string, string>).bias]).filter(Boolean));
  const stats = new Set(bnNodes(model).flatMap((n) => [n.params.runningMean!, n.params.runningVar!]));

  const step = async (distill?: { teacher: Float32Array; temperature: number; weight: number }, opt = { momentum: 0.9, nesterov: true, weightDecay: 5e-4 }, lr = 0.1) => {
    const e = TorchModel.create(model);
    e.configureOptimizer(opt);
    const res = await e.trainStep(x, shape, labels, lr, undefined, distill);
    const tensors = e.readTensors();
    e.dispose();
    return { ...res, tensors };
  };

  // weight 0: the same step as without distillation, bit for bit
  const plain = await step();
  const w0 = await step({ teacher: randomTeacher, temperature: 2, weight: 0 });
  assert.equal(w0.loss, plain.loss);
  assert.equal(w0.correct, plain.correct);
  assertSameTensors(w0.tensors, plain.tensors, 'weight 0 vs plain');
  const plainCe = klAndCe(own, randomTeacher, labels, K, 1).ce;
  assertClose([plain.loss], [plainCe], 'plain loss is the cross-entropy', 1e-5);

  // weight 1, teacher = the student itself: KL = 0 and no gradient, so only weight decay moves the weights
  const lr = 0.1, wd = 0.01;
  const sgd = { momentum: 0, nesterov: false, weightDecay: wd };
  const self = await step({ teacher: own, temperature: 3, weight: 1 }, sgd, lr);
  assert.ok(Math.abs(self.loss) < 1e-6, `self-distillation loss ${self.loss}`);
  assert.equal(self.correct, plain.correct, 'correct is top-1 against the labels');
  const decayOnly = (t: Record<string, Tensor>) => {
    let worst = 0;
    let scale = 0;
    for (const k of trainable) {
      const p0 = model.tensors[k].data;
      t[k].data.forEach((v, i) => {
        worst = Math.max(worst, Math.abs(v - p0[i] * (1 - lr * wd)));
        scale = Math.max(scale, Math.abs(p0[i] * lr * wd));
      });
    }
    return { worst, scale };
  };
  const d = decayOnly(self.tensors);
  assert.ok(d.worst < 1e-6 && d.scale > 1e-4, `weights moved by weight decay alone (deviation ${d.worst}, decay ${d.scale})`);
  // ... which a real teacher does not do
  const other = await step({ teacher: randomTeacher, temperature: 3, weight: 1 }, sgd, lr);
  assert.ok(decayOnly(other.tensors).worst > 1e-4, 'a different teacher gives a gradient');

  // loss values: w = 1 is T^2 KL; w = 0.3 mixes in 0.7 CE
  for (const [T, w] of [[3, 1], [2, 0.3], [0.5, 0.8]] as const) {
    const got = await step({ teacher: randomTeacher, temperature: T, weight: w });
    const { kl, ce } = klAndCe(own, randomTeacher, labels, K, T);
    assertClose([got.loss], [(1 - w) * ce + w * T * T * kl], `loss T=${T} w=${w}`, 1e-5);
    assert.equal(got.correct, plain.correct);
  }
  assert.ok(stats.size > 0);

  // argument checks, in TS and in the addon
  const e = TorchModel.create(model);
  e.configureOptimizer({ momentum: 0, nesterov: false, weightDecay: 0 });
  await assert.rejects(e.trainStep(x, shape, labels, 0.1, undefined, { teacher: randomTeacher.subarray(1), temperature: 2, weight: 0.5 }), /distill\.teacher has 79 values, need batch x classes = 16 x 5/);
  await assert.rejects(e.trainStep(x, shape, labels, 0.1, undefined, { teacher: randomTeacher, temperature: 0, weight: 0.5 }), /temperature must be a finite number > 0/);
  await assert.rejects(e.trainStep(x, shape, labels, 0.1, undefined, { teacher: randomTeacher, temperature: 1, weight: 1.5 }), /weight must be in \[0, 1\]/);
  const native = (e as unknown as { native: { trainStep: (...a: unknown[]) => Promise<unknown> } }).native;
  assert.throws(() => native.trainStep(x, shape, labels, 0.1, undefined, { teacher: new Float32Array(3), temperature: 1, weight: 0.5 }), /distill\.teacher has 3 values, need batch \(16\) x classes/);
  assert.throws(() => native.trainStep(x, shape, labels, 0.1, undefined, { teacher: randomTeacher, temperature: -1, weight: 0.5 }), /temperature must be a finite number > 0/);
  assert.throws(() => native.trainStep(x, shape, labels, 0.1, undefined, 'soft'), /distill must be an object/);
  await assert.rejects(native.trainStep(x, shape, labels, 0.1, undefined, { teacher: new Float32Array(B * 4), temperature: 1, weight: 0.5 }), /teacher logits have 4 classes, the model's output .* has 5/);
  e.dispose();
});

test('train() with a teacher: the teacher sees the very batch the student trains on, its logits go to trainStep', async () => {
  const ds = randomImages(new Rng(8), 12, [3, 8, 8], 3);
  const seen: { x: number[]; distill: unknown }[] = [];
  const teacherInputs: number[][] = [];
  const engine: TrainableEngine = {
    async forward() {
      throw new Error('unused');
    },
    configureOptimizer() {},
    async trainStep(x, _shape, _labels, _lr, _m, distill) {
      seen.push({ x: Array.from(x), distill: distill && { ...distill, teacher: Array.from(distill.teacher) } });
      return { loss: 1, correct: 0 };
    },
  };
  const teacher = {
    async forward(x: Float32Array, shape: number[]) {
      teacherInputs.push(Array.from(x));
      // logits that identify the batch: its first value, repeated
      return { outputs: { logits: { shape: [shape[0], 3], data: new Float32Array(shape[0] * 3).fill(x[0]) } }, taps: {} };
    },
  };
  await train(engine, ds, {
    epochs: 2, batch: 4, lr: 0.1, schedule: 'cosine', momentum: 0.9, nesterov: false, weightDecay: 0, augment: true, seed: 1,
    mean: MEAN, std: STD, teacher, distill: { temperature: 4, weight: 0.25 },
  });
  assert.equal(seen.length, 6);
  seen.forEach((s, i) => {
    assert.deepEqual(s.x, teacherInputs[i], `step ${i}: same augmented batch`);
    assert.deepEqual(s.distill, { temperature: 4, weight: 0.25, teacher: new Array(12).fill(Math.fround(s.x[0])) });
  });
  await assert.rejects(
    train(engine, ds, { epochs: 1, batch: 4, lr: 0.1, schedule: 'cosine', momentum: 0, nesterov: false, weightDecay: 0, augment: false, seed: 1, mean: MEAN, std: STD, teacher }),
    /needs both teacher and distill/,
  );
});

test('train() startEpoch/totalEpochs: the learning rates of a resumed run are those of the uninterrupted one', async () => {
  const ds = randomImages(new Rng(9), 10, [3, 8, 8], 3);
  const lrs = async (parts: [number, number][], total?: number) => {
    const out: number[] = [];
    for (const [startEpoch, epochs] of parts)
      await train(
        { async forward() { throw new Error('unused'); }, configureOptimizer() {}, async trainStep(_x, _s, _l, lr) { out.push(lr); return { loss: 1, correct: 0 }; } },
        ds,
        { epochs, startEpoch, totalEpochs: total, batch: 4, lr: 0.1, schedule: 'cosine', momentum: 0.9, nesterov: false, weightDecay: 0, augment: false, seed: 0, mean: MEAN, std: STD },
      );
    return out;
  };
  const straight = await lrs([[0, 3]]);
  assert.equal(straight.length, 9);
  assert.deepEqual(await lrs([[0, 1], [1, 2]], 3), straight);
  assert.deepEqual(await lrs([[0, 1], [1, 1], [2, 1]], 3), straight);
  await assert.rejects(lrs([[2, 2]], 3), /totalEpochs must be an integer >= startEpoch \+ epochs = 4/);
});

// ---------------------------------------------------------------- fine-tuning

test('finetune: 2 epochs straight = 1 epoch, stop, resume for the 2nd; a checkpoint with another key is ignored', { skip: addonSkip }, async () => {
  const model = bnNet(11);
  const before = cloneModel(model);
  const ds = randomImages(new Rng(12), 40, [3, 8, 8], 5);
  const opts = { epochs: 2, batch: 16, lr: 0.05, seed: 13, mean: MEAN, std: STD, checkpointKey: 'run-a' };
  const dirA = await mkdtemp(join(tmpdir(), 'cmiprune-ft-a-'));
  const dirB = await mkdtemp(join(tmpdir(), 'cmiprune-ft-b-'));
  try {
    const seenEpochs: number[] = [];
    const straight = await finetune(model, ds, { ...opts, checkpointDir: dirA, onEpoch: (e) => void seenEpochs.push(e.epoch) });
    assert.equal(straight.resumedFrom, 0);
    assert.deepEqual(seenEpochs, [0, 1]);
    assert.deepEqual(straight.epochs.map((e) => e.epoch), [0, 1]);
    assert.deepEqual((await readdir(dirA)).sort(), ['epoch-1.bin', 'epoch-1.json', 'epoch-2.bin', 'epoch-2.json']);
    assertSameTensors(model.tensors, before.tensors, 'input model'); // pure
    assert.ok(Object.keys(model.tensors).some((k) => straight.model.tensors[k].data.some((v, i) => v !== model.tensors[k].data[i])), 'weights moved');

    // the first run stops after epoch 1 (its checkpoint is written before onEpoch runs)
    await assert.rejects(
      finetune(model, ds, { ...opts, checkpointDir: dirB, onEpoch: (e) => { if (e.epoch === 0) throw new Error('stopped'); } }),
      /stopped/,
    );
    assert.deepEqual((await readdir(dirB)).sort(), ['epoch-1.bin', 'epoch-1.json']);
    const resumed = await finetune(model, ds, { ...opts, checkpointDir: dirB });
    assert.equal(resumed.resumedFrom, 1);
    assertSameTensors(resumed.model.tensors, straight.model.tensors, 'resumed vs straight');
    assert.deepEqual(resumed.epochs.map((e) => [e.epoch, e.loss, e.lr, e.accuracy]), straight.epochs.map((e) => [e.epoch, e.loss, e.lr, e.accuracy]));

    // a finished run resumes to its result without training
    const done = await finetune(model, ds, { ...opts, checkpointDir: dirB });
    assert.equal(done.resumedFrom, 2);
    assertSameTensors(done.model.tensors, straight.model.tensors, 'finished run');

    // another key: the checkpoints are ignored, the run starts from the model (and reproduces the straight run)
    const dirC = await mkdtemp(join(tmpdir(), 'cmiprune-ft-c-'));
    try {
      await assert.rejects(finetune(model, ds, { ...opts, checkpointDir: dirC, onEpoch: () => { throw new Error('stopped'); } }), /stopped/);
      const fresh = await finetune(model, ds, { ...opts, checkpointDir: dirC, checkpointKey: 'run-b' });
      assert.equal(fresh.resumedFrom, 0);
      assertSameTensors(fresh.model.tensors, straight.model.tensors, 'other key: a fresh run');
      // other settings (here the learning rate) are not resumed either
      const otherLr = await finetune(model, ds, { ...opts, lr: 0.01, epochs: 2, checkpointDir: dirA });
      assert.equal(otherLr.resumedFrom, 0);
    } finally {
      await rm(dirC, { recursive: true, force: true });
    }
    await assert.rejects(finetune(model, ds, { epochs: 1, seed: 0, mean: MEAN, std: STD, checkpointDir: dirA }), /checkpointKey/);
  } finally {
    await rm(dirA, { recursive: true, force: true });
    await rm(dirB, { recursive: true, force: true });
  }
  assert.ok(!existsSync(dirA));
});

test('finetune with a teacher: distilled epochs run and differ from plain ones', { skip: addonSkip }, async () => {
  const model = bnNet(21);
  const teacher = bnNet(22);
  const ds = randomImages(new Rng(23), 32, [3, 8, 8], 5);
  const base = { epochs: 1, batch: 16, lr: 0.05, seed: 1, mean: MEAN, std: STD };
  const plain = await finetune(model, ds, base);
  const distilled = await finetune(model, ds, { ...base, teacher, distill: { temperature: 4 } });
  assert.equal(distilled.epochs.length, 1);
  assert.ok(Number.isFinite(distilled.epochs[0].loss));
  assert.notEqual(distilled.epochs[0].loss, plain.epochs[0].loss);
  const noMix = await finetune(model, ds, { ...base, teacher, distill: { temperature: 4, weight: 0 } });
  assertSameTensors(noMix.model.tensors, plain.model.tensors, 'distill weight 0 = plain fine-tuning');
  await assert.rejects(finetune(model, ds, { ...base, teacher }), /needs both teacher and distill/);
});
