// End-to-end: the CLI on the shared VGG16-BN and CIFAR-10, and the engine against onnxruntime on an
// exported copy (issue acceptance), plus the CLI's error contract (one message, non-zero, no stdout).
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadCifar10 } from '../src/data/cifar10.js';
import { classBalancedSample, normalizeBatch } from '../src/data/dataset.js';
import { setThreads, TorchModel } from '../src/engine/index.js';
import { PNG } from 'pngjs';
import { loadImageFolder } from '../src/data/folder.js';
import { encodeNpy } from '../src/data/npy.js';
import { SequentialBuilder } from '../src/ir/builder.js';
import { exportOnnx, loadOnnxFile, saveOnnxFile } from '../src/onnx/index.js';
import { randomSource } from './support/random.js';
import { onnx } from '../src/onnx/proto.js';
import { addonSkip } from './support/addon.js';
import { runOrt } from './support/ort.js';
import { maxAbsDiff } from './support/reference.js';
import { CLI, MODELS_DIR, VGG16_ONNX, runCli } from './support/shared.js';

const cli = runCli;

test('cmiprune eval reproduces the published 94.04% on the 10,000 CIFAR-10 test images', { skip: addonSkip }, () => {
  const r = cli(['eval', '--model', VGG16_ONNX, '--threads', '2']);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 1, 'exactly one JSON line on stdout');
  const out = JSON.parse(lines[0]!);
  assert.equal(out.images, 10000);
  assert.ok(Math.abs(out.accuracy - 0.9404) <= 0.0005, `accuracy ${out.accuracy}`);
  assert.equal(out.correct, Math.round(out.accuracy * 10000));
  assert.ok(out.seconds > 0);
  assert.equal(out.normalization.source, 'metadata');
});

test('engine logits equal onnxruntime logits on the re-exported VGG16-BN within 1e-4', { skip: addonSkip }, async () => {
  setThreads(2);
  const model = await loadOnnxFile(VGG16_ONNX);
  const exported = exportOnnx(model);
  const ds = classBalancedSample(await loadCifar10('test'), 32, 7);
  const mean = JSON.parse(model.metadata.mean!);
  const std = JSON.parse(model.metadata.std!);
  const x = normalizeBatch(ds, { start: 0, end: ds.n }, mean, std);
  const shape = [ds.n, 3, 32, 32];
  const engine = TorchModel.create(model);
  const ours = (await engine.forward(x, shape)).outputs[model.outputs[0]!]!;
  engine.dispose();
  const theirs = await runOrt(exported, model.inputs[0]!.name, x, shape);
  assert.deepEqual(ours.shape, [ds.n, 10]);
  const maxAbs = maxAbsDiff(theirs, ours.data);
  assert.ok(maxAbs < 1e-4, `max abs diff ${maxAbs}`);
  // the logits are not trivially equal (e.g. all zeros): they classify the batch well
  let correct = 0;
  for (let i = 0; i < ds.n; i++) {
    const row = ours.data.subarray(i * 10, i * 10 + 10);
    if (row.indexOf(Math.max(...row)) === ds.labels[i]) correct++;
  }
  assert.ok(correct / ds.n > 0.8, `accuracy on the batch ${correct / ds.n}`);
});

test('CLI errors: one message naming the file/option, non-zero exit, nothing on stdout', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'cmiprune-cli-'));
  try {
    // an op the importer does not know: a VGG16 copy whose last ReLU became a Sigmoid
    const proto = onnx.ModelProto.decode(await readFile(VGG16_ONNX));
    const relu = proto.graph!.node!.filter((n) => n.opType === 'Relu').pop()!;
    relu.opType = 'Sigmoid';
    const sig = join(dir, 'sigmoid.onnx');
    await writeFile(sig, onnx.ModelProto.encode(proto).finish());
    let r = cli(['eval', '--model', sig, '--limit', '10']);
    assert.notEqual(r.status, 0);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /sigmoid\.onnx: node '[^']+' \(op Sigmoid\)/);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);

    const truncated = join(dir, 'half.onnx');
    const bytes = await readFile(VGG16_ONNX);
    await writeFile(truncated, bytes.subarray(0, bytes.length >> 1));
    r = cli(['eval', '--model', truncated]);
    assert.notEqual(r.status, 0);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /half\.onnx: not a valid ONNX model/);

    r = cli(['eval', '--model', join(dir, 'missing.onnx')]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /missing\.onnx/);

    r = cli(['eval', '--model', VGG16_ONNX, '--batch', 'zero']);
    assert.notEqual(r.status, 0);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /--batch/);

    r = cli(['eval', '--model', VGG16_ONNX, '--split', 'validation']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--split/);

    // the option parser's own errors are one line too (no help text after them)
    for (const args of [['prune', '--no-such-option'], ['prune', '--out', dir], ['no-such-command']]) {
      r = cli(args);
      assert.notEqual(r.status, 0, args.join(' '));
      assert.equal(r.stdout, '');
      assert.equal(r.stderr.trim().split('\n').length, 1, `${args.join(' ')}: ${r.stderr}`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** DIR/<split>/<class>/<i>.png for classes c0..c2: `counts[split][k]` images of size x size, seeded pixels */
async function writeFolder(dir: string, size: number, counts: Record<'train' | 'test', number[]>): Promise<void> {
  const next = randomSource(11);
  for (const split of ['train', 'test'] as const)
    for (const [k, count] of counts[split].entries()) {
      const cls = join(dir, split, `c${k}`);
      await mkdir(cls, { recursive: true });
      for (let i = 0; i < count; i++) {
        const png = new PNG({ width: size, height: size });
        for (let p = 0; p < png.data.length; p++) png.data[p] = p % 4 === 3 ? 255 : Math.floor(next() * 256);
        await writeFile(join(cls, `${i}.png`), PNG.sync.write(png));
      }
    }
}

test('cmiprune eval --data: an image folder, .npy arrays, the size check and the --mean/--std rules', { skip: addonSkip }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'cmiprune-cli-data-'));
  try {
    const model = new SequentialBuilder('tiny', [3, 8, 8], { random: randomSource(5) }).conv(4, 3, { padding: 1 }).relu().globalAvgPool().flatten().linear(3).build();
    model.metadata = { mean: '[0.5,0.5,0.5]', std: '[0.25,0.25,0.25]' };
    const onnx = join(dir, 'tiny.onnx');
    await saveOnnxFile(model, onnx);
    const folder = join(dir, 'folder');
    await writeFolder(folder, 8, { train: [2, 2, 2], test: [3, 2, 1] });

    let r = cli(['eval', '--model', onnx, '--data', folder, '--batch', '4']);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim());
    assert.equal(out.images, 6, 'the folder has 6 test images');
    assert.equal(out.data, folder);
    assert.equal(out.dataSource.kind, 'folder');
    assert.deepEqual(out.dataSource.classNames, ['c0', 'c1', 'c2']);
    assert.ok(Number.isInteger(out.correct) && out.correct >= 0 && out.correct <= 6);
    assert.equal(out.normalization.source, 'metadata');

    // the same images as .npy arrays give the same result
    const tr = await loadImageFolder(folder, 'train');
    const te = await loadImageFolder(folder, 'test');
    const arr = (f: string) => join(dir, f);
    await writeFile(arr('x.npy'), encodeNpy([tr.n, 3, 8, 8], tr.images));
    await writeFile(arr('y.npy'), encodeNpy([tr.n], Int32Array.from(tr.labels)));
    await writeFile(arr('xt.npy'), encodeNpy([te.n, 3, 8, 8], Float32Array.from(te.images)));
    await writeFile(arr('yt.npy'), encodeNpy([te.n], BigInt64Array.from(te.labels, BigInt)));
    r = cli(['eval', '--model', onnx, '--data', [arr('x.npy'), arr('y.npy'), arr('xt.npy'), arr('yt.npy')].join(',')]);
    assert.equal(r.status, 0, r.stderr);
    const viaNpy = JSON.parse(r.stdout.trim());
    assert.equal(viaNpy.images, 6);
    assert.equal(viaNpy.correct, out.correct);
    assert.equal(viaNpy.dataSource.kind, 'npy');
    r = cli(['eval', '--model', onnx, '--data', `${arr('x.npy')},${arr('y.npy')}`, '--split', 'train']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout.trim()).images, 6);

    // --mean/--std override the metadata, and the report says so
    r = cli(['eval', '--model', onnx, '--data', folder, '--mean', '0.4,0.4,0.4', '--std', '0.2,0.2,0.2']);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout.trim()).normalization, { mean: [0.4, 0.4, 0.4], std: [0.2, 0.2, 0.2], source: 'options', overrode: 'metadata' });

    const fails = (args: string[], re: RegExp) => {
      const f = cli(['eval', '--model', onnx, ...args]);
      assert.notEqual(f.status, 0, `expected a failure for ${args.join(' ')}`);
      assert.equal(f.stdout, '');
      assert.equal(f.stderr.trim().split('\n').length, 1, f.stderr);
      assert.match(f.stderr, re);
    };
    // images of another size than the model input: one clear error
    const big = join(dir, 'big');
    await writeFolder(big, 16, { train: [1, 1, 1], test: [1, 1, 1] });
    fails(['--data', big], /tiny\.onnx: input 'input' has shape \[-1,3,8,8\], big-test images are \[N, 3, 16, 16\]: resize the images to 8x8/);
    // --mean with the wrong channel count, or without --std, is an error (never ignored)
    fails(['--data', folder, '--mean', '1,2', '--std', '1,1'], /--mean has 2 value\(s\), the data has 3 channel\(s\)/);
    fails(['--data', folder, '--mean', '1,2'], /--mean needs --std/);
    // a bad spec
    fails(['--data', join(dir, 'nowhere')], /data '.*nowhere': no such directory/);
    fails(['--data', `${arr('x.npy')},${arr('y.npy')}`], /no test arrays/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
