// The export checks: an independent ONNX count against the IR's modelCost, the engine against
// ONNX Runtime on an exported model (and a deliberately wrong one), and ORT latency.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import ort from 'onnxruntime-node';
import { setThreads } from '../src/engine/index.js';
import { assertVerified, countOnnx, ortLatency, verifyWithOnnxRuntime } from '../src/export/index.js';
import { SequentialBuilder } from '../src/ir/builder.js';
import { type Model, cloneModel } from '../src/ir/model.js';
import { modelCost } from '../src/ir/shapes.js';
import { exportOnnx, importOnnx } from '../src/onnx/index.js';
import type { pb } from '../src/onnx/proto.js';
import { UserError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';
import { addonSkip } from './support/addon.js';
import { aInt, aInts, nd, onnxBytes, sinInit, vi } from './support/onnx.js';
import { VGG16_ONNX } from './support/shared.js';

if (!addonSkip) setThreads(2);

/**
 * Input [3,10,10]: Conv 3->13 k3 p1 (bias) -> BN -> Relu -> MaxPool 2 -> Conv 13->37 k3 p1 (no bias)
 * -> BN -> Relu -> MaxPool 2 -> Flatten -> Linear 148->10. BN gets non-trivial statistics.
 */
function smallModel(seed: number): Model {
  const r = new Rng(seed);
  const m = new SequentialBuilder('small', [3, 10, 10], { random: () => r.next() })
    .conv(13, 3, { padding: 1 })
    .bn()
    .relu()
    .maxpool(2)
    .conv(37, 3, { padding: 1, bias: false })
    .bn()
    .relu()
    .maxpool(2)
    .flatten()
    .linear(10)
    .build();
  for (const n of m.nodes) {
    if (n.op !== 'BatchNorm') continue;
    const p = n.params;
    for (const [slot, lo, hi] of [['weight', 0.5, 1.5], ['bias', -0.3, 0.3], ['runningMean', -0.2, 0.2], ['runningVar', 0.5, 2]] as const) {
      const d = m.tensors[p[slot]!]!.data;
      for (let i = 0; i < d.length; i++) d[i] = r.uniform(lo, hi);
    }
  }
  return m;
}

function randomBatch(seed: number, shape: number[]): { x: Float32Array; shape: number[] } {
  const r = new Rng(seed);
  const x = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < x.length; i++) x[i] = r.uniform(-1, 1);
  return { x, shape };
}

test('countOnnx on the shared VGG16-BN equals modelCost of the imported IR (about 15.0 M params, 313 M MACs)', async () => {
  const bytes = new Uint8Array(await readFile(VGG16_ONNX));
  const c = countOnnx(bytes);
  const ir = modelCost(importOnnx(bytes, { fileName: 'vgg16_bn_cifar10.onnx' }));
  assert.equal(c.params, ir.params);
  assert.equal(c.macs, ir.macs);
  assert.ok(Math.abs(c.params / 1e6 - 15.0) < 0.05, `params ${c.params}`);
  assert.ok(Math.abs(c.macs / 1e6 - 313) < 1, `macs ${c.macs}`);
  assert.equal(c.convs.length, 13);
  assert.deepEqual(
    c.convs.map((v) => v.outChannels),
    [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512],
  );
  assert.deepEqual(c.convs[0], { name: c.convs[0]!.name, outChannels: 64, inChannels: 3, kernel: [3, 3] });
  assert.equal(c.convs.reduce((s, v) => s + v.inChannels, 0), 3 + 64 + 64 + 128 + 128 + 256 + 256 + 256 + 512 * 5);
});

test('countOnnx on a small exported model matches the hand count and modelCost', () => {
  const m = smallModel(1);
  // Worked by hand (input 3x10x10):
  //   conv1 3->13 k3 p1 + bias: params 13*3*9 + 13 = 364; out 13x10x10 = 1300; MACs 1300*3*9 = 35100
  //   bn1: scale + bias 2*13 = 26 (running mean/var are buffers)
  //   maxpool 2: 13x5x5
  //   conv2 13->37 k3 p1, no bias: params 37*13*9 = 4329; out 37x5x5 = 925; MACs 925*13*9 = 108225
  //   bn2: 2*37 = 74
  //   maxpool 2: 37x2x2 (floor 5/2) -> flatten 148
  //   linear 148->10: params 1480 + 10 = 1490; MACs 1480
  //   total params 364 + 26 + 4329 + 74 + 1490 = 6283; MACs 35100 + 108225 + 1480 = 144805
  const c = countOnnx(exportOnnx(m));
  assert.equal(c.params, 6283);
  assert.equal(c.macs, 144805);
  const ir = modelCost(m);
  assert.equal(ir.params, c.params);
  assert.equal(ir.macs, c.macs);
  assert.deepEqual(
    c.convs.map(({ outChannels, inChannels, kernel }) => ({ outChannels, inChannels, kernel })),
    [
      { outChannels: 13, inChannels: 3, kernel: [3, 3] },
      { outChannels: 37, inChannels: 13, kernel: [3, 3] },
    ],
  );
});

// ---------- a hand-written ONNX graph: attribute defaults and ops the exporter does not emit ----------
function handGraph(extra: pb.INodeProto[] = [], out = 'y'): Uint8Array {
  return onnxBytes({
    graphName: 'hand',
    nodes: [
      // grouped, strided, padded conv; kernel_shape/dilations left to their defaults
      nd('Conv', 'c1', ['x', 'c1.w', 'c1.b'], ['c1o'], [aInt('group', 2), aInts('strides', [2, 2]), aInts('pads', [1, 1, 1, 1])]),
      nd('BatchNormalization', 'bn', ['c1o', 'bn.s', 'bn.b', 'bn.m', 'bn.v'], ['bno']),
      nd('Relu', 'r', ['bno'], ['ro']),
      nd('MaxPool', 'mp', ['ro'], ['mpo'], [aInts('kernel_shape', [2, 2]), aInts('strides', [2, 2]), aInt('ceil_mode', 1)]),
      nd('Conv', 'c2', ['mpo', 'c2.w'], ['c2o']),
      nd('Add', 'add', ['mpo', 'c2o'], ['ao']),
      nd('GlobalAveragePool', 'gap', ['ao'], ['go']),
      nd('Flatten', 'fl', ['go'], ['fo']), // axis defaults to 1
      nd('Gemm', 'fc', ['fo', 'fc.B', 'fc.C'], ['y']), // transB defaults to 0: B is [K, N]
      ...extra,
    ],
    inits: [
      sinInit('c1.w', [6, 2, 3, 3]),
      sinInit('c1.b', [6]),
      sinInit('bn.s', [6]),
      sinInit('bn.b', [6]),
      sinInit('bn.m', [6]),
      { ...sinInit('bn.v', [6]), floatData: [1, 1.5, 2, 0.5, 1, 1] },
      sinInit('c2.w', [6, 6, 1, 1]),
      sinInit('fc.B', [6, 5]),
      sinInit('fc.C', [5]),
    ],
    input: vi('x', ['N', 4, 9, 9]),
    outputs: [out],
  });
}

test('countOnnx on a hand-written graph: groups, strides, pads, BN buffers, ceil-mode pool, Add, GAP, Gemm without transB', async () => {
  // input 4x9x9
  //   c1 W[6,2,3,3] group 2 stride 2 pad 1 + B[6]: params 108 + 6 = 114;
  //      out floor((9+2-3)/2)+1 = 5 -> 6x5x5 = 150; MACs 150 * (4/2) * 9 = 2700
  //   bn: scale + B = 12 (mean, var not counted)
  //   maxpool k2 s2 ceil: ceil((5-2)/2)+1 = 3, last window starts at 4 < 5 -> 6x3x3
  //   c2 W[6,6,1,1], no bias: params 36; out 6x3x3 = 54; MACs 54*6 = 324
  //   add, GAP -> 6x1x1, flatten -> [1,6]
  //   fc B[6,5] + C[5]: params 35; MACs 6*5 = 30
  //   total params 114 + 12 + 36 + 35 = 197; MACs 2700 + 324 + 30 = 3054
  const bytes = handGraph();
  const c = countOnnx(bytes);
  assert.equal(c.params, 197);
  assert.equal(c.macs, 3054);
  assert.deepEqual(c.convs, [
    { name: 'c1', outChannels: 6, inChannels: 4, kernel: [3, 3] },
    { name: 'c2', outChannels: 6, inChannels: 6, kernel: [1, 1] },
  ]);
  // the graph is valid ONNX with the shapes worked out above: ORT runs it to [2, 5]
  const s = await ort.InferenceSession.create(bytes);
  try {
    const out = await s.run({ x: new ort.Tensor('float32', new Float32Array(2 * 4 * 81).fill(0.5), [2, 4, 9, 9]) });
    assert.deepEqual(out.y!.dims, [2, 5]);
  } finally {
    await s.release();
  }
  // an op outside the known set is refused by node and op name
  assert.throws(
    () => countOnnx(handGraph([nd('Sigmoid', 'sig', ['y'], ['z'])], 'z')),
    (e: Error) => e instanceof UserError && /node 'sig' \(Sigmoid\).*not supported/.test(e.message),
  );
  assert.throws(() => countOnnx(new Uint8Array([1, 2, 3, 255])), UserError);
});

test('verifyWithOnnxRuntime: engine equals ORT on an exported 13/37-channel model; a 0.1 weight change fails', { skip: addonSkip }, async () => {
  const m = smallModel(2);
  const bytes = exportOnnx(m);
  const batch = randomBatch(3, [8, 3, 10, 10]);
  const good = await verifyWithOnnxRuntime(bytes, m, batch);
  assert.equal(good.ok, true, JSON.stringify(good));
  assert.equal(good.images, 8);
  assert.equal(good.tolerance, 1e-4);
  assert.ok(good.maxAbsDiff >= 0 && good.maxAbsDiff <= 1e-4, `maxAbsDiff ${good.maxAbsDiff}`);
  assert.ok(good.maxAbsLogit > 0.01, `maxAbsLogit ${good.maxAbsLogit}`);
  assertVerified(good, 'small.onnx'); // does not throw

  // the engine's model differs from the file in one Linear weight by 0.1
  const wrong = cloneModel(m);
  const fc = wrong.nodes.find((n) => n.op === 'Linear')!;
  wrong.tensors[fc.params.weight!]!.data[0]! += 0.1;
  const bad = await verifyWithOnnxRuntime(bytes, wrong, batch);
  assert.equal(bad.ok, false, JSON.stringify(bad));
  assert.ok(bad.maxAbsDiff > 1e-3, `maxAbsDiff ${bad.maxAbsDiff}`);
  assert.throws(
    () => assertVerified(bad, 'pruned/small.onnx'),
    (e: Error) =>
      e instanceof UserError &&
      e.message.startsWith('pruned/small.onnx:') &&
      e.message.includes(String(bad.maxAbsDiff)) &&
      e.message.includes('tolerance 0.0001'),
  );
  // a looser tolerance accepts the same difference
  const loose = await verifyWithOnnxRuntime(bytes, wrong, batch, { tolerance: 1 });
  assert.equal(loose.ok, true);
  assert.equal(loose.maxAbsDiff, bad.maxAbsDiff);
});

test('ortLatency: positive finite per-image times for batches 1 and 64', async () => {
  const r = new Rng(4);
  const m = new SequentialBuilder('tiny', [3, 8, 8], { random: () => r.next() }).conv(5, 3, { padding: 1 }).relu().maxpool(2).flatten().linear(4).build();
  const res = await ortLatency(exportOnnx(m), [3, 8, 8]);
  assert.deepEqual(
    res.map((x) => [x.batch, x.repeats]),
    [
      [1, 20],
      [64, 5],
    ],
  );
  for (const x of res) {
    assert.ok(Number.isFinite(x.msPerImage) && x.msPerImage > 0, `msPerImage ${x.msPerImage}`);
    assert.ok(Number.isFinite(x.msPerBatchMedian) && x.msPerBatchMedian > 0, `msPerBatchMedian ${x.msPerBatchMedian}`);
    assert.ok(Math.abs(x.msPerImage * x.batch - x.msPerBatchMedian) <= 1e-9 * x.msPerBatchMedian);
  }
});
