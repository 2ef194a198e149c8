import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SequentialBuilder, vgg16bn } from '../src/ir/builder.js';
import { cloneModel } from '../src/ir/model.js';
import { inferShapes, modelCost, ShapeError } from '../src/ir/shapes.js';
import { randomSource } from './support/random.js';

test('VGG16-BN shapes, parameters and multiply-adds match the architecture', () => {
  const m = vgg16bn({ random: randomSource(1) });
  const shapes = inferShapes(m, 7);
  assert.deepEqual(shapes.get(m.outputs[0]!), [7, 10]);
  const widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512];
  const spatial = [32, 32, 16, 16, 8, 8, 8, 4, 4, 4, 2, 2, 2];
  const convs = m.nodes.filter((n) => n.op === 'Conv2d');
  assert.equal(convs.length, 13);
  let convParams = 0;
  let convMacs = 0;
  let cin = 3;
  widths.forEach((w, i) => {
    convParams += 9 * cin * w;
    convMacs += 9 * cin * w * spatial[i]! ** 2;
    assert.deepEqual(shapes.get(convs[i]!.outputs[0]), [7, w, spatial[i], spatial[i]]);
    cin = w;
  });
  const cost = modelCost(m);
  const bnParams = 2 * (widths.reduce((a, b) => a + b, 0) + 512);
  const fcParams = 512 * 512 + 512 + 512 * 10 + 10;
  assert.equal(cost.params, convParams + bnParams + fcParams);
  assert.equal(cost.macs, convMacs + 512 * 512 + 512 * 10);
  // published figures for this network (../shared/models/README.md): ~15.0 M params, ~313 M MACs
  assert.ok(Math.abs(cost.params / 1e6 - 15.0) < 0.05, `params ${cost.params}`);
  assert.ok(Math.abs(cost.macs / 1e6 - 313) < 1, `macs ${cost.macs}`);
});

test('grouped, strided conv and pooling shapes follow PyTorch', () => {
  const m = new SequentialBuilder('t', [4, 9, 9], { random: randomSource(2) })
    .conv(8, 3, { stride: 2, padding: 1, groups: 2 })
    .maxpool(3, 2, 1)
    .globalAvgPool()
    .flatten()
    .linear(5)
    .build();
  const s = inferShapes(m, 2);
  assert.deepEqual(s.get(m.nodes[0]!.outputs[0]), [2, 8, 5, 5]);
  assert.deepEqual(s.get(m.nodes[1]!.outputs[0]), [2, 8, 3, 3]);
  assert.deepEqual(s.get(m.outputs[0]!), [2, 5]);
  assert.equal(modelCost(m).layers[0]!.macs, 8 * 25 * 2 * 9);
});

test('shape errors name the node', () => {
  const base = new SequentialBuilder('t', [3, 8, 8], { random: randomSource(3) }).conv(4, 3).relu().conv(6, 3).build();
  const bad = cloneModel(base);
  const conv2 = bad.nodes[2]!;
  assert.equal(conv2.op, 'Conv2d');
  if (conv2.op === 'Conv2d') conv2.attrs.inChannels = 5;
  assert.throws(() => inferShapes(bad), (e: Error) => e instanceof ShapeError && /node 'conv2' \(Conv2d\).*4 channels.*expects 5/.test(e.message));

  const wrongWeight = cloneModel(base);
  wrongWeight.tensors['conv0.weight'] = { shape: [4, 3, 2, 2], data: new Float32Array(48) };
  assert.throws(() => inferShapes(wrongWeight), /node 'conv0' \(Conv2d\): parameter 'weight' has shape \[4,3,2,2\], expected \[4,3,3,3\]/);

  const dangling = cloneModel(base);
  dangling.nodes[1]!.inputs = ['nowhere'];
  assert.throws(() => inferShapes(dangling), /node 'relu1' \(Relu\): input 'nowhere' is not produced/);

  const missing = cloneModel(base);
  delete missing.tensors['conv2.bias'];
  assert.throws(() => inferShapes(missing), /node 'conv2' \(Conv2d\): parameter 'bias' refers to missing tensor 'conv2.bias'/);

  const addMismatch = cloneModel(base);
  addMismatch.nodes.push({ name: 'add', op: 'Add', inputs: [addMismatch.nodes[0]!.outputs[0], addMismatch.nodes[2]!.outputs[0]], outputs: ['sum'], attrs: {}, params: {} });
  addMismatch.outputs = ['sum'];
  assert.throws(() => inferShapes(addMismatch), /node 'add' \(Add\): input shapes differ/);
});

test('conv units absorb the BN and ReLU that follow a conv, in network order', async () => {
  const { convUnits } = await import('../src/ir/graph.js');
  const m = vgg16bn({ random: randomSource(4) });
  const units = convUnits(m);
  assert.equal(units.length, 13);
  assert.deepEqual(units.map((u) => u.channels), [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]);
  for (const u of units) {
    assert.equal(u.bn?.inputs[0], u.conv.outputs[0]);
    assert.equal(u.relu?.inputs[0], u.bn?.outputs[0]);
    assert.equal(u.tap, u.relu?.outputs[0]);
  }
  // a conv whose output also feeds a residual Add keeps its raw output as the tap
  const r = new SequentialBuilder('r', [3, 8, 8], { random: randomSource(5) }).conv(3, 3, { padding: 1 }).build();
  r.nodes.push({ name: 'add', op: 'Add', inputs: ['input', r.nodes[0]!.outputs[0]], outputs: ['sum'], attrs: {}, params: {} });
  r.nodes.push({ name: 'act', op: 'Relu', inputs: [r.nodes[0]!.outputs[0]], outputs: ['y'], attrs: {}, params: {} });
  r.outputs = ['sum', 'y'];
  assert.equal(convUnits(r)[0]!.tap, r.nodes[0]!.outputs[0]);
});
