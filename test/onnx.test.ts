import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Model, Node } from '../src/ir/model.js';
import { inferShapes } from '../src/ir/shapes.js';
import { OnnxImportError, exportOnnx, importOnnx, loadOnnxFile, saveOnnxFile } from '../src/onnx/index.js';
import { DataType, onnx, type pb } from '../src/onnx/proto.js';
import { GraphBuilder } from './support/graph.js';
import { aFloat, aInt, aInts, aStr, aTensor, expectImportError, fInit, i64Data, nd, onnxBytes, vi } from './support/onnx.js';
import { runOrt } from './support/ort.js';
import { Rng, randn } from './support/random.js';
import { maxAbsDiff, referenceForward } from './support/reference.js';
import { MODELS_DIR } from './support/shared.js';

const MODELS = MODELS_DIR;
const VGG = join(MODELS, 'vgg16_bn_cifar10.onnx');

/** A small IR model covering every op and the awkward attributes (groups, stride, dilation, ceil, pad counting). */
function smallModel(rng: Rng): Model {
  const b = new GraphBuilder(rng, 'x');
  let y = b.conv('c1', 'x', 3, 8, 3, { pad: 1 }); // [8,9,9]
  y = b.pool('MaxPool', 'mp', b.simple('Relu', 'r1', y), 2, 2, 0, true); // [8,5,5]
  const r2 = b.simple('Relu', 'r2', b.bn('bn2', b.conv('c2', y, 8, 8, 3, { pad: 1, groups: 4, bias: false }), 8));
  y = b.add('add', r2, b.conv('c3', r2, 8, 8, 1));
  y = b.pool('AvgPool', 'ap', y, 3, 2, 1, false, false); // [8,3,3]
  y = b.conv('c4', y, 8, 16, 3, { pad: 2, dil: 2 }); // [16,3,3]
  y = b.pool('AvgPool', 'ap2', y, 2, 1, 1, false, true); // [16,4,4]
  y = b.flatten('flat', b.simple('GlobalAvgPool', 'gap', y));
  y = b.simple('Relu', 'r3', b.bn('bn3', b.linear('fc1', y, 16, 12), 12));
  y = b.linear('fc2', y, 12, 5, false);
  return b.model('small', [3, 9, 9], y, { mean: '[0.5,0.5,0.5]', note: 'ü' });
}

/** the reference interpreter's first output for x */
const refOut = (m: Model, x: Float32Array, shape: number[]) => referenceForward(m, x, shape).outputs[m.outputs[0]!]!.data;

// ---------- tests ----------

test('VGG16-BN imports with the documented architecture and re-exports with identical ORT logits', async () => {
  const bytes = await readFile(VGG);
  const m = importOnnx(bytes, { fileName: VGG });
  const convs = m.nodes.filter((n) => n.op === 'Conv2d');
  assert.deepEqual(
    convs.map((n) => n.attrs.outChannels),
    [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512],
  );
  for (const c of convs) {
    if (c.op !== 'Conv2d') continue;
    assert.deepEqual([c.attrs.kernel, c.attrs.padding, c.attrs.stride, c.attrs.groups], [[3, 3], [1, 1], [1, 1], 1]);
    assert.equal(c.params.bias, undefined);
  }
  assert.equal(convs[0]!.params.weight, 'features.0.weight');
  const bns = m.nodes.filter((n) => n.op === 'BatchNorm');
  assert.equal(bns.length, 14);
  assert.ok(bns.every((n) => n.op === 'BatchNorm' && Math.abs(n.attrs.momentum - 0.1) < 1e-6 && Math.abs(n.attrs.eps - 1e-5) < 1e-9));
  const fcs = m.nodes.filter((n) => n.op === 'Linear').map((n) => [n.attrs.inFeatures, n.attrs.outFeatures]);
  assert.deepEqual(fcs, [[512, 512], [512, 10]]);
  assert.deepEqual(m.tensors['classifier.0.weight']!.shape, [512, 512]);
  assert.equal(m.nodes.filter((n) => n.op === 'MaxPool').length, 4);
  assert.deepEqual(m.inputs, [{ name: 'input', shape: [-1, 3, 32, 32] }]);
  assert.deepEqual(m.outputs, ['logits']);
  assert.equal(JSON.parse(m.metadata.mean!).length, 3);
  assert.ok(Math.abs(JSON.parse(m.metadata.std!)[0] - 0.247) < 1e-6);
  assert.equal(m.nodes[0]!.name, '/features/features.0/Conv');

  const exported = exportOnnx(m);
  const decoded = onnx.ModelProto.decode(exported);
  assert.equal(decoded.producerName, 'cmiprune');
  assert.equal(Number(decoded.opsetImport[0]!.version), 13);
  assert.equal(Number(decoded.irVersion), 7);
  assert.equal(decoded.graph!.input![0]!.type!.tensorType!.shape!.dim![0]!.dimParam, 'batch');
  assert.deepEqual(decoded.graph!.output![0]!.type!.tensorType!.shape!.dim!.map((d) => d.dimParam || Number(d.dimValue)), ['batch', 10]);

  // re-import gives the same IR, weights bit-identical
  const again = importOnnx(exported);
  assert.deepEqual(again.nodes, m.nodes);
  assert.deepEqual(Object.keys(again.tensors).sort(), Object.keys(m.tensors).sort());
  for (const [k, t] of Object.entries(m.tensors)) assert.deepEqual(again.tensors[k]!.data, t.data, k);
  assert.deepEqual(again.metadata, m.metadata);

  const rng = new Rng(7);
  const x = randn(rng, 8 * 3 * 32 * 32);
  const ref = await runOrt(bytes, 'input', x, [8, 3, 32, 32]);
  const got = await runOrt(exported, 'input', x, [8, 3, 32, 32]);
  assert.equal(ref.length, 80);
  const diff = maxAbsDiff(ref, got);
  assert.ok(diff <= 1e-4, `max abs diff ${diff}`);
});

test('a small IR model with every op exports to ORT matching the reference interpreter, and round-trips', async () => {
  const rng = new Rng(3);
  const m = smallModel(rng);
  inferShapes(m, 1);
  const bytes = exportOnnx(m, { opset: 17, docString: 'test' });
  const x = randn(rng, 4 * 3 * 9 * 9);
  const ref = refOut(m, x, [4, 3, 9, 9]);
  const got = await runOrt(bytes, 'x', x, [4, 3, 9, 9]);
  const diff = maxAbsDiff(ref, got);
  assert.ok(diff <= 1e-4, `max abs diff ${diff}`);
  assert.equal(Number(onnx.ModelProto.decode(bytes).irVersion), 8);

  const back = importOnnx(bytes);
  assert.deepEqual(back.nodes, m.nodes);
  assert.deepEqual(back.inputs, m.inputs);
  assert.deepEqual(back.metadata, m.metadata);
  assert.equal(back.name, 'small');
  for (const [k, t] of Object.entries(m.tensors)) {
    assert.deepEqual(back.tensors[k]!.shape, t.shape, k);
    assert.deepEqual(back.tensors[k]!.data, t.data, k);
  }

  // atomic save then load gives the same model
  const dir = await mkdtemp(join(tmpdir(), 'cmiprune-onnx-'));
  try {
    const p = join(dir, 'small.onnx');
    await saveOnnxFile(m, p);
    const loaded = await loadOnnxFile(p);
    assert.deepEqual(loaded.nodes, m.nodes);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  assert.throws(() => exportOnnx(m, { opset: 9 }), /opset 9/);
});

/** PyTorch >= 2.9 dynamo exporter style: folded BN (Conv bias), constant axes/shape, node_Op_N names, opset 18. */
interface DynamoVariant {
  keepdims?: number;
  shape?: number[];
  /** how the pooled [N,16,1,1] becomes [N,16] */
  flatten?: 'reshape' | 'squeeze' | 'gather' | 'shapeSlice';
}
function dynamoStyle(rng: Rng, variant: DynamoVariant = {}): Uint8Array {
  const flatten: Record<string, pb.INodeProto[]> = {
    reshape: [
      nd('Constant', 'node_Constant_5', [], ['val_shape'], [aTensor('value', i64Data('', variant.shape ?? [-1, 16]))]),
      nd('Reshape', 'node_Reshape_6', ['mean', 'val_shape'], ['view'], [aInt('allowzero', 0)]),
    ],
    squeeze: [nd('Squeeze', 'node_Squeeze_6', ['mean', 'val_axes'], ['view'])],
    // TorchScript's x.view(x.size(0), -1) with a dynamic batch
    gather: [
      nd('Shape', 's', ['mean'], ['shp']),
      nd('Constant', 'k0', [], ['zero'], [aTensor('value', { dims: [], dataType: DataType.INT64, int64Data: [0] })]),
      nd('Gather', 'g', ['shp', 'zero'], ['n'], [aInt('axis', 0)]),
      nd('Unsqueeze', 'u', ['n', 'zero1d'], ['n1']),
      nd('Constant', 'k1', [], ['minus1'], [aTensor('value', i64Data('', [-1]))]),
      nd('Concat', 'cat', ['n1', 'minus1'], ['shape2'], [aInt('axis', 0)]),
      nd('Reshape', 'node_Reshape_6', ['mean', 'shape2'], ['view']),
    ],
    // the dynamo exporter's view(s0, 16) with a dynamic batch
    shapeSlice: [
      nd('Shape', 's', ['mean'], ['shp'], [aInt('start', 0), aInt('end', 2)]),
      nd('Slice', 'sl', ['shp', 'zero1d', 'one1d'], ['n1']),
      nd('Cast', 'cast', ['n1'], ['n1i'], [aInt('to', DataType.INT64)]),
      nd('Constant', 'k1', [], ['c16'], [aTensor('value', i64Data('', [16]))]),
      nd('Concat', 'cat', ['n1i', 'c16'], ['shape2'], [aInt('axis', 0)]),
      nd('Reshape', 'node_Reshape_6', ['mean', 'shape2'], ['view']),
    ],
  };
  const w = (n: number, s = 0.3) => randn(rng, n, s);
  return onnxBytes({
    opset: 18,
    input: vi('x', ['s77', 3, 8, 8]),
    outputs: ['linear'],
    inits: [
      fInit('conv1.weight', [8, 3, 3, 3], w(8 * 27)),
      fInit('conv1.bias', [8], w(8)),
      fInit('conv2.weight', [16, 8, 3, 3], w(16 * 72, 0.15)),
      fInit('conv2.bias', [16], w(16)),
      fInit('fc.weight_t', [16, 10], w(160), 'float_data'), // MatMul keeps weights [in, out]
      fInit('fc.bias', [10], w(10), 'float_data'),
      i64Data('val_axes', [2, 3]),
      i64Data('zero1d', [0]),
      i64Data('one1d', [1]),
    ],
    nodes: [
      nd('Conv', 'node_Conv_0', ['x', 'conv1.weight', 'conv1.bias'], ['conv2d'], [aInts('pads', [1, 1, 1, 1]), aInts('strides', [1, 1]), aInts('dilations', [1, 1]), aInt('group', 1)]),
      nd('Relu', 'node_Relu_1', ['conv2d'], ['relu']),
      nd('Conv', 'node_Conv_2', ['relu', 'conv2.weight', 'conv2.bias'], ['conv2d_1'], [aInts('pads', [1, 1, 1, 1]), aInts('strides', [2, 2]), aInt('group', 1), aInts('kernel_shape', [3, 3])]),
      nd('Relu', 'node_Relu_3', ['conv2d_1'], ['relu_1']),
      nd('ReduceMean', 'node_ReduceMean_4', ['relu_1', 'val_axes'], ['mean'], [aInt('keepdims', variant.keepdims ?? 1)]),
      ...flatten[variant.flatten ?? 'reshape']!,
      nd('Dropout', 'node_Dropout_7', ['view'], ['dropout']),
      nd('MatMul', 'node_MatMul_8', ['dropout', 'fc.weight_t'], ['matmul']),
      nd('Add', 'node_Add_9', ['matmul', 'fc.bias'], ['linear']),
    ],
  });
}

test('dynamo-style ONNX (opset 18) imports to the expected IR and its re-export matches ORT', async () => {
  const bytes = dynamoStyle(new Rng(11));
  const m = importOnnx(bytes, { fileName: 'dynamo.onnx' });
  assert.deepEqual(
    m.nodes.map((n) => [n.name, n.op]),
    [
      ['node_Conv_0', 'Conv2d'],
      ['node_Relu_1', 'Relu'],
      ['node_Conv_2', 'Conv2d'],
      ['node_Relu_3', 'Relu'],
      ['node_ReduceMean_4', 'GlobalAvgPool'],
      ['node_Reshape_6', 'Flatten'],
      ['node_MatMul_8', 'Linear'],
    ],
  );
  const conv2 = m.nodes[2]!;
  assert.equal(conv2.op, 'Conv2d');
  if (conv2.op === 'Conv2d') {
    assert.deepEqual(conv2.attrs, { inChannels: 8, outChannels: 16, kernel: [3, 3], stride: [2, 2], padding: [1, 1], dilation: [1, 1], groups: 1 });
    assert.deepEqual(conv2.params, { weight: 'conv2.weight', bias: 'conv2.bias' });
  }
  const fc = m.nodes[6]!;
  assert.deepEqual(fc.attrs, { inFeatures: 16, outFeatures: 10 });
  assert.deepEqual(fc.params, { weight: 'node_MatMul_8.weight', bias: 'fc.bias' });
  assert.deepEqual(m.tensors['node_MatMul_8.weight']!.shape, [10, 16]);
  assert.deepEqual(m.outputs, ['linear']);
  assert.deepEqual(m.inputs, [{ name: 'x', shape: [-1, 3, 8, 8] }]);
  assert.equal(m.tensors.val_axes, undefined);

  const x = randn(new Rng(12), 5 * 3 * 8 * 8);
  const ref = await runOrt(bytes, 'x', x, [5, 3, 8, 8]);
  const got = await runOrt(exportOnnx(m), 'x', x, [5, 3, 8, 8]);
  assert.ok(maxAbsDiff(ref, got) <= 1e-5, `max abs diff ${maxAbsDiff(ref, got)}`);
  assert.ok(maxAbsDiff(ref, refOut(m, x, [5, 3, 8, 8])) <= 1e-4);

  // the other spellings of the same network: keepdims 0 (+ a no-op [0,-1] reshape), static batch 1, Squeeze
  const variants: DynamoVariant[] = [{ keepdims: 0, shape: [0, -1] }, { shape: [1, 16] }, { flatten: 'squeeze' }, { flatten: 'gather' }, { flatten: 'shapeSlice' }];
  for (const variant of variants) {
    const vb = dynamoStyle(new Rng(11), variant);
    const mv = importOnnx(vb);
    assert.deepEqual(mv.nodes.map((n) => n.op), ['Conv2d', 'Relu', 'Conv2d', 'Relu', 'GlobalAvgPool', 'Flatten', 'Linear'], JSON.stringify(variant));
    assert.ok(maxAbsDiff(ref, refOut(mv, x, [5, 3, 8, 8])) <= 1e-4, JSON.stringify(variant));
    if (variant.shape?.[0] !== 1) assert.ok(maxAbsDiff(ref, await runOrt(vb, 'x', x, [5, 3, 8, 8])) <= 1e-5, JSON.stringify(variant));
  }
});

test('Gemm with transB=0, alpha/beta, float16 and double initializers fold into plain IR weights', () => {
  const rng = new Rng(5);
  const wIn = randn(rng, 4 * 3); // [in=4, out=3] for transB=0
  const half = new Uint16Array([0x3c00, 0xc000, 0x3555, 0x0001]); // 1, -2, ~0.33325, smallest subnormal
  const dbl = new Float64Array([0.5, -1.25, 3]);
  // Gemm(alpha 2, beta 0.5, double bias) -> Identity -> Gemm(float16 W2)
  const gemms = (w2: pb.ITensorProto, transB: number) =>
    onnxBytes({
      input: vi('x', ['N', 4]),
      outputs: ['y'],
      inits: [fInit('W', [4, 3], wIn), { name: 'C', dims: [3], dataType: DataType.DOUBLE, rawData: new Uint8Array(dbl.buffer) }, w2],
      nodes: [
        nd('Gemm', 'gemm', ['x', 'W', 'C'], ['h'], [aFloat('alpha', 2), aFloat('beta', 0.5)]),
        nd('Identity', 'id', ['h'], ['h2']),
        nd('Gemm', 'gemm2', ['h2', 'W2'], ['y'], [aInt('transB', transB)]),
      ],
    });
  const bytes = gemms({ name: 'W2', dims: [1, 4], dataType: DataType.FLOAT16, rawData: new Uint8Array(half.buffer) }, 0);
  // h has 3 features but W2 is [1,4] (transB=0 -> in=1): the importer must reject that as a shape error
  assert.throws(() => importOnnx(bytes, { fileName: 'g.onnx' }), (e: Error) => e instanceof OnnxImportError && /g\.onnx: node 'gemm2' \(op Gemm\)/.test(e.message));

  const ok = gemms({ name: 'W2', dims: [4, 3], dataType: DataType.FLOAT16, int32Data: [...half, ...half, ...half] }, 1);
  const m = importOnnx(ok);
  assert.deepEqual(m.nodes.map((n) => n.name), ['gemm', 'gemm2']);
  assert.deepEqual(m.nodes[1]!.inputs, ['h']); // Identity removed and rewired
  const params0 = m.nodes[0]!.params as Record<string, string>;
  assert.equal(params0.weight, 'gemm.weight'); // derived (transposed, scaled)
  const w = m.tensors[params0.weight!]!;
  assert.deepEqual(w.shape, [3, 4]);
  for (let o = 0; o < 3; o++) for (let i = 0; i < 4; i++) assert.equal(w.data[o * 4 + i], Math.fround(2 * wIn[i * 3 + o]!));
  assert.deepEqual([...m.tensors['gemm.bias']!.data], [0.25, -0.625, 1.5]);
  const w2 = m.tensors.W2!.data;
  assert.deepEqual([...w2.slice(0, 2)], [1, -2]);
  assert.ok(Math.abs(w2[2]! - 0.33325195) < 1e-7);
  assert.equal(w2[3], 2 ** -24);
});

test('constant Adds fold into the preceding Conv/Gemm bias, auto_pad SAME and shared weights import', async () => {
  const rng = new Rng(21);
  const bytes = onnxBytes({
    input: vi('x', ['N', 3, 6, 6]),
    outputs: ['y'],
    inits: [
      fInit('w', [4, 3, 3, 3], randn(rng, 108, 0.3)),
      fInit('w2', [4, 4, 3, 3], randn(rng, 144, 0.3)),
      fInit('cb', [1, 4, 1, 1], randn(rng, 4)),
      fInit('fw', [5, 4], randn(rng, 20)),
      fInit('fb', [5], randn(rng, 5)),
      fInit('extra', [1, 5], randn(rng, 5)),
    ],
    nodes: [
      nd('Conv', 'conv', ['x', 'w'], ['c'], [aInts('kernel_shape', [3, 3]), aStr('auto_pad', 'SAME_UPPER')]),
      nd('Add', 'bias', ['cb', 'c'], ['cbias']),
      nd('Relu', 'relu', ['cbias'], ['r']),
      nd('Conv', 'conv2', ['r', 'w2'], ['c2'], [aInts('pads', [1, 1, 1, 1])]),
      nd('Conv', 'conv3', ['c2', 'w2'], ['c3'], [aInts('pads', [1, 1, 1, 1])]), // shares conv2's weight
      nd('GlobalAveragePool', 'gap', ['c3'], ['g']),
      nd('Flatten', 'flat', ['g'], ['f']),
      nd('Gemm', 'fc', ['f', 'fw', 'fb'], ['h'], [aInt('transB', 1)]),
      nd('Add', 'fc_extra', ['h', 'extra'], ['y']),
    ],
  });
  const m = importOnnx(bytes);
  assert.deepEqual(m.nodes.map((n) => n.op), ['Conv2d', 'Relu', 'Conv2d', 'Conv2d', 'GlobalAvgPool', 'Flatten', 'Linear']);
  const [conv, , conv2, conv3, , , fc] = m.nodes as [Node, Node, Node, Node, Node, Node, Node];
  assert.deepEqual(conv.outputs, ['cbias']);
  assert.deepEqual(conv.op === 'Conv2d' && conv.attrs.padding, [1, 1]);
  const p = (n: Node) => n.params as Record<string, string>;
  assert.deepEqual(m.tensors[p(conv).bias!]!.shape, [4]);
  assert.equal(p(conv2).weight, 'w2');
  assert.notEqual(p(conv3).weight, 'w2'); // a shared initializer gets its own copy, so surgery on one layer leaves the other
  assert.deepEqual(m.tensors[p(conv3).weight!]!.data, m.tensors.w2!.data);
  assert.notEqual(m.tensors[p(conv3).weight!]!.data, m.tensors.w2!.data);
  assert.deepEqual(fc.outputs, ['y']);
  assert.deepEqual(m.outputs, ['y']);
  const x = randn(rng, 3 * 3 * 6 * 6);
  const ref = await runOrt(bytes, 'x', x, [3, 3, 6, 6]);
  assert.ok(maxAbsDiff(ref, await runOrt(exportOnnx(m), 'x', x, [3, 3, 6, 6])) <= 1e-5);
  assert.ok(maxAbsDiff(ref, refOut(m, x, [3, 3, 6, 6])) <= 1e-4);

  // a constant added anywhere else has no IR equivalent
  const bad = onnxBytes({
    input: vi('x', ['N', 4]),
    outputs: ['y'],
    inits: [fInit('k', [4], new Float32Array(4))],
    nodes: [nd('Relu', 'relu', ['x'], ['r']), nd('Add', 'shift', ['r', 'k'], ['y'])],
  });
  assert.throws(() => importOnnx(bad, { fileName: 'shift.onnx' }), /^OnnxImportError: shift\.onnx: node 'shift' \(op Add\): adding constant 'k' \[4\] is only supported as the bias/);
});

test('unsupported op: the error names the file, the node and the op, and lists what the graph needs', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'cmiprune-onnx-'));
  try {
    const path = join(dir, 'sig.onnx');
    const bytes = onnxBytes({
      input: vi('x', ['N', 3, 4, 4]),
      outputs: ['y'],
      nodes: [nd('Relu', 'relu', ['x'], ['r']), nd('Sigmoid', '/head/Sigmoid', ['r'], ['s']), nd('Sigmoid', '/head/Sigmoid2', ['s'], ['y'])],
    });
    await writeFile(path, bytes);
    await assert.rejects(loadOnnxFile(path), (e: Error) => {
      assert.ok(e instanceof OnnxImportError, String(e));
      assert.match(e.message, /sig\.onnx: node '\/head\/Sigmoid' \(op Sigmoid\) is not supported; supported: Conv,.* \(unsupported in this graph: Sigmoid x2\)$/);
      return true;
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('truncated and non-ONNX files are rejected naming the file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'cmiprune-onnx-'));
  try {
    const half = join(dir, 'half.onnx');
    const bytes = await readFile(VGG);
    await writeFile(half, bytes.subarray(0, bytes.length >> 1));
    await assert.rejects(loadOnnxFile(half), (e: Error) => {
      assert.ok(e instanceof OnnxImportError);
      assert.ok(e.message.startsWith(`${half}: not a valid ONNX model (truncated or corrupt)`), e.message);
      return true;
    });
    const text = join(dir, 'notes.onnx');
    await writeFile(text, 'this is not a protobuf, just some text\n');
    await assert.rejects(loadOnnxFile(text), (e: Error) => e instanceof OnnxImportError && e.message.includes(`${text}: not a valid ONNX model`));
    await assert.rejects(loadOnnxFile(join(dir, 'missing.onnx')), (e: Error) => e instanceof OnnxImportError && /missing\.onnx: cannot read/.test(e.message));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('dangling inputs, asymmetric pads and unsupported attribute values give one clear error', () => {
  const w = fInit('w', [4, 3, 3, 3], new Float32Array(108));
  const input = vi('x', ['N', 3, 8, 8]);
  const expectErr = expectImportError;
  expectErr(
    onnxBytes({ input, outputs: ['y'], inits: [w], nodes: [nd('Conv', 'conv', ['x', 'w'], ['c']), nd('Add', 'add', ['c', 'nope'], ['y'])] }),
    /^bad\.onnx: node 'add' \(op Add\): .*'nope' is not produced by any earlier node, initializer or graph input/,
  );
  expectErr(
    onnxBytes({ input, outputs: ['y'], nodes: [nd('Relu', 'r', ['later'], ['y']), nd('Relu', 'r0', ['x'], ['later'])] }),
    /^bad\.onnx: node 'r' \(op Relu\): input 'later' is not produced/,
  );
  expectErr(
    onnxBytes({ input, outputs: ['y'], inits: [w], nodes: [nd('Conv', '/stem/Conv', ['x', 'w'], ['y'], [aInts('pads', [0, 0, 1, 1])])] }),
    /^bad\.onnx: node '\/stem\/Conv' \(op Conv\): asymmetric pads \[0,0,1,1\] are not supported/,
  );
  expectErr(
    onnxBytes({ input, outputs: ['y'], nodes: [nd('Flatten', 'f', ['x'], ['y'], [aInt('axis', 2)])] }),
    /^bad\.onnx: node 'f' \(op Flatten\): axis 2 is not supported/,
  );
  expectErr(
    onnxBytes({ input, outputs: ['y'], nodes: [nd('MaxPool', 'mp', ['x'], ['y'], [aInts('kernel_shape', [2, 2]), aInts('dilations', [2, 2])])] }),
    /^bad\.onnx: node 'mp' \(op MaxPool\): dilations \[2,2\] are not supported/,
  );
  expectErr(
    onnxBytes({ input, outputs: ['y'], nodes: [nd('Reshape', 'rs', ['x', 's'], ['y']), nd('Constant', 'k', [], ['s'], [aTensor('value', i64Data('', [-1, 3, 64]))])] }),
    /^bad\.onnx: node 'rs' \(op Reshape\): input 's' is not produced/,
  );
  expectErr(
    onnxBytes({ input, outputs: ['y'], inits: [i64Data('s', [-1, 3, 64])], nodes: [nd('Reshape', 'rs', ['x', 's'], ['y'])] }),
    /^bad\.onnx: node 'rs' \(op Reshape\): reshape of \[-1,3,8,8\] to \[-1,3,64\] is not supported/,
  );
  const ext: pb.ITensorProto = { name: 'w', dims: [4, 3, 3, 3], dataType: DataType.FLOAT, dataLocation: 1, externalData: [{ key: 'location', value: 'w.bin' }] };
  expectErr(
    onnxBytes({ input, outputs: ['y'], inits: [ext], nodes: [nd('Conv', 'conv', ['x', 'w'], ['y'])] }),
    /^bad\.onnx: node 'conv' \(op Conv\): initializer 'w' keeps its data in an external file \('w\.bin'\)/,
  );
});

test('corrupted bytes (truncations, random byte flips) only ever raise OnnxImportError', () => {
  const rng = new Rng(99);
  const bytes = exportOnnx(smallModel(rng));
  let rejected = 0;
  const attempt = (b: Uint8Array) => {
    try {
      importOnnx(b, { fileName: 'fuzz.onnx' });
    } catch (e) {
      if (!(e instanceof OnnxImportError) || !e.message.startsWith('fuzz.onnx: ')) throw e;
      rejected++;
    }
  };
  for (let cut = 0; cut < bytes.length; cut += 29) attempt(bytes.subarray(0, cut));
  for (let i = 0; i < 600; i++) {
    const b = Uint8Array.from(bytes);
    for (let j = 0; j < 3; j++) b[rng.int(b.length)] = rng.int(256);
    attempt(b);
  }
  assert.ok(rejected > 300, `only ${rejected} corrupt inputs were rejected`);
});
