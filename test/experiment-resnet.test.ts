// The ResNet-56 experiment (experiments/resnet56.ts) on the shared experiment machinery, run on a
// tiny residual net (ResNet-8, option-A shortcuts, untrained): every step of the config with small
// limits, the residual mode in every point's key that depends on it, a rerun that computes nothing,
// its RESULTS section with the stored numbers, the published anchors labelled, the target with its
// distance, and RESULTS.md holding the VGG16 section and this one side by side.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { runExperiment as runResnet } from '../experiments/resnet56.js';
import { runExperiment as runVgg } from '../experiments/vgg16.js';
import { type EpochValue, fmtAcc, keys, type RecoveredStartValue, type Setup, sweepRecords, type SweepValue, targetRecovered } from '../src/experiment/results.js';
import { ResultStore } from '../src/experiment/store.js';
import { resnetCifar } from '../src/ir/builder.js';
import { exportOnnx } from '../src/onnx/index.js';
import { addonSkip } from './support/addon.js';
import { writeSmallCnn } from './support/images.js';
import { randomSource } from './support/random.js';
import { REPO_ROOT } from './support/shared.js';

process.env.CMIPRUNE_NO_PROGRESS = '1';

let dir = '';
let resnet = '';
let sha = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cmiprune-experiment-resnet-'));
  resnet = join(dir, 'resnet8.onnx');
  const m = resnetCifar({ random: randomSource(8) }, { depth: 8 });
  m.metadata = { mean: JSON.stringify([0.4914, 0.4822, 0.4465]), std: JSON.stringify([0.247, 0.2435, 0.2616]) };
  writeFileSync(resnet, exportOnnx(m));
  sha = createHash('sha256').update(await readFile(resnet)).digest('hex');
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

// each block's first conv: the only convs whose channels reach no Add (--residual inner)
const INNER = ['/layer1/layer1.0/conv1/Conv', '/layer2/layer2.0/conv1/Conv', '/layer3/layer3.0/conv1/Conv'];

test('targetRecovered with distance: how far the closest point falls short of each reduction, and of the drop', () => {
  const base = 0.9339;
  const r = (params: number, macs: number, accuracy: number) => ({ label: 'cmi', params, macs, epoch: 3, accuracy });
  const short = targetRecovered(base, [r(0.4, 0.5, 0.93)], 0.47, 0.42, 0.3, 3, { distance: true });
  assert.equal(short.met, false);
  assert.match(short.target, /≥ 47% fewer multiply-adds and ≥ 42% fewer parameters at ≤ 0\.30-point drop with ≤ 3 fine-tuning epochs/);
  assert.match(short.statement, /the closest removes 50% of the multiply-adds and 40% of the parameters \(cmi\): multiply-adds reached, 2\.0 percentage points short of 42% parameters, at an accuracy change of −0\.39 points after 3 epochs$/);
  // without the option the statement is the VGG16 experiment's, unchanged
  assert.match(targetRecovered(base, [r(0.4, 0.5, 0.93)], 0.47, 0.42).statement, /\(cmi\)$/);
  const over = targetRecovered(base, [r(0.43, 0.48, 0.929)], 0.47, 0.42, 0.3, 3, { distance: true });
  assert.equal(over.met, false);
  assert.match(over.statement, /a drop 0\.19 points over 0\.30$/);
  assert.equal(targetRecovered(base, [r(0.43, 0.48, 0.932)], 0.47, 0.42, 0.3, 3, { distance: true }).met, true);
});

test('ResNet experiment on a tiny residual net: every step, residual mode in the keys, a rerun computes nothing, its section beside VGG16’s in RESULTS.md', { skip: addonSkip }, async () => {
  const results = join(dir, 'store');
  const out = join(dir, 'report');
  const o = {
    model: resnet,
    residual: 'inner' as const,
    criteria: ['cmi-a2-median', 'l1'],
    // filters budgets count every conv's filters: with only the inner convs prunable at most ~45% can go
    budgets: ['filters:0.2', 'filters:0.4'],
    testLimit: 200,
    bnImages: 128,
    heldout: 100,
    samples: 64,
    // two budgets (the default is CHIP's flops:0.474 alone) to see the recovered step's order
    recoverBudgets: ['flops:0.474', 'params:0.428'],
    finetuneEpochs: 1,
    finetuneLimit: 256,
    results,
    out,
    log: () => {},
  };
  const r1 = await runResnet(o);
  assert.equal(r1.stoppedEarly, false, r1.reason ?? '');
  assert.deepEqual(r1.waiting, []);
  assert.equal(r1.modelSha256, sha);
  // 2 settings: 2 rankings; per sweep 2 settings x 2 budgets x 2 stages (both global allocations are 'curve');
  // recovered: best CMI and best other x the 2 recovery budgets x (surgery+BN, 1 epoch plain, 1 distilled)
  // the unpruned model, and the same after BN re-estimation
  assert.deepEqual(r1.steps.baseline, { planned: 2, stored: 2, computed: 2 });
  assert.deepEqual(r1.steps.rankings, { planned: 2, stored: 2, computed: 2 });
  assert.deepEqual(r1.steps['sweep-uniform'], { planned: 8, stored: 8, computed: 8 });
  assert.deepEqual(r1.steps['sweep-global'], { planned: 8, stored: 8, computed: 8 });
  assert.deepEqual(r1.steps.recovered, { planned: 12, stored: 12, computed: 12 });
  assert.equal(r1.steps.variants, undefined, 'the variants are VGG-only');
  assert.equal(r1.computed, 32);
  assert.ok(r1.files);

  const store = await ResultStore.open(results, sha);
  assert.equal(store.size, 32);
  // the residual mode is part of every key that depends on the groups, not of the unpruned baseline
  for (const p of store.list()) assert.equal(p.key.residual, p.key.kind === 'baseline' || p.key.kind === 'baseline-bn' ? undefined : 'inner', p.id);
  const setup: Setup = { data: 'cifar10', samples: 64, seed: 0, test: 200, bnImages: 128, heldout: 100, residual: 'inner' };
  // only the inner convs are pruned: sweep keeps name exactly them, and every other conv keeps its width
  for (const p of store.list<SweepValue>({ kind: 'sweep' })) {
    assert.deepEqual(Object.keys(p.value.keep).sort(), [...INNER].sort(), p.id);
    assert.ok(p.value.removed.filters > 0 && p.value.removed.filters < 0.5, `${p.id}: ${p.value.removed.filters}`);
  }
  // the recovery budgets, reached
  const starts = store.list<RecoveredStartValue>({ kind: 'recovered-start' });
  assert.deepEqual([...new Set(starts.map((p) => String(p.key.budget)))].sort(), ['flops:0.474', 'params:0.428']);
  for (const p of starts) {
    const what = String(p.key.budget).startsWith('flops') ? p.value.removed.macs : p.value.removed.params;
    assert.ok(what >= Number(String(p.key.budget).split(':')[1]) - 1e-9, `${p.id}: ${what}`);
  }
  assert.equal(new Set(starts.map((p) => String(p.key.criterion))).size, 2, 'one CMI and one other configuration');
  // budget by budget: both configurations' points of the first recovery budget come before the
  // second's; within a budget, both plain fine-tunings before either distilled one
  const ftOrder = store
    .list()
    .filter((p) => p.key.kind === 'recovered-start' || p.key.kind === 'finetune-epoch')
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt))
    .map((p) => `${p.key.budget} ${p.key.kind === 'recovered-start' ? 'start' : p.key.distill === 'none' ? 'plain' : 'distilled'}`);
  const block = (b: string) => [`${b} start`, `${b} plain`, `${b} start`, `${b} plain`, `${b} distilled`, `${b} distilled`];
  assert.deepEqual(ftOrder, [...block('flops:0.474'), ...block('params:0.428')]);
  const stamps = new Map(store.list().map((p) => [p.id, p.createdAt]));

  const r2 = await runResnet(o);
  assert.equal(r2.computed, 0);
  for (const s of Object.values(r2.steps)) assert.equal(s.computed, 0);
  const reread = await ResultStore.open(results, sha);
  assert.equal(reread.size, 32);
  for (const p of reread.list()) assert.equal(p.createdAt, stamps.get(p.id), p.id);

  // the section: generated numbers, anchors labelled as published, the target stated
  // --residual inner is the default mode: the experiment's own section, no mode in its title or command
  const section = await readFile(join(out, 'results', 'sections', 'resnet56.md'), 'utf8');
  assert.equal(r2.files!.section, join(out, 'results', 'sections', 'resnet56.md'));
  assert.match(section, /^# resnet8\.onnx on cifar10: pruning by conditional mutual information against other criteria\n/);
  assert.ok(section.includes('`npm run experiment:resnet56`'));
  assert.ok(!section.includes('--residual'));
  const base = reread.get<{ accuracy: number }>(keys.baseline(setup))!.value.accuracy;
  assert.ok(section.includes(`**${fmtAcc(base)}** top-1 on 200 test images`));
  assert.ok(section.includes('Residual mode `inner`'));
  // the prunable layers this mode has (the baseline point is shared with --residual all's)
  assert.ok(section.includes(`; ${INNER.length} prunable conv layers (a coupled group counted as one);`));
  for (const step of ['sweep-uniform', 'sweep-global'] as const) {
    for (const [c, allocation] of [['cmi-a2-median', step === 'sweep-uniform' ? 'uniform' : 'curve'], ['l1', step === 'sweep-uniform' ? 'uniform' : 'curve']] as const) {
      for (const b of o.budgets) {
        const s = reread.get<SweepValue>(keys.sweep(step, c, allocation, b, 'surgery', setup))!.value.accuracy;
        const n = reread.get<SweepValue>(keys.sweep(step, c, allocation, b, 'bn', setup))!.value.accuracy;
        assert.ok(section.includes(`${fmtAcc(s)} / ${fmtAcc(n)}`), `${step} ${c} ${b}`);
      }
    }
  }
  for (const p of reread.list<EpochValue>({ kind: 'finetune-epoch' })) assert.ok(section.includes(fmtAcc(p.value.testAccuracy)), p.id);
  assert.doesNotMatch(section, /The method's variants/);
  assert.match(section, /## 1\. Criterion sweep without fine-tuning/);
  assert.match(section, /## 2\. Recovered by fine-tuning/);
  assert.match(section, /## 3\. Published anchors beside ours/);
  assert.match(section, /published anchors \(section 3, labelled \*published\*\)/);
  assert.match(section, /\| \*published\* \| CHIP \| Sui et al\., NeurIPS 2021 \| 93\.26% → 94\.16% \| \+0\.90 \| – \| 42\.8% \| 47\.4% \| 200 epochs \|/);
  assert.match(section, /\| \*published\* \| HRank \| Lin et al\., CVPR 2020 \| 93\.26% → 93\.17% \| −0\.09 \| – \| 42\.4% \| 50\.0% \|/);
  assert.match(section, /\| \*published\* \| DepGraph \| Fang et al\., CVPR 2023 \| 93\.53% → 93\.77% \| \+0\.24 \| – \| – \| 2\.13× fewer \(53\.1%\) \|/);
  const targetRow = section.split('\n').find((l) => l.startsWith('| ≥ 47% fewer multiply-adds and ≥ 42% fewer parameters'));
  assert.ok(targetRow, 'the target row');
  // untrained and tiny: a missed target states its distance (a drop over, or short of a reduction)
  assert.match(targetRow, /\| \*\*(yes|no)\*\* \| (met: |not met: .*(points over 0\.30|percentage points short of|reached, at an accuracy change))/);
  // the plots are this experiment's own, not VGG16's files
  assert.deepEqual((await readdir(join(out, 'results', 'resnet56'))).sort(), ['sweep-global.svg', 'sweep-uniform.svg']);
  assert.ok(section.includes('](results/resnet56/sweep-uniform.svg)'));

  // RESULTS.md: the VGG16 section (first) and this one; each report keeps the other's section
  const vggModel = join(dir, 'small.onnx');
  writeSmallCnn(vggModel);
  const v = await runVgg({ model: vggModel, steps: ['report'], results: join(dir, 'vgg-store'), out, testLimit: 200, log: () => {} });
  const vggSection = await readFile(join(out, 'results', 'sections', 'vgg16.md'), 'utf8');
  assert.match(vggSection, /^# small\.onnx on cifar10:/);
  assert.match(vggSection, /## 2\. The method's variants/);
  const both = await readFile(v.files!.markdown, 'utf8');
  assert.equal(both, `${vggSection}\n${section}`);
  // a point of the other residual mode in the same store is not counted in this mode's section
  assert.ok(section.includes(`from ${reread.size} stored result points`));
  await reread.put({ step: 'rankings', kind: 'rank', criterion: 'l1', residual: 'all' }, { rankings: [] }, { wall: 0, cpu: 0 });
  const again = await runResnet({ ...o, steps: ['report'] });
  assert.equal(again.computed, 0);
  assert.equal(await readFile(join(out, 'RESULTS.md'), 'utf8'), both);
});

test('--residual all: the residual stream is one coupled group; the sweeps remove the filters their budgets say, measured on the pruned models', { skip: addonSkip }, async () => {
  const r = await runResnet({
    model: resnet,
    residual: 'all',
    steps: ['rankings', 'sweep-uniform', 'sweep-global'],
    criteria: ['cmi-a2-median', 'l1'],
    budgets: ['filters:0.3', 'filters:0.6'],
    testLimit: 100,
    bnImages: 64,
    heldout: 100,
    samples: 64,
    results: join(dir, 'store-all'),
    out: join(dir, 'report-all'),
    log: () => {},
  });
  assert.equal(r.stoppedEarly, false, r.reason ?? '');
  const store = await ResultStore.open(join(dir, 'store-all'), sha);
  const points = store.list<SweepValue>({ kind: 'sweep' });
  assert.equal(points.length, 16);
  for (const p of points) {
    // the stem names the coupled group of the whole stream, pruned beside the inner convs
    assert.deepEqual(Object.keys(p.value.keep).sort(), ['/conv1/Conv', ...INNER].sort(), p.id);
    const asked = Number(String(p.key.budget).split(':')[1]);
    // measured on the written model; the allocator's own figure agrees (coupled costs follow the order)
    assert.ok(p.value.removed.filters >= asked - 0.02 && p.value.removed.filters < asked + 0.06, `${p.id}: ${p.value.removed.filters}`);
    assert.ok(Math.abs(p.value.reached - p.value.removed.filters) < 1e-9, `${p.id}: reached ${p.value.reached}, measured ${p.value.removed.filters}`);
    // the uniform sweep's keys say its coupled orders were stratified (points before that are not reused)
    assert.equal(p.key.uniform, p.key.allocation === 'uniform' ? 'per-conv' : undefined, p.id);
  }
  // a stored uniform point without that field (the plain-prefix rule) is not read into the report
  const uniform = points.find((p) => p.key.allocation === 'uniform' && p.key.stage === 'bn')!;
  const setup: Setup = { data: 'cifar10', samples: 64, seed: 0, test: 100, bnImages: 64, heldout: 100, residual: 'all' };
  const { uniform: _, ...plainKey } = uniform.key;
  await store.put({ ...plainKey, budget: 'filters:0.9' } as typeof uniform.key, uniform.value, { wall: 0, cpu: 0 });
  const reread = await ResultStore.open(join(dir, 'store-all'), sha);
  const budgetsRead = new Set(sweepRecords(reread, setup).map((x) => x.budget));
  assert.deepEqual([...budgetsRead].sort(), ['filters:0.3', 'filters:0.6']);
});

test('command line: --residual (default inner) and the steps it has; variants is not one of them', () => {
  const cli = join(REPO_ROOT, 'dist/experiments/resnet56.js');
  const env = { ...process.env, CMIPRUNE_NO_PROGRESS: '1' };
  const results = join(dir, 'cli');
  const ok = spawnSync(process.execPath, [cli, '--model', resnet, '--residual', 'all', '--step', 'report', '--results', results, '--out', join(results, 'out')], { encoding: 'utf8', env });
  assert.equal(ok.status, 0, ok.stderr);
  const s = JSON.parse(ok.stdout.trim());
  assert.equal(s.computed, 0);
  assert.equal(s.residual, 'all');
  // nothing stored: the recovered step waits for the sweeps, the variants are not planned at all
  // (sensitivity: the random order's global allocation, with every criterion by default)
  assert.deepEqual(Object.keys(s.steps).sort(), ['baseline', 'rankings', 'sensitivity', 'sweep-global', 'sweep-uniform']);
  assert.match(s.waiting[0], /^recovered: the best configurations are chosen from the sweeps/);
  // --residual all is not the default mode: its own section
  assert.match(s.files.section, /results\/sections\/resnet56-all\.md$/);
  // inner can remove at most ~48% of all filters: its sweeps stop at 40% (10 settings x 4 budgets
  // x 2 stages), all's go to 70% (x 7 budgets)
  assert.equal(s.steps['sweep-uniform'].planned, 10 * 7 * 2);
  const byDefault = spawnSync(process.execPath, [cli, '--model', resnet, '--step', 'report', '--results', results, '--out', join(results, 'out')], { encoding: 'utf8', env });
  assert.equal(byDefault.status, 0, byDefault.stderr);
  const d = JSON.parse(byDefault.stdout.trim());
  assert.equal(d.residual, 'inner');
  assert.equal(d.steps['sweep-uniform'].planned, 10 * 4 * 2);
  assert.match(d.files.section, /results\/sections\/resnet56\.md$/);
  // both modes' sections stay in RESULTS.md, the default's first
  const md = readFileSync(d.files.markdown, 'utf8');
  assert.deepEqual(md.match(/^# .*$/gm)?.map((h) => /--residual all/.test(h)), [false, true]);
  for (const [args, message] of [
    [['--step', 'variants'], /expected all or one of: rankings, sweep-uniform, sweep-global, recovered, report/],
    [['--residual', 'outer'], /expected one of: inner, all/],
  ] as const) {
    const bad = spawnSync(process.execPath, [cli, '--model', resnet, ...args, '--results', results], { encoding: 'utf8', env });
    assert.equal(bad.status, 1, bad.stderr);
    assert.equal(bad.stdout, '');
    assert.match(bad.stderr, message);
  }
});
