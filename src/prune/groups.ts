// Channel groups: what changes together when one output channel of a conv goes. Torch-Pruning's
// dependency groups, but static and exact on the closed IR: every op type has exactly one rule in
// OP_RULES (a Record over OpType, so a new op does not compile without its rule), and a pattern
// the rules do not cover is reported as not prunable with the node named, never guessed.
import { consumers, convUnits } from '../ir/graph.js';
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
 * - couple: ties the channels of several tensors together (Add: residual coupling, not yet prunable).
 */
export type OpRole = 'producer' | 'passthrough' | 'consumer' | 'flatten' | 'couple';

export interface OpRule {
  role: OpRole;
  /** passthrough ops: parameter slots indexed by channel along axis 0 */
  channelSlots?: readonly string[];
  /**
   * passthrough ops: the value a removed channel carries after this op, given the value before it
   * (removed channels are constant maps), and whether that is exact at every pixel
   */
  constant?: (model: Model, node: Node, channel: number, value: number) => { value: number; exact: boolean };
}

const identity = (_m: Model, _n: Node, _c: number, value: number) => ({ value, exact: true });

function bnAffine(model: Model, node: Node, c: number, x: number): { value: number; exact: boolean } {
  const bn = node as BatchNormNode;
  const p = (slot: keyof BatchNormNode['params']) => model.tensors[bn.params[slot]!]!.data[c]!;
  // y = gamma (x - mu) / sqrt(var + eps) + beta, in float64
  return { value: (p('weight') * (x - p('runningMean'))) / Math.sqrt(p('runningVar') + bn.attrs.eps) + p('bias'), exact: true };
}

export const OP_RULES: Readonly<Record<OpType, OpRule>> = {
  Conv2d: { role: 'producer' },
  BatchNorm: { role: 'passthrough', channelSlots: ['weight', 'bias', 'runningMean', 'runningVar'], constant: bnAffine },
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
  Linear: { role: 'consumer' },
  Add: { role: 'couple' },
  // a spatial subsample keeps channel c as channel c; a constant map stays that constant
  Slice: { role: 'passthrough', constant: identity },
  // padding channels renumbers them (zero channels of a ResNet option-A shortcut): refused for now
  Pad: { role: 'couple' },
};

/** One step of a channel walk: a node the group's channels reach and how. */
export interface WalkStep {
  node: Node;
  role: OpRole;
  /** features per channel at this node's input (1 before a Flatten, H*W after) */
  span: number;
}

export interface ChannelWalk {
  steps: WalkStep[];
  /** why the group cannot be pruned, naming the node; undefined when it can */
  refusal?: string;
}

const label = (n: Node) => `node '${n.name}' (${n.op})`;

/**
 * Follows the output channels of `conv` through passthrough and flatten ops to every consumer,
 * breadth-first in graph order. Stops at the first pattern the rules refuse.
 */
export function walkChannels(model: Model, convName: string, shapes = inferShapes(model, 1), cons = consumers(model)): ChannelWalk {
  const conv = model.nodes.find((n) => n.name === convName);
  if (!conv || conv.op !== 'Conv2d') throw new UserError(`no conv node named '${convName}'`);
  const steps: WalkStep[] = [];
  if (conv.attrs.groups !== 1) return { steps, refusal: `${label(conv)} is a grouped conv (groups ${conv.attrs.groups}): its channels are coupled` };
  const paramUsers = new Map<string, number>();
  for (const n of model.nodes) for (const key of Object.values(n.params as Record<string, string>)) paramUsers.set(key, (paramUsers.get(key) ?? 0) + 1);
  const shared = (n: Node) => Object.values(n.params as Record<string, string>).find((k) => paramUsers.get(k)! > 1);
  if (shared(conv)) return { steps, refusal: `${label(conv)} shares its tensor '${shared(conv)}' with another node` };

  const queue: { value: string; span: number }[] = [{ value: conv.outputs[0], span: 1 }];
  const seen = new Set<string>();
  while (queue.length > 0) {
    const { value, span } = queue.shift()!;
    if (seen.has(value)) continue;
    seen.add(value);
    if (model.outputs.includes(value)) return { steps, refusal: `value '${value}' is a model output: its channels cannot change` };
    for (const node of cons.get(value) ?? []) {
      const rule = OP_RULES[node.op];
      if (!rule) return { steps, refusal: `${label(node)} has no channel rule` };
      if (rule.role === 'couple') {
        return { steps, refusal: `${label(node)} couples these channels with another tensor (residual connection): not prunable yet` };
      }
      if (node.inputs.length !== 1 || node.inputs[0] !== value) {
        return { steps, refusal: `${label(node)} reads the channels on an input the rules do not cover` };
      }
      if (shared(node)) return { steps, refusal: `${label(node)} shares its tensor '${shared(node)}' with another node` };
      switch (rule.role) {
        case 'producer':
          if (node.op === 'Conv2d' && node.attrs.groups !== 1) {
            return { steps, refusal: `${label(node)} is a grouped conv (groups ${node.attrs.groups}): its input and output channels are coupled` };
          }
          steps.push({ node, role: rule.role, span });
          break;
        case 'consumer':
          steps.push({ node, role: rule.role, span });
          break;
        case 'passthrough':
          steps.push({ node, role: rule.role, span });
          queue.push({ value: node.outputs[0], span });
          break;
        case 'flatten': {
          const inShape = shapes.get(value)!;
          if (inShape.length !== 4) return { steps, refusal: `${label(node)} flattens a ${inShape.length}-d value; channel spans need [N,C,H,W]` };
          steps.push({ node, role: rule.role, span });
          queue.push({ value: node.outputs[0], span: span * inShape[2]! * inShape[3]! });
          break;
        }
      }
    }
  }
  if (!steps.some((s) => s.role === 'producer' || s.role === 'consumer')) {
    return { steps, refusal: `the channels of ${label(conv)} reach no consumer` };
  }
  return { steps };
}

/** The group of every conv in network order; unprunable ones carry the reason. */
export function channelGroups(model: Model): ChannelGroup[] {
  const shapes = inferShapes(model, 1);
  const cons = consumers(model);
  const taps = new Map(convUnits(model).map((u) => [u.name, u.tap]));
  const groups: ChannelGroup[] = [];
  for (const conv of model.nodes) {
    if (conv.op !== 'Conv2d') continue;
    const walk = walkChannels(model, conv.name, shapes, cons);
    const members: GroupMember[] = [{ node: conv.name, slot: 'weight', axis: 0, span: 1, role: 'out' }];
    if (conv.params.bias) members.push({ node: conv.name, slot: 'bias', axis: 0, span: 1, role: 'out' });
    const consumerNames: string[] = [];
    for (const s of walk.steps) {
      const rule = OP_RULES[s.node.op];
      for (const slot of rule.channelSlots ?? []) {
        if ((s.node.params as Record<string, string | undefined>)[slot]) members.push({ node: s.node.name, slot, axis: 0, span: s.span, role: 'out' });
      }
      if (s.role === 'producer' || s.role === 'consumer') {
        members.push({ node: s.node.name, slot: 'weight', axis: 1, span: s.span, role: 'in' });
        consumerNames.push(s.node.name);
      }
    }
    groups.push({
      name: conv.name,
      index: groups.length,
      channels: conv.attrs.outChannels,
      tap: taps.get(conv.name) ?? conv.outputs[0],
      members,
      consumers: consumerNames,
      prunable: walk.refusal === undefined,
      ...(walk.refusal !== undefined ? { reason: walk.refusal } : {}),
    });
  }
  return groups;
}
