// Criteria behind one interface: rank(model, groups, calibration) -> per group an order (most
// important first) and, where it exists, a curve (importance left out after keeping i+1), so any
// criterion meets any cut-off or budget and comparisons are like for like.
import type { Model } from '../ir/model.js';
import { UserError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import type { Calibration, ChannelGroup, Criterion, GroupRanking } from './types.js';

/** Order by descending score, ties by lower index. */
export function orderByScore(scores: ArrayLike<number>): number[] {
  return Array.from({ length: scores.length }, (_, i) => i).sort((a, b) => scores[b]! - scores[a]! || a - b);
}

/** curve[i] = share of the total score outside the first i+1 of the order (length C-1). */
export function leftOutCurve(scores: ArrayLike<number>, order: number[]): number[] {
  let total = 0;
  for (const c of order) total += scores[c]!;
  const curve: number[] = [];
  let kept = 0;
  for (let i = 0; i < order.length - 1; i++) {
    kept += scores[order[i]!]!;
    curve.push(total > 0 ? Math.max(0, (total - kept) / total) : 0);
  }
  return curve;
}

/**
 * Filter weight L1-norm (Li et al. 2017): sum |W[c]| over the filter's kernel; for a coupled group
 * (--residual all) channel j scores the sum over every conv writing it (DepGraph's group L1).
 */
export const l1Criterion: Criterion = {
  name: 'l1',
  key: 'l1/v1',
  async rank(model: Model, groups: ChannelGroup[]): Promise<GroupRanking[]> {
    return groups.map((g) => {
      const scores = new Array<number>(g.channels).fill(0);
      for (const m of g.members) {
        const node = model.nodes.find((n) => n.name === m.node)!;
        if (node.op !== 'Conv2d' || m.role !== 'out' || m.slot !== 'weight') continue;
        const w = model.tensors[node.params.weight!]!;
        const per = w.data.length / m.width;
        for (let c = 0; c < m.width; c++) {
          let s = 0;
          for (let k = c * per; k < (c + 1) * per; k++) s += Math.abs(w.data[k]!);
          scores[c + m.offset]! += s;
        }
      }
      const order = orderByScore(scores);
      return { group: g.name, channels: g.channels, order, curve: leftOutCurve(scores, order), curveTotal: 1, curveName: 'share of the layer\u2019s filter L1 mass left out', evidence: { l1: scores } };
    });
  },
};

/** A seeded random order per group (the floor any criterion must beat); no curve. */
export function randomCriterion(seed: number): Criterion {
  return {
    name: 'random',
    key: `random/v1/seed=${seed}`,
    async rank(_model: Model, groups: ChannelGroup[]): Promise<GroupRanking[]> {
      return groups.map((g) => ({ group: g.name, channels: g.channels, order: Array.from(new Rng(seed * 7919 + g.index).permutation(g.channels)) }));
    },
  };
}

/** Refuses a cut-off that needs a curve on a criterion that has none. */
export function requireCurve(r: GroupRanking, criterion: string, cutoff: string): number[] {
  if (!r.curve) throw new UserError(`--cutoff ${cutoff} needs a curve, and criterion '${criterion}' gives none: use a budget (keep:F, filters:F, params:F, flops:F)`);
  return r.curve;
}

export type { Calibration };
