// The resumable VGG16 experiment (experiments/vgg16.ts) on a small exported CNN: the result store
// (stable ids, atomic points, foreign and damaged files ignored), the sweep step (2 criteria x 2
// budgets x 2 stages), a rerun that recomputes nothing, RESULTS.md and its plots holding exactly
// the stored numbers, a --time-budget stop that leaves a consistent store which a rerun completes,
// the variants and recovered steps in miniature, the targets' statements, and the command line.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { runExperiment, type ExperimentOptions } from '../experiments/vgg16.js';
import {
  accuracyWhereReached,
  chooseDefaults,
  sweepBnAtFilters,
  chooseRecovered,
  fmtAcc,
  fmtChange,
  keys,
  type Setup,
  type SweepRecord,
  type SweepValue,
  type VariantValue,
  targetAhead,
  targetFilters,
  targetRecovered,
} from '../src/experiment/results.js';
import { canonicalJson, pointId, ResultStore, type StoredPoint } from '../src/experiment/store.js';
import { SequentialBuilder } from '../src/ir/builder.js';
import { exportOnnx } from '../src/onnx/index.js';
import { SERIES } from '../src/report/index.js';
import { addonSkip } from './support/addon.js';
import { writeSmallCnn } from './support/images.js';
import { Rng } from './support/random.js';
import { REPO_ROOT } from './support/shared.js';

process.env.CMIPRUNE_NO_PROGRESS = '1';

let dir = '';
let small = '';
let sha = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cmiprune-experiment-'));
  small = join(dir, 'small.onnx');
  writeSmallCnn(small);
  const bytes = await readFile(small);
  const { createHash } = await import('node:crypto');
  sha = createHash('sha256').update(bytes).digest('hex');
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** the small settings every run here shares */
const quick = (results: string, more: ExperimentOptions = {}): ExperimentOptions => ({
  model: small,
  criteria: ['l1', 'random'],
  budgets: ['filters:0.2', 'filters:0.5'],
  testLimit: 200,
  bnImages: 128,
  heldout: 100,
  results,
  out: join(results, 'report'),
  log: () => {},
  ...more,
});
const setupOf = (o: ExperimentOptions): Setup => ({ data: 'cifar10', samples: 256, seed: 0, test: o.testLimit ?? 'all', bnImages: o.bnImages ?? 2000, heldout: o.heldout ?? 500 });

async function allFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(root, { withFileTypes: true })) {
    const p = join(root, e.name);
    if (e.isDirectory()) out.push(...(await allFiles(p)));
    else out.push(p);
  }
  return out;
}

test('accuracyWhereReached: linear between the sweep points around a budget, the nearest end outside the sweep, the latest part for a compound budget', () => {
  // sweep points out of order; parameters grow faster than multiply-adds along the sweep
  const pt = (filters: number, params: number, macs: number, accuracy: number) => ({ removed: { filters, params, macs }, accuracy });
  const pts = [pt(0.4, 0.7, 0.4, 0.6), pt(0.2, 0.4, 0.2, 0.9), pt(0.6, 0.9, 0.6, 0.2)];
  const at = (...parts: [string, number][]) => accuracyWhereReached(pts, parts.map(([kind, fraction]) => ({ kind, fraction })));
  assert.ok(Math.abs(at(['flops', 0.3]) - 0.75) < 1e-12);
  assert.ok(Math.abs(at(['flops', 0.5]) - 0.4) < 1e-12);
  assert.equal(at(['flops', 0.4]), 0.6);
  assert.equal(at(['flops', 0.1]), 0.9);
  assert.equal(at(['flops', 0.9]), 0.2);
  // params:0.8 is reached half-way between the second and third points (0.4), flops:0.3 earlier (0.75)
  assert.ok(Math.abs(at(['params', 0.8]) - 0.4) < 1e-12);
  assert.ok(Math.abs(at(['flops', 0.3], ['params', 0.8]) - 0.4) < 1e-12);
  assert.ok(Math.abs(at(['params', 0.8], ['flops', 0.3]) - 0.4) < 1e-12);
  // here multiply-adds bind: params:0.55 at 0.75, flops:0.5 at 0.4
  assert.ok(Math.abs(at(['params', 0.55], ['flops', 0.5]) - 0.4) < 1e-12);
  assert.ok(Math.abs(at(['params', 0.55]) - 0.75) < 1e-12);
});

test('sweepBnAtFilters: a sweep read at a variant\'s fraction of filters, null outside the swept range or with a point missing', () => {
  const v = (filters: number, accuracy: number) => ({ keep: {}, reached: filters, removed: { filters, params: filters, macs: filters }, accuracy, bnSeconds: 1 });
  const rec = (budget: string, filters: number, accuracy: number, criterion = 'cmi-a2-median') => ({ step: 'sweep-global' as const, criterion, allocation: 'curve' as const, budget, bn: v(filters, accuracy) });
  const records = [rec('filters:0.1', 0.1, 0.9), rec('filters:0.3', 0.3, 0.7), rec('filters:0.1', 0.1, 0.5, 'l1')];
  const budgets = ['filters:0.1', 'filters:0.3'];
  assert.ok(Math.abs(sweepBnAtFilters(records, budgets, 'sweep-global', 'cmi-a2-median', 'curve', 0.25)! - 0.75) < 1e-12);
  assert.equal(sweepBnAtFilters(records, budgets, 'sweep-global', 'cmi-a2-median', 'curve', 0.35), null);
  assert.equal(sweepBnAtFilters(records, budgets, 'sweep-global', 'cmi-a2-median', 'curve', 0.05), null);
  // l1 lacks its 30% point; the uniform sweep has none
  assert.equal(sweepBnAtFilters(records, budgets, 'sweep-global', 'l1', 'curve', 0.1), null);
  assert.equal(sweepBnAtFilters(records, budgets, 'sweep-uniform', 'cmi-a2-median', 'uniform', 0.2), null);
});

test('chooseDefaults: the CMI setting best over 30-60% on the scored sweeps; the variant furthest above its setting\'s curve sweep at the same filters', () => {
  const v = (filters: number, accuracy: number): SweepValue => ({ keep: {}, reached: filters, removed: { filters, params: filters, macs: filters }, accuracy });
  const rec = (step: 'sweep-uniform' | 'sweep-global', criterion: string, budget: string, a: number): SweepRecord => ({
    step,
    criterion,
    allocation: step === 'sweep-uniform' ? 'uniform' : criterion === 'random' ? 'sensitivity' : 'curve',
    budget,
    bn: v(Number(budget.split(':')[1]), a),
  });
  const budgets = ['filters:0.1', 'filters:0.3', 'filters:0.6'];
  const records: SweepRecord[] = [];
  // a2-median: uniform 0.8/0.6 over 30-60%, curve 0.9/0.8 -> 0.775; a1.01-median: 0.7/0.7 and 0.9/0.9 -> 0.8
  // (its 10% point is poor, outside the scored range); l1 is better still but not a CMI setting
  for (const [c, u, g] of [
    ['cmi-a2-median', [0.9, 0.8, 0.6], [0.92, 0.9, 0.8]],
    ['cmi-a1.01-median', [0.5, 0.7, 0.7], [0.5, 0.9, 0.9]],
    ['l1', [0.9, 0.9, 0.9], [0.9, 0.9, 0.9]],
  ] as [string, number[], number[]][]) {
    budgets.forEach((b, i) => records.push(rec('sweep-uniform', c, b, u[i]!), rec('sweep-global', c, b, g[i]!)));
  }
  const variant = (formulation: string, order: string, cutoff: string, filters: number, bn: number) =>
    ({ key: { formulation, order, cutoff }, value: { removed: { filters, params: filters, macs: filters }, accuracy: { before: 0.94, afterSurgery: 0.5, afterBnReestimation: bn } } }) as unknown as StoredPoint<VariantValue>;
  // the a2-median curve sweep at 5% (between the unpruned 0.94 at 0 and 0.92 at 10%) is 0.93; at 45%, 0.85
  const variants = [variant('per-layer', 'independent', 'scree', 0.05, 0.935), variant('compact', 'forward', 'xmeans', 0.45, 0.86), variant('full', 'forward', 'ptest', 0.8, 0.5)];
  const d = chooseDefaults(records, ['cmi-a2-median', 'cmi-a1.01-median', 'l1'], budgets, variants, 'cmi-a2-median', 0.94, 3);
  assert.equal(d.estimator!.setting, 'cmi-a1.01-median');
  assert.ok(Math.abs(d.estimators.find((e) => e.setting === 'cmi-a2-median')!.score! - 0.775) < 1e-12);
  assert.equal(d.estimators.length, 2);
  assert.equal(d.variant!.name, 'compact-forward/xmeans');
  assert.ok(Math.abs(d.variants[0]!.margin! - 0.005) < 1e-12);
  assert.ok(Math.abs(d.variant!.margin! - 0.01) < 1e-12);
  // beyond the swept 60%: not comparable, yet no missing point could change that, so the choice is final
  assert.equal(d.variants[2]!.margin, null);
  assert.equal(d.complete, true);
  // a missing point of the curve sweep the variants are read against leaves it open
  const noCurve = records.filter((r) => !(r.criterion === 'cmi-a2-median' && r.budget === 'filters:0.1' && r.step === 'sweep-global'));
  assert.equal(chooseDefaults(noCurve, ['cmi-a2-median', 'cmi-a1.01-median'], budgets, variants, 'cmi-a2-median', 0.94, 3).complete, false);
  // a planned sensitivity sweep is scored too: a2-median's 0.95 there lifts its mean of three to (0.7 + 0.85 + 0.95) / 3 above a1.01's
  const sens = (c: string, a: number): SweepRecord[] => budgets.map((b) => ({ step: 'sweep-sensitivity', criterion: c, allocation: 'sensitivity', budget: b, bn: v(Number(b.split(':')[1]), a) }));
  const three = chooseDefaults([...records, ...sens('cmi-a2-median', 0.95), ...sens('cmi-a1.01-median', 0.8)], ['cmi-a2-median', 'cmi-a1.01-median'], budgets, [], null, 0.94, 0, ['sweep-uniform', 'sweep-global', 'sweep-sensitivity']);
  assert.equal(three.estimator!.setting, 'cmi-a2-median');
  // the variants are also read against that sweep: at 45% the a2-median sensitivity sweep is 0.95
  const threeV = chooseDefaults([...records, ...sens('cmi-a2-median', 0.95), ...sens('cmi-a1.01-median', 0.8)], ['cmi-a2-median', 'cmi-a1.01-median'], budgets, variants, 'cmi-a2-median', 0.94, 3, ['sweep-uniform', 'sweep-global', 'sweep-sensitivity']);
  assert.ok(Math.abs(threeV.variants[1]!.marginSensitivity! - (0.86 - 0.95)) < 1e-12);
  assert.equal(threeV.variant!.name, 'compact-forward/xmeans');
  assert.equal(d.variants[1]!.marginSensitivity, null);
  assert.ok(Math.abs(three.estimator!.score! - (0.7 + 0.85 + 0.95) / 3) < 1e-12);
  assert.ok(Math.abs(three.estimators.find((e) => e.setting === 'cmi-a1.01-median')!.sensitivity! - 0.8) < 1e-12);
  // planned but missing for a setting: unscored
  assert.equal(chooseDefaults(records, ['cmi-a2-median'], budgets, [], null, 0.94, 0, ['sweep-uniform', 'sweep-global', 'sweep-sensitivity']).estimator, null);
  // without the unpruned model as the 0 point, the 5% variant is outside the sweep too
  assert.equal(chooseDefaults(records, ['cmi-a2-median'], budgets, variants, 'cmi-a2-median', null, 3).variants[0]!.margin, null);
  // a missing 30-60% point leaves a setting unscored
  const partial = chooseDefaults(records.filter((r) => !(r.criterion === 'cmi-a1.01-median' && r.budget === 'filters:0.6' && r.step === 'sweep-global')), ['cmi-a2-median', 'cmi-a1.01-median'], budgets, [], null, 0.94, 0);
  assert.equal(partial.estimator!.setting, 'cmi-a2-median');
  assert.equal(partial.complete, false);
});

test('chooseRecovered: the configurations are scored at the recovery budgets, not over the sweep\'s 30-60%', async () => {
  const store = await ResultStore.open(join(dir, 'choice-store'), 'c'.repeat(64));
  const setup: Setup = { data: 'cifar10', samples: 64, seed: 0, test: 'all', bnImages: 128, heldout: 100 };
  const budgets = ['filters:0.1', 'filters:0.3', 'filters:0.5'];
  // bn accuracy per budget; multiply-adds removed = 2 x filters removed for every configuration
  const acc: Record<string, number[]> = {
    'l1@uniform': [0.9, 0.8, 0.1], // best at 40-60% multiply-adds removed, poor at 50% filters
    'chip@uniform': [0.85, 0.7, 0.5], // best over 30-50% filters
    'cmi-a2-median@uniform': [0.88, 0.75, 0.3],
  };
  for (const c of ['l1', 'chip', 'cmi-a2-median'])
    for (const [step, allocation] of [['sweep-uniform', 'uniform'], ['sweep-global', 'curve']] as const)
      for (const [i, b] of budgets.entries()) {
        const f = Number(b.split(':')[1]);
        const accuracy = acc[`${c}@${allocation}`]?.[i] ?? 0.2;
        await store.put(keys.sweep(step, c, allocation, b, 'bn', setup), { keep: {}, reached: f, removed: { filters: f, params: 2 * f, macs: 2 * f }, accuracy }, { wall: 0, cpu: 0 });
      }
  const settings = ['l1', 'chip', 'cmi-a2-median'];
  // first an experiment that plans only sweeps (a) and (b)
  const two = ['sweep-uniform', 'sweep-global'] as const;
  const choice = chooseRecovered(store, setup, settings, budgets, ['flops:0.5'], two);
  assert.equal(choice.complete, true);
  // at 50% of the multiply-adds (25% filters): l1 0.825, chip 0.7375, cmi 0.7825
  assert.deepEqual([choice.other?.criterion, choice.other?.allocation], ['l1', 'uniform']);
  assert.ok(Math.abs(choice.other!.score! - 0.825) < 1e-12);
  assert.deepEqual([choice.cmi?.criterion, choice.cmi?.allocation], ['cmi-a2-median', 'uniform']);
  assert.ok(Math.abs(choice.cmi!.score! - 0.7825) < 1e-12);
  // at 100% multiply-adds removed (beyond the sweep), the last point's: chip 0.5 wins
  assert.equal(chooseRecovered(store, setup, settings, budgets, ['flops:1'], two).other?.criterion, 'chip');
  // a missing sweep point: that configuration has no score, and the choice is not complete
  const partial = chooseRecovered(store, setup, settings, [...budgets, 'filters:0.7'], ['flops:0.5'], two);
  assert.equal(partial.complete, false);
  assert.equal(partial.other, null);
  // with (c), every sweep planned by default: incomplete until its points exist, then its
  // configurations compete (chip with the sensitivity allocation is best here)
  assert.equal(chooseRecovered(store, setup, settings, budgets, ['flops:0.5']).complete, false);
  for (const c of settings)
    for (const b of budgets) {
      const f = Number(b.split(':')[1]);
      await store.put(keys.sweep('sweep-sensitivity', c, 'sensitivity', b, 'bn', setup), { keep: {}, reached: f, removed: { filters: f, params: 2 * f, macs: 2 * f }, accuracy: c === 'chip' ? 0.95 : 0.1 }, { wall: 0, cpu: 0 });
    }
  const three = chooseRecovered(store, setup, settings, budgets, ['flops:0.5']);
  assert.equal(three.complete, true);
  assert.equal(three.scores.length, 9);
  assert.deepEqual([three.other?.criterion, three.other?.allocation], ['chip', 'sensitivity']);
  assert.deepEqual([three.cmi?.criterion, three.cmi?.allocation], ['cmi-a2-median', 'uniform']);
});

test('store: stable ids, points written atomically, reread; other versions, other models and damaged files are not listed', async () => {
  const root = join(dir, 'store-unit');
  const key = { step: 'sweep-uniform', kind: 'sweep', criterion: 'l1', budget: 'filters:0.3', stage: 'bn', test: 200 };
  const reordered = { stage: 'bn', test: 200, budget: 'filters:0.3', kind: 'sweep', criterion: 'l1', step: 'sweep-uniform' };
  assert.equal(canonicalJson(key), canonicalJson(reordered));
  assert.equal(pointId(key, 'a'.repeat(64)), pointId(reordered, 'a'.repeat(64)));
  assert.notEqual(pointId(key, 'a'.repeat(64)), pointId(key, 'b'.repeat(64)));
  assert.notEqual(pointId(key, 'a'.repeat(64)), pointId(key, 'a'.repeat(64), 'experiment/0'));
  assert.notEqual(pointId(key, 'a'.repeat(64)), pointId({ ...key, budget: 'filters:0.4' }, 'a'.repeat(64)));
  assert.match(pointId(key, 'a'.repeat(64)), /^sweep-uniform\/sweep_l1_filters_0\.3_bn_200--[0-9a-f]{16}$/);

  const s = await ResultStore.open(root, 'a'.repeat(64));
  assert.equal(s.size, 0);
  await s.put(key, { accuracy: 0.5 }, { wall: 1, cpu: 2 });
  await s.put({ ...key, budget: 'filters:0.5' }, { accuracy: 0.4 }, { wall: 1, cpu: 2 });
  const other = await ResultStore.open(root, 'b'.repeat(64));
  await other.put(key, { accuracy: 0.1 }, { wall: 1, cpu: 1 });
  // a damaged point, an atomic write's leftover temp file, a point moved to another name
  const stepDir = join(root, 'points', 'sweep-uniform');
  await writeFile(join(stepDir, 'broken--0000000000000000.json'), '{"format":');
  await writeFile(join(stepDir, 'x.json.tmp-1-2'), 'partial');
  const moved = JSON.parse(await readFile(s.path(key), 'utf8'));
  await writeFile(join(stepDir, 'moved--1111111111111111.json'), JSON.stringify(moved));

  const again = await ResultStore.open(root, 'a'.repeat(64));
  assert.equal(again.size, 2);
  assert.deepEqual(again.get<{ accuracy: number }>(reordered)!.value, { accuracy: 0.5 });
  assert.equal(again.get(key)!.seconds.cpu, 2);
  assert.equal(again.list({ budget: 'filters:0.5' }).length, 1);
  assert.equal(again.list({ kind: 'sweep', stage: 'bn' }).length, 2);
  assert.equal(again.skipped.length, 2, again.skipped.join(', '));
  assert.equal((await ResultStore.open(root, 'a'.repeat(64), 'experiment/0')).size, 0);
  assert.equal((await ResultStore.open(root, 'b'.repeat(64))).get<{ accuracy: number }>(key)!.value.accuracy, 0.1);
});

test('targets: met / not met and by how much, from the numbers alone', () => {
  const base = 0.94;
  const p = (filters: number, accuracy: number, label = 'x') => ({ label, filters, params: filters, macs: filters, accuracy });
  const t1 = targetFilters(base, [p(0.3, 0.939), p(0.4, 0.9365, 'cmi at 40'), p(0.5, 0.93)]);
  assert.equal(t1.met, false);
  assert.match(t1.statement, /at most 30% of the filters within a 0\.32-point drop/);
  assert.match(t1.statement, /short of 40% by 10\.0 percentage points/);
  assert.match(t1.statement, /smallest drop is 0\.35 points \(cmi at 40, 40% of the filters\): 0\.03 points over/);
  const t1b = targetFilters(base, [p(0.45, 0.9375, 'good')]);
  assert.equal(t1b.met, true);
  assert.match(t1b.statement, /^met: 45% of the filters removed, accuracy change −0\.25 points \(good\)/);
  assert.equal(targetFilters(null, []).met, null);

  const r = (params: number, macs: number, accuracy: number, epoch = 3) => ({ label: 'r', params, macs, epoch, accuracy });
  assert.equal(targetRecovered(base, [r(0.82, 0.6, 0.9372)]).met, true);
  const t2 = targetRecovered(base, [r(0.82, 0.6, 0.935)]);
  assert.equal(t2.met, false);
  assert.match(t2.statement, /a drop 0\.20 points over 0\.30/);
  assert.match(targetRecovered(base, [r(0.7, 0.6, 0.939)]).statement, /no fine-tuned CMI point removes both; the closest removes 60% of the multiply-adds and 70% of the parameters/);
  assert.equal(targetRecovered(base, [r(0.82, 0.6, 0.94, 4)]).met, null);
  // what would close it: how much fine-tuning recovered from the model after BN re-estimation
  assert.equal(t2.closing, undefined);
  const closing = targetRecovered(base, [{ ...r(0.82, 0.6, 0.935), start: 0.9 }]).closing!;
  assert.match(closing, /fine-tuning recovered 3\.50 points in 3 epochs \(from 90\.00% after BN re-estimation to 93\.50%\); the 0\.20 points left/);
  assert.match(targetRecovered(base, [{ ...r(0.82, 0.6, 0.9), start: 0.91 }]).closing!, /did not improve on the model after BN re-estimation \(91\.00% to 90\.00% in 3 epochs\)/);
  assert.equal(targetRecovered(base, [{ ...r(0.82, 0.6, 0.9372), start: 0.9 }]).closing, undefined);
  // the no-fine-tuning target points to the fine-tuned runs when it is missed
  assert.equal(t1.closing, undefined);
  const t1c = targetFilters(base, [p(0.4, 0.9)], 0.4, 0.32, [{ ...r(0.82, 0.6, 0.935), filters: 0.45 }]);
  assert.match(t1c.closing!, /Fine-tuned for 3 epochs, a CMI model removing 45% of the filters \(82% of the parameters, 60% of the multiply-adds\) ends at −0\.50 points \(r\): training narrows the gap, but not to 0\.32 points/);
  const t1d = targetFilters(base, [p(0.4, 0.9)], 0.4, 0.32, [{ ...r(0.82, 0.6, 0.938), filters: 0.45 }]);
  assert.match(t1d.closing!, /ends at −0\.20 points \(r\): training, which this target excludes, closes it/);
  // a fine-tuned run removing fewer filters than the target says nothing about it
  assert.equal(targetFilters(base, [p(0.4, 0.9)], 0.4, 0.32, [{ ...r(0.82, 0.6, 0.938), filters: 0.3 }]).closing, undefined);
  // the re-estimation's own cost: measured from the unpruned model after it, the 40% point loses 0.35 - 0.15 = 0.20
  const t1e = targetFilters(base, [p(0.4, 0.9365, 'cmi at 40')], 0.4, 0.32, [], 0.9385);
  assert.match(t1e.closing!, /costs the unpruned model itself 0\.15 points \(93\.85% after the same re-estimation\): measured from there, the best point with ≥ 40% removed loses 0\.20 points, within 0\.32, so .* would close it\./);
  const t1f = targetFilters(base, [p(0.4, 0.93)], 0.4, 0.32, [], 0.9385);
  assert.match(t1f.closing!, /loses 0\.85 points, still over 0\.32, so .* would narrow it to 0\.53 points\./);
  // a re-estimation that costs nothing: only the plain remark
  assert.equal(targetFilters(base, [p(0.4, 0.93)], 0.4, 0.32, [], 0.941).closing, 'BN re-estimation is already counted in these points.');

  const v = (accuracy: number): SweepValue => ({ keep: {}, reached: 0.3, removed: { filters: 0.3, params: 0.3, macs: 0.3 }, accuracy });
  const rec = (criterion: string, budget: string, a: number): SweepRecord => ({ step: 'sweep-uniform', criterion, allocation: 'uniform', budget, surgery: v(a), bn: v(a) });
  const t3 = targetAhead([rec('cmi-a2-median', 'filters:0.3', 0.9), rec('l1', 'filters:0.3', 0.89), rec('cmi-a2-median', 'filters:0.6', 0.7), rec('l1', 'filters:0.6', 0.72), rec('l1', 'filters:0.7', 0.1)], [
    'filters:0.3',
    'filters:0.6',
    'filters:0.7',
  ]);
  assert.equal(t3.met, false);
  // the same accuracy (both at chance, say) is level, not behind
  const t4 = targetAhead([rec('cmi-a2-median', 'filters:0.3', 0.1), rec('l1', 'filters:0.3', 0.1), rec('cmi-a2-median', 'filters:0.4', 0.8), rec('l1', 'filters:0.4', 0.7)], ['filters:0.3', 'filters:0.4']);
  assert.equal(t4.met, false);
  assert.match(t4.statement, /^not met: ahead in 2 of 4 comparisons; level \(the same accuracy\) at \(a\) uniform, after surgery, 30% filters \(10\.00%\); \(a\) uniform, after BN, 30% filters \(10\.00%\) \(8 comparisons not measured yet\)$/);
  assert.match(t3.statement, /ahead in 2 of 4 comparisons; behind at \(a\) uniform, after surgery, 60% filters by 2\.00; \(a\) uniform, after BN, 60% filters by 2\.00 points \(8 comparisons not measured yet\)/);
});

test('sweep step on a small CNN: 2 criteria x 2 budgets x 2 stages stored; a rerun recomputes nothing; RESULTS.md and the plots hold the stored numbers', { skip: addonSkip }, async () => {
  const results = join(dir, 'sweep');
  const o = quick(results, { steps: ['sweep-uniform'] });
  const r1 = await runExperiment(o);
  assert.equal(r1.stoppedEarly, false);
  assert.equal(r1.modelSha256, sha);
  assert.deepEqual(r1.steps['sweep-uniform'], { planned: 8, stored: 8, computed: 8 });
  assert.deepEqual(r1.steps.rankings, { planned: 2, stored: 2, computed: 2 });
  // the unpruned model, and the same after BN re-estimation
  assert.deepEqual(r1.steps.baseline, { planned: 2, stored: 2, computed: 2 });
  assert.equal(r1.computed, 12);
  assert.equal(r1.files, null);
  const store = await ResultStore.open(results, sha);
  const sweeps = store.list<SweepValue>({ kind: 'sweep' });
  assert.equal(sweeps.length, 8);
  for (const p of sweeps) {
    assert.ok(p.value.accuracy >= 0 && p.value.accuracy <= 1);
    assert.ok(p.value.removed.filters >= parseFloat(String(p.key.budget).split(':')[1]!) - 1e-9, JSON.stringify(p.value));
    assert.ok(p.seconds.wall > 0 && p.seconds.cpu >= 0);
  }
  // every point's time was measured, the rankings say how their ordering went
  const rank = store.get<{ rankings: { order: number[] }[] }>(keys.rank('l1', setupOf(o)))!;
  assert.deepEqual(rank.value.rankings.map((x) => x.order.length), [13, 21, 37]);
  const stamps = new Map(store.list().map((p) => [p.id, p.createdAt]));

  const r2 = await runExperiment(o);
  assert.equal(r2.computed, 0);
  assert.deepEqual(r2.steps['sweep-uniform'], { planned: 8, stored: 8, computed: 0 });
  const reread = await ResultStore.open(results, sha);
  assert.equal(reread.size, 12);
  for (const p of reread.list()) assert.equal(p.createdAt, stamps.get(p.id), p.id);

  // the report alone: no engine, numbers from the store
  const r3 = await runExperiment({ ...o, steps: ['report'] });
  assert.equal(r3.computed, 0);
  assert.ok(r3.files);
  const md = await readFile(r3.files.markdown, 'utf8');
  const base = reread.get<{ accuracy: number }>(keys.baseline(setupOf(o)))!.value.accuracy;
  assert.ok(md.includes(`**${fmtAcc(base)}** top-1 on 200 test images`), md.slice(0, 800));
  // the re-estimation's own cost, from its point
  const baseBn = reread.get<{ accuracy: number; images: number }>(keys.baselineBn(setupOf(o)))!.value;
  assert.ok(md.includes(`re-estimated the same way (${baseBn.images} training images), scores ${fmtAcc(baseBn.accuracy)} (${fmtChange(baseBn.accuracy, base)} points)`), md);
  for (const c of ['l1', 'random']) {
    for (const b of ['filters:0.2', 'filters:0.5']) {
      const s = reread.get<SweepValue>(keys.sweep('sweep-uniform', c, 'uniform', b, 'surgery', setupOf(o)))!.value.accuracy;
      const n = reread.get<SweepValue>(keys.sweep('sweep-uniform', c, 'uniform', b, 'bn', setupOf(o)))!.value.accuracy;
      assert.ok(md.includes(`${fmtAcc(s)} / ${fmtAcc(n)}`), `${c} ${b}: ${fmtAcc(s)} / ${fmtAcc(n)}`);
    }
  }
  assert.match(md, /\| \*published\* \| CHIP \| Sui et al\., NeurIPS 2021 \| 93\.96% → 93\.86% \|/);
  assert.match(md, /!\[\(a\) uniform fraction per layer\]\(results\/vgg16\/sweep-uniform\.svg\)/);
  assert.match(md, /\(b\) each criterion’s global allocation: not measured yet/);
  assert.match(md, /\(c\) every criterion with the held-out sensitivity allocation: not measured yet/);
  assert.match(md, /\| sweep-uniform \| 8 \| 8 \|/);
  assert.match(md, /\| sweep-global \| 8 \| 0 \(incomplete\) \|/);
  assert.equal(r3.files.plots.length, 1);
  const svg = await readFile(join(o.out!, 'results', 'vgg16', 'sweep-uniform.svg'), 'utf8');
  assert.match(svg, /^<svg/);
  assert.ok(svg.includes(`${SERIES.sweepFiltersLine}_marks`));
  // one symbol per (criterion, budget, stage) in the filters panel, each labelled with its accuracy
  const g = svg.split(`${SERIES.sweepFiltersPoints}_marks`)[1]!.split('</g>')[0]!;
  assert.equal((g.match(/<path /g) ?? []).length, 8);
  assert.ok(g.includes(`L1 norm, filters:0.2, after surgery: ${(100 * reread.get<SweepValue>(keys.sweep('sweep-uniform', 'l1', 'uniform', 'filters:0.2', 'surgery', setupOf(o)))!.value.accuracy).toFixed(2)}%`));
});

test('--time-budget: stops before a point that would not fit, the store stays consistent, a rerun completes it', { skip: addonSkip }, async () => {
  const results = join(dir, 'budget');
  // a clock that advances 5 s per reading: every point "takes" 5 s, and a budget of one minute fits a few
  let t = 0;
  const o = quick(results, { steps: ['sweep-uniform'], timeBudgetMinutes: 1, clock: () => (t += 5000) });
  const r1 = await runExperiment(o);
  assert.equal(r1.stoppedEarly, true);
  assert.match(r1.reason!, /^time budget: .* would likely not finish in time$/);
  assert.ok(r1.computed > 0 && r1.computed < 12, String(r1.computed));
  const files = await allFiles(join(results, 'points'));
  assert.equal(files.length, r1.computed);
  assert.ok(files.every((f) => f.endsWith('.json')));
  for (const f of files) JSON.parse(await readFile(f, 'utf8'));
  const first = await ResultStore.open(results, sha);
  assert.equal(first.size, r1.computed);
  assert.equal(first.skipped.length, 0);
  const stamps = new Map(first.list().map((p) => [p.id, p.createdAt]));

  const r2 = await runExperiment({ ...o, timeBudgetMinutes: undefined, clock: undefined });
  assert.equal(r2.stoppedEarly, false);
  assert.equal(r2.computed, 12 - r1.computed);
  assert.deepEqual(r2.steps['sweep-uniform'], { planned: 8, stored: 8, computed: 8 - (r1.steps['sweep-uniform']?.stored ?? 0) });
  const done = await ResultStore.open(results, sha);
  assert.equal(done.size, 12);
  for (const [id, at] of stamps) assert.equal(done.list().find((p) => p.id === id)!.createdAt, at);
});

test('variants and recovered steps in miniature: prune() runs, fine-tuning epochs with CPU times, the report sections filled', { skip: addonSkip }, async () => {
  const results = join(dir, 'method');
  const o = quick(results, {
    steps: ['variants', 'recovered', 'report'],
    criteria: ['cmi-a2-median', 'l1'],
    variants: ['per-layer/scree'],
    // a compound budget (both reductions, as the published anchors state them)
    recoverBudgets: ['params:0.5+flops:0.4'],
    recoverCmi: 'cmi-a2-median@uniform',
    recoverOther: 'l1@curve',
    finetuneEpochs: 1,
    finetuneLimit: 256,
    samples: 64,
  });
  const r = await runExperiment(o);
  assert.equal(r.stoppedEarly, false);
  assert.deepEqual(r.steps.variants, { planned: 1, stored: 1, computed: 1 });
  // 2 configurations x 1 budget: a surgery+BN point and 1 epoch without, 1 with distillation
  assert.deepEqual(r.steps.recovered, { planned: 6, stored: 6, computed: 6 });
  const store = await ResultStore.open(r.results, sha);
  const v = store.list<{ removed: { filters: number }; accuracy: { afterSurgery: number } }>({ kind: 'variant' })[0]!;
  assert.ok(v.value.removed.filters > 0 && v.value.removed.filters < 1);
  // the pruned model and exports are removed, the report kept
  const run = join(r.results, 'runs', v.id.split('/')[1]!);
  assert.deepEqual((await readdir(run)).sort(), ['report.json']);
  const starts = store.list<{ removed: { params: number; macs: number } }>({ kind: 'recovered-start' });
  assert.equal(starts.length, 2);
  for (const p of starts) assert.ok(p.value.removed.params >= 0.5 && p.value.removed.macs >= 0.4, JSON.stringify(p.value.removed));
  const epochs = store.list<{ trainSeconds: number; trainCpuSeconds: number; images: number }>({ kind: 'finetune-epoch' });
  assert.equal(epochs.length, 4);
  for (const e of epochs) assert.ok(e.value.trainSeconds > 0 && e.value.trainCpuSeconds > 0 && e.value.images === 256, JSON.stringify(e.value));
  const md = await readFile(r.files!.markdown, 'utf8');
  assert.match(md, /\| per-layer \| independent \| scree \|/);
  assert.match(md, /\| CMI α=2, scale-aware width \| uniform \| 50% parameters and 40% multiply-adds \| T=4 \|/);
  assert.match(md, /\| L1 norm \| curve \| 50% parameters and 40% multiply-adds \| none \|/);
  assert.match(md, /Fine-tuning epochs:/);
  // prune()'s per-layer orderings (variants) are the ones the recovered step's ranking resumes from
  assert.match(md, /\| CMI α=2, scale-aware width \| 3 \| 3 \|/);
});

test('command line: one JSON line on stdout; a bad option is one error line and exit 1', async () => {
  const cliPath = join(REPO_ROOT, 'dist/experiments/vgg16.js');
  const results = join(dir, 'cli');
  await mkdir(results, { recursive: true });
  const ok = spawnSync(process.execPath, [cliPath, '--model', small, '--step', 'report', '--results', results, '--out', join(results, 'out'), '--test-limit', '200'], {
    encoding: 'utf8',
    env: { ...process.env, CMIPRUNE_NO_PROGRESS: '1' },
  });
  assert.equal(ok.status, 0, ok.stderr);
  const lines = ok.stdout.trim().split('\n');
  assert.equal(lines.length, 1);
  const s = JSON.parse(lines[0]!);
  assert.equal(s.computed, 0);
  assert.ok(existsSync(join(results, 'out', 'RESULTS.md')));
  const bad = spawnSync(process.execPath, [cliPath, '--model', small, '--step', 'report', '--budgets', 'keep:0.5', '--results', results], { encoding: 'utf8', env: { ...process.env, CMIPRUNE_NO_PROGRESS: '1' } });
  assert.equal(bad.status, 1);
  assert.equal(bad.stdout, '');
  assert.match(bad.stderr, /^experiment:vgg16: --budgets: 'keep:0\.5' is not a global budget/);
  assert.equal(bad.stderr.trim().split('\n').length, 1);
  // a sweep reads one measure per budget: compound budgets only where a model is pruned once per budget
  const compound = spawnSync(process.execPath, [cliPath, '--model', small, '--step', 'report', '--budgets', 'filters:0.3+params:0.5', '--results', results], { encoding: 'utf8', env: { ...process.env, CMIPRUNE_NO_PROGRESS: '1' } });
  assert.equal(compound.status, 1);
  assert.match(compound.stderr, /^experiment:vgg16: --budgets: 'filters:0\.3\+params:0\.5' is not a global budget \(filters:F, params:F, flops:F\)/);
});
