// Parameters and multiply-adds of a model after keeping `keep[g]` channels of each group, from
// shapes alone (no surgery): allocations over hundreds of candidate plans need it cheap. Pruning
// never changes spatial sizes, so a conv's or Linear's multiply-adds scale with its weight's
// element count; parameters are the pruned shapes' element counts (BN running stats excluded,
// as modelCost does). A test checks it against modelCost(applyPlan(...)).
import { type Model, numel } from '../ir/model.js';
import { modelCost } from '../ir/shapes.js';
import type { ChannelGroup } from './types.js';

export interface CostModel {
  params: number;
  macs: number;
  /** keep counts per group name -> {params, macs}; groups not listed keep all channels */
  of(keep: Record<string, number>): { params: number; macs: number };
}

export function costModel(model: Model, groups: ChannelGroup[]): CostModel {
  const base = modelCost(model);
  const macsOf = new Map(base.layers.map((l) => [l.node, l.macs]));
  // every parameter tensor counted once, with the members that shrink it
  const tensors: { node: string; key: string; shape: number[]; weight: boolean; cuts: { group: string; axis: number; span: number }[] }[] = [];
  const byKey = new Map<string, (typeof tensors)[number]>();
  for (const n of model.nodes) {
    for (const [slot, key] of Object.entries(n.params as Record<string, string>)) {
      if (n.op === 'BatchNorm' && (slot === 'runningMean' || slot === 'runningVar')) continue;
      const t = { node: n.name, key, shape: model.tensors[key]!.shape, weight: slot === 'weight' && (n.op === 'Conv2d' || n.op === 'Linear'), cuts: [] };
      tensors.push(t);
      byKey.set(`${n.name}\u0000${slot}`, t);
    }
  }
  for (const g of groups) {
    for (const m of g.members) byKey.get(`${m.node}\u0000${m.slot}`)?.cuts.push({ group: g.name, axis: m.axis, span: m.span });
  }
  return {
    params: base.params,
    macs: base.macs,
    of(keep) {
      let params = 0;
      let macs = 0;
      for (const t of tensors) {
        const shape = [...t.shape];
        for (const c of t.cuts) if (keep[c.group] !== undefined) shape[c.axis] = keep[c.group]! * c.span;
        const n = numel(shape);
        params += n;
        if (t.weight) macs += (macsOf.get(t.node) ?? 0) * (n / numel(t.shape));
      }
      return { params, macs: Math.round(macs) };
    },
  };
}
