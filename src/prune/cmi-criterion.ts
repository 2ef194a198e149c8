// The CMI criterion (per-layer formulation, SPEC sections 1-3) behind the Criterion interface:
// each layer's filters in greedy CMI order on the calibration sample, the curve
// I(Y; rest | kept) from the chain rule, per-layer checkpoints by the ranking stage (src/cmi/rank-model.ts). The
// cross-layer formulations (src/cmi/rank-chains.ts) share the settings and the conversion.
import type { Model } from '../ir/model.js';
import { type LayerRanking, rankConvUnits, type RankUnitsOptions } from '../cmi/rank-model.js';
import { groupUnits } from './groups.js';
import type { SigmaMode } from '../cmi/joint.js';
import type { Calibration, ChannelGroup, Criterion, GroupRanking } from './types.js';

export interface CmiSettings {
  alpha: number;
  /** kernel width rule of the maps (RankLayerOptions.sigma); part of the criterion's key */
  sigma: SigmaMode;
  samples: number;
  seed: number;
  threads: number;
  /** permutation test per selection (for --cutoff ptest) */
  permutations?: number;
  eta?: number;
  checkpointDir?: string;
  fresh?: boolean;
}

/** The ranking stage's options for these settings. */
export function cmiRankOptions(s: CmiSettings, norm: { mean: readonly number[]; std: readonly number[] }): RankUnitsOptions {
  return {
    alpha: s.alpha,
    sigma: s.sigma,
    threads: s.threads,
    mean: norm.mean,
    std: norm.std,
    ...(s.permutations ? { permutationTest: { permutations: s.permutations, eta: s.eta ?? 0.05, seed: s.seed } } : {}),
    ...(s.checkpointDir ? { checkpointDir: s.checkpointDir } : {}),
    fresh: s.fresh ?? false,
  };
}

/** One layer's CMI ordering as a criterion result: the full order, the curve and its evidence. */
export function toGroupRanking(l: LayerRanking): GroupRanking {
  return {
    group: l.layer,
    channels: l.channels,
    order: [...l.order, ...l.remaining],
    curve: l.cmi,
    curveTotal: l.miAll,
    curveName: `I(Y; rest | kept) (${l.logBase === '2' ? 'bits' : 'nats'})`,
    ...(l.pValues ? { pValues: l.pValues } : {}),
    evidence: {
      noiseFloorStep: l.noiseFloorStep,
      tieBreak: l.tieBreak,
      rules: l.rules,
      sigma: l.sigma,
      alpha: l.alpha,
      n: l.n,
      backend: l.backend,
      seconds: l.seconds,
      resumed: l.resumed,
      miSelected: l.miSelected,
      ...(l.permutationTest ? { permutationTest: l.permutationTest } : {}),
    },
  };
}

export function cmiCriterion(s: CmiSettings): Criterion {
  const key = `cmi/per-layer/alpha=${s.alpha}/sigma=${s.sigma}/samples=${s.samples}/seed=${s.seed}${s.permutations ? `/ptest=${s.permutations},${s.eta}` : ''}`;
  return {
    name: 'cmi',
    key,
    async rank(model: Model, groups: ChannelGroup[], cal: Calibration): Promise<GroupRanking[]> {
      // a coupled group (--residual all) is ordered on the maps at its last Add (groups.ts coupledTap)
      const units = groupUnits(model, groups);
      const r = await rankConvUnits(model, units, cal.data, cmiRankOptions(s, cal));
      return r.layers.map(toGroupRanking);
    },
  };
}
