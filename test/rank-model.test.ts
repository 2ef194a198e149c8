// `cmiprune rank --model`: activations through the engine, per-layer checkpoints, resume after a kill.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { collectActivations } from '../src/activations/collect.js';
import { orderLayer } from '../src/cmi/order.js';
import { loadCifar10 } from '../src/data/cifar10.js';
import { classBalancedSample } from '../src/data/dataset.js';
import { TorchModel } from '../src/engine/index.js';
import { convUnits } from '../src/ir/graph.js';
import { loadOnnxFile } from '../src/onnx/index.js';
import { CLI, VGG16_ONNX } from './shared.js';

const env = { ...process.env, CMIPRUNE_NO_PROGRESS: '1' };
const base = ['rank', '--model', VGG16_ONNX, '--samples', '48', '--seed', '3'];

test('rank --model orders a layer exactly as orderLayer does on the same sample', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'cmiprune-rank-'));
  try {
    const r = spawnSync(process.execPath, [CLI, ...base, '--max-select', '3', '--layer', '2', '--checkpoint', dir], { encoding: 'utf8', env });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.layers.length, 1);
    const l = out.layers[0];
    assert.equal(l.index, 2);
    assert.equal(l.channels, 128);
    assert.deepEqual(l.mapShape, [16, 16]);
    assert.equal(l.order.length, 3);
    assert.equal(out.samples, 48);

    // independent path: same sample, same taps, ordered directly
    const model = await loadOnnxFile(VGG16_ONNX);
    const unit = convUnits(model)[2]!;
    const sample = classBalancedSample(await loadCifar10('train'), 48, 3);
    const engine = TorchModel.create(model);
    const [acts] = await collectActivations(engine, sample, [unit], {
      mean: JSON.parse(model.metadata.mean!),
      std: JSON.parse(model.metadata.std!),
    });
    engine.dispose();
    const direct = await orderLayer(
      { maps: { data: acts!.maps, n: acts!.n, c: acts!.channels, hw: acts!.spatial }, labels: sample.labels, classes: 10 },
      { alpha: 1.01, maxSelect: 3 },
    );
    assert.deepEqual(l.order, direct.order);
    l.cmi.forEach((v: number, i: number) => assert.ok(Math.abs(v - direct.cmi[i]!) <= 1e-9 * Math.abs(v) + 1e-12));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('an interrupted rank --layer all resumes from its per-layer checkpoints', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'cmiprune-resume-'));
  try {
    // enough steps that the wide layers take seconds: the kill lands mid-run
    const args = [CLI, ...base, '--max-select', '12', '--layer', 'all', '--checkpoint', dir];
    // first run: killed once the first layer is checkpointed
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    for (let i = 0; i < 1200 && !existsSync(join(dir, 'layer-000.json')); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(existsSync(join(dir, 'layer-000.json')), 'first layer checkpoint written');
    child.kill('SIGKILL');
    await exited;
    assert.equal(stdout, '', 'an interrupted run prints no partial result');
    const saved = (await readdir(dir)).filter((f) => f.endsWith('.json'));
    assert.ok(saved.length >= 1 && saved.length < 13, `checkpoints after the kill: ${saved}`);
    assert.ok((await readdir(dir)).every((f) => !f.includes('.tmp')), 'no temp files left behind by atomic writes');

    const r = spawnSync(process.execPath, args, { encoding: 'utf8', env });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`resuming, ${saved.length} of 13 layers`));
    const out = JSON.parse(r.stdout);
    assert.equal(out.layers.length, 13);
    assert.equal(out.layers.filter((l: { resumed: boolean }) => l.resumed).length, saved.length);
    assert.deepEqual(out.layers.map((l: { channels: number }) => l.channels), [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]);

    // a fresh run recomputes everything and agrees with the resumed layers
    const f = spawnSync(process.execPath, [...args, '--fresh'], { encoding: 'utf8', env });
    assert.equal(f.status, 0, f.stderr);
    const fresh = JSON.parse(f.stdout);
    assert.ok(fresh.layers.every((l: { resumed: boolean }) => !l.resumed));
    assert.deepEqual(fresh.layers.map((l: { order: number[] }) => l.order), out.layers.map((l: { order: number[] }) => l.order));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
