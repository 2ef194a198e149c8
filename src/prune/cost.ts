// Parameters and multiply-adds of a model after keeping `keep[g]` channels of each group, from
// shapes alone (no surgery): allocations over hundreds of candidate plans need it cheap. Pruning
// never changes spatial sizes, so a conv's or Linear's multiply-adds scale with its weight's
// element count; parameters are the pruned shapes' element counts (BN running stats excluded,
// as modelCost does). A test checks it against modelCost(applyPlan(...)).
//
// A coupled group's member that carries only part of its channels (an earlier ResNet stage) keeps
// as many as the first k of the group's order put in its range (its criteria rank the channels an
// earlier stage carries differently from the zero-padded ones), so costs of coupled groups need
// the rankings; without one such a member is estimated at its share round(k * width / channels).
import { type Model, numel } from '../ir/model.js';
import { modelCost } from '../ir/shapes.js';
import { keptChannels } from './groups.js';
import type { ChannelGroup } from './types.js';

export interface CostModel {
  params: number;
  macs: number;
  /** conv filters (output channels of every conv) */
  filters: number;
  /** keep counts per group name -> {params, macs, filters}; groups not listed keep all channels */
  of(keep: Record<string, number>): { params: number; macs: number; filters: number };
}

export function costModel(model: Model, groups: ChannelGroup[], rankings?: ReadonlyMap<string, { order: readonly number[] }>): CostModel {
  const base = modelCost(model);
  const macsOf = new Map(base.layers.map((l) => [l.node, l.macs]));
  // every parameter tensor counted once, with the members that shrink it
  const tensors: { node: string; key: string; shape: number[]; weight: boolean; conv: boolean; cuts: { group: string; axis: number; span: number; offset: number; width: number; channels: number }[] }[] = [];
  const byKey = new Map<string, (typeof tensors)[number]>();
  for (const n of model.nodes) {
    for (const [slot, key] of Object.entries(n.params as Record<string, string>)) {
      if (n.op === 'BatchNorm' && (slot === 'runningMean' || slot === 'runningVar')) continue;
      const t = { node: n.name, key, shape: model.tensors[key]!.shape, weight: slot === 'weight' && (n.op === 'Conv2d' || n.op === 'Linear'), conv: slot === 'weight' && n.op === 'Conv2d', cuts: [] };
      tensors.push(t);
      byKey.set(`${n.name}\u0000${slot}`, t);
    }
  }
  for (const g of groups) {
    for (const m of g.members) byKey.get(`${m.node}\u0000${m.slot}`)?.cuts.push({ group: g.name, axis: m.axis, span: m.span, offset: m.offset, width: m.width, channels: g.channels });
  }
  return {
    params: base.params,
    macs: base.macs,
    filters: convFilters(model),
    of(keep) {
      let params = 0;
      let macs = 0;
      let filters = 0;
      // coupled groups with an order: the kept channels themselves
      const keptSets = new Map<string, number[]>();
      for (const g of groups) {
        const r = rankings?.get(g.name);
        if (g.coupled && r && keep[g.name] !== undefined) keptSets.set(g.name, keptChannels(r.order, keep[g.name]!, g));
      }
      for (const t of tensors) {
        const shape = [...t.shape];
        for (const c of t.cuts) {
          const k = keep[c.group];
          if (k === undefined) continue;
          const set = keptSets.get(c.group);
          const n = set
            ? set.filter((j) => j >= c.offset && j < c.offset + c.width).length
            : c.width === c.channels
              ? k
              : Math.max(1, Math.round((k * c.width) / c.channels));
          shape[c.axis] = n * c.span;
        }
        const n = numel(shape);
        params += n;
        if (t.weight) macs += (macsOf.get(t.node) ?? 0) * (n / numel(t.shape));
        if (t.conv) filters += shape[0]!;
      }
      return { params, macs: Math.round(macs), filters };
    },
  };
}

/** Conv filters (output channels of every Conv2d) of a model: what "filters removed" counts. */
export function convFilters(model: Model): number {
  return model.nodes.reduce((s, n) => s + (n.op === 'Conv2d' ? n.attrs.outChannels : 0), 0);
}
