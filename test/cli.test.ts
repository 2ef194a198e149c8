// End-to-end: the CLI on the shared VGG16-BN and CIFAR-10, and the engine against onnxruntime on an
// exported copy (issue acceptance), plus the CLI's error contract (one message, non-zero, no stdout).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadCifar10 } from '../src/data/cifar10.js';
import { classBalancedSample, normalizeBatch } from '../src/data/dataset.js';
import { setThreads, TorchModel } from '../src/engine/index.js';
import { exportOnnx, loadOnnxFile } from '../src/onnx/index.js';
import { addonSkip } from './support/addon.js';
import { runOrt } from './support/ort.js';
import { maxAbsDiff } from './support/reference.js';
import { CLI, MODELS_DIR, VGG16_ONNX } from './support/shared.js';

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, CMIPRUNE_NO_PROGRESS: '1' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

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
    const resnet = join(MODELS_DIR, 'resnet20_cifar10.onnx');
    let r = cli(['eval', '--model', resnet, '--limit', '10']);
    assert.notEqual(r.status, 0);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /resnet20_cifar10\.onnx: node '[^']+' \(op (Slice|Pad)\)/);
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
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
