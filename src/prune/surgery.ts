// Surgery: physically removes the channels a plan drops. Pure: applyPlan(model, plan) returns a
// new Model and never touches its input; shape inference over the result is its post-condition.
//
// A removed filter does not emit zero: after Conv -> BN -> ReLU it emits the constant
// relu(gamma (b - mu) / sqrt(var + eps) + beta) (b its conv bias, 0 without one). That constant
// is folded into each consumer's bias: a conv consumer adds constant x sum of that input
// channel's kernel to every output's bias (exact away from zero-padded borders, where part of
// the kernel reads padding instead of the constant), a Linear after Flatten adds constant x the
// weights of the channel's H*W features (exact). So the pruned model computes what the unpruned
// one computes with the removed filters' weights set to zero.
import { cloneModel, type Model, type Node, type Tensor, numel, tensor } from '../ir/model.js';
import { inferShapes } from '../ir/shapes.js';
import { UserError } from '../util/errors.js';
import { channelGroups, OP_RULES, walkChannels } from './groups.js';
import type { ChannelGroup, PruningPlan } from './types.js';

/** metadata_props key under which applyPlan records the plan in the pruned model */
export const PLAN_METADATA_KEY = 'cmiprune.plan';

/** Validates a plan against the model's groups; returns the groups it prunes. */
export function checkPlan(model: Model, plan: PruningPlan, groups = channelGroups(model)): ChannelGroup[] {
  const byName = new Map(groups.map((g) => [g.name, g]));
  const out: ChannelGroup[] = [];
  for (const [name, keep] of Object.entries(plan.keep)) {
    const g = byName.get(name);
    if (!g) throw new UserError(`plan: '${name}' is not a conv layer of model '${model.name}'`);
    if (!g.prunable) throw new UserError(`plan: layer '${name}' cannot be pruned: ${g.reason}`);
    if (keep.length === 0) throw new UserError(`plan: layer '${name}' would keep no channel`);
    for (let i = 0; i < keep.length; i++) {
      const k = keep[i]!;
      if (!Number.isInteger(k) || k < 0 || k >= g.channels) throw new UserError(`plan: layer '${name}' keeps channel ${k}, outside 0..${g.channels - 1}`);
      if (i > 0 && k <= keep[i - 1]!) throw new UserError(`plan: layer '${name}': keep indices must be sorted and distinct`);
    }
    if (keep.length < g.channels) out.push(g);
  }
  return out;
}

/** Where a folded constant is exact and where it is not (zero-padded borders, padded averages). */
export interface FoldingNote {
  group: string;
  removed: number;
  /** nodes where a removed channel's constant is only approximated (border pixels) */
  inexactAt: string[];
}

/**
 * Per removed channel, the constant it carries at each consumer's input (length span per channel:
 * after a Flatten each feature may differ, e.g. a BatchNorm1d between Flatten and Linear).
 */
function removedChannelConstants(model: Model, group: ChannelGroup, removed: number[]) {
  const conv = model.nodes.find((n) => n.name === group.name) as Extract<Node, { op: 'Conv2d' }>;
  const bias = conv.params.bias ? model.tensors[conv.params.bias]!.data : undefined;
  const walk = walkChannels(model, group.name);
  // value per (removed channel, feature within span) at each node's input, walked in graph order
  const at = new Map<string, Float64Array[]>(); // value name -> per removed channel, per feature
  at.set(conv.outputs[0], removed.map((c) => Float64Array.of(bias ? bias[c]! : 0)));
  const inexactAt: string[] = [];
  const atConsumer = new Map<string, { span: number; values: Float64Array[] }>();
  for (const step of walk.steps) {
    const node = step.node;
    const vin = at.get(node.inputs[0]!)!;
    const rule = OP_RULES[node.op];
    if (step.role === 'passthrough') {
      const vout = vin.map((v, r) =>
        v.map((x, f) => {
          // after a Flatten, per-feature params (BatchNorm1d) index feature c*span + f
          const idx = step.span === 1 ? removed[r]! : removed[r]! * step.span + f;
          const y = rule.constant!(model, node, idx, x);
          if (!y.exact && !inexactAt.includes(node.name)) inexactAt.push(node.name);
          return y.value;
        }),
      );
      at.set(node.outputs[0], vout);
    } else if (step.role === 'flatten') {
      const shapes = inferShapes(model, 1);
      const s = shapes.get(node.inputs[0]!)!;
      const hw = s[2]! * s[3]!;
      at.set(node.outputs[0], vin.map((v) => Float64Array.from({ length: v.length * hw }, (_, f) => v[Math.floor(f / hw)]!)));
    } else {
      atConsumer.set(node.name, { span: step.span, values: vin });
      if (node.op === 'Conv2d' && (node.attrs.padding[0] > 0 || node.attrs.padding[1] > 0) && vin.some((v) => v.some((x) => x !== 0))) {
        inexactAt.push(node.name);
      }
    }
  }
  return { atConsumer, inexactAt };
}

function sliceAxis(t: Tensor, axis: number, keep: number[], span: number): Tensor {
  const shape = [...t.shape];
  const outer = numel(shape.slice(0, axis));
  const inner = numel(shape.slice(axis + 1)) * span;
  const along = shape[axis]!;
  const out = tensor(
    shape.map((d, i) => (i === axis ? keep.length * span : d)),
    undefined,
  );
  for (let o = 0; o < outer; o++) {
    keep.forEach((k, j) => {
      const src = (o * along + k * span) * (inner / span);
      out.data.set(t.data.subarray(src, src + inner), (o * keep.length + j) * inner);
    });
  }
  return out;
}

/**
 * Removes every channel the plan drops, folding removed channels' constants into consumers'
 * biases (a consumer without a bias gets one). Returns a new model; the plan is recorded in its
 * metadata under PLAN_METADATA_KEY.
 */
export function applyPlan(model: Model, plan: PruningPlan): Model {
  const groups = channelGroups(model);
  const pruned = checkPlan(model, plan, groups);
  const out = cloneModel(model);
  // 1. fold constants, computed from the ORIGINAL parameters, into consumers' biases (all of a
  //    consumer's outputs; its own pruning, if any, slices the bias afterwards)
  for (const g of pruned) {
    const keep = plan.keep[g.name]!;
    const keepSet = new Set(keep);
    const removed = Array.from({ length: g.channels }, (_, c) => c).filter((c) => !keepSet.has(c));
    const { atConsumer } = removedChannelConstants(model, g, removed);
    for (const [name, { span, values }] of atConsumer) {
      const node = out.nodes.find((n) => n.name === name)!;
      if (values.every((v) => v.every((x) => x === 0))) continue;
      const wKey = (node.params as Record<string, string>).weight!;
      const w = model.tensors[wKey]!; // original weights: [O, I, kh, kw] or [O, F]
      const outCh = w.shape[0]!;
      const perIn = numel(w.shape.slice(2)); // kernel area (conv) or 1 (Linear)
      const inDim = w.shape[1]!;
      const add = new Float64Array(outCh);
      for (let o = 0; o < outCh; o++) {
        let s = 0;
        removed.forEach((c, r) => {
          const v = values[r]!;
          for (let f = 0; f < span; f++) {
            const x = v[f]!;
            if (x === 0) continue;
            const base = (o * inDim + c * span + f) * perIn;
            let ksum = 0;
            for (let k = 0; k < perIn; k++) ksum += w.data[base + k]!;
            s += x * ksum;
          }
        });
        add[o] = s;
      }
      const params = node.params as Record<string, string | undefined>;
      let bKey = params.bias;
      // a bias-free conv followed only by a BatchNorm (PyTorch's usual conv, bias=False): adding a
      // to the conv's output equals subtracting a from the BN's running mean, no new parameter
      const next = model.nodes.filter((n) => n.inputs.includes(node.outputs[0]));
      if (!bKey && next.length === 1 && next[0]!.op === 'BatchNorm' && !model.outputs.includes(node.outputs[0])) {
        const mu = out.tensors[next[0]!.params.runningMean!]!;
        for (let o = 0; o < outCh; o++) mu.data[o] = mu.data[o]! - add[o]!;
        continue;
      }
      if (!bKey) {
        bKey = `${node.name}.bias`;
        for (let i = 1; out.tensors[bKey] || model.nodes.some((n) => n.inputs.includes(bKey!) || n.outputs.includes(bKey!)); i++) bKey = `${node.name}.bias_${i}`;
        params.bias = bKey;
        out.tensors[bKey] = tensor([outCh]);
      }
      const b = out.tensors[bKey]!;
      for (let o = 0; o < outCh; o++) b.data[o] = b.data[o]! + add[o]!;
    }
  }
  // 2. slice every member tensor and update the attributes that state channel counts
  for (const g of pruned) {
    const keep = plan.keep[g.name]!;
    for (const m of g.members) {
      const node = out.nodes.find((n) => n.name === m.node)!;
      const key = (node.params as Record<string, string>)[m.slot]!;
      out.tensors[key] = sliceAxis(out.tensors[key]!, m.axis, keep, m.span);
    }
    for (const m of g.members) {
      const node = out.nodes.find((n) => n.name === m.node)!;
      const len = out.tensors[(node.params as Record<string, string>)[m.slot]!]!.shape[m.axis]!;
      if (node.op === 'Conv2d') {
        if (m.role === 'out') node.attrs.outChannels = len;
        else node.attrs.inChannels = len;
      } else if (node.op === 'BatchNorm') node.attrs.numFeatures = len;
      else if (node.op === 'Linear' && m.role === 'in') node.attrs.inFeatures = len;
    }
  }
  const kept = Object.fromEntries(groups.map((g) => [g.name, plan.keep[g.name]?.length ?? g.channels]));
  out.metadata[PLAN_METADATA_KEY] = JSON.stringify({ kept, keep: plan.keep, provenance: plan.provenance ?? {} });
  // post-condition: the result is a consistent model (throws naming the node otherwise)
  inferShapes(out, 1);
  return out;
}

/** Per pruned group: how many channels go and where their folded constants are inexact. */
export function foldingNotes(model: Model, plan: PruningPlan, groups = channelGroups(model)): FoldingNote[] {
  return checkPlan(model, plan, groups).map((g) => {
    const keepSet = new Set(plan.keep[g.name]!);
    const removed = Array.from({ length: g.channels }, (_, c) => c).filter((c) => !keepSet.has(c));
    return { group: g.name, removed: removed.length, inexactAt: removedChannelConstants(model, g, removed).inexactAt };
  });
}

/**
 * The unpruned model with the plan's removed filters zeroed (their conv weights; bias and BN kept):
 * what applyPlan's result computes exactly away from padded borders. Used to measure folding.
 */
export function maskPlan(model: Model, plan: PruningPlan): Model {
  const groups = channelGroups(model);
  const out = cloneModel(model);
  for (const g of checkPlan(model, plan, groups)) {
    const conv = out.nodes.find((n) => n.name === g.name)! as Extract<Node, { op: 'Conv2d' }>;
    const w = out.tensors[conv.params.weight!]!;
    const per = numel(w.shape.slice(1));
    const keepSet = new Set(plan.keep[g.name]!);
    for (let c = 0; c < g.channels; c++) if (!keepSet.has(c)) w.data.fill(0, c * per, (c + 1) * per);
  }
  return out;
}
