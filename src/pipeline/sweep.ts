// `cmiprune sweep`: accuracy against budget for one or several criteria, without fine-tuning, each
// criterion ranked once and reused at every budget. With perLayer, the sensitivity analysis NNI and
// Distiller offer: every layer pruned alone at every fraction. Writes sweep.json and sweep.html.
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { TorchModel } from '../engine/index.js';
import type { Model } from '../ir/model.js';
import { modelCost } from '../ir/shapes.js';
import { type BnStats, reestimateBatchNorm } from '../recover/bn.js';
import { renderReportHtml, type SweepPoint } from '../report/html.js';
import { evaluate } from '../train/evaluate.js';
import { UserError } from '../util/errors.js';
import { writeDirAtomic } from '../util/fs.js';
import { progress } from '../util/progress.js';
import { allocateByCurve, allocateUniform, type AllocationRule, type Budget } from '../prune/allocate.js';
import { convFilters, costModel } from '../prune/cost.js';
import { cutoffName, parseCutoff } from '../prune/cutoff-spec.js';
import { batchNormStatistics, checkOutDir, CRITERIA, CRITERION_TRAITS, type CriterionName, evalAcc, loadInputs, makeCriterion, PRUNE_DEFAULTS, sortedPrefix } from './prune.js';
import { type ResidualMode, uniformRankings } from '../prune/groups.js';
import { applyPlan } from '../prune/surgery.js';
import type { ChannelGroup, Criterion, GroupRanking, PruningPlan } from '../prune/types.js';

export interface SweepOptions {
  model: string;
  data: string;
  criteria: CriterionName[];
  /** keep:F (per layer) or filters:F / params:F / flops:F (global), e.g. filters:0.1 ... filters:0.7 */
  budgets: string[];
  /** global budgets across layers: uniform (default, isolates the criterion) or curve */
  allocation?: Exclude<AllocationRule, 'sensitivity'>;
  /** prune one layer at a time at each keep fraction 1 - F of the budgets (sensitivity analysis) */
  perLayer?: boolean;
  out: string;
  seed?: number;
  samples?: number;
  alpha?: number;
  sigma?: 'reference' | 'median' | 'mean';
  /** residual networks: inner (default) or all (coupled residual streams pruned as groups) */
  residual?: ResidualMode;
  bnImages?: number;
  /** auto (default), anchored or reestimated: prune's --bn-stats */
  bnStats?: BnStats;
  testLimit?: number;
  threads?: number;
  mean?: number[];
  std?: number[];
  fresh?: boolean;
}

export interface SweepSummary {
  out: string;
  files: Record<string, string>;
  points: SweepPoint[];
  perLayer: { criterion: string; layer: string; fraction: number; kept: number; accuracy: number }[];
  accuracyBefore: number;
  seconds: number;
}

/** The plan that keeps, in each listed group, the first `keep[g]` channels of its criterion order. */
export const planOf = (rankings: Map<string, GroupRanking>, keep: Record<string, number>, groups: ChannelGroup[] = []): PruningPlan => ({
  keep: Object.fromEntries(Object.entries(keep).map(([g, k]) => [g, sortedPrefix(rankings.get(g)!.order, k, groups.find((x) => x.name === g))])),
});

export async function sweep(opts: SweepOptions): Promise<SweepSummary> {
  const t0 = performance.now();
  const { seed, samples, alpha, sigma, bnImages, bnStats, threads } = PRUNE_DEFAULTS;
  const o = { seed, samples, alpha, sigma, bnImages, bnStats, threads, allocation: 'uniform' as const, ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) } as Required<Omit<SweepOptions, 'testLimit' | 'mean' | 'std' | 'fresh' | 'perLayer'>> & SweepOptions;
  if (o.criteria.length === 0) throw new UserError('--criteria: name at least one of: ' + CRITERIA.join(', '));
  for (const c of o.criteria) if (!(CRITERIA as readonly string[]).includes(c)) throw new UserError(`--criteria: '${c}' is not one of: ${CRITERIA.join(', ')}`);
  // a bare number takes the kind of the budget before it: filters:0.1,0.2,0.3
  let kind: string | undefined;
  const budgets = o.budgets.map((text) => {
    const b = /^[0-9.]+(e[+-]?[0-9]+)?$/i.test(text.trim()) && kind ? `${kind}:${text.trim()}` : text;
    let c: ReturnType<typeof parseCutoff>;
    try {
      c = parseCutoff(b);
    } catch (e) {
      if (e instanceof UserError) throw new UserError(`--budgets: '${text}' is not a budget (keep:F, filters:F, params:F, flops:F; a bare F takes the kind before it): ${e.message}`);
      throw e;
    }
    if (!('fraction' in c)) throw new UserError(`--budgets: '${text}' is not a budget (keep:F, filters:F, params:F, flops:F)`);
    kind = c.kind;
    return c;
  });
  if (budgets.length === 0) throw new UserError('--budgets: give at least one, e.g. filters:0.1,0.3,0.5');
  const curveless = o.criteria.find((c) => !CRITERION_TRAITS[c].curve);
  if (o.allocation === 'curve' && curveless) throw new UserError(`--allocation curve needs a curve; criterion '${curveless}' gives none`);
  await checkOutDir(o.out);
  // held-out images only decide --bn-stats auto, and only with BN re-estimation on
  const inputs = await loadInputs({ ...o, criterion: o.criteria.join('+'), heldout: o.bnStats === 'auto' && o.bnImages > 0 ? PRUNE_DEFAULTS.heldout : 10, permutations: 0, eta: 0.05 });
  const { model, groups, prunable, test, norm, rest, calibration, heldout, ckptDir } = inputs;
  const before = modelCost(model);
  const filtersBefore = convFilters(model);
  const accuracyBefore = await evalAcc(model, test, norm, 'test: unpruned');

  const bnOpts = { mean: norm.mean, std: norm.std, images: Math.min(o.bnImages, rest.n), seed: o.seed, threads: o.threads };
  // anchored statistics: the unpruned model's re-estimate, once for every budget
  const reOriginal = o.bnImages > 0 && o.bnStats !== 'reestimated' ? (await reestimateBatchNorm(model, rest, bnOpts)).model : null;
  const points: SweepPoint[] = [];
  const perLayer: SweepSummary['perLayer'] = [];
  const bar = progress('sweep', o.criteria.length * (budgets.length + (o.perLayer ? prunable.length * budgets.length : 0)));
  for (const name of o.criteria) {
    const criterion: Criterion = makeCriterion(name, { alpha: o.alpha, sigma: o.sigma, samples: o.samples, seed: o.seed, threads: o.threads, checkpointDir: join(ckptDir, 'rank'), fresh: o.fresh });
    const ranked = new Map((await criterion.rank(model, prunable, { data: calibration, mean: norm.mean, std: norm.std, seed: o.seed, threads: o.threads })).map((r) => [r.group, r]));
    // the uniform allocation takes the same fraction of every conv, also inside a coupled group (groups.ts stratifiedOrder)
    const rankings = o.allocation === 'uniform' ? uniformRankings(ranked, prunable) : ranked;
    // a coupled group's cost depends on which channels its order keeps (cost.ts): one cost model per criterion
    const cost = costModel(model, groups, rankings);
    for (const b of budgets) {
      const keep: Record<string, number> =
        b.kind === 'keep'
          ? Object.fromEntries(prunable.map((g) => [g.name, Math.max(1, Math.round(b.fraction * g.channels))]))
          : o.allocation === 'curve'
            ? allocateByCurve(b as Budget, prunable, rankings, cost).keep
            : allocateUniform(b as Budget, prunable, cost).keep;
      const plan = planOf(rankings, keep, groups);
      const pruned = applyPlan(model, plan);
      const after = modelCost(pruned);
      const afterSurgery = await evalAcc(pruned, test, norm, `test: ${name} ${cutoffName(b)} after surgery`);
      let afterBn: number | null = null;
      let bnChosen: 'anchored' | 'reestimated' | null = null;
      if (o.bnImages > 0) {
        const bn = await batchNormStatistics({ original: model, reOriginal, plan, pruned, stats: o.bnStats, rest, heldout, norm, bnOpts });
        bnChosen = bn.chosen;
        afterBn = await evalAcc(bn.model, test, norm, `test: ${name} ${cutoffName(b)} after BN`);
      }
      const filtersAfter = convFilters(pruned);
      points.push({
        criterion: name,
        budget: cutoffName(b),
        removed: { filters: 1 - filtersAfter / filtersBefore, params: 1 - after.params / before.params, macs: 1 - after.macs / before.macs },
        accuracy: { afterSurgery, afterBnReestimation: afterBn },
        ...(bnChosen ? { bnStats: bnChosen } : {}),
      });
      bar.tick(1, { criterion: name, budget: cutoffName(b) });
    }
    if (o.perLayer) {
      // each layer alone at keep = 1 - F (F from the budgets' fractions), after surgery only
      for (const g of prunable as ChannelGroup[]) {
        for (const b of budgets) {
          const asked = Math.max(1, Math.round((b.kind === 'keep' ? b.fraction : 1 - b.fraction) * g.channels));
          const plan = planOf(rankings, { [g.name]: asked }, groups);
          // what the plan keeps: a coupled group may keep one more channel per stage it would empty
          const kept = plan.keep[g.name]!.length;
          const pruned = applyPlan(model, plan);
          perLayer.push({ criterion: name, layer: g.name, fraction: 1 - kept / g.channels, kept, accuracy: await evalAcc(pruned, test, norm, `test: ${name} ${g.name} keep ${kept}`) });
          bar.tick(1, { criterion: name, layer: g.name });
        }
      }
    }
  }
  bar.done();

  const result = {
    model: o.model,
    data: o.data,
    settings: o,
    accuracyBefore,
    test: test.n,
    points,
    perLayer,
    seconds: (performance.now() - t0) / 1000,
  };
  const files = { json: join(o.out, 'sweep.json'), html: join(o.out, 'sweep.html') };
  await writeDirAtomic(o.out, async (dir) => {
    const page = await renderReportHtml(
      {
        model: { path: o.model },
        layers: groups.map((g) => ({ name: g.name, channels: g.channels, kept: g.channels, prunable: g.prunable })),
        cost: { before: { filters: filtersBefore, params: before.params, macs: before.macs }, after: { filters: filtersBefore, params: before.params, macs: before.macs } },
        accuracy: { before: accuracyBefore, afterSurgery: null, afterBnReestimation: null, afterFinetune: null },
      },
      { sweep: { points, accuracyBefore }, title: `cmiprune sweep: ${o.model.split('/').pop()}` },
    );
    await writeFile(join(dir, 'sweep.html'), page);
    await writeFile(join(dir, 'sweep.json'), JSON.stringify(result, null, 1));
  });
  return { out: o.out, files, points, perLayer, accuracyBefore, seconds: result.seconds };
}
