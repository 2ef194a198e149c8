// The CMI criterion (per-layer formulation, SPEC sections 1-3) behind the Criterion interface:
// each layer's filters in greedy CMI order on the calibration sample, the curve
// I(Y; rest | kept) from the chain rule, per-layer checkpoints by the ordering stage.
import { convUnits } from '../ir/graph.js';
import type { Model } from '../ir/model.js';
import { rankConvUnits } from '../ordering/model-rank.js';
import type { Calibration, ChannelGroup, Criterion, GroupRanking } from './types.js';

export interface CmiSettings {
  alpha: number;
  sigma: 'reference' | 'median';
  samples: number;
  seed: number;
  threads: number;
  /** permutation test per selection (for --cutoff ptest) */
  permutations?: number;
  eta?: number;
  checkpointDir?: string;
  fresh?: boolean;
}

export function cmiCriterion(s: CmiSettings): Criterion {
  const key = `cmi/per-layer/alpha=${s.alpha}/sigma=${s.sigma}/samples=${s.samples}/seed=${s.seed}${s.permutations ? `/ptest=${s.permutations},${s.eta}` : ''}`;
  return {
    name: 'cmi',
    key,
    async rank(model: Model, groups: ChannelGroup[], cal: Calibration): Promise<GroupRanking[]> {
      const wanted = new Set(groups.map((g) => g.name));
      const units = convUnits(model).filter((u) => wanted.has(u.name));
      const r = await rankConvUnits(model, units, cal.data, {
        alpha: s.alpha,
        sigma: s.sigma,
        threads: s.threads,
        mean: cal.mean,
        std: cal.std,
        ...(s.permutations ? { permutationTest: { permutations: s.permutations, eta: s.eta ?? 0.05, seed: s.seed } } : {}),
        ...(s.checkpointDir ? { checkpointDir: s.checkpointDir } : {}),
        fresh: s.fresh ?? false,
      });
      return r.layers.map((l) => {
        const { order, remaining, cmi, miAll, pValues, ...evidence } = l;
        return {
          group: l.layer,
          channels: l.channels,
          order: [...order, ...remaining],
          curve: cmi,
          curveTotal: miAll,
          curveName: `I(Y; rest | kept) (${l.logBase === '2' ? 'bits' : 'nats'})`,
          ...(pValues ? { pValues } : {}),
          evidence: {
            noiseFloorStep: evidence.noiseFloorStep,
            tieBreak: evidence.tieBreak,
            rules: evidence.rules,
            sigma: evidence.sigma,
            alpha: evidence.alpha,
            n: evidence.n,
            backend: evidence.backend,
            seconds: evidence.seconds,
            resumed: evidence.resumed,
            miSelected: evidence.miSelected,
            ...('permutationTest' in evidence ? { permutationTest: (evidence as { permutationTest?: unknown }).permutationTest } : {}),
          },
        };
      });
    },
  };
}
