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
import { carries, channelGroups, channelSpaces, groupSpace, OP_RULES, type SpaceValue } from './groups.js';
import type { ChannelGroup, PruningPlan } from './types.js';

/** metadata_props key under which applyPlan records the plan in the pruned model */
export const PLAN_METADATA_KEY = 'cmiprune.plan';

/**
 * Validates a plan against the model's groups, coupled ones included (a plan that names a coupled
 * group prunes it as one); returns the groups it prunes. Every tensor a group touches must keep
 * at least one channel.
 */
export function checkPlan(model: Model, plan: PruningPlan, groups = channelGroups(model, 'all')): ChannelGroup[] {
  const byName = new Map(groups.map((g) => [g.name, g]));
  const out: ChannelGroup[] = [];
  for (const [name, keep] of Object.entries(plan.keep)) {
    const g = byName.get(name);
    if (!g) {
      const owner = groups.find((x) => x.coupled?.convs.includes(name));
      if (owner) throw new UserError(`plan: layer '${name}' is coupled with the group '${owner.name}' (through ${owner.coupled!.couplers.slice(0, 3).join(', ')}): plan that group`);
      throw new UserError(`plan: '${name}' is not a conv layer of model '${model.name}'`);
    }
    if (!g.prunable) throw new UserError(`plan: layer '${name}' cannot be pruned: ${g.reason}`);
    if (keep.length === 0) throw new UserError(`plan: layer '${name}' would keep no channel`);
    for (let i = 0; i < keep.length; i++) {
      const k = keep[i]!;
      if (!Number.isInteger(k) || k < 0 || k >= g.channels) throw new UserError(`plan: layer '${name}' keeps channel ${k}, outside 0..${g.channels - 1}`);
      if (i > 0 && k <= keep[i - 1]!) throw new UserError(`plan: layer '${name}': keep indices must be sorted and distinct`);
    }
    for (const m of g.members) {
      if (memberKeep(m, keep).length === 0) {
        throw new UserError(`plan: layer '${name}' keeps none of channels ${m.offset}..${m.offset + m.width - 1}, all that node '${m.node}' carries`);
      }
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

/** Constants per removed class: undefined where a value does not carry the class. */
type ClassConstants = (Float64Array | undefined)[];

/**
 * Per removed class, the constant it carries at each consumer's input (length span per channel:
 * after a Flatten each feature may differ, e.g. a BatchNorm1d between Flatten and Linear), walked
 * over the group's space in graph order: a conv writing the space emits its bias (its filter is
 * gone), passthrough ops map the constant by their rule, an Add sums its inputs' constants, a Pad
 * passes them on and emits its pad value on the channels it adds.
 */
function removedChannelConstants(model: Model, group: ChannelGroup, removed: number[], spaces = channelSpaces(model)) {
  const sp = groupSpace(model, group, spaces);
  const val = (name: string) => sp.values.get(name)!;
  const at = new Map<string, ClassConstants>(); // value name -> per removed class, per feature
  const inexactAt: string[] = [];
  const inexact = (n: Node) => {
    if (!inexactAt.includes(n.name)) inexactAt.push(n.name);
  };
  const atConsumer = new Map<string, { input: SpaceValue; values: ClassConstants }>();
  for (const step of sp.steps) {
    const node = step.node;
    if (step.as === 'out') {
      const out = val(node.outputs[0]!);
      const biasKey = (node.params as Record<string, string | undefined>).bias;
      const bias = biasKey ? model.tensors[biasKey]!.data : undefined;
      at.set(out.name, removed.map((j) => (carries(out, j) ? Float64Array.of(bias ? bias[j - out.offset]! : 0) : undefined)));
      continue;
    }
    const input = val(node.inputs[0]!);
    const vin = at.get(input.name)!;
    if (step.as === 'in') {
      atConsumer.set(node.name, { input, values: vin });
      const reader = OP_RULES[node.op];
      if (reader.role !== 'producer' && reader.role !== 'consumer') throw new Error(`surgery: ${node.name} reads channels but is a ${reader.role}`);
      if (reader.inexactFold(node) && vin.some((v) => v?.some((x) => x !== 0))) inexact(node);
      continue;
    }
    const out = val(node.outputs[0]!);
    const rule = OP_RULES[node.op];
    if (rule.role === 'couple') {
      const ins = node.inputs.map((v) => at.get(v)!);
      at.set(out.name, removed.map((j, r) => rule.constant(model, node, j, ins.map((c) => c[r]), { input: input.offset, output: out.offset }, carries(out, j), () => inexact(node))));
    } else if (rule.role === 'flatten') {
      const s = inferShapes(model, 1).get(input.name)!;
      const hw = s[2]! * s[3]!;
      at.set(out.name, vin.map((v) => v && Float64Array.from({ length: v.length * hw }, (_, f) => v[Math.floor(f / hw)]!)));
    } else if (rule.role === 'passthrough') {
      at.set(
        out.name,
        vin.map(
          (v, r) =>
            v &&
            v.map((x, f) => {
              // after a Flatten, per-feature params (BatchNorm1d) index feature c*span + f
              const c = removed[r]! - input.offset;
              const y = rule.constant(model, node, input.span === 1 ? c : c * input.span + f, x);
              if (!y.exact) inexact(node);
              return y.value;
            }),
        ),
      );
    }
  }
  return { atConsumer, inexactAt };
}

/** The tensor indices of a member that survive: the kept classes it carries, shifted by its offset. */
/** A group's kept channels (group indices) as indices into one member tensor's channel axis. */
export function memberKeep(m: { offset: number; width: number }, keep: number[]): number[] {
  return keep.filter((j) => j >= m.offset && j < m.offset + m.width).map((j) => j - m.offset);
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
  const groups = channelGroups(model, 'all');
  const pruned = checkPlan(model, plan, groups);
  const spaces = channelSpaces(model);
  const out = cloneModel(model);
  // 1. fold constants, computed from the ORIGINAL parameters, into consumers' biases (all of a
  //    consumer's outputs; its own pruning, if any, slices the bias afterwards)
  for (const g of pruned) {
    const keep = plan.keep[g.name]!;
    const keepSet = new Set(keep);
    const removed = Array.from({ length: g.channels }, (_, c) => c).filter((c) => !keepSet.has(c));
    const { atConsumer } = removedChannelConstants(model, g, removed, spaces);
    for (const [name, { input, values }] of atConsumer) {
      const node = out.nodes.find((n) => n.name === name)!;
      if (values.every((v) => !v || v.every((x) => x === 0))) continue;
      const span = input.span;
      const wKey = (node.params as Record<string, string>).weight!;
      const w = model.tensors[wKey]!; // original weights: [O, I, kh, kw] or [O, F]
      const outCh = w.shape[0]!;
      const perIn = numel(w.shape.slice(2)); // kernel area (conv) or 1 (Linear)
      const inDim = w.shape[1]!;
      const add = new Float64Array(outCh);
      for (let o = 0; o < outCh; o++) {
        let s = 0;
        removed.forEach((j, r) => {
          const v = values[r];
          if (!v) return; // this input does not carry class j
          const c = j - input.offset;
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
      out.tensors[key] = sliceAxis(out.tensors[key]!, m.axis, memberKeep(m, keep), m.span);
      // a bias step 1 created for a bias-free conv (a consumer of another group, e.g. a
      // pre-activation block's second conv writing the stream) is no member: it loses the same
      // filters as the conv's weight
      const created = (node.params as Record<string, string | undefined>).bias;
      const original = (model.nodes.find((n) => n.name === m.node)!.params as Record<string, string | undefined>).bias;
      if (node.op === 'Conv2d' && m.role === 'out' && m.slot === 'weight' && created !== undefined && original === undefined) {
        out.tensors[created] = sliceAxis(out.tensors[created]!, 0, memberKeep(m, keep), 1);
      }
    }
    // couplers whose attributes state channel counts (a Pad's channel padding)
    const sp = groupSpace(model, g, spaces);
    for (const c of sp.couplers) {
      const rule = OP_RULES[c.op];
      if (rule.role !== 'couple' || !rule.resize) continue;
      const node = out.nodes.find((n) => n.name === c.name)!;
      node.attrs = rule.resize(node, keep, sp.values.get(c.inputs[0]!)!, sp.values.get(c.outputs[0]!)!) as typeof node.attrs;
    }
    // every member's node states its new channel count by its rule
    for (const m of g.members) {
      const node = out.nodes.find((n) => n.name === m.node)!;
      const len = out.tensors[(node.params as Record<string, string>)[m.slot]!]!.shape[m.axis]!;
      const rule = OP_RULES[node.op];
      if ('setCount' in rule && rule.setCount) rule.setCount(node, m.role, len);
    }
  }
  const kept = Object.fromEntries(groups.map((g) => [g.name, plan.keep[g.name]?.length ?? g.channels]));
  out.metadata[PLAN_METADATA_KEY] = JSON.stringify({ kept, keep: plan.keep, provenance: plan.provenance ?? {} });
  // post-condition: the result is a consistent model (throws naming the node otherwise)
  inferShapes(out, 1);
  return out;
}

/** Per pruned group: how many channels go and where their folded constants are inexact. */
export function foldingNotes(model: Model, plan: PruningPlan, groups = channelGroups(model, 'all')): FoldingNote[] {
  return checkPlan(model, plan, groups).map((g) => {
    const keepSet = new Set(plan.keep[g.name]!);
    const removed = Array.from({ length: g.channels }, (_, c) => c).filter((c) => !keepSet.has(c));
    return { group: g.name, removed: removed.length, inexactAt: removedChannelConstants(model, g, removed).inexactAt };
  });
}

/**
 * The unpruned model with the plan's removed filters zeroed (the conv weights of every conv writing
 * the group's channels; biases and BN kept): what applyPlan's result computes exactly away from
 * padded borders. Used to measure folding.
 */
export function maskPlan(model: Model, plan: PruningPlan): Model {
  const groups = channelGroups(model, 'all');
  const out = cloneModel(model);
  for (const g of checkPlan(model, plan, groups)) {
    const keepSet = new Set(plan.keep[g.name]!);
    for (const m of g.members) {
      const node = out.nodes.find((n) => n.name === m.node)!;
      if (node.op !== 'Conv2d' || m.role !== 'out' || m.slot !== 'weight') continue;
      const w = out.tensors[node.params.weight!]!;
      const per = numel(w.shape.slice(1));
      for (let c = 0; c < m.width; c++) if (!keepSet.has(c + m.offset)) w.data.fill(0, c * per, (c + 1) * per);
    }
  }
  return out;
}
