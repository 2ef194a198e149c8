// TF.js export: the files exportTfjs writes load in @tensorflow/tfjs (pure-JS CPU backend) and give
// the engine's (or the reference interpreter's) logits on NHWC input.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { TorchModel } from '../src/engine/index.js';
import { exportTfjs } from '../src/export/index.js';
import { SequentialBuilder } from '../src/ir/builder.js';
import type { Model } from '../src/ir/model.js';
import { inferShapes } from '../src/ir/shapes.js';
import { UserError } from '../src/util/errors.js';
import { addonSkip } from './support/addon.js';
import { GraphBuilder } from './support/graph.js';
import { randomizeBatchNorm, Rng, randn, randomSource } from './support/random.js';
import { maxAbsDiff, referenceForward } from './support/reference.js';

const TOL = 1e-4;
let root = '';

before(async () => {
  await tf.setBackend('cpu');
  await tf.ready();
  root = await mkdtemp(join(tmpdir(), 'cmiprune-tfjs-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

/** An IOHandler over the files on disk: model.json plus its shards, read in manifest order (as tf.io.http does). */
async function loadFromDir(dir: string): Promise<tf.LayersModel> {
  const json = JSON.parse(await readFile(join(dir, 'model.json'), 'utf8')) as tf.io.ModelJSON;
  const handler: tf.io.IOHandler = {
    load: () =>
      tf.io.getModelArtifactsForJSON(json, async (manifest) => {
        const buffers: Buffer[] = [];
        for (const group of manifest) for (const p of group.paths) buffers.push(await readFile(join(dir, p)));
        const all = Buffer.concat(buffers);
        return [tf.io.getWeightSpecs(manifest), all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength)];
      }),
  };
  return tf.loadLayersModel(handler);
}

/** [N,C,H,W] -> [N,H,W,C] */
function toNhwc(x: Float32Array, [n, c, h, w]: number[]): Float32Array {
  const y = new Float32Array(x.length);
  for (let b = 0; b < n!; b++)
    for (let ch = 0; ch < c!; ch++)
      for (let i = 0; i < h! * w!; i++) y[((b * h! * w!) + i) * c! + ch] = x[(b * c! + ch) * h! * w! + i]!;
  return y;
}

async function tfLogits(m: tf.LayersModel, x: Float32Array, shape: number[]): Promise<Float32Array> {
  const [n, c, h, w] = shape as [number, number, number, number];
  const out = tf.tidy(() => m.predict(tf.tensor4d(toNhwc(x, shape), [n, h, w, c])) as tf.Tensor);
  const data = (await out.data()) as Float32Array;
  out.dispose();
  return data;
}

async function engineLogits(model: Model, x: Float32Array, shape: number[]): Promise<Float32Array> {
  const tm = TorchModel.create(model);
  try {
    return (await tm.forward(x, shape)).outputs[model.outputs[0]!]!.data;
  } finally {
    tm.dispose();
  }
}

/** gives every BatchNorm non-trivial affine parameters and running statistics */
function randomizeBn(model: Model, rng: Rng): Model {
  return randomizeBatchNorm(model, rng, { weight: [0.5, 1.5], bias: [-0.3, 0.3], mean: [-0.3, 0.3], var: [0.4, 2.5] });
}

/** the per-sample shape feeding each Flatten: the (h,w,c) vs (c,h,w) permutation only matters with H*W > 1 and C > 1 */
function flattenInputs(model: Model): number[][] {
  const shapes = inferShapes(model, 1);
  return model.nodes.filter((n) => n.op === 'Flatten').map((n) => shapes.get(n.inputs[0]!)!.slice(1));
}

async function exportAndCompare(model: Model, name: string, batch: number, seed: number, ref: 'engine' | 'reference', shardBytes?: number) {
  const dir = join(root, name);
  const res = await exportTfjs(model, dir, shardBytes ? { shardBytes } : {});
  assert.equal(res.inputLayout, 'NHWC');
  assert.deepEqual((await readdir(dir)).sort(), res.files.map((f) => f.slice(dir.length + 1)).sort());
  const tfm = await loadFromDir(dir);
  const shape = [batch, ...model.inputs[0]!.shape.slice(1)];
  const x = randn(new Rng(seed), shape.reduce((a, b) => a * b, 1));
  const want = ref === 'engine' ? await engineLogits(model, x, shape) : Float32Array.from(referenceForward(model, x, shape).outputs[model.outputs[0]!]!.data);
  const got = await tfLogits(tfm, x, shape);
  assert.equal(got.length, want.length);
  const diff = maxAbsDiff(got, want);
  assert.ok(diff <= TOL, `${name}: max |tfjs - ${ref}| = ${diff}`);
  tfm.dispose();
  return res;
}

test('conv/bn/relu/maxpool/flatten(3x3)/linear with odd widths matches the engine; metadata survives loading', { skip: addonSkip }, async () => {
  const m = randomizeBn(
    new SequentialBuilder('plain', [3, 19, 19], { random: randomSource(1) })
      .conv(13, 3).bn().relu().maxpool(2)
      .conv(37, 3).bn().relu().maxpool(2)
      .flatten().linear(10)
      .build(),
    new Rng(2),
  );
  m.metadata = { mean: '[0.49,0.48,0.45]', std: '[0.25,0.24,0.26]', note: 'x' };
  assert.deepEqual(flattenInputs(m), [[37, 3, 3]]);
  const res = await exportAndCompare(m, 'plain', 3, 3, 'engine');
  assert.deepEqual(res.inputShape, [null, 19, 19, 3]);
  assert.deepEqual(res.normalization, { scale: 1 / 255, mean: [0.49, 0.48, 0.45], std: [0.25, 0.24, 0.26] });
  assert.deepEqual(res.outputs, [{ name: m.outputs[0], layout: 'NC', shape: [null, 10] }]);
  const loaded = await loadFromDir(res.dir);
  const meta = loaded.getUserDefinedMetadata() as { cmiprune: Record<string, unknown> };
  assert.equal(meta.cmiprune.inputLayout, 'NHWC');
  assert.deepEqual(meta.cmiprune.inputShape, [null, 19, 19, 3]);
  assert.deepEqual((meta.cmiprune.normalization as { mean: number[] }).mean, [0.49, 0.48, 0.45]);
  assert.deepEqual(meta.cmiprune.metadata, m.metadata);
  loaded.dispose();
});

test('padding-1 convs (same and explicit ZeroPadding2D, stride 2) and avgpool match the engine', { skip: addonSkip }, async () => {
  const m = randomizeBn(
    new SequentialBuilder('padded', [3, 16, 16], { random: randomSource(4) })
      .conv(13, 3, { padding: 1 }).bn().relu()
      .conv(21, 3, { padding: 1, stride: 2, bias: false }).bn().relu().maxpool(2)
      .conv(37, 3, { padding: 1 }).bn().relu().avgpool(2)
      .flatten().linear(7)
      .build(),
    new Rng(5),
  );
  assert.deepEqual(flattenInputs(m), [[37, 2, 2]]);
  await exportAndCompare(m, 'padded', 2, 6, 'engine');
  const topo = JSON.parse(await readFile(join(root, 'padded', 'model.json'), 'utf8')).modelTopology.config.layers as { class_name: string }[];
  assert.ok(topo.some((l) => l.class_name === 'ZeroPadding2D'), 'the stride-2 pad-1 conv needs explicit padding');
});

test('GlobalAvgPool head, padded maxpool, dilated strided conv match the engine', { skip: addonSkip }, async () => {
  const m = randomizeBn(
    new SequentialBuilder('gap', [3, 15, 15], { random: randomSource(7) })
      .conv(13, 3, { padding: 1 }).bn().relu().maxpool(3, 2, 1)
      .conv(37, 3, { padding: 2, dilation: 2, stride: 2 }).bn().relu()
      .globalAvgPool().flatten().linear(5)
      .build(),
    new Rng(8),
  );
  await exportAndCompare(m, 'gap', 3, 9, 'engine');
});

test('a pruned-looking VGG-style model (widths 13/21/37) in several small shards matches the engine', { skip: addonSkip }, async () => {
  const m = randomizeBn(
    new SequentialBuilder('pruned', [3, 12, 12], { random: randomSource(10) })
      .conv(13, 3, { padding: 1, bias: false }).bn().relu()
      .conv(21, 3, { padding: 1, bias: false }).bn().relu().maxpool(2)
      .conv(37, 3, { padding: 1, bias: false }).bn().relu().maxpool(2)
      .flatten().linear(21).bn().relu().linear(10)
      .build(),
    new Rng(11),
  );
  assert.deepEqual(flattenInputs(m), [[37, 3, 3]]);
  const res = await exportAndCompare(m, 'pruned', 4, 12, 'engine', 4096);
  assert.ok(res.files.length > 3, `expected several shards, got ${res.files.length - 1}`);
  for (const f of res.files.slice(1)) assert.match(f, /group1-shard\d+of\d+\.bin$/);
});

test('DAG with Add, grouped/depthwise convs, pool padding cases and BN on a flattened map matches the reference', async () => {
  const b = new GraphBuilder(new Rng(20), 'img');
  let y = b.conv('c1', 'img', 3, 8, 3, { pad: 1 }); // [8,13,13]
  y = b.pool('MaxPool', 'mp', b.simple('Relu', 'r1', y), 3, 2, 1); // [8,7,7] ('same')
  const r = b.simple('Relu', 'r2', b.bn('bn2', b.conv('c2', y, 8, 8, 3, { pad: 1, groups: 4 }), 8));
  y = b.add('add', b.conv('dw', r, 8, 16, 3, { pad: 1, groups: 8, bias: false }), b.conv('c3', r, 8, 16, 1));
  y = b.pool('AvgPool', 'ap', y, 3, 2, 1, false, false); // [16,4,4] ('same', in-bounds divisor)
  y = b.pool('AvgPool', 'ap2', y, 2, 1, 1, false, true); // [16,5,5] (explicit zero padding)
  y = b.pool('MaxPool', 'mpc', y, 2, 2, 0, true); // [16,3,3] (ceil mode, 'same')
  y = b.conv('c5', y, 16, 12, 3, { pad: 2, dil: 2, stride: 2 }); // [12,2,2]
  const f = b.flatten('flat', b.simple('Relu', 'r5', y)); // 48, (h,w,c)-ordered in TF.js
  const g = b.simple('Relu', 'r6', b.bn('bn6', f, 48)); // BN vectors permuted
  const sum = b.add('add2', g, b.linear('fc0', g, 48, 48)); // permuted + IR-ordered operand
  const out = b.linear('fc1', b.add('add3', sum, b.flatten('flat2', b.simple('Relu', 'r7', y))), 48, 9);
  const m = b.model('dag', [3, 13, 13], out, { mean: '[0.5,0.5,0.5]', std: '[0.2,0.2,0.2]' });
  await exportAndCompare(m, 'dag', 2, 21, 'reference');
  if (!addonSkip) await exportAndCompare(m, 'dag-engine', 2, 22, 'engine');
});

test('an inexpressible pool throws a UserError naming the node and writes nothing', async () => {
  const m = new SequentialBuilder('ceil', [3, 10, 10], { random: randomSource(30) }).conv(4, 1).maxpool(5, 2).globalAvgPool().flatten().linear(3).build();
  const pool = m.nodes.find((n) => n.op === 'MaxPool')!;
  (pool.attrs as { ceilMode: boolean }).ceilMode = true; // 10 -> 4 windows: neither 'valid' (3) nor 'same' (5)
  const parent = join(root, 'fail');
  await mkdir(parent);
  const dir = join(parent, 'out');
  await assert.rejects(exportTfjs(m, dir), (e: Error) => {
    assert.ok(e instanceof UserError, String(e));
    assert.match(e.message, new RegExp(`'${pool.name}'`));
    assert.match(e.message, /ceil_mode/);
    return true;
  });
  assert.deepEqual(await readdir(parent), []);
});

test('re-export replaces a previous export; a directory with other files is refused and kept', async () => {
  const m = new SequentialBuilder('small', [1, 4, 4], { random: randomSource(40) }).conv(2, 3).relu().flatten().linear(2).build();
  const dir = join(root, 'again');
  await exportTfjs(m, dir, { shardBytes: 16 });
  const many = (await readdir(dir)).length;
  const res = await exportTfjs(m, dir);
  assert.deepEqual((await readdir(dir)).sort(), ['group1-shard1of1.bin', 'model.json']);
  assert.ok(many > 2 && res.files.length === 2);
  const other = join(root, 'other');
  await mkdir(other);
  await writeFile(join(other, 'notes.txt'), 'keep');
  await assert.rejects(exportTfjs(m, other), UserError);
  assert.deepEqual(await readdir(other), ['notes.txt']);
  assert.deepEqual((await readdir(root)).filter((e) => e.includes('.tmp-')), []);
});
