// Channel groups: what changes together when one output channel of a conv goes. Torch-Pruning's
// dependency groups, but static and exact on the closed IR: every op type has exactly one rule in
// OP_RULES (a Record over OpType, so a new op does not compile without its rule; the rule's role
// decides which hooks it must give, and the analysis and the surgery dispatch only through them),
// and a pattern the rules do not cover is reported as not prunable with the node named, never
// guessed.
//
// The analysis works on channel spaces: the values whose channels are tied together. A conv's
// output starts a space; passthrough ops and Flatten carry it on; an Add ties its inputs and output
// into one space (a residual stream); a channel Pad ties its input to its output shifted by the
// padding (input channel c is output channel c + before). Every channel of every value of a space
// is one of the space's classes (class = channel + the value's offset): removing class j removes
// channel j - offset from every value that carries it, from every conv writing those values and
// every consumer reading them. A space with one conv and no Add or Pad is one conv's group.
import { consumers, convUnits, type ConvUnit } from '../ir/graph.js';
import type { BatchNormNode, Model, Node, OpType } from '../ir/model.js';
import { inferShapes } from '../ir/shapes.js';
import { UserError } from '../util/errors.js';
import type { ChannelGroup, GroupMember } from './types.js';

/**
 * How an op treats the channels arriving at its (first) input:
 * - producer: reads them as input channels (weight axis 1) and emits new channels of its own,
 *   which form a group (a conv);
 * - passthrough: channel c in is channel c out, with optional per-channel parameters (axis 0);
 * - consumer: reads them (weight axis 1) and emits something that is not a channel group (Linear);
 * - flatten: channel c becomes the span of features [c*HW, (c+1)*HW);
 * - couple: ties the channels of several tensors together (Add: residual coupling; Pad: shifted by its
 *   channel padding), prunable only as one coupled group (--residual all).
 */
export type OpRole = 'producer' | 'passthrough' | 'consumer' | 'flatten' | 'couple';

/** The value a removed channel carries after an op, given the value before it, and whether that is exact at every pixel. */
export type ConstantRule = (model: Model, node: Node, channel: number, value: number) => { value: number; exact: boolean };

/** A channel-reading or -writing op: sets the attribute that states a member tensor's channel count after surgery. */
type SetCount = (node: Node, role: 'in' | 'out', channels: number) => void;

/**
 * One rule per op, discriminated by role: every hook the analysis (here) and the surgery
 * (surgery.ts) dispatch on is the rule's, so an op cannot take part without saying what it does.
 */
export type OpRule =
  | {
      role: 'producer' | 'consumer';
      setCount: SetCount;
      /** why this node's channels cannot be cut on their own (a grouped conv), naming it */
      refusal?: (node: Node) => string | undefined;
      /** whether a constant input map gives an inexact fold at the output's borders (zero padding reads zeros, not the constant) */
      inexactFold: (node: Node) => boolean;
    }
  | {
      role: 'passthrough';
      /** parameter slots indexed by channel along axis 0 */
      channelSlots?: readonly string[];
      constant: ConstantRule;
      setCount?: SetCount;
    }
  | { role: 'flatten' }
  | {
      role: 'couple';
      /** whether this node ties channels at all (a spatial-only Pad just carries them) */
      couples: (node: Node) => boolean;
      /** input i's channel c is output channel c + inputOffset(node, i) */
      inputOffset: (node: Node, input: number) => number;
      /** the output merges its inputs element-wise, which must share one shape (Add); its output is a coupled group's tap */
      merges: boolean;
      /** why a coupled space is refused under --residual inner (after the node's label) */
      innerReason: string;
      /**
       * the constant a removed class j carries at the output, from the constants at the inputs
       * (undefined where an input does not carry j); `carried`: the output carries j
       */
      constant: (model: Model, node: Node, j: number, inputs: readonly (Float64Array | undefined)[], offsets: { input: number; output: number }, carried: boolean, inexact: () => void) => Float64Array | undefined;
      /** after surgery, the node's attributes for the kept classes (e.g. a Pad's channel padding) */
      resize?: (node: Node, keep: readonly number[], input: SpaceValue, output: SpaceValue) => Node['attrs'];
    };

const identity = (_m: Model, _n: Node, _c: number, value: number) => ({ value, exact: true });

function bnAffine(model: Model, node: Node, c: number, x: number): { value: number; exact: boolean } {
  const bn = node as BatchNormNode;
  const p = (slot: keyof BatchNormNode['params']) => model.tensors[bn.params[slot]!]!.data[c]!;
  // y = gamma (x - mu) / sqrt(var + eps) + beta, in float64
  return { value: (p('weight') * (x - p('runningMean'))) / Math.sqrt(p('runningVar') + bn.attrs.eps) + p('bias'), exact: true };
}

type PadNode = Extract<Node, { op: 'Pad' }>;
type ConvNode = Extract<Node, { op: 'Conv2d' }>;

export const OP_RULES: Readonly<Record<OpType, OpRule>> = {
  Conv2d: {
    role: 'producer',
    setCount: (n, role, c) => {
      if (role === 'out') (n as ConvNode).attrs.outChannels = c;
      else (n as ConvNode).attrs.inChannels = c;
    },
    refusal: (n) => ((n as ConvNode).attrs.groups !== 1 ? `${label(n)} is a grouped conv (groups ${(n as ConvNode).attrs.groups}): its input and output channels are coupled` : undefined),
    inexactFold: (n) => (n as ConvNode).attrs.padding[0] > 0 || (n as ConvNode).attrs.padding[1] > 0,
  },
  BatchNorm: {
    role: 'passthrough',
    channelSlots: ['weight', 'bias', 'runningMean', 'runningVar'],
    constant: bnAffine,
    setCount: (n, _role, c) => void ((n as BatchNormNode).attrs.numFeatures = c),
  },
  Relu: { role: 'passthrough', constant: (_m, _n, _c, v) => ({ value: Math.max(0, v), exact: true }) },
  // the max of a constant window is the constant, padding (-inf) or not
  MaxPool: { role: 'passthrough', constant: identity },
  // zero padding counted in the average lowers border outputs of a constant map
  AvgPool: {
    role: 'passthrough',
    constant: (_m, n, _c, v) => {
      const a = (n as Extract<Node, { op: 'AvgPool' }>).attrs;
      return { value: v, exact: v === 0 || a.countIncludePad === false || (a.padding[0] === 0 && a.padding[1] === 0) };
    },
  },
  GlobalAvgPool: { role: 'passthrough', constant: identity },
  Flatten: { role: 'flatten' },
  Linear: {
    role: 'consumer',
    setCount: (n, role, c) => {
      if (role === 'in') (n as Extract<Node, { op: 'Linear' }>).attrs.inFeatures = c;
    },
    inexactFold: () => false,
  },
  // a residual sum: every input's channel c is the output's channel c; a removed class carries the
  // sum of its inputs' constants
  Add: {
    role: 'couple',
    couples: () => true,
    inputOffset: () => 0,
    merges: true,
    innerReason: 'couples these channels with another tensor (residual connection)',
    constant: (_m, _n, _j, ins) => (ins[0] ? ins[0].map((_x, f) => ins.reduce((s, c) => s + c![f]!, 0)) : undefined),
  },
  // a spatial subsample keeps channel c as channel c; a constant map stays that constant
  Slice: { role: 'passthrough', constant: identity },
  // padding channels renumbers them (zero channels of a ResNet option-A shortcut): the input's
  // channel c is the output's c + before; spatial padding makes a constant map's border the pad value
  Pad: {
    role: 'couple',
    couples: (n) => (n as PadNode).attrs.pads[1] > 0 || (n as PadNode).attrs.pads[5] > 0,
    inputOffset: (n) => (n as PadNode).attrs.pads[1],
    merges: false,
    innerReason: 'renumbers these channels',
    constant: (_m, n, _j, ins, _o, carried, inexact) => {
      const a = (n as PadNode).attrs;
      // a carried class keeps its constant (the border becomes the pad value); a class the Pad adds is the pad value
      if (ins[0]) {
        return ins[0].map((v) => {
          if (!(v === a.value || [2, 3, 6, 7].every((i) => a.pads[i] === 0))) inexact();
          return v;
        });
      }
      return carried ? Float64Array.of(a.value) : undefined;
    },
    // as many channels on each side as the plan keeps of the ones it added
    resize: (n, keep, vin, vout) => {
      const a = (n as PadNode).attrs;
      const pads = [...a.pads] as typeof a.pads;
      pads[1] = keep.filter((j) => j >= vout.offset && j < vin.offset).length;
      pads[5] = keep.filter((j) => j >= vin.offset + vin.width && j < vout.offset + vout.width).length;
      return { ...a, pads };
    },
  },
};

/** Whether residual couplings are pruned: 'inner' refuses coupled spaces, 'all' prunes each as one group. */
export type ResidualMode = 'inner' | 'all';
export const RESIDUAL_MODES: readonly ResidualMode[] = ['inner', 'all'];

/** A value carrying a space's channels. */
export interface SpaceValue {
  name: string;
  /** class of this value's channel 0: channel c is class c + offset */
  offset: number;
  /** channels of this value */
  width: number;
  /** features per channel: 1 for [N, C, H, W], H*W after a Flatten */
  span: number;
}

/**
 * A node touching a space, in graph order: 'out' a conv writing it (weight axis 0), 'in' a conv or
 * Linear reading it (weight axis 1), 'through' an op whose inputs and output both carry it.
 */
export interface SpaceStep {
  node: Node;
  as: 'out' | 'in' | 'through';
}

export interface ChannelSpace {
  /** number of classes: every channel any value of the space carries, classes 0..channels-1 */
  channels: number;
  values: Map<string, SpaceValue>;
  steps: SpaceStep[];
  /** convs writing the space, in graph order */
  producers: Node[];
  /** Adds and Pads tying the space's values together */
  couplers: Node[];
  /** why the space cannot be pruned, naming the node or value; undefined when it can */
  refusal?: string;
}

const label = (n: Node) => `node '${n.name}' (${n.op})`;

/**
 * Every channel space of the model, keyed by each of its values. Weighted union-find over values:
 * rel(v) is the class of v's channel 0 relative to its root, so a Pad's input sits at
 * rel(output) + before and an Add's inputs at its output's rel; a cycle of Adds and Pads that
 * would put one channel at two classes is refused naming the node.
 */
export function channelSpaces(model: Model, shapes = inferShapes(model, 1)): Map<string, ChannelSpace> {
  const parent = new Map<string, string>();
  const rel = new Map<string, number>();
  const span = new Map<string, number>();
  const refusals: { value: string; text: string }[] = [];
  const steps: { node: Node; as: SpaceStep['as']; value: string }[] = [];
  const find = (v: string): { root: string; off: number } => {
    let off = 0;
    let r = v;
    while (parent.get(r) !== r) {
      off += rel.get(r)!;
      r = parent.get(r)!;
    }
    return { root: r, off };
  };
  const register = (v: string, why?: string) => {
    if (parent.has(v)) return;
    parent.set(v, v);
    rel.set(v, 0);
    span.set(v, 1);
    if (why) refusals.push({ value: v, text: why });
  };
  // rel(x) = rel(y) + d; false when x and y are already tied at another distance
  const tie = (x: string, y: string, d: number): boolean => {
    const a = find(x);
    const b = find(y);
    if (a.root === b.root) return a.off === b.off + d;
    parent.set(a.root, b.root);
    rel.set(a.root, b.off + d - a.off);
    return true;
  };
  for (const input of model.inputs) register(input.name, `value '${input.name}' is a model input: its channels cannot change`);
  const producedBy = new Map<string, Node>();
  for (const n of model.nodes) for (const o of n.outputs) producedBy.set(o, n);
  // a value entering a space that no conv or channel op wrote (a Linear's output, say)
  const known = (v: string, reader: Node) =>
    register(v, `value '${v}' reaches ${label(reader)} from ${producedBy.get(v) ? label(producedBy.get(v)!) : 'outside the graph'}, which does not carry conv channels`);

  const paramUsers = new Map<string, number>();
  for (const n of model.nodes) for (const key of Object.values(n.params as Record<string, string>)) paramUsers.set(key, (paramUsers.get(key) ?? 0) + 1);
  const shared = (n: Node) => Object.values(n.params as Record<string, string>).find((k) => paramUsers.get(k)! > 1);

  for (const node of model.nodes) {
    const rule = OP_RULES[node.op];
    const out = node.outputs[0]!;
    for (const v of node.inputs) known(v, node);
    const refuse = (values: string[], text: string) => values.forEach((value) => refusals.push({ value, text }));
    if (!rule) {
      register(out);
      refuse([...node.inputs, out], `${label(node)} has no channel rule`);
      continue;
    }
    const sharedKey = shared(node);
    if (rule.role === 'producer' || rule.role === 'consumer') {
      const x = node.inputs[0]!;
      steps.push({ node, as: 'in', value: x });
      if (node.inputs.length !== 1) refuse(node.inputs, `${label(node)} reads channels on an input the rules do not cover`);
      if (sharedKey) refuse([x], `${label(node)} shares its tensor '${sharedKey}' with another node`);
      const own = rule.refusal?.(node);
      if (own) refuse([x], own);
      if (rule.role === 'producer') {
        register(out);
        steps.push({ node, as: 'out', value: out });
        if (sharedKey) refuse([out], `${label(node)} shares its tensor '${sharedKey}' with another node`);
        if (own) refuse([out], own);
      }
      continue;
    }
    register(out);
    steps.push({ node, as: 'through', value: out });
    if (sharedKey) refuse([out], `${label(node)} shares its tensor '${sharedKey}' with another node`);
    const x = node.inputs[0]!;
    switch (rule.role) {
      case 'passthrough':
      case 'flatten': {
        if (node.inputs.length !== 1) refuse([...node.inputs, out], `${label(node)} reads channels on an input the rules do not cover`);
        tie(x, out, 0);
        if (rule.role === 'flatten') {
          const s = shapes.get(x)!;
          if (s.length !== 4) refuse([x], `${label(node)} flattens a ${s.length}-d value; channel spans need [N,C,H,W]`);
          else span.set(out, span.get(x)! * s[2]! * s[3]!);
        } else span.set(out, span.get(x)!);
        break;
      }
      case 'couple': {
        const s0 = JSON.stringify(shapes.get(x));
        node.inputs.forEach((v, i) => {
          if (rule.merges && JSON.stringify(shapes.get(v)) !== s0) refuse([v, out], `${label(node)} merges values of different shapes`);
          if (!tie(v, out, rule.inputOffset(node, i))) refuse([out], `${label(node)} ties channels that are already tied at another offset`);
        });
        span.set(out, 1);
        for (const v of node.inputs) if (span.get(v) !== 1) refuse([out], `${label(node)} couples flattened features`);
        break;
      }
    }
  }
  for (const o of model.outputs) if (parent.has(o)) refusals.push({ value: o, text: `value '${o}' is a model output: its channels cannot change` });

  // gather spaces by root, offsets normalised so classes start at 0
  const byRoot = new Map<string, ChannelSpace>();
  const minOff = new Map<string, number>();
  for (const v of parent.keys()) {
    const { root, off } = find(v);
    minOff.set(root, Math.min(minOff.get(root) ?? Infinity, off));
  }
  const spaceOf = new Map<string, ChannelSpace>();
  for (const v of parent.keys()) {
    const { root, off } = find(v);
    let sp = byRoot.get(root);
    if (!sp) {
      sp = { channels: 0, values: new Map(), steps: [], producers: [], couplers: [] };
      byRoot.set(root, sp);
    }
    const s = shapes.get(v)!;
    const sv = span.get(v)!;
    const width = s.length >= 2 ? Math.floor(s[1]! / sv) : 0;
    const value: SpaceValue = { name: v, offset: off - minOff.get(root)!, width, span: sv };
    sp.values.set(v, value);
    sp.channels = Math.max(sp.channels, value.offset + width);
    spaceOf.set(v, sp);
  }
  for (const st of steps) {
    const sp = spaceOf.get(st.value)!;
    sp.steps.push({ node: st.node, as: st.as });
    if (st.as === 'out') sp.producers.push(st.node);
    if (st.as === 'through' && couples(st.node)) sp.couplers.push(st.node);
  }
  for (const r of refusals) {
    const sp = spaceOf.get(r.value);
    if (sp && sp.refusal === undefined) sp.refusal = r.text;
  }
  for (const sp of new Set(spaceOf.values())) {
    if (sp.refusal === undefined && sp.producers.length > 0 && !sp.steps.some((s) => s.as === 'in')) {
      sp.refusal = `the channels of ${label(sp.producers[0]!)} reach no consumer`;
    }
  }
  return spaceOf;
}

/** Whether a node ties channels together: an Add, or a Pad that adds channels (a spatial-only Pad just carries them). */
function couples(n: Node): boolean {
  const rule = OP_RULES[n.op];
  return rule.role === 'couple' && rule.couples(n);
}

/** Whether removing class j touches value v. */
export const carries = (v: SpaceValue, j: number) => j >= v.offset && j < v.offset + v.width;

/** The members (tensor axes that lose entries) of a space, in graph order. */
function spaceMembers(model: Model, sp: ChannelSpace): GroupMember[] {
  const members: GroupMember[] = [];
  const at = (value: string) => sp.values.get(value)!;
  for (const s of sp.steps) {
    const params = s.node.params as Record<string, string | undefined>;
    if (s.as === 'out') {
      const v = at(s.node.outputs[0]!);
      for (const slot of ['weight', 'bias']) if (params[slot]) members.push({ node: s.node.name, slot, axis: 0, span: 1, role: 'out', offset: v.offset, width: v.width });
    } else if (s.as === 'in') {
      const v = at(s.node.inputs[0]!);
      members.push({ node: s.node.name, slot: 'weight', axis: 1, span: v.span, role: 'in', offset: v.offset, width: v.width });
    } else {
      const v = at(s.node.inputs[0]!);
      const rule = OP_RULES[s.node.op];
      for (const slot of rule.role === 'passthrough' ? (rule.channelSlots ?? []) : []) if (params[slot]) members.push({ node: s.node.name, slot, axis: 0, span: v.span, role: 'out', offset: v.offset, width: v.width });
    }
  }
  return members;
}

/**
 * The value whose maps a coupled group's criteria read: the output of the last Add that carries
 * every class (after its ReLU when that is the Add's only reader), else the last full-width value.
 */
function coupledTap(model: Model, sp: ChannelSpace, cons: Map<string, Node[]>): string | undefined {
  const full = (v: string) => {
    const x = sp.values.get(v);
    return x !== undefined && x.offset === 0 && x.width === sp.channels && x.span === 1;
  };
  const merges = (n: Node) => {
    const rule = OP_RULES[n.op];
    return rule.role === 'couple' && rule.merges;
  };
  const adds = sp.steps.filter((s) => merges(s.node) && full(s.node.outputs[0]!));
  if (adds.length > 0) {
    const out = adds[adds.length - 1]!.node.outputs[0]!;
    const next = cons.get(out);
    return next?.length === 1 && next[0]!.op === 'Relu' && !model.outputs.includes(out) ? next[0]!.outputs[0]! : out;
  }
  const through = sp.steps.filter((s) => s.as !== 'in' && full(s.node.outputs[0]!));
  return through.length > 0 ? through[through.length - 1]!.node.outputs[0]! : undefined;
}

/**
 * The Add or Pad this conv's own channels reach first (breadth-first through the ops that carry
 * them), the one an 'inner' refusal names: the space's first coupler in graph order is another
 * block's Add for every conv of a stream but the first.
 */
function firstCoupler(conv: Node, cons: Map<string, Node[]>): Node | undefined {
  const queue = [conv.outputs[0]!];
  const seen = new Set(queue);
  while (queue.length > 0) {
    for (const n of cons.get(queue.shift()!) ?? []) {
      const role = OP_RULES[n.op]?.role;
      if (couples(n)) return n;
      if ((role === 'passthrough' || role === 'flatten' || role === 'couple') && !seen.has(n.outputs[0]!)) {
        seen.add(n.outputs[0]!);
        queue.push(n.outputs[0]!);
      }
    }
  }
  return undefined;
}

/**
 * The group of every conv in network order; unprunable ones carry the reason. Under 'inner' a
 * conv whose channels meet another tensor's in an Add (or are renumbered by a Pad) is refused
 * naming that node; under 'all' each such space is one group, named after its first conv, whose
 * channels are the space's classes.
 */
export function channelGroups(model: Model, residual: ResidualMode = 'inner'): ChannelGroup[] {
  const shapes = inferShapes(model, 1);
  const cons = consumers(model);
  const units = new Map(convUnits(model).map((u) => [u.name, u]));
  const spaces = channelSpaces(model, shapes);
  const groups: ChannelGroup[] = [];
  for (const conv of model.nodes) {
    if (conv.op !== 'Conv2d') continue;
    const sp = spaces.get(conv.outputs[0]!)!;
    const coupled = sp.producers.length > 1 || sp.couplers.length > 0;
    const unit = units.get(conv.name)!;
    if (coupled && residual === 'all' && sp.producers[0] !== conv) continue; // a member of its space's group
    let reason = sp.refusal;
    // under 'inner' the coupling is the reason, whatever else the space meets
    if (coupled && residual === 'inner') {
      const c = firstCoupler(conv, cons) ?? sp.couplers[0]!;
      const rule = OP_RULES[c.op];
      reason = `${label(c)} ${rule.role === 'couple' ? rule.innerReason : 'couples these channels'}: prunable only with --residual all`;
    }
    const asGroup = coupled && residual === 'all';
    const tap = asGroup ? coupledTap(model, sp, cons) : unit.tap;
    if (asGroup && tap === undefined && reason === undefined) reason = `no value of the coupled group of ${label(conv)} carries all ${sp.channels} of its channels`;
    const members = spaceMembers(model, sp);
    groups.push({
      name: conv.name,
      index: unit.index,
      channels: asGroup ? sp.channels : conv.attrs.outChannels,
      tap: tap ?? unit.tap,
      members,
      consumers: sp.steps.filter((s) => s.as === 'in').map((s) => s.node.name),
      prunable: reason === undefined,
      ...(reason !== undefined ? { reason } : {}),
      ...(asGroup ? { coupled: { convs: sp.producers.map((p) => p.name), couplers: sp.couplers.map((c) => c.name) } } : {}),
    });
  }
  return groups;
}

/** The space of a group (the space its named conv writes). */
export function groupSpace(model: Model, group: ChannelGroup, spaces = channelSpaces(model)): ChannelSpace {
  const conv = model.nodes.find((n) => n.name === group.name);
  if (!conv || conv.op !== 'Conv2d') throw new UserError(`no conv node named '${group.name}'`);
  return spaces.get(conv.outputs[0]!)!;
}

/**
 * The conv unit each group's criteria read (unit.name === group.name): a plain group's own unit; a
 * coupled group's first conv with the group's tap and channel count.
 */
export function groupUnits(model: Model, groups: ChannelGroup[]): ConvUnit[] {
  const all = new Map(convUnits(model).map((u) => [u.name, u]));
  return groups.map((g) => {
    const u = all.get(g.name);
    if (!u) throw new UserError(`group '${g.name}': no conv unit of that name in model '${model.name}'`);
    if (!g.coupled) {
      if (u.channels !== g.channels) throw new UserError(`group '${g.name}': ${g.channels} channels, its conv has ${u.channels}`);
      return u;
    }
    return { name: g.name, index: u.index, conv: u.conv, tap: g.tap, channels: g.channels };
  });
}

/**
 * The first `keep` channels of an order, sorted (a plan's keep list). With a coupled group, a
 * tensor that would keep none of the channels it carries (an early ResNet stage whose channels all
 * ranked low) keeps its best-ranked one as well, so the plan is valid (surgery needs every tensor
 * to keep a channel).
 */
export function keptChannels(order: readonly number[], keep: number, group?: ChannelGroup): number[] {
  const kept = order.slice(0, keep);
  if (group?.coupled) {
    const set = new Set(kept);
    for (const m of group.members) {
      if (kept.some((j) => j >= m.offset && j < m.offset + m.width)) continue;
      const best = order.find((j) => j >= m.offset && j < m.offset + m.width && !set.has(j));
      if (best !== undefined) {
        kept.push(best);
        set.add(best);
      }
    }
  }
  return kept.sort((a, b) => a - b);
}

/**
 * A coupled group's order for the uniform allocation ("every layer loses the same fraction"):
 * the group's channels fall into strata by the members that carry them (an option-A stream: the
 * channels every stage carries, those of the later stages only, those of the last stage only),
 * and any prefix of the result takes from each stratum in proportion to its size, best first by
 * `order` within it. So every conv of the group loses the same fraction, as every other layer
 * does; the plain order would let the one reading at the group's last Add choose between stages,
 * which is an allocation, not a ranking. Other groups: `order` unchanged.
 */
export function stratifiedOrder(order: readonly number[], group: ChannelGroup): number[] {
  if (!group.coupled) return [...order];
  const strata = new Map<string, number[]>();
  for (const j of order) {
    const sig = group.members.map((m) => (j >= m.offset && j < m.offset + m.width ? '1' : '0')).join('');
    const s = strata.get(sig);
    if (s) s.push(j);
    else strata.set(sig, [j]);
  }
  const lists = [...strata.values()];
  if (lists.length === 1) return [...order];
  const rank = new Map(order.map((j, i) => [j, i]));
  const taken = lists.map(() => 0);
  const out: number[] = [];
  for (let m = 1; m <= order.length; m++) {
    // the stratum furthest below its share of the first m channels; ties: its next channel ranks first
    let best = -1;
    let bestDeficit = -Infinity;
    for (let s = 0; s < lists.length; s++) {
      if (taken[s]! >= lists[s]!.length) continue;
      const deficit = (m * lists[s]!.length) / order.length - taken[s]!;
      const better = deficit > bestDeficit + 1e-12 || (Math.abs(deficit - bestDeficit) <= 1e-12 && rank.get(lists[s]![taken[s]!]!)! < rank.get(lists[best]![taken[best]!]!)!);
      if (better) (best = s), (bestDeficit = deficit);
    }
    out.push(lists[best]![taken[best]!++]!);
  }
  return out;
}

/** Rankings whose coupled groups' orders are stratified (stratifiedOrder): what the uniform allocation prunes by. */
export function uniformRankings<R extends { order: number[] }>(rankings: ReadonlyMap<string, R>, groups: readonly ChannelGroup[]): Map<string, R> {
  const byName = new Map(groups.map((g) => [g.name, g]));
  return new Map(
    [...rankings].map(([name, r]) => {
      const g = byName.get(name);
      return [name, g?.coupled ? { ...r, order: stratifiedOrder(r.order, g) } : r];
    }),
  );
}
