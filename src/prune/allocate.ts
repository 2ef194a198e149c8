// Global budgets: how many channels each layer keeps so that a fraction of all filters,
// parameters or multiply-adds goes. Three allocation rules, any criterion:
// - uniform: one keep fraction for every layer, the largest that meets the budget;
// - curve: one threshold t on every layer's normalised curve (curve / curveTotal): each layer
//   keeps the fewest channels whose left-out share is <= t; the smallest t that meets the budget
//   (needs comparable curves: CMI with the median width, or L1 shares). A curve is read through
//   its running minimum (./cutoffs.ts runningMinimum, as scree and X-Means read it), and t ranges
//   over every share the curves take, below 0 too (CMI with --sigma mean);
// - sensitivity: each layer pruned alone at removal fractions 0.1..0.9, its drop in held-out
//   accuracy measured (images the criterion and the test set never see), then the cheapest drops
//   per unit of budget are taken greedily until the budget is met.
import { UserError } from '../util/errors.js';
import type { CostModel } from './cost.js';
import { runningMinimum } from './cutoffs.js';
import type { ChannelGroup, GroupRanking } from './types.js';

export type BudgetKind = 'filters' | 'params' | 'flops';
export type AllocationRule = 'uniform' | 'curve' | 'sensitivity';

export interface BudgetPart {
  kind: BudgetKind;
  /** fraction of all filters / parameters / multiply-adds to remove, in (0, 1) */
  fraction: number;
}

/**
 * A global budget: its own part, and optionally more parts the same allocation must reach too
 * (`params:0.816+flops:0.581`: the published anchors remove both at once, and which one binds
 * depends on the allocation). `reached` reports the first part.
 */
export interface Budget extends BudgetPart {
  also?: BudgetPart[];
}

export const budgetParts = (b: Budget): BudgetPart[] => [{ kind: b.kind, fraction: b.fraction }, ...(b.also ?? [])];
export const budgetName = (b: Budget): string => budgetParts(b).map((p) => `${p.kind}:${p.fraction}`).join('+');

export interface Allocation {
  keep: Record<string, number>;
  rule: AllocationRule;
  /** removed fraction of the budget's measure that the allocation reaches */
  reached: number;
  evidence: Record<string, unknown>;
}

/** The removed fraction of one measure, from a cost of the kept counts. */
function removedOf(kind: BudgetKind, c: { params: number; macs: number; filters: number }, cost: CostModel): number {
  // filters: of every conv in the model, as the report counts them (a coupled group's channel
  // removes a filter from each of its convs that carries it)
  if (kind === 'filters') return 1 - c.filters / cost.filters;
  return kind === 'params' ? 1 - c.params / cost.params : 1 - c.macs / cost.macs;
}

/** The removed fraction of the budget part's measure for the given keep counts. */
export function removedFraction(budget: BudgetPart, groups: ChannelGroup[], keep: Record<string, number>, cost: CostModel): number {
  return removedOf(budget.kind, cost.of(keep), cost);
}

/** Each part of the budget with its removed fraction, from one cost of the kept counts. */
function partsReached(budget: Budget, keep: Record<string, number>, cost: CostModel): { part: BudgetPart; removed: number }[] {
  const c = cost.of(keep);
  return budgetParts(budget).map((part) => ({ part, removed: removedOf(part.kind, c, cost) }));
}

/** Every part of the budget reached. */
export function meetsBudget(budget: Budget, groups: ChannelGroup[], keep: Record<string, number>, cost: CostModel): boolean {
  return partsReached(budget, keep, cost).every((x) => x.removed >= x.part.fraction);
}

/**
 * Progress toward a budget: each part's removed share of its target, summed; with several parts
 * each capped at 1, so a step that helps only a part already met gains nothing (a single-part
 * budget is left uncapped: the greedy's choices are then exactly those by the removed fraction).
 */
export function progressOf(budget: Budget, groups: ChannelGroup[], keep: Record<string, number>, cost: CostModel): number {
  const parts = partsReached(budget, keep, cost);
  const cap = parts.length > 1 ? 1 : Infinity;
  return parts.reduce((s, x) => s + Math.min(cap, x.removed / x.part.fraction), 0);
}

function clampKeep(g: ChannelGroup, k: number, minKeep: number): number {
  return Math.min(g.channels, Math.max(Math.min(minKeep, g.channels), k));
}

/**
 * Bisection over a monotone knob x in [from, to] (more x = more removed): the smallest x that meets
 * the budget (`x`) and the largest tried that does not (`below`); precision (to - from) / 2^40.
 */
function bisectRange(meets: (x: number) => boolean, from: number, to: number): { x: number; below: number } {
  if (!meets(to)) return { x: to, below: to };
  let lo = from;
  let hi = to;
  const iterations = 40 + Math.max(0, Math.ceil(Math.log2(to - from)));
  for (let i = 0; i < iterations; i++) {
    const mid = (lo + hi) / 2;
    if (meets(mid)) hi = mid;
    else lo = mid;
  }
  return { x: hi, below: lo };
}

/** Bisection over a monotone knob x in [0, 1]: the smallest x that meets the budget. */
function bisect(meets: (x: number) => boolean): number {
  return bisectRange(meets, 0, 1).x;
}

function unreachable(budget: Budget, groups: ChannelGroup[], keep: Record<string, number>, cost: CostModel, minKeep: number): UserError {
  const got = partsReached(budget, keep, cost)
    .map((x) => `${(100 * x.removed).toFixed(1)}% of the ${x.part.kind}`)
    .join(' and ');
  return new UserError(`budget ${budgetName(budget)} cannot be met: with at least ${minKeep} channel(s) per prunable layer at most ${got} goes (lower the budget or --min-keep)`);
}

/** The allocation's `reached` (the first part) and, for a compound budget, every part's in the evidence. */
function reachedOf(budget: Budget, groups: ChannelGroup[], keep: Record<string, number>, cost: CostModel): { reached: number; parts: Record<string, unknown> } {
  const parts = partsReached(budget, keep, cost);
  return { reached: parts[0]!.removed, parts: parts.length > 1 ? { reachedParts: Object.fromEntries(parts.map((x) => [x.part.kind, x.removed])) } : {} };
}

export function allocateUniform(budget: Budget, groups: ChannelGroup[], cost: CostModel, minKeep = 1): Allocation {
  const keepAt = (x: number) => Object.fromEntries(groups.map((g) => [g.name, clampKeep(g, Math.round((1 - x) * g.channels), minKeep)]));
  const x = bisect((v) => meetsBudget(budget, groups, keepAt(v), cost));
  const keep = keepAt(x);
  if (!meetsBudget(budget, groups, keep, cost)) throw unreachable(budget, groups, keep, cost, minKeep);
  const { reached, parts } = reachedOf(budget, groups, keep, cost);
  return { keep, rule: 'uniform', reached, evidence: { removedPerLayer: x, ...parts } };
}

/** How the curve allocation reads a curve (recorded in its evidence). */
export const CURVE_ALLOCATION_READING =
  'each layer keeps the fewest channels whose running minimum of curve / curveTotal is <= t (all of them when it never is; minKeep when curveTotal <= 0); t may be below 0; where one t jumps a layer over several channels (a flat stretch of its running minimum) it keeps back as many as the budget allows';

/** A layer's normalised running minimum, or null when curveTotal <= 0 (nothing to normalise by). */
function normalisedReading(r: GroupRanking): number[] | null {
  const total = r.curveTotal ?? (r.curve && r.curve.length > 0 ? r.curve[0]! : 0);
  if (!(total > 0)) return null;
  // non-monotone curves: the running minimum, as scree and X-Means read them (cutoffs.ts header)
  return runningMinimum(r.curve!).map((v) => v / total);
}

/** Channels to keep so that the normalised running minimum is <= t. */
function keepForThreshold(share: number[] | null, channels: number, t: number): number {
  // curveTotal <= 0: the layer measured no information to leave out, at any t
  if (!share) return 1;
  for (let i = 0; i < share.length; i++) if (share[i]! <= t) return i + 1; // share[i] belongs to keep i+1
  return channels;
}

export function allocateByCurve(budget: Budget, groups: ChannelGroup[], rankings: Map<string, GroupRanking>, cost: CostModel, minKeep = 1): Allocation {
  for (const g of groups) {
    if (!rankings.get(g.name)?.curve) throw new UserError(`--allocation curve needs a curve for every layer; layer '${g.name}' has none (criterion without a curve?)`);
  }
  const shares = new Map(groups.map((g) => [g.name, normalisedReading(rankings.get(g.name)!)]));
  // t over every share a curve takes: [0, 1] for curves that fall from curveTotal to >= 0; below 0
  // (or above 1) where a curve does, so a layer that goes below 0 early still has a threshold
  // between keeping it whole and cutting it to its minimum
  let from = 0;
  let to = 1;
  for (const s of shares.values()) for (const v of s ?? []) (from = Math.min(from, v)), (to = Math.max(to, v));
  const keepAt = (t: number) => Object.fromEntries(groups.map((g) => [g.name, clampKeep(g, keepForThreshold(shares.get(g.name)!, g.channels, t), minKeep)]));
  const meets = (k: Record<string, number>) => meetsBudget(budget, groups, k, cost);
  const { x: t, below } = bisectRange((v) => meets(keepAt(v)), from, to);
  const keep = keepAt(t);
  // a layer whose keep jumps by more than one channel between `below` and t crosses a flat stretch
  // of its running minimum (or never reaches `below`): the threshold cannot choose inside it, so it
  // keeps back as many of those channels as the budget allows (one channel per step: no change)
  // (`below` untested: the budget is met down to `from`, so compare with no layer reaching any t)
  const fewer = keepAt(below > from ? below : -Infinity);
  const keptBack: Record<string, { from: number; to: number }> = {};
  for (const g of groups) {
    const a = keep[g.name]!;
    const b = fewer[g.name]!;
    if (b - a <= 1) continue;
    let ok = a;
    let bad = b + 1;
    while (bad - ok > 1) {
      const mid = Math.floor((ok + bad) / 2);
      if (meets({ ...keep, [g.name]: mid })) ok = mid;
      else bad = mid;
    }
    if (ok > a) {
      keptBack[g.name] = { from: a, to: ok };
      keep[g.name] = ok;
    }
  }
  if (!meets(keep)) throw unreachable(budget, groups, keep, cost, minKeep);
  const { reached, parts } = reachedOf(budget, groups, keep, cost);
  const noTotal = groups.filter((g) => shares.get(g.name) === null).map((g) => g.name);
  return {
    keep,
    rule: 'curve',
    reached,
    evidence: {
      threshold: t,
      reading: CURVE_ALLOCATION_READING,
      thresholdRange: [from, to],
      ...(Object.keys(keptBack).length ? { keptBack } : {}),
      ...(noTotal.length ? { nonPositiveTotal: noTotal } : {}),
      ...parts,
    },
  };
}

export const SENSITIVITY_FRACTIONS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/**
 * `drop(group, keep)` -> held-out accuracy lost when only that layer keeps `keep` channels (its
 * criterion order's first ones). Greedy over the grid: repeatedly take the layer step with the
 * smallest added drop per added removal (drops made non-decreasing in the fraction, so noise
 * cannot reward pruning more), then trim the last step to the exact budget.
 */
export async function allocateBySensitivity(
  budget: Budget,
  groups: ChannelGroup[],
  cost: CostModel,
  drop: (group: ChannelGroup, keep: number) => Promise<number>,
  minKeep = 1,
  fractions = SENSITIVITY_FRACTIONS,
): Promise<Allocation> {
  const keepOf = (g: ChannelGroup, f: number) => clampKeep(g, Math.round((1 - f) * g.channels), minKeep);
  const table: Record<string, { fraction: number; keep: number; drop: number }[]> = {};
  for (const g of groups) {
    let worst = 0;
    const rows = [{ fraction: 0, keep: g.channels, drop: 0 }];
    for (const f of fractions) {
      const k = keepOf(g, f);
      if (k >= rows[rows.length - 1]!.keep) continue;
      const d = await drop(g, k);
      worst = Math.max(worst, d);
      rows.push({ fraction: f, keep: k, drop: worst });
    }
    table[g.name] = rows;
  }
  const state = Object.fromEntries(groups.map((g) => [g.name, 0]));
  const keepNow = () => Object.fromEntries(groups.map((g) => [g.name, table[g.name]![state[g.name]!]!.keep]));
  let progress = progressOf(budget, groups, keepNow(), cost);
  let last: ChannelGroup | undefined;
  while (!meetsBudget(budget, groups, keepNow(), cost)) {
    let best: { g: ChannelGroup; ratio: number } | undefined;
    for (const g of groups) {
      const rows = table[g.name]!;
      const s = state[g.name]!;
      if (s + 1 >= rows.length) continue;
      const trial = { ...keepNow(), [g.name]: rows[s + 1]!.keep };
      const gain = progressOf(budget, groups, trial, cost) - progress;
      if (gain <= 0) continue;
      // a tiny cost per removal breaks ties of zero drop toward the layers that save most
      const ratio = (rows[s + 1]!.drop - rows[s]!.drop + 1e-9) / gain;
      if (!best || ratio < best.ratio) best = { g, ratio };
    }
    if (!best) throw unreachable(budget, groups, keepNow(), cost, minKeep);
    state[best.g.name]!++;
    last = best.g;
    progress = progressOf(budget, groups, keepNow(), cost);
  }
  const keep = keepNow();
  if (last) {
    // the last step may overshoot: keep as many of its channels back as the budget allows
    const rows = table[last.name]!;
    let lo = rows[state[last.name]!]!.keep;
    let hi = rows[state[last.name]! - 1]!.keep;
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (meetsBudget(budget, groups, { ...keep, [last.name]: mid }, cost)) lo = mid;
      else hi = mid;
    }
    keep[last.name] = lo;
  }
  const { reached, parts } = reachedOf(budget, groups, keep, cost);
  return { keep, rule: 'sensitivity', reached, evidence: { fractions, table, ...parts } };
}
