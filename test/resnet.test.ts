// ResNet "option A" shortcuts (Slice every second row/column, Pad zero channels): the shared
// ResNet-20/56 evaluate to their published accuracies, the engine equals onnxruntime on the
// re-exported files, PyTorch's unfolded `pads` arithmetic is folded at import, and the new ops agree
// with the reference interpreter, train, export to TF.js and fail by node name.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { loadCifar10 } from '../src/data/cifar10.js';
import { classBalancedSample, normalizeBatch } from '../src/data/dataset.js';
import { TorchModel, setThreads, validateModel } from '../src/engine/index.js';
import { countOnnx } from '../src/export/count.js';
import { exportTfjs } from '../src/export/index.js';
import { resnetCifar } from '../src/ir/builder.js';
import type { Model, Node } from '../src/ir/model.js';
import { inferShapes, modelCost } from '../src/ir/shapes.js';
import { exportOnnx, importOnnx, loadOnnxFile } from '../src/onnx/index.js';
import { DataType, type pb } from '../src/onnx/proto.js';
import { channelGroups } from '../src/prune/groups.js';
import { applyPlan, maskPlan } from '../src/prune/surgery.js';
import { addonSkip } from './support/addon.js';
import { GraphBuilder } from './support/graph.js';
import { aInt, aInts, aStr, aTensor, constant as k, expectImportError, f32, i64, nd, onnxBytes, vi } from './support/onnx.js';
import { runOrt } from './support/ort.js';
import { Rng, randn, randomSource } from './support/random.js';
import { maxAbsDiff, referenceForward } from './support/reference.js';
import { MODELS_DIR, runCli } from './support/shared.js';

const RESNET20 = join(MODELS_DIR, 'resnet20_cifar10.onnx');
const RESNET56 = join(MODELS_DIR, 'resnet56_cifar10.onnx');

const cli = runCli;

for (const [file, accuracy] of [
  [RESNET20, 0.9173],
  [RESNET56, 0.9339],
] as const) {
  const name = file.split('/').pop()!;
  test(`cmiprune eval: ${name} gives ${accuracy} on the 10,000 CIFAR-10 test images`, { skip: addonSkip }, () => {
    const r = cli(['eval', '--model', file, '--threads', '2']);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim());
    assert.equal(out.images, 10000);
    assert.ok(Math.abs(out.accuracy - accuracy) <= 0.0005, `accuracy ${out.accuracy}, expected ${accuracy}`);
    assert.equal(out.normalization.source, 'metadata');
  });
}

test('ResNet-20 imports with explicit Slice/Pad nodes; IR cost equals countOnnx of the file and of the re-export', async () => {
  const m = await loadOnnxFile(RESNET20);
  const special = m.nodes.filter((n) => n.op === 'Slice' || n.op === 'Pad').map((n) => [n.name, n.op, n.attrs]);
  assert.deepEqual(special, [
    ['/layer2/layer2.0/Slice', 'Slice', { axes: [2], starts: [0], ends: [32], steps: [2] }],
    ['/layer2/layer2.0/Slice_1', 'Slice', { axes: [3], starts: [0], ends: [32], steps: [2] }],
    ['/layer2/layer2.0/Pad', 'Pad', { pads: [0, 8, 0, 0, 0, 8, 0, 0], mode: 'constant', value: 0 }],
    ['/layer3/layer3.0/Slice', 'Slice', { axes: [2], starts: [0], ends: [16], steps: [2] }],
    ['/layer3/layer3.0/Slice_1', 'Slice', { axes: [3], starts: [0], ends: [16], steps: [2] }],
    ['/layer3/layer3.0/Pad', 'Pad', { pads: [0, 16, 0, 0, 0, 16, 0, 0], mode: 'constant', value: 0 }],
  ]);
  const shapes = inferShapes(m, 1);
  assert.deepEqual(shapes.get('/layer2/layer2.0/Pad_output_0'), [1, 32, 16, 16]);
  assert.deepEqual(shapes.get('/layer3/layer3.0/Pad_output_0'), [1, 64, 8, 8]);
  const cost = modelCost(m);
  assert.equal(cost.params, 269722); // "0.27 M parameters"
  for (const l of cost.layers.filter((x) => x.op === 'Slice' || x.op === 'Pad')) assert.deepEqual([l.params, l.macs], [0, 0]);
  const file = countOnnx(await readFile(RESNET20));
  const exported = exportOnnx(m);
  const again = countOnnx(exported);
  assert.deepEqual([file.params, file.macs], [cost.params, cost.macs]);
  assert.deepEqual([again.params, again.macs], [cost.params, cost.macs]);
  // the re-export imports to the same graph
  const back = importOnnx(exported);
  assert.deepEqual(back.nodes.map((n) => [n.name, n.op, n.attrs]), m.nodes.map((n) => [n.name, n.op, n.attrs]));
  // pruning: a block's inner conv is prunable; the stem and every block's output conv feed the
  // residual stream, coupled through Add, and are refused by name
  const groups = channelGroups(m);
  assert.equal(groups.length, 19);
  for (const g of groups) {
    if (/\/conv1\/Conv$/.test(g.name) && g.name.startsWith('/layer')) assert.ok(g.prunable, `${g.name}: ${g.reason}`);
    else assert.ok(!g.prunable && /node '[^']+' \(Add\)/.test(g.reason ?? ''), `${g.name}: ${g.reason}`);
  }
});

for (const file of [RESNET20, RESNET56]) {
  const name = file.split('/').pop()!;
  test(`export round trip: engine logits on ${name} equal onnxruntime on the re-exported model within 1e-4`, { skip: addonSkip }, async () => {
    setThreads(2);
    const model = await loadOnnxFile(file);
    const ds = classBalancedSample(await loadCifar10('test'), 16, 3);
    const x = normalizeBatch(ds, { start: 0, end: ds.n }, JSON.parse(model.metadata.mean!), JSON.parse(model.metadata.std!));
    const shape = [ds.n, 3, 32, 32];
    const engine = TorchModel.create(model);
    const ours = (await engine.forward(x, shape)).outputs[model.outputs[0]!]!;
    engine.dispose();
    const exported = await runOrt(exportOnnx(model), model.inputs[0]!.name, x, shape);
    const original = await runOrt(await readFile(file), model.inputs[0]!.name, x, shape);
    assert.deepEqual(ours.shape, [ds.n, 10]);
    assert.ok(maxAbsDiff(exported, ours.data) < 1e-4, `vs re-export: ${maxAbsDiff(exported, ours.data)}`);
    assert.ok(maxAbsDiff(original, ours.data) < 1e-4, `vs original: ${maxAbsDiff(original, ours.data)}`);
    let correct = 0;
    for (let i = 0; i < ds.n; i++) {
      const row = ours.data.subarray(i * 10, i * 10 + 10);
      if (row.indexOf(Math.max(...row)) === ds.labels[i]) correct++;
    }
    assert.ok(correct >= 12, `${correct}/16 correct`);
  });
}

// ---------- hand-written ONNX in PyTorch's unfolded style ----------

/** the graph in PyTorch's exporter style: opset 13, producer 'pytorch', one output */
const pytorchBytes = (nodes: pb.INodeProto[], inits: pb.ITensorProto[], input: pb.IValueInfoProto, output: string): Uint8Array =>
  onnxBytes({ nodes, inits, input, outputs: [output], producer: 'pytorch' });

const INT64_MAX = 9223372036854775807n;

/**
 * x[:, :, ::2, ::2] as TorchScript writes it (one Slice per axis, Constant inputs), then
 * F.pad(.., torchPad) with the `pads` input computed the way torch.onnx's opset-11
 * _prepare_onnx_paddings does without constant folding; `rankFromShape` takes the rank from
 * Size(Shape(x)) instead of a constant. With `conv`, a strided conv branch is added (an option-A block).
 */
function torchStyleShortcut(rng: Rng, torchPad: number[], opts: { rankFromShape?: boolean; conv?: boolean } = {}): Uint8Array {
  const nodes: pb.INodeProto[] = [
    k('st', i64([0])),
    k('en', i64([INT64_MAX])),
    k('ax2', i64([2])),
    k('ax3', i64([3])),
    k('two1d', i64([2])),
    nd('Slice', '/Slice', ['x', 'st', 'en', 'ax2', 'two1d'], ['s1']),
    nd('Slice', '/Slice_1', ['s1', 'st', 'en', 'ax3', 'two1d'], ['s2']),
    // pad_len = Gather(Shape(pad), [0]); extension = rank * 2 - pad_len
    k('pad_list', i64(torchPad)),
    nd('Shape', '/Shape', ['pad_list'], ['pad_shape']),
    k('zero1d', i64([0])),
    nd('Gather', '/Gather', ['pad_shape', 'zero1d'], ['pad_len'], [aInt('axis', 0)]),
    ...(opts.rankFromShape
      ? [nd('Shape', '/Shape_x', ['s2'], ['x_shape']), nd('Size', '/Size', ['x_shape'], ['rank'])]
      : [k('rank', i64([4], []))]),
    k('two', i64([2], [])),
    nd('Mul', '/Mul', ['rank', 'two'], ['rank2']),
    nd('Sub', '/Sub', ['rank2', 'pad_len'], ['extension']),
    nd('Cast', '/Cast', ['pad_list'], ['pad64'], [aInt('to', DataType.INT64)]),
    nd('ConstantOfShape', '/ConstantOfShape', ['extension'], ['zeros'], [aTensor('value', i64([0], [1]))]),
    nd('Concat', '/Concat', ['pad64', 'zeros'], ['paddings'], [aInt('axis', 0)]),
    k('pairs', i64([-1, 2])),
    nd('Reshape', '/Reshape', ['paddings', 'pairs'], ['paired']),
    // opset10.flip(paddings, [0])
    k('flip_st', i64([-1])),
    k('flip_en', i64([-INT64_MAX])),
    k('flip_ax', i64([0])),
    k('flip_step', i64([-1])),
    nd('Slice', '/Slice_2', ['paired', 'flip_st', 'flip_en', 'flip_ax', 'flip_step'], ['flipped']),
    nd('Transpose', '/Transpose', ['flipped'], ['begin_end'], [aInts('perm', [1, 0])]),
    k('minus1', i64([-1])),
    nd('Reshape', '/Reshape_1', ['begin_end', 'minus1'], ['pads_i']),
    nd('Cast', '/Cast_1', ['pads_i'], ['pads'], [aInt('to', DataType.INT64)]),
    k('value', f32([0], [])),
    nd('Pad', '/Pad', ['s2', 'pads', 'value'], ['padded'], [aStr('mode', 'constant')]),
  ];
  const inits: pb.ITensorProto[] = [];
  let output = 'padded';
  if (opts.conv) {
    const c = 4 + torchPad[4]! + torchPad[5]!;
    inits.push({ name: 'w', ...f32(Array.from(randn(rng, c * 4 * 9, 0.3)), [c, 4, 3, 3]) }, { name: 'b', ...f32(Array.from(randn(rng, c, 0.1)), [c]) });
    nodes.push(
      nd('Conv', '/conv/Conv', ['x', 'w', 'b'], ['conv'], [aInts('kernel_shape', [3, 3]), aInts('pads', [1, 1, 1, 1]), aInts('strides', [2, 2])]),
      nd('Add', '/Add', ['conv', 'padded'], ['sum']),
      nd('Relu', '/Relu', ['sum'], ['y']),
    );
    output = 'y';
  }
  return pytorchBytes(nodes, inits, vi('x', ['batch', 4, 8, 8]), output);
}

test('pads computed by shape arithmetic (ConstantOfShape/Concat/Reshape/Slice/Transpose/Cast) fold to constants at import', async () => {
  const rng = new Rng(5);
  const x = randn(new Rng(6), 3 * 4 * 8 * 8);
  const shape = [3, 4, 8, 8];
  for (const rankFromShape of [false, true]) {
    // an option-A block: channels 4 -> 1 + 4 + 3
    const bytes = torchStyleShortcut(rng, [0, 0, 0, 0, 1, 3], { rankFromShape, conv: true });
    const m = importOnnx(bytes, { fileName: 'block.onnx' });
    assert.deepEqual(
      m.nodes.map((n) => [n.name, n.op]),
      [
        ['/Slice', 'Slice'],
        ['/Slice_1', 'Slice'],
        ['/Pad', 'Pad'],
        ['/conv/Conv', 'Conv2d'],
        ['/Add', 'Add'],
        ['/Relu', 'Relu'],
      ],
    );
    const pad = m.nodes.find((n) => n.op === 'Pad')!;
    assert.deepEqual(pad.attrs, { pads: [0, 1, 0, 0, 0, 3, 0, 0], mode: 'constant', value: 0 });
    assert.deepEqual(Object.keys(m.tensors).sort(), ['b', 'w']);
    // onnxruntime evaluates the arithmetic itself: the folded model must compute the same
    const ref = await runOrt(bytes, 'x', x, shape);
    assert.ok(maxAbsDiff(ref, referenceForward(m, x, shape).outputs[m.outputs[0]!]!.data) < 1e-5);
    assert.ok(maxAbsDiff(ref, await runOrt(exportOnnx(m), 'x', x, shape)) < 1e-6);
  }
  // spatial and channel padding together, asymmetric: torch order (W, H, C) -> ONNX [N,C,H,W begin, end]
  const bytes = torchStyleShortcut(rng, [1, 2, 0, 1, 1, 0]);
  const m = importOnnx(bytes);
  assert.deepEqual(m.nodes.find((n) => n.op === 'Pad')!.attrs, { pads: [0, 1, 0, 1, 0, 0, 1, 2], mode: 'constant', value: 0 });
  assert.deepEqual(inferShapes(m, 3).get(m.outputs[0]!), [3, 5, 5, 7]);
  const ref = await runOrt(bytes, 'x', x, shape);
  assert.equal(maxAbsDiff(ref, referenceForward(m, x, shape).outputs[m.outputs[0]!]!.data), 0);
  assert.equal(maxAbsDiff(ref, await runOrt(exportOnnx(m), 'x', x, shape)), 0);
});

test('dynamic or unsupported Slice/Pad patterns are one error naming the file, node and op', () => {
  const x = vi('x', ['batch', 4, 8, 8]);
  const expectErr = expectImportError;
  // pads from the run-time shape (batch size included)
  expectErr(
    pytorchBytes([nd('Shape', 's', ['x'], ['shp']), nd('Concat', 'cat', ['shp', 'shp'], ['pads'], [aInt('axis', 0)]), nd('Pad', 'pad', ['x', 'pads'], ['y'])], [], x, 'y'),
    /^bad\.onnx: node 'pad' \(op Pad\): pads input 'pads' depends on the batch size/,
  );
  // arithmetic on activations is not constant folding
  expectErr(
    pytorchBytes([k('two', f32([2], [])), nd('Mul', 'scale', ['x', 'two'], ['y'])], [], x, 'y'),
    /^bad\.onnx: node 'scale' \(op Mul\) is not supported; .*ConstantOfShape\/Transpose\/Sub\/Mul\/Div\/Neg on constants .*\(unsupported in this graph: Mul x1\)$/,
  );
  expectErr(
    pytorchBytes([k('p', i64([0, 0, 1, 1, 0, 0, 1, 1])), nd('Pad', 'pad', ['x', 'p'], ['y'], [aStr('mode', 'reflect')])], [], x, 'y'),
    /^bad\.onnx: node 'pad' \(op Pad\): mode 'reflect' is not supported/,
  );
  expectErr(
    pytorchBytes([k('p', i64([0, -1, 0, 0, 0, 0, 0, 0])), nd('Pad', 'pad', ['x', 'p'], ['y'])], [], x, 'y'),
    /^bad\.onnx: node 'pad' \(op Pad\): negative pads/,
  );
  expectErr(
    pytorchBytes([k('st', i64([1])), k('en', i64([3])), k('ax', i64([1])), nd('Slice', 'sl', ['x', 'st', 'en', 'ax'], ['y'])], [], x, 'y'),
    /^bad\.onnx: node 'sl' \(op Slice\): slicing axis 1 of \[-1,4,8,8\] is not supported/,
  );
  expectErr(
    pytorchBytes([k('st', i64([-1])), k('en', i64([-INT64_MAX])), k('ax', i64([2])), k('sp', i64([-1])), nd('Slice', 'flip', ['x', 'st', 'en', 'ax', 'sp'], ['y'])], [], x, 'y'),
    /^bad\.onnx: node 'flip' \(op Slice\): step -1 on axis 2 is not supported/,
  );
  // whole-axis slices and zero pads are no-ops: nothing reaches the IR
  const noop = importOnnx(
    pytorchBytes(
      [k('st', i64([0, 0])), k('en', i64([INT64_MAX, 8])), k('ax', i64([0, 3])), nd('Slice', 'sl', ['x', 'st', 'en', 'ax'], ['s']), k('p', i64([0, 0, 0, 0, 0, 0, 0, 0])), nd('Pad', 'pad', ['s', 'p'], ['r']), nd('Relu', 'relu', ['r'], ['y'])],
      [],
      x,
      'y',
    ),
  );
  assert.deepEqual(noop.nodes.map((n) => n.op), ['Relu']);
  // INT64_MAX in int64_data (not raw bytes), as onnx.helper writes small tensors
  const max = { dims: [1], dataType: DataType.INT64, int64Data: ['9223372036854775807'] as never };
  const viaData = importOnnx(
    pytorchBytes([k('en', max), k('st', i64([0])), k('ax', i64([3])), k('sp', i64([3])), nd('Slice', 'sl', ['x', 'st', 'en', 'ax', 'sp'], ['y'])], [], x, 'y'),
  );
  assert.deepEqual(viaData.nodes.map((n) => n.attrs), [{ axes: [3], starts: [0], ends: [8], steps: [3] }]);
});

// ---------- IR graphs with the new ops ----------

/** conv(stride 2) -> BN -> ReLU -> conv -> BN, plus x[:, :, ::2, ::2] padded 2 + 2 zero channels, added; then GAP -> Linear. */
function optionABlock(rng: Rng): Model {
  const g = new GraphBuilder(rng);
  const c1 = g.conv('c1', 'input', 4, 8, 3, { stride: 2, pad: 1 });
  const r1 = g.simple('Relu', 'r1', g.bn('b1', c1, 8));
  const b2 = g.bn('b2', g.conv('c2', r1, 8, 8, 3, { pad: 1 }), 8);
  const sub = g.slice('sub', 'input', [2, 3], [0, 0], [8, 8], [2, 2]);
  const pad = g.pad('pad', sub, [0, 2, 0, 0, 0, 2, 0, 0]);
  const out = g.simple('Relu', 'out', g.add('add', b2, pad));
  return g.model('block', [4, 8, 8], g.linear('fc', g.flatten('flat', g.simple('GlobalAvgPool', 'gap', out)), 8, 5));
}

/** odd sizes, offsets and steps, spatial + channel padding with a non-zero value */
function generalSlicePad(rng: Rng, value: number): Model {
  const g = new GraphBuilder(rng);
  const s = g.slice('crop', 'input', [2, 3], [1, 0], [8, 7], [3, 2]); // [3, 3, 4]
  const p = g.pad('pad', s, [0, 1, 2, 0, 0, 2, 1, 3], value); // [6, 6, 7]
  const c = g.conv('conv', p, 6, 4, 3, { pad: 1 });
  const s2 = g.slice('sub', c, [3], [1], [7], [2]); // [4, 6, 3]
  return g.model('general', [3, 9, 7], g.linear('fc', g.flatten('flat', s2), 4 * 6 * 3, 3));
}

test('engine forward equals the reference interpreter on an option-A block and on general Slice/Pad', { skip: addonSkip }, async () => {
  setThreads(2);
  for (const [m, inShape] of [
    [optionABlock(new Rng(21)), [4, 8, 8]],
    [generalSlicePad(new Rng(22), 0.5), [3, 9, 7]],
  ] as const) {
    const shape = [5, ...inShape];
    const x = randn(new Rng(23), 5 * inShape.reduce((p, q) => p * q, 1));
    const ref = referenceForward(m, x, shape, { taps: ['pad'] });
    for (const blockedInference of [true, false]) {
      const e = TorchModel.create(m, { blockedInference });
      const r = await e.forward(x, shape, { taps: ['pad'] });
      e.dispose();
      const out = r.outputs[m.outputs[0]!]!;
      assert.deepEqual(out.shape, ref.outputs[m.outputs[0]!]!.shape);
      assert.ok(maxAbsDiff(out.data, ref.outputs[m.outputs[0]!]!.data) < 1e-4, `${m.name} blocked=${blockedInference}`);
      assert.deepEqual(r.taps.pad!.shape, ref.taps.pad!.shape);
      assert.ok(maxAbsDiff(r.taps.pad!.data, ref.taps.pad!.data) < 1e-5);
    }
    // and the ONNX export, run by onnxruntime
    const ort = await runOrt(exportOnnx(m), 'input', x, shape);
    assert.ok(maxAbsDiff(ort, ref.outputs[m.outputs[0]!]!.data) < 1e-4, `${m.name} via onnxruntime`);
    assert.deepEqual([countOnnx(exportOnnx(m)).params, countOnnx(exportOnnx(m)).macs], [modelCost(m).params, modelCost(m).macs]);
  }
});

test('training steps run through Slice and Pad: finite loss, the weights behind them change', { skip: addonSkip }, async () => {
  setThreads(2);
  // c0's only path to the loss goes through the Slice and the Pad
  const g = new GraphBuilder(new Rng(31));
  const c0 = g.conv('c0', 'input', 3, 4, 3, { pad: 1 });
  const p = g.pad('pad', g.slice('sub', g.simple('Relu', 'r0', c0), [2, 3], [0, 1], [8, 8], [2, 2]), [0, 1, 1, 0, 0, 3, 0, 1]);
  const m = g.model('through', [3, 8, 8], g.linear('fc', g.flatten('flat', g.simple('GlobalAvgPool', 'gap', p)), 8, 4));
  const block = optionABlock(new Rng(32));
  for (const [model, inShape, watch] of [
    [m, [3, 8, 8], 'c0.weight'],
    [block, [4, 8, 8], 'c1.weight'],
  ] as const) {
    for (const channelsLast of [false, true]) {
      const e = TorchModel.create(model, { channelsLast });
      e.configureOptimizer({ momentum: 0.9, nesterov: false, weightDecay: 0 });
      const n = 16;
      const x = randn(new Rng(33), n * inShape.reduce((a, b) => a * b, 1));
      const labels = Int32Array.from({ length: n }, (_, i) => i % 4);
      const before = e.readTensors([watch])[watch]!.data.slice();
      const losses: number[] = [];
      for (let s = 0; s < 5; s++) losses.push((await e.trainStep(x, [n, ...inShape], labels, 0.05)).loss);
      const after = e.readTensors([watch])[watch]!.data;
      e.dispose();
      assert.ok(losses.every(Number.isFinite), `losses ${losses}`);
      assert.ok(maxAbsDiff(before, after) > 1e-6, `${model.name}: ${watch} did not change`);
      assert.ok(losses[4]! < losses[0]!, `${model.name} channelsLast=${channelsLast}: loss ${losses[0]} -> ${losses[4]}`);
    }
  }
});

test('a training step on ResNet-20 with real images', { skip: addonSkip }, async () => {
  setThreads(2);
  const model = await loadOnnxFile(RESNET20);
  const ds = classBalancedSample(await loadCifar10('train'), 32, 1);
  const x = normalizeBatch(ds, { start: 0, end: ds.n }, JSON.parse(model.metadata.mean!), JSON.parse(model.metadata.std!));
  const e = TorchModel.create(model);
  e.configureOptimizer({ momentum: 0.9, nesterov: false, weightDecay: 5e-4 });
  const w = 'layer1.0.conv1.weight' in model.tensors ? 'layer1.0.conv1.weight' : Object.keys(model.tensors)[0]!;
  const before = e.readTensors([w])[w]!.data.slice();
  const r = await e.trainStep(x, [ds.n, 3, 32, 32], Int32Array.from(ds.labels), 0.01);
  const after = e.readTensors([w])[w]!.data;
  e.dispose();
  assert.ok(Number.isFinite(r.loss) && r.loss < 1, `loss ${r.loss}`); // a trained net: low loss on training images
  assert.ok(maxAbsDiff(before, after) > 0);
});

test('shape and attribute errors name the Slice/Pad node', () => {
  const withNode = (m: Model, name: string, edit: (n: Node) => void): Model => {
    const c = structuredClone(m);
    edit(c.nodes.find((n) => n.name === name)!);
    return c;
  };
  const m = optionABlock(new Rng(41));
  assert.doesNotThrow(() => inferShapes(m));
  const cases: [Model, RegExp][] = [
    [withNode(m, 'sub', (n) => n.op === 'Slice' && (n.attrs.ends = [9, 8])), /node 'sub' \(Slice\): range \[0, 9\) on axis 2 must satisfy 0 <= start < end <= 8/],
    [withNode(m, 'sub', (n) => n.op === 'Slice' && (n.attrs.axes = [1, 3])), /node 'sub' \(Slice\): axes \[1,3\] must be spatial/],
    [withNode(m, 'sub', (n) => n.op === 'Slice' && (n.attrs.steps = [0, 2])), /node 'sub' \(Slice\): step 0 on axis 2/],
    [withNode(m, 'pad', (n) => n.op === 'Pad' && (n.attrs.pads = [1, 2, 0, 0, 0, 2, 0, 0])), /node 'pad' \(Pad\): .*batch dimension/],
    [withNode(m, 'pad', (n) => n.op === 'Pad' && (n.attrs.pads = [0, 2, 0, 0, 0, 1, 0, 0])), /node 'add' \(Add\): input shapes differ: \[1,8,4,4\] vs \[1,7,4,4\]/],
    [withNode(m, 'pad', (n) => n.op === 'Pad' && (n.attrs.pads = [0, 2, 0, 0] as never)), /node 'pad' \(Pad\): pads must be 8 integers/],
  ];
  for (const [bad, re] of cases) assert.throws(() => inferShapes(bad), re);
  // the engine's own validation, before anything reaches the addon
  assert.throws(() => validateModel(withNode(m, 'sub', (n) => n.op === 'Slice' && (n.attrs.axes = [0, 3]))), /node 'sub' \(Slice\): attr axes must be spatial/);
  assert.throws(() => validateModel(withNode(m, 'pad', (n) => n.op === 'Pad' && (n.attrs.mode = 'reflect' as never))), /node 'pad' \(Pad\): attr mode must be 'constant'/);
  assert.throws(() => exportOnnx(withNode(m, 'sub', (n) => n.op === 'Slice' && (n.attrs.starts = [8, 0]))), /node 'sub' \(Slice\): range \[8, 8\)/);
  // pruning refuses channels that reach a Pad, naming it
  const g = new GraphBuilder(new Rng(42));
  const p = g.pad('widen', g.slice('sub', g.conv('c0', 'input', 3, 4, 3, { pad: 1 }), [2, 3], [0, 0], [8, 8], [2, 2]), [0, 2, 0, 0, 0, 2, 0, 0]);
  const pm = g.model('p', [3, 8, 8], g.linear('fc', g.flatten('flat', g.simple('GlobalAvgPool', 'gap', p)), 8, 2));
  assert.match(channelGroups(pm)[0]!.reason ?? '', /node 'widen' \(Pad\)/);
});

test('TF.js export: option-A ResNet-20 gives the engine logits; a non-zero spatial pad value is refused by node', { skip: addonSkip }, async () => {
  await tf.setBackend('cpu');
  await tf.ready();
  setThreads(2);
  const dir = await mkdtemp(join(tmpdir(), 'cmiprune-resnet-tfjs-'));
  try {
    const model = await loadOnnxFile(RESNET20);
    await exportTfjs(model, join(dir, 'r20'));
    const json = JSON.parse(await readFile(join(dir, 'r20', 'model.json'), 'utf8')) as tf.io.ModelJSON;
    const handler: tf.io.IOHandler = {
      load: () =>
        tf.io.getModelArtifactsForJSON(json, async (manifest) => {
          const bufs: Buffer[] = [];
          for (const grp of manifest) for (const p of grp.paths) bufs.push(await readFile(join(dir, 'r20', p)));
          const all = Buffer.concat(bufs);
          return [tf.io.getWeightSpecs(manifest), all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength)];
        }),
    };
    const tm = await tf.loadLayersModel(handler);
    const n = 4;
    const x = randn(new Rng(51), n * 3 * 32 * 32);
    const nhwc = new Float32Array(x.length);
    for (let b = 0; b < n; b++) for (let c = 0; c < 3; c++) for (let i = 0; i < 1024; i++) nhwc[(b * 1024 + i) * 3 + c] = x[(b * 3 + c) * 1024 + i]!;
    const y = tm.predict(tf.tensor4d(nhwc, [n, 32, 32, 3])) as tf.Tensor;
    const theirs = (await y.data()) as Float32Array;
    y.dispose();
    tm.dispose();
    const e = TorchModel.create(model);
    const ours = (await e.forward(x, [n, 3, 32, 32])).outputs[model.outputs[0]!]!.data;
    e.dispose();
    assert.ok(maxAbsDiff(theirs, ours) < 1e-4, `TF.js vs engine ${maxAbsDiff(theirs, ours)}`);

    // cropping, uneven steps, spatial zeros and new channels
    const gm = generalSlicePad(new Rng(52), 0);
    await exportTfjs(gm, join(dir, 'general'));
    const gx = randn(new Rng(53), 2 * 3 * 9 * 7);
    const gjson = JSON.parse(await readFile(join(dir, 'general', 'model.json'), 'utf8')) as tf.io.ModelJSON;
    const gm2 = await tf.loadLayersModel({
      load: () =>
        tf.io.getModelArtifactsForJSON(gjson, async (manifest) => {
          const all = Buffer.concat(await Promise.all(manifest.flatMap((grp) => grp.paths.map((p) => readFile(join(dir, 'general', p))))));
          return [tf.io.getWeightSpecs(manifest), all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength)];
        }),
    });
    const gnhwc = new Float32Array(gx.length);
    for (let b = 0; b < 2; b++) for (let c = 0; c < 3; c++) for (let i = 0; i < 63; i++) gnhwc[(b * 63 + i) * 3 + c] = gx[(b * 3 + c) * 63 + i]!;
    const gy = gm2.predict(tf.tensor4d(gnhwc, [2, 9, 7, 3])) as tf.Tensor;
    const gtheirs = (await gy.data()) as Float32Array;
    gy.dispose();
    gm2.dispose();
    const gref = referenceForward(gm, gx, [2, 3, 9, 7]).outputs[gm.outputs[0]!]!.data;
    assert.ok(maxAbsDiff(gtheirs, gref) < 1e-4, `TF.js vs reference ${maxAbsDiff(gtheirs, gref)}`);

    await assert.rejects(exportTfjs(generalSlicePad(new Rng(52), 0.5), join(dir, 'general2')), /exportTfjs: node 'pad' \(Pad\) cannot be expressed in TF.js: spatial padding with the value 0.5/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('resnetCifar builds the exporter-named graph of ResNet-20/56 (option A); option B trains and exports', { skip: addonSkip }, async () => {
  setThreads(2);
  for (const [file, depth] of [
    [RESNET20, 20],
    [RESNET56, 56],
  ] as const) {
    const file_ = await loadOnnxFile(file);
    const built = resnetCifar({ random: randomSource(depth) }, { depth });
    const graph = (m: Model) => m.nodes.map((n) => [n.name, n.op, n.inputs, n.outputs, n.attrs, n.params]);
    assert.deepEqual(graph(built), graph(file_));
    assert.deepEqual(built.outputs, file_.outputs);
    const shapes = (m: Model) => Object.entries(m.tensors).map(([key, t]) => [key, t.shape]).sort();
    assert.deepEqual(shapes(built), shapes(file_));
    if (depth === 20) {
      // the file's weights load by name and give the file's logits
      const x = randn(new Rng(61), 2 * 3 * 32 * 32);
      const a = TorchModel.create({ ...built, tensors: file_.tensors });
      const b = TorchModel.create(file_);
      const ya = (await a.forward(x, [2, 3, 32, 32])).outputs.logits!.data;
      const yb = (await b.forward(x, [2, 3, 32, 32])).outputs.logits!.data;
      a.dispose();
      b.dispose();
      assert.equal(maxAbsDiff(ya, yb), 0);
    }
  }
  const b = resnetCifar({ random: randomSource(7) }, { depth: 8, shortcut: 'B', classes: 4 });
  assert.equal(b.nodes.filter((n) => n.op === 'Slice' || n.op === 'Pad').length, 0);
  assert.deepEqual(
    b.nodes.filter((n) => n.name.includes('shortcut')).map((n) => [n.name, n.op]),
    [
      ['/layer2/layer2.0/shortcut/shortcut.0/Conv', 'Conv2d'],
      ['/layer2/layer2.0/shortcut/shortcut.1/BatchNormalization', 'BatchNorm'],
      ['/layer3/layer3.0/shortcut/shortcut.0/Conv', 'Conv2d'],
      ['/layer3/layer3.0/shortcut/shortcut.1/BatchNormalization', 'BatchNorm'],
    ],
  );
  const e = TorchModel.create(b);
  e.configureOptimizer({ momentum: 0.9, nesterov: false, weightDecay: 0 });
  const x = randn(new Rng(62), 8 * 3 * 32 * 32);
  const r = await e.trainStep(x, [8, 3, 32, 32], Int32Array.from({ length: 8 }, (_, i) => i % 4), 0.05);
  assert.ok(Number.isFinite(r.loss));
  const trained = { ...b, tensors: e.readTensors() };
  const y = (await e.forward(x, [8, 3, 32, 32])).outputs.logits!.data;
  e.dispose();
  assert.ok(maxAbsDiff(y, await runOrt(exportOnnx(trained), 'input', x, [8, 3, 32, 32])) < 1e-4);
});

test('pruning through a spatial Slice: the surgery equals the masked model; ResNet-20 inner convs shrink', async () => {
  const g = new GraphBuilder(new Rng(71));
  const r0 = g.simple('Relu', 'r0', g.bn('b0', g.conv('c0', 'input', 3, 6, 3, { pad: 1 }), 6));
  const sub = g.slice('sub', r0, [2, 3], [1, 0], [8, 8], [2, 3]);
  const c1 = g.conv('c1', sub, 6, 5, 3); // no padding: the removed channels' constants fold exactly
  const m = g.model('sliced', [3, 8, 8], g.linear('fc', g.flatten('flat', c1), 5 * 2 * 1, 3));
  const [grp] = channelGroups(m);
  assert.ok(grp!.prunable, grp!.reason);
  assert.deepEqual(grp!.consumers, ['c1']);
  const plan = { keep: { c0: [0, 2, 5] } };
  const x = randn(new Rng(72), 2 * 3 * 64);
  const run = (mm: Model) => referenceForward(mm, x, [2, 3, 8, 8]).outputs.fc!.data;
  const pruned = applyPlan(m, plan);
  assert.deepEqual(inferShapes(pruned, 2).get('sub'), [2, 3, 4, 3]);
  assert.ok(maxAbsDiff(run(pruned), run(maskPlan(m, plan))) < 1e-5, `${maxAbsDiff(run(pruned), run(maskPlan(m, plan)))}`);
  assert.ok(maxAbsDiff(run(pruned), run(m)) > 1e-3); // and it did remove something

  const r20 = await loadOnnxFile(RESNET20);
  const name = '/layer2/layer2.0/conv1/Conv';
  const small = applyPlan(r20, { keep: { [name]: Array.from({ length: 20 }, (_, i) => i) } });
  assert.deepEqual(inferShapes(small, 1).get(`${name}_output_0`), [1, 20, 16, 16]);
  // 12 filters of conv1, their BN weight/bias, and conv2's inputs from them
  assert.equal(modelCost(small).params, 269722 - 12 * (16 * 9 + 2 + 32 * 9));
});
