// The engine against the tests' independent float64 reference interpreter (test/support/reference.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

import { engineCacheStats, getThreads, releaseCachedMemory, setThreads, TorchModel } from '../src/engine/index.js';
import type { Model, Tensor } from '../src/ir/model.js';
import { UserError } from '../src/util/errors.js';
import { addonSkip } from './support/addon.js';
import { GraphBuilder as Builder } from './support/graph.js';
import { Rng, uniformTensor } from './support/random.js';
import { referenceForward } from './support/reference.js';

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

test('fastPaths: false and CMIPRUNE_FAST_PATHS=0 turn every fast path off at once (bit-identical to all switches off)', { skip: addonSkip }, async () => {
  const m = winogradNet(6);
  const x = uniformTensor(new Rng(51), [2, 3, 16, 16]);
  const run = async (opts: Parameters<typeof TorchModel.create>[1]) => {
    const tm = TorchModel.create(m, opts);
    try {
      return (await tm.forward(x.data, x.shape)).outputs.fc!.data;
    } finally {
      tm.dispose();
    }
  };
  const allOff = await run({ winograd: false, smallConv: false, fusedSgd: false, fuseBnRelu: false, fastMaxPool: false });
  const fast = await run({});
  assert.notDeepEqual(fast, allOff); // the fast paths change the rounding, so the switch is observable
  // the single switch wins over individual switches left on
  assert.deepEqual(await run({ fastPaths: false, winograd: true, smallConv: true }), allOff);
  process.env.CMIPRUNE_FAST_PATHS = '0';
  try {
    assert.deepEqual(await run({}), allOff);
  } finally {
    delete process.env.CMIPRUNE_FAST_PATHS;
  }
  assert.deepEqual(await run({}), fast);
});

test('Winograd and tiny-image convolutions: forward (folded, blocked, plain) matches the reference; gradients match libtorch', { skip: addonSkip }, async () => {
  const m = winogradNet();
  const x = uniformTensor(new Rng(50), [4, 3, 16, 16]);
  const ref = referenceForward(m, x.data, x.shape, { taps: ['conv2', 'conv4', 'conv5'] });
  const outs: Record<string, Float32Array> = {};
  const direct = { winograd: false, smallConv: false };
  for (const opts of [{}, { blockedInference: false }, direct]) {
    const tm = TorchModel.create(m, opts);
    const label = JSON.stringify(opts);
    // without taps BN folds into conv2; tapping conv2 keeps it unfolded
    const { outputs } = await tm.forward(x.data, x.shape);
    assertClose(outputs.fc, ref.outputs.fc!, `fc ${label}`, 1e-4);
    const { taps } = await tm.forward(x.data, x.shape, { taps: ['conv2', 'conv4', 'conv5'] });
    assertClose(taps.conv2, ref.taps.conv2!, `conv2 tap ${label}`, 1e-4);
    assertClose(taps.conv4, ref.taps.conv4!, `conv4 tap ${label}`, 1e-4);
    assertClose(taps.conv5, ref.taps.conv5!, `conv5 tap ${label}`, 1e-4);
    outs[label] = outputs.fc.data;
    tm.dispose();
  }
  // the fast path really ran: same values up to rounding, not bit for bit
  assert.notDeepEqual(outs['{}'], outs[JSON.stringify(direct)]);

  // one plain SGD step: the weight change is -lr * gradient, so it compares the gradients of every
  // conv (input gradients flow through conv2..conv4, bias and no-bias cases; a bias before BN gets
  // none) with libtorch's own
  const labels = Int32Array.from({ length: 4 }, (_, i) => i % 5);
  const deltas: Record<string, Record<string, Float32Array>>[] = [];
  for (const opts of [{}, direct]) {
    const tm = TorchModel.create(m, opts);
    tm.configureOptimizer({ momentum: 0, nesterov: false, weightDecay: 0 });
    await tm.trainStep(x.data, x.shape, labels, 1);
    const after = tm.readTensors();
    const d: Record<string, Float32Array> = {};
    for (const k of ['conv2.weight', 'conv4.bias', 'conv3.weight', 'conv4.weight', 'conv1.weight', 'conv5.weight', 'conv5.bias', 'conv6.weight'])
      d[k] = after[k]!.data.map((v, i) => v - m.tensors[k]!.data[i]!);
    deltas.push({ d });
    tm.dispose();
  }
  for (const k of Object.keys(deltas[0]!.d!)) {
    const a = deltas[0]!.d![k]!, b = deltas[1]!.d![k]!;
    const scale = Math.max(...b.map(Math.abs));
    assert.ok(scale > 1e-4, `${k}: gradient is not trivially zero`);
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    assert.ok(worst <= 1e-3 * scale, `${k}: fast vs direct gradient differ by ${worst} (scale ${scale})`);
  }
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
