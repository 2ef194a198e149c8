// The prune stage's shared vocabulary: channel groups (what changes together when one output
// channel of a conv goes), plans (what to keep), criteria (how filters are ordered) and
// cut-offs (how many to keep). Every piece speaks these types and nothing else.
import type { ImageDataset } from '../data/dataset.js';
import type { Model } from '../ir/model.js';

/** One tensor axis that loses entries when a group's channel goes. */
export interface GroupMember {
  /** node whose parameter changes */
  node: string;
  /** parameter slot of that node ('weight', 'bias', 'runningMean', ...) */
  slot: string;
  /** axis of the parameter tensor indexed by the channel */
  axis: number;
  /**
   * entries per channel along that axis: 1 for conv/BN, H*W for a Linear after Flatten (channel c
   * owns features [c*HW, (c+1)*HW))
   */
  span: number;
  /** 'out': the producer's own outputs (conv weight/bias, BN); 'in': a consumer's inputs */
  role: 'out' | 'in';
  /**
   * the group's channel j is this tensor's channel j - offset, for offset <= j < offset + width
   * (a coupled group's members may carry only part of its channels: a ResNet's earlier stage
   * carries the middle of the next stage's, the rest being its shortcut's zero padding)
   */
  offset: number;
  width: number;
}

/** The channels of one conv's output, followed through the graph to every tensor they touch. */
export interface ChannelGroup {
  /** the producing conv's node name (the layer name in CLI, reports and plans) */
  name: string;
  /** 0-based position of the group's (first) conv among the model's convs in network order */
  index: number;
  /** channels the plan chooses among (a coupled group: every channel any of its tensors carries) */
  channels: number;
  /** value whose maps the criteria read: after Conv -> [BN] -> [ReLU] */
  tap: string;
  members: GroupMember[];
  /** consumers whose input channels go (conv or Linear-after-Flatten), by node name */
  consumers: string[];
  prunable: boolean;
  /** why not, naming the node (Add, grouped conv, shared weight, model output, unknown pattern) */
  reason?: string;
  /** a coupled group (--residual all): every conv writing its channels and the Adds/Pads tying them */
  coupled?: { convs: string[]; couplers: string[] };
}

/** Which channels of each group survive; groups not listed keep everything. */
export interface PruningPlan {
  /** group (conv) name -> sorted, distinct indices of the kept output channels */
  keep: Record<string, number[]>;
  /** where the plan came from (criterion, cut-off, settings), recorded in the model's metadata */
  provenance?: Record<string, unknown>;
}

/** Calibration sample that data-driven criteria read (a seeded, class-balanced training subset). */
export interface Calibration {
  data: ImageDataset;
  mean: readonly number[];
  std: readonly number[];
  seed: number;
  threads: number;
  /** progress label prefix */
  onProgress?: (done: number, total: number, info?: string) => void;
}

/** A criterion's result for one group. */
export interface GroupRanking {
  group: string;
  channels: number;
  /** channel indices, most important first, a permutation of 0..C-1 */
  order: number[];
  /**
   * importance left out after keeping the first i+1 channels of `order` (curve[i] belongs to
   * keep = i+1), non-increasing for every criterion but CMI under --sigma mean (cut-offs read its running
   * minimum, cutoffs.ts runningMinimum); CMI: I(Y; rest | kept)
   */
  curve?: number[];
  /** the curve's value with nothing kept (CMI: I(Y; all filters)); curves / curveTotal are comparable across layers */
  curveTotal?: number;
  /** what the curve measures, for reports */
  curveName?: string;
  /** per-selection permutation-test p-values (p[i] after the (i+1)-th selection), where computed */
  pValues?: number[];
  /** criterion-specific evidence (scores, noise floor, sigma, ...) for the report */
  evidence?: Record<string, unknown>;
}

export interface Criterion {
  readonly name: string;
  /** a string that changes whenever the criterion's algorithm or settings change (checkpoint keys) */
  readonly key: string;
  rank(model: Model, groups: ChannelGroup[], calibration: Calibration): Promise<GroupRanking[]>;
}

/** A cut-off's decision for one group: a pure function of the criterion's result. */
export interface CutoffDecision {
  /** how many channels to keep (the first `keep` of the order) */
  keep: number;
  /** the rule in words, e.g. 'scree: largest q' */
  rule: string;
  /** numbers that justify the decision (q values, clusters, p-values, candidates) */
  evidence: Record<string, unknown>;
}
