// Global budgets across layers on constructed cases whose right answer is known.
import assert from 'node:assert/strict';
import test from 'node:test';
import { allocateByCurve, allocateBySensitivity, allocateUniform, type Budget, meetsBudget, progressOf, removedFraction } from '../src/prune/allocate.js';
import { costModel } from '../src/prune/cost.js';
import { l1Criterion, leftOutCurve, orderByScore } from '../src/prune/criteria.js';
import { cutoffName, parseCutoff } from '../src/prune/cutoff-spec.js';
import { channelGroups } from '../src/prune/groups.js';
import type { GroupRanking } from '../src/prune/types.js';
import { GraphBuilder } from './support/graph.js';
import { Rng } from './support/random.js';

/** three convs of 10, 20 and 40 filters on a 6x6 input, then a Linear */
function net() {
  const g = new GraphBuilder(new Rng(3));
  let x = g.simple('Relu', 'r1', g.conv('c1', 'input', 3, 10, 3, { pad: 1 }));
  x = g.simple('Relu', 'r2', g.conv('c2', x, 10, 20, 3, { pad: 1 }));
  x = g.simple('Relu', 'r3', g.conv('c3', x, 20, 40, 3, { pad: 1 }));
  x = g.flatten('f', g.simple('GlobalAvgPool', 'gap', x));
  const m = g.model('three', [3, 6, 6], g.linear('fc', x, 40, 4));
  return { m, groups: channelGroups(m).filter((x) => x.prunable) };
}

test('uniform allocation: the same fraction per layer, budget met for filters, params and flops', () => {
  const { m, groups } = net();
  const cost = costModel(m, groups);
  const a = allocateUniform({ kind: 'filters', fraction: 0.5 }, groups, cost);
  assert.deepEqual(a.keep, { c1: 5, c2: 10, c3: 20 });
  assert.ok(a.reached >= 0.5);
  for (const kind of ['params', 'flops'] as const) {
    const b = allocateUniform({ kind, fraction: 0.4 }, groups, cost);
    assert.ok(b.reached >= 0.4 && b.reached < 0.5, `${kind} ${b.reached}`);
    assert.equal(removedFraction({ kind, fraction: 0.4 }, groups, b.keep, cost), b.reached);
  }
  assert.throws(() => allocateUniform({ kind: 'filters', fraction: 0.99 }, groups, cost, 5), /cannot be met/);
});

test('curve allocation: one threshold on normalised curves keeps more of the layer whose curve falls slowly', () => {
  const { m, groups } = net();
  const cost = costModel(m, groups);
  // c1 and c3 saturate after 2 filters, c2 only falls linearly
  const mk = (name: string, c: number, curve: number[]): GroupRanking => ({ group: name, channels: c, order: Array.from({ length: c }, (_, i) => i), curve, curveTotal: 1 });
  const sat = (c: number) => Array.from({ length: c - 1 }, (_, i) => (i < 1 ? 0.5 : 0.001 / (i + 1)));
  const lin = (c: number) => Array.from({ length: c - 1 }, (_, i) => 1 - (i + 1) / c);
  const r = new Map([mk('c1', 10, sat(10)), mk('c2', 20, lin(20)), mk('c3', 40, sat(40))].map((x) => [x.group, x]));
  const a = allocateByCurve({ kind: 'filters', fraction: 0.6 }, groups, r, cost);
  // the smallest threshold that removes 42 of 70 filters: c1 and c3 keep 4 each (curve[3] =
  // 0.00025), the slowly falling c2 keeps everything
  assert.deepEqual(a.keep, { c1: 4, c2: 20, c3: 4 });
  assert.ok(a.reached >= 0.6);
  assert.ok(a.evidence.threshold as number >= 0.00025 && (a.evidence.threshold as number) < 0.001 / 3);
  // non-increasing curves: the threshold stays in [0, 1] and nothing is kept back
  assert.deepEqual(a.evidence.thresholdRange, [0, 1]);
  assert.equal(a.evidence.keptBack, undefined);
});

// CMI with --sigma mean: curves may dip below 0 and rise again (averaging a filter in can lower the MI)
const mkRanking = (name: string, c: number, curve: number[], curveTotal = 1): GroupRanking => ({ group: name, channels: c, order: Array.from({ length: c }, (_, i) => i), curve, curveTotal });
const linear = (c: number) => Array.from({ length: c - 1 }, (_, i) => 1 - (i + 1) / c);
// c1: below 0 from keep 2 (share -2, the deepest), rising back toward 0
const dipC1 = [0.5, -2, -1.5, -1, -0.5, -0.25, -0.125, -0.0625, -0.03125];
// c3: falls to 0.125, minimum -1 at keep 5, then rises back to 0
const dipC3 = [0.75, 0.5, 0.25, 0.125, -1, ...Array.from({ length: 34 }, (_, i) => -1 + (i + 1) / 35)];

test('curve allocation on curves that dip below 0 and rise again: a threshold below 0, the budget met (not every layer cut to 1), flat stretches kept back', () => {
  const { m, groups } = net();
  const cost = costModel(m, groups);
  const r = new Map([mkRanking('c1', 10, dipC1), mkRanking('c2', 20, linear(20)), mkRanking('c3', 40, dipC3)].map((x) => [x.group, x]));
  // 30% of 70 filters = 21. A threshold t in [0, 1] cuts c1 to 2 and c3 to 5 at once (43 filters,
  // 61%): t must go below 0. At t = -1 (c3's minimum share) c1 keeps 2 (-2 <= -1) and c3 5; just
  // below, c3 never reaches t and keeps all 40 (8 removed). Between 5 and 40 c3's running minimum
  // is flat: it keeps back as many as the budget allows, 27 (8 + 13 = 21 removed).
  const a = allocateByCurve({ kind: 'filters', fraction: 0.3 }, groups, r, cost);
  assert.deepEqual(a.keep, { c1: 2, c2: 20, c3: 27 });
  assert.ok(Math.abs(a.reached - 21 / 70) < 1e-12, `${a.reached}`);
  assert.ok(Math.abs((a.evidence.threshold as number) + 1) < 1e-9, `threshold ${a.evidence.threshold}`);
  assert.deepEqual(a.evidence.thresholdRange, [-2, 1]);
  assert.deepEqual(a.evidence.keptBack, { c3: { from: 5, to: 27 } });
  assert.match(a.evidence.reading as string, /running minimum/);
  // budget met already at the lowest threshold (c1 alone at its minimum removes 8 > 3.5): c1 keeps back to 6
  const low = allocateByCurve({ kind: 'filters', fraction: 0.05 }, groups, r, cost);
  assert.deepEqual(low.keep, { c1: 6, c2: 20, c3: 40 });
  assert.deepEqual(low.evidence.keptBack, { c1: { from: 2, to: 6 } });
  // every budget from 5% to 90%: met, never by more than 3 filters (c1, c2 and c3 share the
  // share 0.5 and move together), and more budget never keeps more in any layer
  let prev: Record<string, number> | undefined;
  for (let f = 0.05; f < 0.91; f += 0.05) {
    const b = allocateByCurve({ kind: 'filters', fraction: f }, groups, r, cost);
    assert.ok(b.reached >= f - 1e-12 && b.reached <= f + 3 / 70 + 1e-12, `budget ${f}: reached ${b.reached} ${JSON.stringify(b.keep)}`);
    assert.equal(b.reached, removedFraction({ kind: 'filters', fraction: f }, groups, b.keep, cost));
    if (prev) for (const g of ['c1', 'c2', 'c3']) assert.ok(b.keep[g]! <= prev[g]!, `budget ${f}: ${g} ${b.keep[g]} > ${prev[g]}`);
    prev = b.keep;
  }
  // params and flops budgets too
  for (const kind of ['params', 'flops'] as const) {
    const b = allocateByCurve({ kind, fraction: 0.3 }, groups, r, cost);
    assert.ok(b.reached >= 0.3 && b.reached < 0.4, `${kind} ${b.reached}`);
  }
});

test('curve allocation: a layer with curveTotal <= 0 (no information measured) keeps minKeep at every threshold and is named in the evidence', () => {
  const { m, groups } = net();
  const cost = costModel(m, groups);
  for (const total of [0, -0.01]) {
    const r = new Map([mkRanking('c1', 10, Array(9).fill(0), total), mkRanking('c2', 20, linear(20)), mkRanking('c3', 40, dipC3)].map((x) => [x.group, x]));
    const a = allocateByCurve({ kind: 'filters', fraction: 0.2 }, groups, r, cost);
    assert.equal(a.keep.c1, 1);
    assert.deepEqual(a.evidence.nonPositiveTotal, ['c1']);
    assert.ok(a.reached >= 0.2 && a.reached < 0.2 + 1 / 70 + 1e-12, `${a.reached}`);
    assert.equal(allocateByCurve({ kind: 'filters', fraction: 0.2 }, groups, r, cost, 3).keep.c1, 3);
  }
});

test('sensitivity allocation: the layer whose pruning costs no accuracy is pruned first, and the budget is met exactly', async () => {
  const { m, groups } = net();
  const cost = costModel(m, groups);
  // c3 loses nothing up to 80% removed, c1 and c2 lose a lot at once
  const drop = async (g: { name: string; channels: number }, keep: number) => {
    const f = 1 - keep / g.channels;
    return g.name === 'c3' ? (f <= 0.8 ? 0 : 0.5) : 0.3 * f;
  };
  const a = await allocateBySensitivity({ kind: 'filters', fraction: 0.4 }, groups, cost, drop);
  // 40% of 70 filters = 28, all of them from c3 (40 -> 12)
  assert.deepEqual(a.keep, { c1: 10, c2: 20, c3: 12 });
  assert.ok(Math.abs(a.reached - 28 / 70) < 1e-12);
  // beyond c3's 80% the next cheapest drop per removed filter is taken
  const b = await allocateBySensitivity({ kind: 'filters', fraction: 0.6 }, groups, cost, drop);
  assert.equal(b.keep.c3, 8);
  assert.ok(b.reached >= 0.6 && b.reached < 0.6 + 1 / 70 + 1e-12, `${b.reached}`);
});

test('l1 criterion orders by filter L1 norm with a left-out share curve; cut-off specs parse', async () => {
  const { m, groups } = net();
  const w = m.tensors['c1.weight']!;
  w.data.fill(0.01);
  w.data.fill(1, 7 * 27, 8 * 27); // filter 7 has the largest norm
  w.data.fill(0.5, 2 * 27, 3 * 27);
  const r = (await l1Criterion.rank(m, groups, undefined as never))[0]!;
  assert.deepEqual(r.order.slice(0, 2), [7, 2]);
  assert.equal(r.curve!.length, 9);
  assert.ok(Math.abs(r.curve![0]! - (1 - 27 / (27 + 13.5 + 8 * 0.27))) < 1e-6);
  assert.deepEqual(orderByScore([1, 3, 3, 0]), [1, 2, 0, 3]);
  assert.deepEqual(leftOutCurve([1, 1, 2], [2, 0, 1]), [0.5, 0.25]);
  assert.deepEqual(parseCutoff('flops:0.6'), { kind: 'flops', fraction: 0.6 });
  assert.deepEqual(parseCutoff('xmeans'), { kind: 'xmeans' });
  assert.throws(() => parseCutoff('params:1'), /in \(0, 1\)/);
  assert.throws(() => parseCutoff('l2:0.5'), /not one of/);
});

test('compound budgets (params:F+flops:F): every part is reached, by the least pruning that reaches the binding part', async () => {
  const { m, groups } = net();
  const cost = costModel(m, groups);
  const budget = (text: string) => parseCutoff(text) as Budget;
  // the curve case above: c2's curve falls slowly, so at 60% of the filters the parameters go first
  const mk = (name: string, c: number, curve: number[]): GroupRanking => ({ group: name, channels: c, order: Array.from({ length: c }, (_, i) => i), curve, curveTotal: 1 });
  const sat = (c: number) => Array.from({ length: c - 1 }, (_, i) => (i < 1 ? 0.5 : 0.001 / (i + 1)));
  const r = new Map([mk('c1', 10, sat(10)), mk('c2', 20, linear(20)), mk('c3', 40, sat(40))].map((x) => [x.group, x]));
  const filtersOnly = allocateByCurve(budget('filters:0.6'), groups, r, cost);
  const params = removedFraction({ kind: 'params', fraction: 0 }, groups, filtersOnly.keep, cost);
  assert.ok(params > 0.8 && params < 0.9, `${params}`);
  // params:0.9 binds: the same allocation as params:0.9 alone, and it also removes 60% of the filters
  const both = allocateByCurve(budget('filters:0.6+params:0.9'), groups, r, cost);
  assert.deepEqual(both.keep, allocateByCurve(budget('params:0.9'), groups, r, cost).keep);
  assert.notDeepEqual(both.keep, filtersOnly.keep);
  assert.ok(meetsBudget(budget('filters:0.6+params:0.9'), groups, both.keep, cost));
  // `reached` is the first part's; every part's in the evidence
  assert.equal(both.reached, removedFraction({ kind: 'filters', fraction: 0.6 }, groups, both.keep, cost));
  const parts = both.evidence.reachedParts as Record<string, number>;
  assert.ok(parts.filters! >= 0.6 && parts.params! >= 0.9);
  // a part that is already met changes nothing: filters:0.6 binds
  assert.deepEqual(allocateByCurve(budget('params:0.5+filters:0.6'), groups, r, cost).keep, filtersOnly.keep);
  // uniform: one fraction per layer, the larger one the two parts need
  const u = allocateUniform(budget('filters:0.3+params:0.8'), groups, cost);
  assert.deepEqual(u.keep, allocateUniform(budget('params:0.8'), groups, cost).keep);
  assert.ok(meetsBudget(budget('filters:0.3+params:0.8'), groups, u.keep, cost));
  // one part out of reach: one error naming the whole budget and what each part reached
  assert.throws(() => allocateUniform(budget('filters:0.3+params:0.99'), groups, cost, 5), /budget filters:0\.3\+params:0\.99 cannot be met: .*% of the filters and .*% of the params/);
  // sensitivity: c3 costs nothing up to 80% removed, so it alone is pruned until both parts are met,
  // and no channel more than the budget needs
  const drop = async (g: { name: string; channels: number }, keep: number) => {
    const f = 1 - keep / g.channels;
    return g.name === 'c3' ? (f <= 0.8 ? 0 : 0.5) : 0.3 * f;
  };
  const sb = budget('filters:0.3+params:0.6');
  const s = await allocateBySensitivity(sb, groups, cost, drop);
  assert.equal(s.keep.c1, 10);
  assert.equal(s.keep.c2, 20);
  assert.ok(meetsBudget(sb, groups, s.keep, cost));
  assert.ok(!meetsBudget(sb, groups, { ...s.keep, c3: s.keep.c3! + 1 }, cost));
  // the filters part alone is met with more of c3 kept: the params part bound
  assert.ok((await allocateBySensitivity(budget('filters:0.3'), groups, cost, drop)).keep.c3! > s.keep.c3!);
  // the greedy's progress: once a part is met, removing more of its measure gains nothing for it
  // (c1 removes few parameters per filter: cutting it further mostly serves the met filters part)
  const met = { c1: 10, c2: 20, c3: 12 }; // 28 of 70 filters (40%): the filters:0.2 part is met
  const more = { ...met, c1: 2 };
  const onlyFilters = budget('filters:0.2+params:0.9');
  const paramsGain = (k: Record<string, number>) => removedFraction({ kind: 'params', fraction: 0 }, groups, k, cost) / 0.9;
  assert.ok(Math.abs(progressOf(onlyFilters, groups, more, cost) - progressOf(onlyFilters, groups, met, cost) - (paramsGain(more) - paramsGain(met))) < 1e-12);
  // a single-part budget is uncapped: progress is its removed fraction over its target
  assert.ok(Math.abs(progressOf(budget('filters:0.2'), groups, met, cost) - 28 / 70 / 0.2) < 1e-12);
});

test('compound cut-off specs parse into their parts, name themselves back, and bad ones fail with one clear error', () => {
  assert.deepEqual(parseCutoff('params:0.816+flops:0.581'), { kind: 'params', fraction: 0.816, also: [{ kind: 'flops', fraction: 0.581 }] });
  assert.equal(cutoffName(parseCutoff(' params:0.816 + flops:0.581 ')), 'params:0.816+flops:0.581');
  assert.equal(cutoffName(parseCutoff('flops:0.5')), 'flops:0.5');
  // one name whichever order the parts are written in (filters, params, flops)
  assert.equal(cutoffName(parseCutoff('flops:0.581+params:0.816')), 'params:0.816+flops:0.581');
  assert.equal(cutoffName(parseCutoff('flops:0.5+filters:0.3')), 'filters:0.3+flops:0.5');
  assert.throws(() => parseCutoff('params:0.5+params:0.6'), /params is named twice/);
  assert.throws(() => parseCutoff('keep:0.5+params:0.6'), /'keep:0.5' is not a global budget/);
  assert.throws(() => parseCutoff('scree+params:0.6'), /'scree' is not a global budget/);
  assert.throws(() => parseCutoff('filters:0.5+flops:1.5'), /in \(0, 1\)/);
});
