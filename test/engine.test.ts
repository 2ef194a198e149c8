// The engine against the tests' independent float64 reference interpreter (test/support/reference.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ENGINE_SWITCHES, engineCacheStats, FAST_PATHS, getThreads, loadEngine, releaseCachedMemory, resolveSwitches, setThreads, TorchModel } from '../src/engine/index.js';
import { ResultStore } from '../src/experiment/store.js';
import type { Model, Tensor } from '../src/ir/model.js';
import { checkpointKey } from '../src/cmi/rank-model.js';
import { UserError } from '../src/util/errors.js';
import { addonSkip } from './support/addon.js';
import { withFastPaths } from './support/env.js';
import { GraphBuilder as Builder } from './support/graph.js';
import { Rng, uniformTensor } from './support/random.js';
import { referenceForward } from './support/reference.js';

// these tests compare the fast paths with libtorch's own ops, so they start with them on even under
// CMIPRUNE_FAST_PATHS=0 npm test (the tests that set the variable delete it again)
delete process.env.CMIPRUNE_FAST_PATHS;

/** got within tol of want, relative to max(1, |want|), elementwise */
function assertClose(got: Tensor, want: { shape: number[]; data: ArrayLike<number> }, what: string, tol = 1e-5): void {
  assert.deepEqual(got.shape, want.shape, `${what}: shape`);
  let worst = 0;
  for (let i = 0; i < want.data.length; i++)
    worst = Math.max(worst, Math.abs(got.data[i]! - want.data[i]!) / Math.max(1, Math.abs(want.data[i]!)));
  assert.ok(worst <= tol, `${what}: max error ${worst} > ${tol}`);
}

/** Conv -> BN -> Relu -> MaxPool -> Flatten -> Linear on 3x8x8 */
function plainNet(seed = 1): Model {
  const b = new Builder(new Rng(seed));
  let x = b.conv('conv1', 'input', 3, 4, 3, { pad: 1 });
  x = b.bn('bn1', x, 4);
  x = b.simple('Relu', 'relu1', x);
  x = b.pool('MaxPool', 'pool1', x, 2, 2);
  x = b.flatten('flat', x);
  x = b.linear('fc', x, 4 * 4 * 4, 5);
  return b.model('plain', [3, 8, 8], x);
}

/** Residual block, strided/grouped/dilated convs, both AvgPool modes, GlobalAvgPool, BN1d. */
function residualNet(seed = 2): Model {
  const b = new Builder(new Rng(seed));
  const stem = b.simple('Relu', 'stem_relu', b.bn('stem_bn', b.conv('stem', 'input', 3, 4, 3, { pad: 1, bias: false }), 4));
  let y = b.simple('Relu', 'b1_relu', b.bn('b1_bn', b.conv('b1_conv', stem, 4, 4, 3, { pad: 2, dil: 2, groups: 2 }), 4));
  y = b.conv('b1_conv2', y, 4, 4, 3, { pad: 1, groups: 4, bias: false });
  const sum = b.simple('Relu', 'b1_out', b.add('b1_add', y, stem));
  let z = b.conv('down', sum, 4, 6, 3, { stride: 2, pad: 1 }); // 9x9 -> 5x5
  z = b.pool('AvgPool', 'avg_ceil', z, 2, 2, 1, true, false); // 5x5 -> 3x3 (ceil, excl. pad)
  z = b.pool('AvgPool', 'avg_incl', z, 2, 1, 1, false, true); // 3x3 -> 4x4 (incl. pad)
  z = b.pool('MaxPool', 'max_ceil', z, 3, 2, 1, true); // 4x4 -> 3x3 (ceil)
  z = b.simple('GlobalAvgPool', 'gap', z);
  z = b.flatten('flat', z);
  z = b.linear('fc1', z, 6, 8);
  z = b.simple('Relu', 'fc1_relu', b.bn('bn1d', z, 8));
  z = b.linear('fc2', z, 8, 3);
  return b.model('residual', [3, 9, 9], z);
}

if (!addonSkip) setThreads(2);

test('forward matches the reference: Conv-BN-Relu-MaxPool-Flatten-Linear', { skip: addonSkip }, async () => {
  const m = plainNet();
  const tm = TorchModel.create(m);
  const x = uniformTensor(new Rng(10), [3, 3, 8, 8]);
  const { outputs, taps } = await tm.forward(x.data, x.shape);
  assert.deepEqual(Object.keys(taps), []);
  assertClose(outputs.fc, referenceForward(m, x.data, x.shape).outputs.fc!, 'fc');
  tm.dispose();
});

test('forward matches the reference: residual Add, grouped/strided/dilated conv, pools, BN1d', { skip: addonSkip }, async () => {
  const m = residualNet();
  const tm = TorchModel.create(m);
  const x = uniformTensor(new Rng(11), [2, 3, 9, 9]);
  const names = m.nodes.map((n) => n.outputs[0]);
  const ref = referenceForward(m, x.data, x.shape, { taps: names }).taps;
  const { outputs, taps } = await tm.forward(x.data, x.shape, { taps: names });
  assertClose(outputs.fc2, ref.fc2!, 'fc2');
  // every intermediate value, incl. those consumed by in-place Relu and the Flatten view
  for (const n of names) assertClose(taps[n], ref[n]!, `tap ${n}`);
  assert.deepEqual(taps.gap.shape, [2, 6, 1, 1]);
  // without taps on conv outputs, BN is folded into the preceding conv on the blocked path
  const folded = await tm.forward(x.data, x.shape, { taps: ['stem_bn', 'b1_relu'] });
  assertClose(folded.outputs.fc2, ref.fc2!, 'fc2 (folded)');
  assertClose(folded.taps.stem_bn, ref.stem_bn!, 'stem_bn (folded)');
  assertClose(folded.taps.b1_relu, ref.b1_relu!, 'b1_relu (folded)');
  // the plain NCHW and NHWC paths give the same answers as the default (oneDNN-blocked) one
  for (const opts of [{ blockedInference: false }, { blockedInference: false, channelsLast: true }]) {
    const other = TorchModel.create(m, opts);
    const r = await other.forward(x.data, x.shape, { taps: names });
    assertClose(r.outputs.fc2, ref.fc2!, `fc2 ${JSON.stringify(opts)}`);
    for (const n of names) assertClose(r.taps[n], ref[n]!, `tap ${n} ${JSON.stringify(opts)}`);
    other.dispose();
  }
  tm.dispose();
});

test('taps are independent copies and the input buffer is not modified', { skip: addonSkip }, async () => {
  const m = plainNet();
  const tm = TorchModel.create(m);
  const x = uniformTensor(new Rng(12), [2, 3, 8, 8]);
  const before = x.data.slice();
  const { taps } = await tm.forward(x.data, x.shape, { taps: ['input', 'pool1', 'flat', 'flat'] });
  assert.deepEqual(x.data, before);
  assert.deepEqual(taps.input.data, before);
  taps.pool1.data.fill(7);
  assert.notEqual(taps.flat.data[0], 7);
  await assert.rejects(tm.forward(x.data, x.shape, { taps: ['nope'] }), /no value named 'nope'/);
  await assert.rejects(tm.forward(x.data, [2, 3, 8, 9]), UserError);
  tm.dispose();
});

test('readTensors/writeTensors round-trip; shape mismatch names the tensor', { skip: addonSkip }, async () => {
  const m = plainNet();
  const tm = TorchModel.create(m);
  const read = tm.readTensors();
  assert.deepEqual(Object.keys(read).sort(), Object.keys(m.tensors).sort());
  for (const [k, t] of Object.entries(m.tensors)) assert.deepEqual(read[k], t, k);

  // write new conv weights + BN stats; forward must follow them (also after an earlier forward
  // packed the old weights)
  const x0 = uniformTensor(new Rng(22), [2, 3, 8, 8]);
  assertClose((await tm.forward(x0.data, x0.shape)).outputs.fc, referenceForward(m, x0.data, x0.shape).outputs.fc!, 'fc before write');
  const r = new Rng(20);
  const m2 = { ...m, tensors: { ...m.tensors } };
  for (const k of ['conv1.weight', 'bn1.running_mean', 'bn1.running_var']) {
    m2.tensors[k] = uniformTensor(r, m.tensors[k].shape, k.endsWith('var') ? 0.5 : -1, 1);
    tm.writeTensors({ [k]: m2.tensors[k] });
  }
  assert.deepEqual(tm.readTensors()['conv1.weight'], m2.tensors['conv1.weight']);
  const x = uniformTensor(new Rng(21), [2, 3, 8, 8]);
  assertClose((await tm.forward(x.data, x.shape)).outputs.fc, referenceForward(m2, x.data, x.shape).outputs.fc!, 'fc after write');
  assert.deepEqual(tm.toModel().tensors['bn1.running_var'], m2.tensors['bn1.running_var']);

  assert.throws(() => tm.writeTensors({ 'fc.weight': uniformTensor(r, [5, 63]) }), (e: Error) => e instanceof UserError && /'fc\.weight'.*\[5,63\].*\[5,64\]/.test(e.message));
  assert.throws(() => tm.writeTensors({ nope: uniformTensor(r, [1]) }), /no tensor 'nope'/);
  tm.dispose();
  assert.throws(() => tm.readTensors(), /disposed/);
});

test('train step: loss and BN statistics match the reference, loss falls, forward leaves stats alone', { skip: addonSkip }, async () => {
  const m = plainNet(3);
  const tm = TorchModel.create(m);
  const x = uniformTensor(new Rng(30), [8, 3, 8, 8]);
  const labels = Int32Array.from({ length: 8 }, (_, i) => i % 5);

  // eval-mode forward must not move the running stats
  await tm.forward(x.data, x.shape);
  assert.deepEqual(tm.readTensors()['bn1.running_mean'], m.tensors['bn1.running_mean']);

  // one plain SGD step at lr 0: reported loss = train-mode cross-entropy, stats follow momentum 0.1
  tm.configureOptimizer({ momentum: 0, nesterov: false, weightDecay: 0 });
  const ref = referenceForward(m, x.data, x.shape, { train: true });
  const logits = ref.outputs.fc!;
  let ce = 0, correct = 0;
  for (let i = 0; i < 8; i++) {
    const row = Array.from(logits.data.slice(i * 5, i * 5 + 5));
    const mx = Math.max(...row);
    ce += mx + Math.log(row.reduce((s, v) => s + Math.exp(v - mx), 0)) - row[labels[i]];
    if (row.indexOf(mx) === labels[i]) correct++;
  }
  const s0 = await tm.trainStep(x.data, x.shape, labels, 0);
  assert.ok(Math.abs(s0.loss - ce / 8) < 1e-5, `loss ${s0.loss} vs ${ce / 8}`);
  assert.equal(s0.correct, correct);
  const after = tm.readTensors();
  const st = ref.batchStats!.bn1!;
  assertClose(after['bn1.running_mean'], { shape: [4], data: st.runningMean }, 'running mean');
  assertClose(after['bn1.running_var'], { shape: [4], data: st.runningVar }, 'running var');
  assert.deepEqual(after['conv1.weight'], m.tensors['conv1.weight'], 'lr 0 leaves weights alone');
  const cl = TorchModel.create(m, { channelsLast: true });
  cl.configureOptimizer({ momentum: 0, nesterov: false, weightDecay: 0 });
  const s1 = await cl.trainStep(x.data, x.shape, labels, 0);
  assert.ok(Math.abs(s1.loss - ce / 8) < 1e-5, `NHWC loss ${s1.loss} vs ${ce / 8}`);
  assertClose(cl.readTensors()['bn1.running_var'], after['bn1.running_var'], 'NHWC running var');
  cl.dispose();

  // a few Nesterov steps with weight decay on the same batch must reduce the loss
  tm.configureOptimizer({ momentum: 0.9, nesterov: true, weightDecay: 5e-4 });
  const losses: number[] = [];
  for (let i = 0; i < 6; i++) losses.push((await tm.trainStep(x.data, x.shape, labels, 0.05)).loss);
  assert.ok(losses[5] < 0.7 * losses[0], `losses ${losses.map((l) => l.toFixed(4))}`);
  assert.notDeepEqual(tm.readTensors()['conv1.weight'], m.tensors['conv1.weight']);
  // eval after training uses the trained weights
  const trained = tm.toModel();
  assertClose((await tm.forward(x.data, x.shape)).outputs.fc, referenceForward(trained, x.data, x.shape).outputs.fc!, 'fc after training');
  await assert.rejects(tm.trainStep(x.data, x.shape, Int32Array.from(labels, () => 5), 0.1), /label 5 .*outside \[0, 5\)/);
  tm.dispose();
});

test('trainStep momentum replaces the optimizer momentum from that step on', { skip: addonSkip }, async () => {
  const m = plainNet(3);
  const x = uniformTensor(new Rng(31), [8, 3, 8, 8]);
  const labels = Int32Array.from({ length: 8 }, (_, i) => i % 5);
  const run = async (configured: number, passed: (number | undefined)[]) => {
    const tm = TorchModel.create(m);
    tm.configureOptimizer({ momentum: configured, nesterov: true, weightDecay: 5e-4 });
    for (const mo of passed) await tm.trainStep(x.data, x.shape, labels, 0.05, mo);
    const w = tm.readTensors()['conv1.weight'];
    tm.dispose();
    return w;
  };
  const fixed = await run(0.5, [undefined, undefined, undefined]);
  // configured 0.9 but 0.5 passed on every step = configured 0.5; passed once, it stays in force
  assert.deepEqual(await run(0.9, [0.5, 0.5, 0.5]), fixed);
  assert.deepEqual(await run(0.9, [0.5, undefined, undefined]), fixed);
  assert.notDeepEqual(await run(0.9, [undefined, undefined, undefined]), fixed);
  assert.notDeepEqual(await run(0.9, [0.5, 0.9, 0.5]), fixed);
  const tm = TorchModel.create(m);
  tm.configureOptimizer({ momentum: 0.9, nesterov: true, weightDecay: 0 });
  await assert.rejects(tm.trainStep(x.data, x.shape, labels, 0.05, 1), /momentum must be in \[0, 1\), got 1/);
  await assert.rejects(tm.trainStep(x.data, x.shape, labels, 0.05, 0), /nesterov needs momentum > 0/);
  tm.dispose();
});

test('fused SGD updates match libtorch torch::optim::SGD (momentum, Nesterov, weight decay, momentum changes)', { skip: addonSkip }, async () => {
  const m = plainNet(3);
  const x = uniformTensor(new Rng(32), [8, 3, 8, 8]);
  const labels = Int32Array.from({ length: 8 }, (_, i) => (i * 3) % 5);
  const cases: { cfg: { momentum: number; nesterov: boolean; weightDecay: number }; moms: (number | undefined)[]; channelsLast?: boolean }[] = [
    { cfg: { momentum: 0.9, nesterov: true, weightDecay: 5e-4 }, moms: [undefined, undefined, 0.85, 0.95] },
    { cfg: { momentum: 0.9, nesterov: false, weightDecay: 1e-3 }, moms: [undefined, undefined, undefined] },
    // momentum 0 first (no buffer), then on: the buffer starts at the first step that uses it
    { cfg: { momentum: 0, nesterov: false, weightDecay: 0 }, moms: [undefined, 0.9, 0.9, 0] },
    { cfg: { momentum: 0.9, nesterov: true, weightDecay: 5e-4 }, moms: [undefined, undefined], channelsLast: true },
  ];
  for (const [ci, c] of cases.entries()) {
    const weights = [];
    for (const fusedSgd of [true, false]) {
      const tm = TorchModel.create(m, { fusedSgd, channelsLast: c.channelsLast });
      tm.configureOptimizer(c.cfg);
      for (const mo of c.moms) await tm.trainStep(x.data, x.shape, labels, 0.1, mo);
      weights.push(tm.readTensors());
      tm.dispose();
    }
    const [fused, lib] = weights;
    for (const name of Object.keys(lib!)) {
      assertClose(fused![name]!, lib![name]!, `case ${ci} ${name}`, 1e-5);
    }
    assert.notDeepEqual(fused!['conv1.weight'], m.tensors['conv1.weight'], `case ${ci}: weights moved`);
  }
});

test('concurrent calls are serialised; sync calls during a pending call are refused', { skip: addonSkip }, async () => {
  const m = plainNet();
  const tm = TorchModel.create(m);
  const x1 = uniformTensor(new Rng(40), [2, 3, 8, 8]), x2 = uniformTensor(new Rng(41), [2, 3, 8, 8]);
  const buf1 = x1.data.slice(), buf2 = x1.data.slice();
  const p1 = tm.forward(buf1, x1.shape);
  const p2 = tm.forward(buf2, x1.shape);
  // both inputs were captured at call time: refilling the buffers must not matter
  buf1.set(x2.data);
  buf2.set(x2.data);
  assert.throws(() => tm.readTensors(), /in progress/);
  const [r1, r2] = await Promise.all([p1, p2]);
  assertClose(r1.outputs.fc, referenceForward(m, x1.data, x1.shape).outputs.fc!, 'first call');
  assert.deepEqual(r1.outputs.fc, r2.outputs.fc);
  tm.dispose();
});

test('forward and trainStep run off the event loop', { skip: addonSkip }, async () => {
  const b = new Builder(new Rng(50));
  const y = b.linear('fc', b.flatten('flat', b.simple('GlobalAvgPool', 'gap', b.conv('conv', 'input', 3, 64, 5, { pad: 2 }))), 64, 4);
  const tm = TorchModel.create(b.model('slow', [3, 48, 48], y));
  const x = uniformTensor(new Rng(51), [16, 3, 48, 48]);
  let ticks = 0;
  let done = false;
  const spin = () => {
    ticks++;
    if (!done) setImmediate(spin);
  };
  setImmediate(spin);
  await tm.forward(x.data, x.shape);
  tm.configureOptimizer({ momentum: 0.9, nesterov: false, weightDecay: 0 });
  await tm.trainStep(x.data, x.shape, new Int32Array(16), 0.01);
  done = true;
  assert.ok(ticks > 2, `event loop ran ${ticks} times during the calls`);
  tm.dispose();
});

test('missing or mis-shaped params give one clear error naming the node', { skip: addonSkip }, () => {
  const m = plainNet();
  const missing = { ...m, tensors: { ...m.tensors } };
  delete missing.tensors['bn1.running_var'];
  assert.throws(() => TorchModel.create(missing), (e: Error) => e instanceof UserError && /node 'bn1' \(BatchNorm\).*runningVar.*bn1\.running_var/.test(e.message));
  const noSlot = structuredClone(m);
  delete (noSlot.nodes[0].params as Record<string, string>).weight;
  assert.throws(() => TorchModel.create(noSlot), /node 'conv1' \(Conv2d\): missing param 'weight'/);
  const bad = { ...m, tensors: { ...m.tensors, 'fc.bias': uniformTensor(new Rng(1), [6]) } };
  assert.throws(() => TorchModel.create(bad), /node 'fc' \(Linear\): param 'bias'.*\[6\], expected \[5\]/);
});

test('thread count set/get', { skip: addonSkip }, () => {
  setThreads(1);
  assert.equal(getThreads(), 1);
  if (!addonSkip) setThreads(2);
  assert.equal(getThreads(), 2);
  assert.throws(() => setThreads(0), UserError);
});

/** 3x3 convs for the Winograd path (>= 32 input channels, whole 4x4 tiles) and for the tiny-image path, with and without bias */
function winogradNet(seed = 5): Model {
  const b = new Builder(new Rng(seed));
  let x = b.simple('Relu', 'relu1', b.bn('bn1', b.conv('conv1', 'input', 3, 32, 3, { pad: 1 }), 32));
  x = b.simple('Relu', 'relu2', b.bn('bn2', b.conv('conv2', x, 32, 40, 3, { pad: 1 }), 40)); // 16x16
  x = b.conv('conv3', x, 40, 32, 3, { pad: 1, bias: false });
  x = b.pool('MaxPool', 'pool', b.simple('Relu', 'relu3', x), 2, 2); // 16x16 -> 8x8
  x = b.simple('Relu', 'relu4', b.conv('conv4', x, 32, 8, 3, { pad: 1 }));
  x = b.pool('MaxPool', 'pool2', b.pool('MaxPool', 'pool1', x, 2, 2), 2, 2); // 8x8 -> 2x2
  // tiny images: convolutions as one matrix (padding, then stride 2 down to 1x1, no bias)
  x = b.simple('Relu', 'relu5', b.conv('conv5', x, 8, 16, 3, { pad: 1 }));
  x = b.conv('conv6', x, 16, 8, 3, { pad: 1, stride: 2, bias: false });
  x = b.flatten('flat', x);
  x = b.linear('fc', x, 8, 5);
  // small weights keep activations O(1) through the stack
  for (const [k, t] of Object.entries(b.tensors)) if (k.startsWith('conv') && k.endsWith('weight')) t.data.forEach((v, i, a) => (a[i] = v * 0.3));
  return b.model('winograd', [3, 16, 16], x);
}

test('fastPaths: false and CMIPRUNE_FAST_PATHS=0 turn every fast path off at once, in inference and training (bit-identical to each switch off)', { skip: addonSkip }, async () => {
  const m = winogradNet(6);
  const x = uniformTensor(new Rng(51), [2, 3, 16, 16]);
  const labels = Int32Array.from([1, 3]);
  // logits, then the weights after one SGD step (fusedSgd and fuseBnRelu act only in training)
  const run = async (opts: Parameters<typeof TorchModel.create>[1]) => {
    const tm = TorchModel.create(m, opts);
    try {
      const logits = (await tm.forward(x.data, x.shape)).outputs.fc!.data;
      tm.configureOptimizer({ momentum: 0.9, nesterov: true, weightDecay: 5e-4 });
      await tm.trainStep(x.data, x.shape, labels, 0.05);
      await tm.trainStep(x.data, x.shape, labels, 0.05);
      const trained = tm.readTensors(['conv2.weight', 'conv5.weight', 'bn1.weight', 'fc.weight']);
      return { logits, trained: Object.fromEntries(Object.entries(trained).map(([k, t]) => [k, t.data])) };
    } finally {
      tm.dispose();
    }
  };
  const eachOff = Object.fromEntries(FAST_PATHS.map((k) => [k, false]));
  assert.deepEqual([...FAST_PATHS].sort(), ['blockedInference', 'fastMaxPool', 'fuseBnRelu', 'fusedSgd', 'smallConv', 'winograd']);
  const allOff = await run(eachOff);
  const fast = await run({});
  // the fast paths change the rounding, so the switch is observable in both
  assert.notDeepEqual(fast.logits, allOff.logits);
  assert.notDeepEqual(fast.trained, allOff.trained);
  // the single switch wins over individual switches left on
  const on = Object.fromEntries(FAST_PATHS.map((k) => [k, true]));
  assert.deepEqual(await run({ fastPaths: false, ...on }), allOff);
  assert.deepEqual(await withFastPaths(false, () => run(on)), allOff);
  assert.deepEqual(await run({}), fast);
});

test('engine switches: declared once (switches.ts); the addon reads every one and refuses a spec without it', { skip: addonSkip }, () => {
  const m = winogradNet(7);
  const spec = { inputs: m.inputs.map((v) => v.name), outputs: m.outputs, nodes: m.nodes, tensors: m.tensors, ...resolveSwitches() };
  const Addon = (loadEngine() as unknown as { Model: new (s: unknown) => { dispose(): void } }).Model;
  new Addon(spec).dispose();
  for (const k of Object.keys(ENGINE_SWITCHES)) {
    const { [k]: _, ...without } = spec as Record<string, unknown>;
    assert.throws(() => new Addon(without), new RegExp(`switch '${k}' must be a boolean`), k);
  }
  // absent switches take the table's defaults; fastPaths: false turns exactly the fast paths off
  assert.deepEqual(resolveSwitches(), Object.fromEntries(Object.entries(ENGINE_SWITCHES).map(([k, r]) => [k, r.default])));
  assert.deepEqual(resolveSwitches({ channelsLast: true, fastPaths: false }), Object.fromEntries(Object.keys(ENGINE_SWITCHES).map((k) => [k, k === 'channelsLast'])));
});

/**
 * A net's forward (folded, blocked, plain) against the reference, taps included; that the fast
 * paths ran on every conv in `fastTaps` (its values differ from libtorch's direct convolution by
 * rounding, not bit for bit); and one plain SGD step, whose weight change is -lr * gradient, so it
 * compares every listed parameter's gradient with libtorch's own.
 */
async function checkFastConvs(m: Model, x: Tensor, taps: string[], fastTaps: string[], grads: string[]): Promise<void> {
  const ref = referenceForward(m, x.data, x.shape, { taps });
  const outs: Record<string, Float32Array> = {};
  const tapped: Record<string, Record<string, Float32Array>> = {};
  const direct = { winograd: false, smallConv: false };
  for (const opts of [{}, { blockedInference: false }, direct]) {
    const tm = TorchModel.create(m, opts);
    const label = JSON.stringify(opts);
    // without taps BN folds into its conv; tapping a conv keeps it unfolded
    const { outputs } = await tm.forward(x.data, x.shape);
    assertClose(outputs.fc, ref.outputs.fc!, `fc ${label}`, 1e-4);
    const { taps: t } = await tm.forward(x.data, x.shape, { taps });
    for (const k of taps) assertClose(t[k]!, ref.taps[k]!, `${k} tap ${label}`, 1e-4);
    outs[label] = outputs.fc.data;
    tapped[label] = Object.fromEntries(taps.map((k) => [k, t[k]!.data]));
    tm.dispose();
  }
  // the fast paths really ran: same values up to rounding, not bit for bit
  assert.notDeepEqual(outs['{}'], outs[JSON.stringify(direct)]);
  for (const k of fastTaps) assert.notDeepEqual(tapped['{}']![k], tapped[JSON.stringify(direct)]![k], `${k}: no fast path ran`);

  const labels = Int32Array.from({ length: x.shape[0]! }, (_, i) => i % 5);
  const deltas: Record<string, Float32Array>[] = [];
  for (const opts of [{}, direct]) {
    const tm = TorchModel.create(m, opts);
    tm.configureOptimizer({ momentum: 0, nesterov: false, weightDecay: 0 });
    await tm.trainStep(x.data, x.shape, labels, 1);
    const after = tm.readTensors();
    deltas.push(Object.fromEntries(grads.map((k) => [k, after[k]!.data.map((v, i) => v - m.tensors[k]!.data[i]!)])));
    tm.dispose();
  }
  for (const k of grads) {
    const a = deltas[0]![k]!, b = deltas[1]![k]!;
    const scale = Math.max(...b.map(Math.abs));
    assert.ok(scale > 1e-4, `${k}: gradient is not trivially zero`);
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    assert.ok(worst <= 1e-3 * scale, `${k}: fast vs direct gradient differ by ${worst} (scale ${scale})`);
  }
}

test('Winograd and tiny-image convolutions: forward (folded, blocked, plain) matches the reference; gradients match libtorch', { skip: addonSkip }, async () => {
  // input gradients flow through conv2..conv4, bias and no-bias cases; a bias before BN gets none
  await checkFastConvs(winogradNet(), uniformTensor(new Rng(50), [4, 3, 16, 16]), ['conv2', 'conv4', 'conv5'], ['conv2', 'conv5'], [
    'conv2.weight', 'conv4.bias', 'conv3.weight', 'conv4.weight', 'conv1.weight', 'conv5.weight', 'conv5.bias', 'conv6.weight',
  ]);
});

/** A pruned model's odd widths (13, 37, 201) through every fast conv path: Winograd with Cin >= 32, tiny images, and convs below Winograd's Cin */
function oddWidthNet(seed = 8): Model {
  const b = new Builder(new Rng(seed));
  let x = b.simple('Relu', 'relu1', b.bn('bn1', b.conv('conv1', 'input', 3, 37, 3, { pad: 1 }), 37));
  x = b.simple('Relu', 'relu2', b.bn('bn2', b.conv('conv2', x, 37, 201, 3, { pad: 1, bias: false }), 201)); // Winograd, 16x16
  x = b.conv('conv3', x, 201, 13, 3, { pad: 1 }); // Winograd, Cout 13
  x = b.pool('MaxPool', 'pool', b.simple('Relu', 'relu3', x), 2, 2); // 8x8
  x = b.simple('Relu', 'relu4', b.conv('conv4', x, 13, 37, 3, { pad: 1 })); // Cin 13: direct
  x = b.simple('Relu', 'relu4b', b.conv('conv4b', x, 37, 37, 3, { pad: 1 })); // Winograd on 8x8
  x = b.pool('MaxPool', 'pool2', b.pool('MaxPool', 'pool1', x, 2, 2), 2, 2); // 8x8 -> 2x2
  x = b.simple('Relu', 'relu5', b.conv('conv5', x, 37, 13, 3, { pad: 1 })); // tiny image
  x = b.conv('conv6', x, 13, 201, 3, { pad: 1, stride: 2, bias: false }); // tiny image, down to 1x1
  x = b.flatten('flat', x);
  x = b.linear('fc', x, 201, 5);
  for (const [k, t] of Object.entries(b.tensors)) if (k.startsWith('conv') && k.endsWith('weight')) t.data.forEach((v, i, a) => (a[i] = v * 0.3));
  return b.model('oddwidths', [3, 16, 16], x);
}

test('odd widths (13, 37, 201), as pruning leaves them: every fast conv path matches the reference forward and libtorch gradients', { skip: addonSkip }, async () => {
  // one conv alone, so a tap that differs from libtorch's proves that conv's own fast path ran:
  // Winograd (Cin >= 32, 3x3, stride 1, whole 4x4 tiles) and the tiny-image GEMM (2x2 maps)
  const single: [number, number, number, number][] = [[37, 201, 16, 1], [201, 13, 16, 1], [37, 37, 8, 1], [37, 13, 2, 1], [13, 201, 2, 2]];
  for (const [cin, cout, size, stride] of single) {
    const b = new Builder(new Rng(cin + cout));
    const y = b.conv('conv', 'input', cin, cout, 3, { pad: 1, stride });
    b.tensors['conv.weight']!.data.forEach((v, i, a) => (a[i] = v * 0.3));
    const m = b.model(`conv${cin}x${cout}`, [cin, size, size], b.linear('fc', b.flatten('flat', b.simple('GlobalAvgPool', 'gap', b.simple('Relu', 'relu', y))), cout, 5));
    await checkFastConvs(m, uniformTensor(new Rng(cout), [3, cin, size, size]), ['conv'], ['conv'], ['conv.weight', 'conv.bias', 'fc.weight']);
  }
  // and chained, so input gradients flow through them
  await checkFastConvs(oddWidthNet(), uniformTensor(new Rng(52), [3, 3, 16, 16]), ['conv2', 'conv3', 'conv4b', 'conv5', 'conv6'], ['conv2', 'conv3', 'conv4b', 'conv5', 'conv6'], [
    'conv1.weight', 'conv2.weight', 'conv3.weight', 'conv3.bias', 'conv4.weight', 'conv4b.weight', 'conv5.weight', 'conv5.bias', 'conv6.weight', 'fc.weight',
  ]);
});

test('fused BatchNorm+ReLU training matches libtorch batch_norm + relu (BN2d, BN1d, large offsets, shared outputs)', { skip: addonSkip }, async () => {
  // fused: BN nodes that take the fused path; still: conv/linear biases right before a BN (no gradient)
  const cases: { model: Model; shape: number[]; fused: string[]; still: string[] }[] = [];
  // residualNet fuses stem_bn, b1_bn (2-d) and bn1d (1-d); here a BN output with a second consumer
  // (relu and the residual add) must run unfused, and a conv bias of ~40 puts the batch mean far
  // above the spread (the variance must not cancel)
  const b = new Builder(new Rng(7));
  const c1 = b.conv('c1', 'input', 3, 6, 3, { pad: 1 });
  b.tensors['c1.bias']!.data.forEach((_, i, a) => (a[i] = 40 + i));
  const r1 = b.simple('Relu', 'r1', b.bn('bn1', c1, 6));
  const bn2 = b.bn('bn2', b.conv('c2', r1, 6, 6, 3, { pad: 1 }), 6);
  const sum = b.add('sum', b.simple('Relu', 'r2', bn2), bn2);
  let y = b.flatten('flat', b.simple('GlobalAvgPool', 'gap', sum));
  y = b.linear('fc', y, 6, 4);
  cases.push({ model: b.model('shared', [3, 6, 6], y), shape: [6, 3, 6, 6], fused: ['bn1'], still: ['c1.bias', 'c2.bias'] });
  cases.push({ model: residualNet(4), shape: [6, 3, 9, 9], fused: ['stem_bn', 'b1_bn', 'bn1d'], still: ['b1_conv.bias', 'fc1.bias'] });
  for (const c of cases) {
    const x = uniformTensor(new Rng(60), c.shape);
    const labels = Int32Array.from({ length: c.shape[0]! }, (_, i) => i % 3);
    const runs: Record<string, Float32Array>[] = [];
    const losses: number[][] = [];
    for (const fuseBnRelu of [true, false]) {
      const tm = TorchModel.create(c.model, { fuseBnRelu });
      tm.configureOptimizer({ momentum: 0.9, nesterov: false, weightDecay: 0 });
      const l: number[] = [];
      for (let i = 0; i < 3; i++) l.push((await tm.trainStep(x.data, x.shape, labels, 0.2)).loss);
      losses.push(l);
      const t = tm.readTensors();
      runs.push(Object.fromEntries(Object.entries(t).map(([k, v]) => [k, v.data])));
      tm.dispose();
    }
    const [fused, lib] = runs as [Record<string, Float32Array>, Record<string, Float32Array>];
    for (let i = 0; i < 3; i++) assert.ok(Math.abs(losses[0]![i]! - losses[1]![i]!) < 1e-4 * Math.max(1, losses[1]![i]!), `${c.model.name} loss ${losses[0]} vs ${losses[1]}`);
    // after three steps every tensor (weights, BN affine params, running stats) agrees; the
    // change of each from its start is compared, relative to the largest change
    for (const k of Object.keys(lib)) {
      const start = c.model.tensors[k]!.data;
      const dl = lib[k]!.map((v, i) => v - start[i]!), df = fused[k]!.map((v, i) => v - start[i]!);
      const scale = Math.max(...dl.map(Math.abs));
      if (c.still.includes(k)) {
        assert.ok(df.every((v) => Math.abs(v) < 1e-6), `${c.model.name} ${k}: gets no gradient`);
        continue;
      }
      assert.ok(scale > 1e-5, `${c.model.name} ${k}: moved`);
      let worst = 0;
      for (let i = 0; i < dl.length; i++) worst = Math.max(worst, Math.abs(df[i]! - dl[i]!));
      assert.ok(worst <= 2e-3 * scale, `${c.model.name} ${k}: fused vs libtorch change differ by ${worst} (scale ${scale})`);
    }
    // the fused op really ran: same values up to rounding, not bit for bit
    assert.ok(c.fused.some((n) => fused[`${n}.weight`]!.some((v, i) => v !== lib[`${n}.weight`]![i])), `${c.model.name}: fused path ran`);
  }
});

test('engine max pooling equals libtorch: values, taps, tie-breaking gradients, floor remainders, ceil mode', { skip: addonSkip }, async () => {
  // integer inputs and weights make exact ties inside pooling windows: which element of a tie gets
  // the gradient then shows in the conv weights' gradients
  const b = new Builder(new Rng(9));
  let x = b.conv('c1', 'input', 3, 4, 3, { pad: 1, bias: false });
  x = b.pool('MaxPool', 'p1', x, 2, 2, 0, true); // 8x8 -> 4x4, ceil mode with exact windows
  x = b.simple('Relu', 'r1', b.bn('bn', b.conv('c2', x, 4, 5, 3, { pad: 1 }), 5));
  x = b.pool('MaxPool', 'p2', x, 3, 3); // 4x4 -> 1x1, the last row and column dropped
  x = b.linear('fc', b.flatten('flat', x), 5, 3);
  for (const k of ['c1.weight', 'c2.weight']) b.tensors[k]!.data.forEach((v, i, a) => (a[i] = Math.round(v * 4)));
  const m = b.model('pools', [3, 8, 8], x);
  const r = new Rng(61);
  const input: Tensor = { shape: [4, 3, 8, 8], data: Float32Array.from({ length: 4 * 3 * 64 }, () => Math.floor(r.next() * 3)) };
  const ref = referenceForward(m, input.data, input.shape, { taps: ['p1', 'p2'] });
  for (const blockedInference of [true, false]) {
    const tm = TorchModel.create(m, { blockedInference });
    const { outputs, taps } = await tm.forward(input.data, input.shape, { taps: ['p1', 'p2'] });
    assertClose(outputs.fc, ref.outputs.fc!, `fc blocked=${blockedInference}`, 1e-5);
    assertClose(taps.p1, ref.taps.p1!, `p1 blocked=${blockedInference}`, 0);
    assertClose(taps.p2, ref.taps.p2!, `p2 blocked=${blockedInference}`, 1e-5);
    tm.dispose();
  }
  const labels = Int32Array.from({ length: 4 }, (_, i) => i % 3);
  const after: Record<string, Tensor>[] = [];
  for (const fastMaxPool of [true, false]) {
    const tm = TorchModel.create(m, { fastMaxPool });
    tm.configureOptimizer({ momentum: 0.9, nesterov: false, weightDecay: 0 });
    for (let i = 0; i < 2; i++) await tm.trainStep(input.data, input.shape, labels, 0.01);
    after.push(tm.readTensors());
    tm.dispose();
  }
  assert.notDeepEqual(after[0]!['c1.weight']!.data, m.tensors['c1.weight']!.data, 'weights moved');
  for (const k of Object.keys(after[1]!)) assert.deepEqual(after[0]![k]!.data, after[1]![k]!.data, `${k}: engine pool vs libtorch`);
});

test('large CPU blocks are cached: a repeated training step allocates none, release empties the cache, CMIPRUNE_CPU_CACHE_MB=0 opts out', { skip: addonSkip }, async () => {
  // a model whose activations exceed the 1 MiB threshold: batch 16, 16 channels of 32x32
  const b = new Builder(new Rng(11));
  let x = b.simple('Relu', 'r1', b.bn('bn1', b.conv('c1', 'input', 3, 16, 3, { pad: 1 }), 16));
  x = b.pool('MaxPool', 'p1', b.simple('Relu', 'r2', b.bn('bn2', b.conv('c2', x, 16, 16, 3, { pad: 1 }), 16)), 2, 2);
  x = b.linear('fc', b.flatten('flat', b.simple('GlobalAvgPool', 'gap', x)), 16, 4);
  const m = b.model('cache', [3, 32, 32], x);
  const input = uniformTensor(new Rng(70), [16, 3, 32, 32]);
  const labels = Int32Array.from({ length: 16 }, (_, i) => i % 4);
  const tm = TorchModel.create(m);
  tm.configureOptimizer({ momentum: 0.9, nesterov: true, weightDecay: 5e-4 });
  assert.equal(engineCacheStats().installed, true);
  for (let i = 0; i < 2; i++) await tm.trainStep(input.data, input.shape, labels, 0.01);
  const before = engineCacheStats();
  await tm.trainStep(input.data, input.shape, labels, 0.01);
  const after = engineCacheStats();
  assert.equal(after.misses, before.misses, 'third step: every large block came from the cache');
  assert.ok(after.hits > before.hits, `third step used cached blocks (${before.hits} -> ${after.hits})`);
  assert.ok(after.cachedBytes >= 1 << 20, 'freed blocks wait in the cache');
  tm.dispose();
  releaseCachedMemory();
  assert.equal(engineCacheStats().cachedBytes, 0);

  const engineModule = new URL('../src/engine/index.js', import.meta.url).href;
  const probe = `import(${JSON.stringify(engineModule)}).then((e) => console.log(JSON.stringify(e.engineCacheStats())))`;
  const r = spawnSync(process.execPath, ['-e', probe], { env: { ...process.env, CMIPRUNE_CPU_CACHE_MB: '0' }, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).installed, false);
});

test('CMIPRUNE_FAST_PATHS=0 gives rankings and experiment points their own keys; the default keys are unchanged', async () => {
  const parts = { version: 'v', model: 'm', sample: 's', alpha: 1.01, log2: false, maxSelect: null, greedyTail: false, sigma: 'median' as const, permutationTest: null, mean: [0.5], std: [0.25] };
  const dir = await mkdtemp(join(tmpdir(), 'cmiprune-keys-'));
  try {
    const plain = checkpointKey(parts);
    const off = await withFastPaths(false, () => checkpointKey(parts));
    assert.notEqual(off, plain);
    // the default key is the fields' hash alone, as before the tag existed
    assert.equal(plain, createHash('sha256').update(JSON.stringify(['v', 'm', 's', 1.01, false, null, false, 'median', null, [0.5], [0.25]])).digest('hex').slice(0, 16));
    const key = { step: 'sweep', kind: 'sweep', criterion: 'l1' };
    const store = await ResultStore.open(dir, 'sha');
    await store.put(key, 1, { wall: 0, cpu: 0 });
    await withFastPaths(false, async () => {
      const s = await ResultStore.open(dir, 'sha');
      assert.equal(s.has(key), false, 'a default point is not resumed with the fast paths off');
      assert.deepEqual(s.skipped, []);
      await s.put(key, 2, { wall: 0, cpu: 0 });
      assert.equal((await ResultStore.open(dir, 'sha')).get(key)?.value, 2);
    });
    const again = await ResultStore.open(dir, 'sha');
    assert.equal(again.get(key)?.value, 1);
    assert.equal(again.size, 1);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
