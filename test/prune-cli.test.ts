// `cmiprune prune` end to end: the shared VGG16-BN halved by L1 (issue acceptance), a small
// exported CNN pruned by CMI with scree cut-offs, report.json against an independent count of the
// written ONNX, onnxruntime against the engine, and the error contract (one message, non-zero
// exit, nothing on stdout, nothing in --out).
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { loadCifar10 } from '../src/data/cifar10.js';
import { classBalancedSample, normalizeBatch } from '../src/data/dataset.js';
import { setThreads, TorchModel } from '../src/engine/index.js';
import { countOnnx } from '../src/export/count.js';
import { SequentialBuilder } from '../src/ir/builder.js';
import { exportOnnx, loadOnnxFile } from '../src/onnx/index.js';
import { PRUNE_DEFAULTS, resolveFormulation } from '../src/pipeline/prune.js';
import { chooseBnStats } from '../src/recover/bn.js';
import { PLAN_METADATA_KEY } from '../src/prune/surgery.js';
import { addonSkip } from './support/addon.js';
import { runOrt } from './support/ort.js';
import { writeImageFolder, writeSmallCnn } from './support/images.js';
import { Rng } from './support/random.js';
import { maxAbsDiff } from './support/reference.js';
import { MODELS_DIR, VGG16_ONNX, runCli } from './support/shared.js';

const cli = runCli;

let dir = '';
let small = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cmiprune-prune-'));
  small = join(dir, 'small.onnx');
  writeSmallCnn(small);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The report's counts equal an independent count from the written ONNX initializers. */
async function checkOutputs(out: string) {
  const bytes = new Uint8Array(await readFile(join(out, 'pruned.onnx')));
  const report = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
  const counted = countOnnx(bytes);
  assert.equal(report.cost.after.params, counted.params);
  assert.equal(report.cost.after.macs, counted.macs);
  assert.ok(report.verification.onnxruntime.ok);
  assert.ok(report.verification.onnxruntime.maxAbsDiff <= 1e-4);
  assert.deepEqual(await readdir(out).then((f) => f.sort()), ['pruned.onnx', 'pruned_tfjs', 'report.html', 'report.json']);
  assert.equal(report.tfjs.exported, true);
  assert.ok((await readdir(join(out, 'pruned_tfjs'))).includes('model.json'));
  return { bytes, report, counted };
}

test('prune --criterion l1 --cutoff keep:0.5 halves every conv of the shared VGG16-BN; onnxruntime gives the engine logits', { skip: addonSkip }, async () => {
  const out = join(dir, 'vgg-l1');
  const r = cli(['prune', '--model', VGG16_ONNX, '--data', 'cifar10', '--criterion', 'l1', '--cutoff', 'keep:0.5', '--finetune-epochs', '0', '--out', out, '--test-limit', '1000', '--bn-images', '512']);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 1);
  const summary = JSON.parse(lines[0]!);
  const { bytes, report, counted } = await checkOutputs(out);
  // another criterion has no cross-layer form: it ranks per layer without being told
  assert.deepEqual([report.method.formulation, report.method.order], ['per-layer', 'independent']);
  assert.deepEqual(counted.convs.map((c) => c.outChannels), [32, 32, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256, 256]);
  assert.deepEqual(report.layers.map((l: { kept: number }) => l.kept), [32, 32, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256, 256]);
  assert.equal(summary.filters.after, 2112);
  // the unpruned model scores ~94% on these 1000 images; BN re-estimation recovers part of the loss
  assert.ok(report.accuracy.before > 0.9, JSON.stringify(report.accuracy));
  assert.ok(report.accuracy.afterBnReestimation > report.accuracy.afterSurgery, JSON.stringify(report.accuracy));
  // same input/output names, normalisation metadata and opset as the input file
  const pruned = await loadOnnxFile(join(out, 'pruned.onnx'));
  const orig = await loadOnnxFile(VGG16_ONNX);
  assert.deepEqual(pruned.inputs.map((i) => i.name), orig.inputs.map((i) => i.name));
  assert.deepEqual(pruned.outputs, orig.outputs);
  assert.equal(pruned.metadata.mean, orig.metadata.mean);
  assert.equal(JSON.parse(pruned.metadata[PLAN_METADATA_KEY]!).kept['/features/features.0/Conv'] ?? 32, 32);
  // an independent check of the written file: onnxruntime vs the engine on real images
  setThreads(2);
  const ds = classBalancedSample(await loadCifar10('test'), 16, 3);
  const x = normalizeBatch(ds, { start: 0, end: ds.n }, JSON.parse(orig.metadata.mean!), JSON.parse(orig.metadata.std!));
  const e = TorchModel.create(pruned);
  const ours = (await e.forward(x, [ds.n, 3, 32, 32])).outputs[pruned.outputs[0]!]!;
  e.dispose();
  assert.ok(maxAbsDiff(await runOrt(bytes, pruned.inputs[0]!.name, x, [ds.n, 3, 32, 32]), ours.data) <= 1e-4);
  for (const k of ['load', 'rank', 'cutoff', 'surgery', 'bnReestimation', 'verify', 'latency', 'total']) assert.ok(report.seconds[k] >= 0, k);
  assert.ok(report.latency.after[0].msPerImage > 0 && report.latency.before[1].batch === 64);
});

test('prune ResNet-56 --criterion l1 --cutoff keep:0.5 --residual inner: each block\'s first conv halved, every Add keeps its width, onnxruntime agrees', { skip: addonSkip }, async () => {
  const out = join(dir, 'r56');
  const r = cli(['prune', '--model', join(MODELS_DIR, 'resnet56_cifar10.onnx'), '--criterion', 'l1', '--cutoff', 'keep:0.5', '--residual', 'inner', '--test-limit', '300', '--bn-images', '256', '--heldout', '50', '--out', out]);
  assert.equal(r.status, 0, r.stderr);
  const { report, counted } = await checkOutputs(out);
  const layers = report.layers as { name: string; channels: number; kept: number; prunable: boolean; reason?: string }[];
  const inner = layers.filter((l) => /\/layer\d\/layer\d\.\d+\/conv1\/Conv$/.test(l.name));
  assert.equal(inner.length, 27);
  for (const l of layers) {
    if (inner.includes(l)) assert.deepEqual([l.prunable, l.kept], [true, l.channels / 2], l.name);
    else assert.deepEqual([l.prunable, l.kept], [false, l.channels], l.name);
    if (!l.prunable) assert.match(l.reason!, /\(Add\) couples/);
  }
  // the written file: 55 convs, the inner ones at half width
  assert.equal(counted.convs.length, 55);
  for (const c of counted.convs) assert.equal(c.outChannels, layers.find((l) => l.name === c.name)!.kept, c.name);
});

test('prune ResNet-20 --criterion l1 --cutoff keep:0.5 --residual all: the residual stream is one coupled group, each stage keeps the plan\'s channels, onnxruntime agrees', { skip: addonSkip }, async () => {
  const out = join(dir, 'r20-all');
  const r = cli(['prune', '--model', join(MODELS_DIR, 'resnet20_cifar10.onnx'), '--criterion', 'l1', '--cutoff', 'keep:0.5', '--residual', 'all', '--test-limit', '300', '--bn-images', '256', '--heldout', '50', '--out', out]);
  assert.equal(r.status, 0, r.stderr);
  const { report, counted } = await checkOutputs(out);
  type Layer = { name: string; channels: number; kept: number; prunable: boolean; keepIndices: number[]; order: number[]; cutOrder?: number[]; coupled?: { convs: string[]; couplers: string[] } };
  const layers = report.layers as Layer[];
  // 9 inner convs and one group for the stem, the 9 blocks' second convs, 9 Adds and the 2 shortcut Pads
  assert.equal(layers.length, 10);
  const stream = layers.find((l) => l.coupled)!;
  assert.equal(stream.name, '/conv1/Conv');
  assert.deepEqual([stream.channels, stream.kept, stream.coupled!.convs.length, stream.coupled!.couplers.length], [64, 32, 10, 11]);
  for (const l of layers) assert.equal(l.prunable, true, l.name);
  // the written file: every conv of the stream keeps the plan's channels in its stage's range
  // (stage 3: all 64, stage 2: 16..47, stage 1: 24..39)
  const range = (name: string) => (name.startsWith('/layer3') ? [0, 64] : name.startsWith('/layer2') ? [16, 48] : [24, 40]);
  assert.equal(counted.convs.length, 19);
  for (const c of counted.convs) {
    const own = layers.find((l) => l.name === c.name && !l.coupled);
    if (own) assert.equal(c.outChannels, own.kept, c.name);
    else {
      const [lo, hi] = range(c.name);
      assert.equal(c.outChannels, stream.keepIndices.filter((j) => j >= lo! && j < hi!).length, c.name);
      // keep:0.5 takes half of every conv, also of each stage of the stream (groups.ts stratifiedOrder)
      assert.equal(c.outChannels, (hi! - lo!) / 2, c.name);
    }
  }
  // the report keeps the criterion's order (what its curve belongs to) and names the order the
  // group was cut by: keepIndices are the first `kept` of cutOrder, not of order (stage 1's
  // channels 24..39 would otherwise not be exactly halved, as asserted above)
  const sorted = (a: number[]) => [...a].sort((x, y) => x - y);
  assert.ok(stream.cutOrder, 'the stream group records its cut order');
  assert.deepEqual(sorted(stream.cutOrder!), sorted(stream.order));
  assert.deepEqual(sorted(stream.keepIndices), sorted(stream.cutOrder!.slice(0, stream.kept)));
  assert.notDeepEqual(sorted(stream.keepIndices), sorted(stream.order.slice(0, stream.kept)));
  for (const l of layers) if (!l.coupled) assert.equal(l.cutOrder, undefined, l.name);
});

test('the default formulation is CMI\'s cross-layer one where it is defined, per-layer elsewhere; a given one is kept', () => {
  assert.equal(resolveFormulation(undefined, 'cmi', 'inner'), PRUNE_DEFAULTS.formulation);
  assert.equal(resolveFormulation(undefined, 'cmi', undefined), PRUNE_DEFAULTS.formulation);
  for (const c of ['l1', 'random', 'hrank', 'chip']) assert.equal(resolveFormulation(undefined, c, 'inner'), 'per-layer', c);
  assert.equal(resolveFormulation(undefined, 'cmi', 'all'), 'per-layer');
  assert.equal(resolveFormulation('compact', 'cmi', 'inner'), 'compact');
  assert.equal(resolveFormulation('per-layer', 'cmi', 'inner'), 'per-layer');
});

test('prune --criterion cmi --cutoff scree on a small CNN: per-layer decisions from held-out candidates, report and ONNX agree', { skip: addonSkip }, async () => {
  const out = join(dir, 'small-cmi');
  const r = cli(['prune', '--model', small, '--criterion', 'cmi', '--cutoff', 'scree', '--samples', '60', '--heldout', '100', '--bn-images', '128', '--test-limit', '200', '--out', out, '--fresh', '--checkpoint', join(dir, 'ckpt')]);
  assert.equal(r.status, 0, r.stderr);
  const { report } = await checkOutputs(out);
  assert.equal(report.layers.length, 3);
  for (const l of report.layers.slice(0, 2)) {
    assert.equal(l.prunable, true);
    assert.equal(l.curve.length, l.channels - 1);
    const cands = l.cutoff.evidence.candidates.map((c: { keep: number }) => c.keep);
    assert.ok(cands.includes(l.kept), `${l.name}: kept ${l.kept} is one of the scree candidates ${cands}`);
    assert.deepEqual([...l.keepIndices].sort((a: number, b: number) => a - b), [...l.order.slice(0, l.kept)].sort((a: number, b: number) => a - b));
  }
  assert.equal(report.settings.seed, 0);
  assert.equal(report.data.heldout, 100);
  // no --formulation: CMI's default cross-layer method (PRUNE_DEFAULTS), each layer ranked on its chain
  assert.deepEqual([report.method.formulation, report.method.order], [PRUNE_DEFAULTS.formulation, PRUNE_DEFAULTS.order]);
  assert.notEqual(PRUNE_DEFAULTS.formulation, 'per-layer');
  assert.ok(report.layers.slice(0, 2).every((l: { chain: unknown }) => typeof l.chain === 'string'), JSON.stringify(report.method));
  // --round-to 4: the same decisions rounded up to multiples of 4 (at most all channels)
  const out4 = join(dir, 'small-cmi-round');
  const r4 = cli(['prune', '--model', small, '--criterion', 'cmi', '--cutoff', 'scree', '--samples', '60', '--heldout', '100', '--bn-images', '128', '--test-limit', '200', '--out', out4, '--round-to', '4', '--checkpoint', join(dir, 'ckpt')]);
  assert.equal(r4.status, 0, r4.stderr);
  const rounded = JSON.parse(await readFile(join(out4, 'report.json'), 'utf8'));
  rounded.layers.forEach((l: { kept: number; channels: number }, i: number) => {
    assert.equal(l.kept, Math.min(l.channels, Math.ceil(report.layers[i].kept / 4) * 4));
  });
  // a rerun resumes every layer's ranking from the checkpoints and makes the same plan
  const out2 = join(dir, 'small-cmi-again');
  const r2 = cli(['prune', '--model', small, '--criterion', 'cmi', '--cutoff', 'scree', '--samples', '60', '--heldout', '100', '--bn-images', '128', '--test-limit', '200', '--out', out2, '--checkpoint', join(dir, 'ckpt')]);
  assert.equal(r2.status, 0, r2.stderr);
  const again = JSON.parse(await readFile(join(out2, 'report.json'), 'utf8'));
  for (let i = 0; i < 3; i++) {
    assert.equal(report.layers[i].criterion.resumed, false);
    assert.equal(again.layers[i].criterion.resumed, true);
    assert.deepEqual(again.layers[i].keepIndices, report.layers[i].keepIndices);
  }
});

test('prune --formulation compact --order bidirectional on a small CNN: both chains in the report, each layer conditioned on its chain neighbour', { skip: addonSkip }, async () => {
  const out = join(dir, 'small-compact');
  const r = cli(['prune', '--model', small, '--criterion', 'cmi', '--formulation', 'compact', '--order', 'bidirectional', '--cutoff', 'keep:0.5', '--samples', '60', '--heldout', '100', '--bn-images', '128', '--test-limit', '200', '--out', out, '--fresh', '--checkpoint', join(dir, 'ckpt-compact')]);
  assert.equal(r.status, 0, r.stderr);
  const { report } = await checkOutputs(out);
  assert.equal(report.method.formulation, 'compact');
  assert.equal(report.method.order, 'bidirectional');
  const start = report.method.startLayer;
  const layers = report.layers as { name: string; chain: string; conditionedOn: string[]; kept: number; channels: number }[];
  const si = layers.findIndex((l) => l.name === start);
  assert.ok(si >= 0, `start layer ${start}`);
  layers.forEach((l, i) => {
    assert.equal(l.kept, Math.round(l.channels / 2));
    if (i === si) assert.deepEqual([l.chain, l.conditionedOn], ['start', []]);
    else assert.deepEqual([l.chain, l.conditionedOn], [i > si ? 'forward' : 'backward', [layers[i > si ? i - 1 : i + 1]!.name]]);
  });
  assert.ok(report.method.chains.length >= 1 && report.method.chains.every((c: { seconds: number }) => c.seconds >= 0));
});

test('sweep: l1 and random at two global budgets (the README form filters:0.2,0.5) and per layer; sweep.json and sweep.html agree; a bad budget is one error naming --budgets', { skip: addonSkip }, async () => {
  const out = join(dir, 'sweep');
  const bad = cli(['sweep', '--model', small, '--criteria', 'l1', '--budgets', 'filters:0.2,half', '--out', join(dir, 'sweep-bad')]);
  assert.notEqual(bad.status, 0);
  assert.equal(bad.stdout, '');
  assert.match(bad.stderr, /--budgets: 'half' is not a budget/);
  assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
  assert.equal(existsSync(join(dir, 'sweep-bad')), false);
  const r = cli(['sweep', '--model', small, '--criteria', 'l1,random', '--budgets', 'filters:0.2,0.5', '--per-layer', '--test-limit', '200', '--bn-images', '128', '--out', out]);
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(await readFile(join(out, 'sweep.json'), 'utf8'));
  assert.equal(s.points.length, 4);
  assert.deepEqual(s.points.map((p: { budget: string }) => p.budget), ['filters:0.2', 'filters:0.5', 'filters:0.2', 'filters:0.5']);
  for (const p of s.points) {
    const f = Number(p.budget.split(':')[1]);
    // the uniform allocation removes at least the budget, and less than one more filter per layer
    assert.ok(p.removed.filters >= f && p.removed.filters < f + 3 / (13 + 21 + 37), JSON.stringify(p));
    assert.ok(p.accuracy.afterSurgery >= 0 && p.accuracy.afterBnReestimation >= 0);
    // --bn-stats auto (the default): each point says which statistics its accuracy after BN is of
    assert.ok(p.bnStats === 'anchored' || p.bnStats === 'reestimated', JSON.stringify(p));
  }
  // per layer: 2 criteria x 3 layers x 2 fractions, each layer alone keeping 1 - F of its filters
  assert.equal(s.perLayer.length, 2 * 3 * 2);
  assert.deepEqual(s.perLayer.slice(0, 2).map((x: { kept: number }) => x.kept), [Math.round(0.8 * 13), Math.round(0.5 * 13)]);
  const html = await readFile(join(out, 'sweep.html'), 'utf8');
  assert.match(html, /id="plot-sweep"/);
  assert.equal((html.match(/<svg/g) ?? []).length >= 2, true);
});

test('prune --bn-stats: anchored gives a plan that keeps every filter (keep:0.99 of 13, 21, 37) its trained statistics back exactly; reestimated replaces them; auto (default) takes the one the held-out images prefer; all recorded', { skip: addonSkip }, async () => {
  const run = async (extra: string[], name: string) => {
    const out = join(dir, name);
    const r = cli(['prune', '--model', small, '--criterion', 'l1', '--cutoff', 'keep:0.99', '--test-limit', '300', '--bn-images', '256', '--heldout', '200', '--out', out, ...extra]);
    assert.equal(r.status, 0, r.stderr);
    return { report: JSON.parse(await readFile(join(out, 'report.json'), 'utf8')), model: await loadOnnxFile(join(out, 'pruned.onnx')) };
  };
  const original = await loadOnnxFile(small);
  // every BN's running mean and variance
  const bnMeans = (m: typeof original) =>
    m.nodes.filter((n) => n.op === 'BatchNorm').flatMap((n) => [(n.params as { runningMean: string }).runningMean, (n.params as { runningVar: string }).runningVar].map((k) => Array.from(m.tensors[k]!.data)));
  const anchored = await run(['--bn-stats', 'anchored'], 'bn-anchored');
  assert.equal(anchored.report.bnReestimation.stats, 'anchored');
  assert.equal(anchored.report.bnReestimation.chosen, 'anchored');
  assert.deepEqual(bnMeans(anchored.model), bnMeans(original));
  assert.equal(anchored.report.accuracy.afterBnReestimation, anchored.report.accuracy.before);
  const plain = await run(['--bn-stats', 'reestimated'], 'bn-reestimated');
  assert.equal(plain.report.bnReestimation.chosen, 'reestimated');
  assert.notDeepEqual(bnMeans(plain.model), bnMeans(original));
  // auto: both evaluated on the held-out images, the model written is the one chosen from them
  const auto = await run([], 'bn-auto');
  const bn = auto.report.bnReestimation;
  assert.equal(bn.stats, PRUNE_DEFAULTS.bnStats);
  assert.equal(bn.stats, 'auto');
  assert.ok(bn.heldoutAccuracy.anchored >= 0 && bn.heldoutAccuracy.reestimated >= 0, JSON.stringify(bn));
  assert.equal(bn.chosen, chooseBnStats(bn.heldoutAccuracy));
  assert.deepEqual(bnMeans(auto.model), bnMeans(bn.chosen === 'anchored' ? anchored.model : plain.model));
  const bad = cli(['prune', '--model', small, '--bn-stats', 'trained', '--out', join(dir, 'bn-bad')]);
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /--bn-stats/);
});

test('prune --data DIR: an image folder written on the fly prunes and evaluates; a wrong image size or no classes is one clear error', { skip: addonSkip }, async () => {
  const folder = join(dir, 'images');
  writeImageFolder(folder, { classes: ['cat', 'ant', 'bee'], perClass: { train: 14, test: 5 }, width: 8, height: 8, seed: 4 });
  const rng = new Rng(9);
  const b = new SequentialBuilder('tiny', [3, 8, 8], { random: () => rng.next() });
  b.conv(6, 3, { padding: 1, bias: false }).bn().relu().conv(9, 3, { padding: 1 }).bn().relu().maxpool(2).flatten().linear(3);
  const m = b.build();
  m.metadata = { mean: '[0.5,0.5,0.5]', std: '[0.25,0.25,0.25]' };
  const tiny = join(dir, 'tiny.onnx');
  await writeFile(tiny, exportOnnx(m));
  const out = join(dir, 'folder-out');
  const common = ['--criterion', 'l1', '--cutoff', 'keep:0.5', '--samples', '12', '--heldout', '12', '--no-bn-reestimate'];
  const r = cli(['prune', '--model', tiny, '--data', folder, ...common, '--out', out]);
  assert.equal(r.status, 0, r.stderr);
  const { report } = await checkOutputs(out);
  assert.equal(report.data.test, 15);
  assert.equal(report.data.source.kind, 'folder');
  assert.deepEqual(report.layers.map((l: { kept: number }) => l.kept), [3, 5]);
  assert.ok(report.accuracy.before >= 0 && report.accuracy.afterSurgery >= 0);
  // 16x16 images for an 8x8 model, and a folder without class folders
  const big = join(dir, 'images16');
  writeImageFolder(big, { classes: ['a', 'b'], perClass: { train: 8, test: 2 }, width: 16, height: 16 });
  const empty = join(dir, 'noclasses');
  await mkdir(join(empty, 'train'), { recursive: true });
  await mkdir(join(empty, 'test'), { recursive: true });
  for (const [data, re] of [[big, /16/], [empty, /class/]] as const) {
    const bad = cli(['prune', '--model', tiny, '--data', data, ...common, '--out', join(dir, 'bad-folder-out')]);
    assert.notEqual(bad.status, 0);
    assert.equal(bad.stdout, '');
    assert.match(bad.stderr, re);
    assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
    assert.equal(existsSync(join(dir, 'bad-folder-out')), false);
  }
});

test('prune: bad input gives one error line, a non-zero exit, no stdout and nothing in --out', { skip: addonSkip }, async () => {
  const out = join(dir, 'bad-out');
  const cases: [string[], RegExp][] = [
    [['--model', join(dir, 'missing.onnx'), '--criterion', 'l1', '--cutoff', 'keep:0.5'], /missing\.onnx: cannot read model file/],
    [['--model', small, '--criterion', 'magnitude', '--cutoff', 'keep:0.5'], /--criterion.*magnitude.*expected one of: cmi, l1, random/],
    [['--model', small, '--criterion', 'l1', '--cutoff', 'elbow'], /--cutoff.*expected one of: scree, xmeans/],
    [['--model', small, '--criterion', 'l1', '--cutoff', 'filters:1.5'], /--cutoff.*must be a number in \(0, 1\)/],
    [['--model', small, '--criterion', 'l1', '--cutoff', 'keep:0'], /--cutoff.*must be a number in \(0, 1\)/],
    [['--model', small, '--criterion', 'random', '--cutoff', 'scree'], /needs a curve, and criterion 'random' gives none/],
  ];
  for (const [args, re] of cases) {
    const r = cli(['prune', ...args, '--out', out]);
    assert.notEqual(r.status, 0, args.join(' '));
    assert.equal(r.stdout, '', args.join(' '));
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').filter((l) => l.startsWith('cmiprune:') || l.startsWith('error:')).length, 1, r.stderr);
    assert.equal(existsSync(out), false, `${args.join(' ')} left ${out}`);
  }
  // an unwritable --out (root ignores permission bits, so a path under a regular file)
  const file = join(dir, 'a-file');
  await writeFile(file, 'x');
  const r = cli(['prune', '--model', small, '--criterion', 'l1', '--cutoff', 'keep:0.5', '--out', join(file, 'out')]);
  assert.notEqual(r.status, 0);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /--out .*a-file.* is not a directory/);
});
