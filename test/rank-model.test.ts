// `cmiprune rank --model`: activations through the engine, per-layer checkpoints, resume after a kill;
// the core rankConvUnits on an in-memory model: checkpoint keys carry the algorithm version.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { collectActivations } from '../src/activations/collect.js';
import { RANK_ALGORITHM_VERSION, rankLayer } from '../src/cmi/rank.js';
import { cifar10CacheValid, loadCifar10 } from '../src/data/cifar10.js';
import { classBalancedSample, type ImageDataset } from '../src/data/dataset.js';
import { TorchModel } from '../src/engine/index.js';
import { SequentialBuilder } from '../src/ir/builder.js';
import { convUnits } from '../src/ir/graph.js';
import { loadOnnxFile } from '../src/onnx/index.js';
import { checkpointKey, checkpointPath, rankConvUnits, type Checkpoint, type LayerRanking } from '../src/cmi/rank-model.js';
import { Rng } from '../src/util/rng.js';
import { addonSkip } from './support/addon.js';
import { randomImages } from './support/images.js';
import { CLI, VGG16_ONNX } from './support/shared.js';

const env = { ...process.env, CMIPRUNE_NO_PROGRESS: '1' };
const base = ['rank', '--model', VGG16_ONNX, '--samples', '48', '--seed', '3'];
// the VGG16 tests run the engine and read CIFAR-10 from the cache (`cmiprune fetch-data`): they
// skip without the addon or the cache
const cifar = await cifar10CacheValid();
const vggSkip = addonSkip || (!cifar && 'CIFAR-10 not in the cache');

/** a two-conv model and 24 random 3x8x8 images of 4 classes: enough for the checkpoint logic */
function tiny(): { model: ReturnType<SequentialBuilder['build']>; sample: ImageDataset } {
  const rng = new Rng(17);
  const model = new SequentialBuilder('tiny', [3, 8, 8], { random: () => rng.next() })
    .conv(6, 3, { padding: 1 })
    .bn()
    .relu()
    .maxpool(2)
    .conv(4, 3, { padding: 1 })
    .relu()
    .flatten()
    .linear(4)
    .build();
  return { model, sample: randomImages(rng, 24, [3, 8, 8], 4, 'tiny') };
}

test('rankConvUnits: per-layer checkpoints resume only under the same algorithm version and settings', { skip: addonSkip }, async () => {
  const { model, sample } = tiny();
  const units = convUnits(model);
  assert.equal(units.length, 2);
  const dir = await mkdtemp(join(tmpdir(), 'cmiprune-ckpt-'));
  const norm = { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] };
  const run = (extra: object = {}) => {
    const seen: string[] = [];
    return rankConvUnits(model, units, sample, {
      ...norm,
      checkpointDir: dir,
      backend: 'ts',
      onLayer: (e) => seen.push(`${e.layer.layer}:${e.done}/${e.total}:${e.layer.resumed}`),
      ...extra,
    }).then((r) => ({ r, seen }));
  };
  const resumed = (r: { layers: LayerRanking[] }) => r.layers.map((l) => l.resumed);
  try {
    const first = await run();
    assert.deepEqual(resumed(first.r), [false, false]);
    assert.deepEqual(first.seen, [`${units[0]!.name}:1/2:false`, `${units[1]!.name}:2/2:false`]);
    assert.equal(first.r.orderAlgorithmVersion, RANK_ALGORITHM_VERSION);
    assert.deepEqual(first.r.layers.map((l) => l.channels), [6, 4]);

    const again = await run();
    assert.deepEqual(resumed(again.r), [true, true]);
    assert.deepEqual(again.r.layers.map((l) => l.order), first.r.layers.map((l) => l.order));

    // layer 0's checkpoint as an older algorithm would have written it: same inputs, other version
    const path = checkpointPath(dir, units[0]!);
    const saved = JSON.parse(await readFile(path, 'utf8')) as Checkpoint;
    assert.equal(saved.parts.version, RANK_ALGORITHM_VERSION);
    assert.equal(saved.key, checkpointKey(saved.parts), 'the stored parts reproduce the key');
    const old = { ...saved.parts, version: `${RANK_ALGORITHM_VERSION}-older` };
    await writeFile(path, JSON.stringify({ ...saved, key: checkpointKey(old), parts: old }));
    const afterBump = await run();
    assert.deepEqual(resumed(afterBump.r), [false, true], 'a checkpoint of another algorithm version is recomputed');

    // new options are part of the key: another sigma rule or a permutation test recomputes
    assert.deepEqual(resumed((await run({ sigma: 'median' })).r), [false, false]);
    const pt = (await run({ permutationTest: { permutations: 5 } })).r;
    assert.deepEqual(resumed(pt), [false, false]);
    assert.equal(pt.layers[0]!.permutationTest!.permutations, 5);
    assert.deepEqual(resumed((await run({ permutationTest: { permutations: 5 } })).r), [true, true]);
    assert.deepEqual(resumed((await run({ permutationTest: { permutations: 5, eta: 0.1 } })).r), [false, false]);
    // an in-memory edit of the weights changes the model key
    model.tensors[units[1]!.conv.params.weight!]!.data[0]! += 1;
    assert.deepEqual(resumed((await run()).r), [false, false]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('rank --model orders a layer exactly as rankLayer does on the same sample', { skip: vggSkip }, async () => {
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
    const direct = await rankLayer(
      { maps: { data: acts!.maps, n: acts!.n, c: acts!.channels, hw: acts!.spatial }, labels: sample.labels, classes: 10 },
      { alpha: 1.01, maxSelect: 3 },
    );
    assert.deepEqual(l.order, direct.order);
    l.cmi.forEach((v: number, i: number) => assert.ok(Math.abs(v - direct.cmi[i]!) <= 1e-9 * Math.abs(v) + 1e-12));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('an interrupted rank --layer all resumes from its per-layer checkpoints', { skip: vggSkip }, async () => {
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
