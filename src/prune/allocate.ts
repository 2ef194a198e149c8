// Global budgets: how many channels each layer keeps so that a fraction of all filters,
// parameters or multiply-adds goes. Three allocation rules, any criterion:
// - uniform: one keep fraction for every layer, the largest that meets the budget;
// - curve: one threshold t on every layer's normalised curve (curve / curveTotal): each layer
//   keeps the fewest channels whose left-out share is <= t; the smallest t that meets the budget
//   (needs comparable curves: CMI with the median width, or L1 shares);
// - sensitivity: each layer pruned alone at removal fractions 0.1..0.9, its drop in held-out
//   accuracy measured (images the criterion and the test set never see), then the cheapest drops
//   per unit of budget are taken greedily until the budget is met.
import { UserError } from '../util/errors.js';
import type { CostModel } from './cost.js';
import type { ChannelGroup, GroupRanking } from './types.js';

export type BudgetKind = 'filters' | 'params' | 'flops';
export type AllocationRule = 'uniform' | 'curve' | 'sensitivity';

export interface Budget {
  kind: BudgetKind;
  /** fraction of all filters / parameters / multiply-adds to remove, in (0, 1) */
  fraction: number;
}

export interface Allocation {
  keep: Record<string, number>;
  rule: AllocationRule;
  /** removed fraction of the budget's measure that the allocation reaches */
  reached: number;
  evidence: Record<string, unknown>;
}

/** The removed fraction of the budget's measure for the given keep counts. */
export function removedFraction(budget: Budget, groups: ChannelGroup[], keep: Record<string, number>, cost: CostModel): number {
  const c = cost.of(keep);
  // filters: of every conv in the model, as the report counts them (a coupled group's channel
  // removes a filter from each of its convs that carries it)
  if (budget.kind === 'filters') return 1 - c.filters / cost.filters;
  return budget.kind === 'params' ? 1 - c.params / cost.params : 1 - c.macs / cost.macs;
}

function clampKeep(g: ChannelGroup, k: number, minKeep: number): number {
  return Math.min(g.channels, Math.max(Math.min(minKeep, g.channels), k));
}

/** Bisection over a monotone knob x in [0, 1] (more x = more removed): the smallest x that meets the budget. */
function bisect(meets: (x: number) => boolean, iterations = 40): number {
  if (!meets(1)) return 1;
  let lo = 0;
  let hi = 1;
  for (let i = 0; i < iterations; i++) {
    const mid = (lo + hi) / 2;
    if (meets(mid)) hi = mid;
    else lo = mid;
  }
  return hi;
}

function unreachable(budget: Budget, reached: number, minKeep: number): UserError {
  return new UserError(
    `budget ${budget.kind}:${budget.fraction} cannot be met: with at least ${minKeep} channel(s) per prunable layer at most ${(100 * reached).toFixed(1)}% goes (lower the budget or --min-keep)`,
  );
}

export function allocateUniform(budget: Budget, groups: ChannelGroup[], cost: CostModel, minKeep = 1): Allocation {
  const keepAt = (x: number) => Object.fromEntries(groups.map((g) => [g.name, clampKeep(g, Math.round((1 - x) * g.channels), minKeep)]));
  const x = bisect((v) => removedFraction(budget, groups, keepAt(v), cost) >= budget.fraction);
  const keep = keepAt(x);
  const reached = removedFraction(budget, groups, keep, cost);
  if (reached < budget.fraction) throw unreachable(budget, reached, minKeep);
  return { keep, rule: 'uniform', reached, evidence: { removedPerLayer: x } };
}

/** Channels to keep so that the normalised curve's left-out share is <= t. */
function keepForThreshold(r: GroupRanking, t: number): number {
  const total = r.curveTotal ?? (r.curve && r.curve.length > 0 ? r.curve[0]! : 0);
  const curve = r.curve!;
  if (!(total > 0)) return 1;
  for (let i = 0; i < curve.length; i++) if (curve[i]! / total <= t) return i + 1; // curve[i] belongs to keep i+1
  return r.channels;
}

export function allocateByCurve(budget: Budget, groups: ChannelGroup[], rankings: Map<string, GroupRanking>, cost: CostModel, minKeep = 1): Allocation {
  for (const g of groups) {
    if (!rankings.get(g.name)?.curve) throw new UserError(`--allocation curve needs a curve for every layer; layer '${g.name}' has none (criterion without a curve?)`);
  }
  const keepAt = (t: number) => Object.fromEntries(groups.map((g) => [g.name, clampKeep(g, keepForThreshold(rankings.get(g.name)!, t), minKeep)]));
  const t = bisect((v) => removedFraction(budget, groups, keepAt(v), cost) >= budget.fraction);
  const keep = keepAt(t);
  const reached = removedFraction(budget, groups, keep, cost);
  if (reached < budget.fraction) throw unreachable(budget, reached, minKeep);
  return { keep, rule: 'curve', reached, evidence: { threshold: t } };
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
  let reached = removedFraction(budget, groups, keepNow(), cost);
  let last: ChannelGroup | undefined;
  while (reached < budget.fraction) {
    let best: { g: ChannelGroup; ratio: number } | undefined;
    for (const g of groups) {
      const rows = table[g.name]!;
      const s = state[g.name]!;
      if (s + 1 >= rows.length) continue;
      const trial = { ...keepNow(), [g.name]: rows[s + 1]!.keep };
      const gain = removedFraction(budget, groups, trial, cost) - reached;
      if (gain <= 0) continue;
      // a tiny cost per removal breaks ties of zero drop toward the layers that save most
      const ratio = (rows[s + 1]!.drop - rows[s]!.drop + 1e-9) / gain;
      if (!best || ratio < best.ratio) best = { g, ratio };
    }
    if (!best) throw unreachable(budget, reached, minKeep);
    state[best.g.name]!++;
    last = best.g;
    reached = removedFraction(budget, groups, keepNow(), cost);
  }
  const keep = keepNow();
  if (last) {
    // the last step may overshoot: keep as many of its channels back as the budget allows
    const rows = table[last.name]!;
    let lo = rows[state[last.name]!]!.keep;
    let hi = rows[state[last.name]! - 1]!.keep;
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (removedFraction(budget, groups, { ...keep, [last.name]: mid }, cost) >= budget.fraction) lo = mid;
      else hi = mid;
    }
    keep[last.name] = lo;
    reached = removedFraction(budget, groups, keep, cost);
  }
  return { keep, rule: 'sensitivity', reached, evidence: { fractions, table } };
}
