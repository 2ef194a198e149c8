// The machinery every pruning experiment shares (npm run experiment:vgg16, experiment:resnet56):
// a resumable list of points over the result store (./store.ts), so a rerun skips what is stored
// and a killed or time-boxed session loses at most the point it was on (rankings and fine-tuning
// epochs have their own checkpoints as well). A per-model ExperimentConfig (experiments/<id>.ts)
// says which steps exist, the defaults, whether residual networks' --residual mode applies and
// how its RESULTS section is titled, targeted and anchored. Steps:
//   rankings       one ordering per criterion setting (CMI alpha 1.01 and 2, reference and
//                  median and mean-distance widths; L1, random, HRank, CHIP), with its wall and CPU time
//   sweep-uniform  (a) the same fraction of every layer, budgets 10-70% of the filters
//   sweep-global   (b) each criterion's own global allocation at the same budgets
//   sweep-sensitivity (c) every criterion with the held-out sensitivity allocation
//                  (every sweep: test accuracy after surgery and after BN re-estimation, no fine-tuning)
//   variants       the paper's formulations x orders x cut-offs through prune(), no fine-tuning
//                  (only where the config lists it: VGG16)
//   recovered      the best CMI configuration and the best other criterion (chosen from the sweeps)
//                  at the recovery budgets, fine-tuned 3 epochs without and with distillation
//   report         the experiment's RESULTS section and its SVG plots from the store (numbers
//                  generated, none typed), and RESULTS.md assembled from every section present
//   all            every step of the config in that order, then the report
// Points go to results/points/<id>/<model sha16> in the repository (or --results DIR), committed so
// the next session resumes them; RESULTS.md and results/ to --out (default: the repository root).
import { createHash } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { floatOption, intOption } from '../util/options.js';
import { limit, type ImageDataset } from '../data/dataset.js';
import {
  type Allocation,
  type BaselineBnValue,
  type BaselineValue,
  chooseRecovered,
  type EpochValue,
  type FinetuneSetup,
  allocationOf,
  SWEEP_STEPS,
  globalAllocationOf,
  keys,
  type RankValue,
  type RecoveredStartValue,
  type ReportProfile,
  type Removed,
  type SensitivityValue,
  type Setup,
  settingOf,
  SWEEP_SETTINGS,
  type SweepStep,
  type SweepValue,
  type Variant,
  variantName,
  type VariantValue,
  writeResults,
} from './results.js';
import { cpuSeconds, EXPERIMENT_VERSION, type PointKey, ResultStore } from './store.js';
import type { Model } from '../ir/model.js';
import { modelCost } from '../ir/shapes.js';
import { readOnnxModel } from '../onnx/index.js';
import { finetune } from '../recover/finetune.js';
import { reestimateBatchNorm } from '../recover/bn.js';
import { allocateByCurve, allocateBySensitivity, allocateUniform, type Budget, SENSITIVITY_FRACTIONS } from '../prune/allocate.js';
import { convFilters, costModel, type CostModel } from '../prune/cost.js';
import { RESIDUAL_MODES, type ResidualMode, uniformRankings } from '../prune/groups.js';
import { cutoffName, parseCutoff } from '../prune/cutoff-spec.js';
import { planOf } from '../pipeline/sweep.js';
import { CRITERION_TRAITS, evalAcc, heldoutProbe, loadInputs, makeCriterion, prune, type PruneOptions, type RunInputs, sortedPrefix } from '../pipeline/prune.js';
import { applyPlan } from '../prune/surgery.js';
import type { ChannelGroup, GroupRanking, PruningPlan } from '../prune/types.js';
import { UserError } from '../util/errors.js';
import { progress } from '../util/progress.js';

export const REPO_ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
/** ../shared beside the checkout ($CMIPRUNE_SHARED overrides), as the tests and benchmarks read it */
export const SHARED_DIR = process.env.CMIPRUNE_SHARED ?? resolve(REPO_ROOT, '../shared');
/** A shared model's path (absolute) and how reports name it when it is the default. */
export const sharedModel = (file: string) => ({ path: resolve(SHARED_DIR, 'models', file), label: `../shared/models/${file}` });

/** Every step there is, in the order they run; a config lists the ones its model has. */
export const STEPS = ['rankings', 'sweep-uniform', 'sweep-global', 'sweep-sensitivity', 'variants', 'recovered', 'report'] as const;
export type Step = (typeof STEPS)[number];

export const DEFAULT_BUDGETS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7].map((f) => `filters:${f}`);

/** The paper's variants: per-layer, compact and full; forward and bidirectional; scree, X-Means, permutation test. */
export const VARIANTS: readonly Variant[] = (['scree', 'xmeans', 'ptest'] as const).flatMap((cutoff) => [
  { formulation: 'per-layer' as const, order: 'independent' as const, cutoff },
  { formulation: 'compact' as const, order: 'forward' as const, cutoff },
  { formulation: 'compact' as const, order: 'bidirectional' as const, cutoff },
  { formulation: 'full' as const, order: 'forward' as const, cutoff },
  { formulation: 'full' as const, order: 'bidirectional' as const, cutoff },
]);
export { variantName };

/** What one model's experiment is: everything else is this file's. */
export interface ExperimentConfig {
  /** 'vgg16': the command experiment:<id>, the default store results/points/<id>, the RESULTS section's name */
  id: string;
  description: string;
  /** default model (absolute path) and how the report names it */
  defaultModel: { path: string; label: string };
  /** the steps this model has, in order (a subset of STEPS, ending with 'report') */
  steps: readonly Step[];
  defaultBudgets: readonly string[];
  defaultRecoverBudgets: readonly string[];
  /**
   * residual networks: the --residual option and its default, and sweep budgets per mode where
   * they differ from defaultBudgets; absent: no option, and no residual field in any key
   */
  residual?: { default: ResidualMode; budgets?: Partial<Record<ResidualMode, readonly string[]>> };
  /** the RESULTS section: title, targets, anchors, notes */
  report: ReportProfile;
}

export interface ExperimentOptions {
  model?: string;
  data?: string;
  /** steps in order (default: all of them, then the report) */
  steps?: Step[];
  /** sweep budgets, e.g. filters:0.1 ... filters:0.7 */
  budgets?: string[];
  /** sweep criterion settings (ids of SWEEP_SETTINGS; default all) */
  criteria?: string[];
  /** the result store (default: results/points/<id>/<model sha16> in the repository) */
  results?: string;
  /** where RESULTS.md (and results/*.svg) go (default: the repository root) */
  out?: string;
  /** stop cleanly before a point that would likely end after this many minutes */
  timeBudgetMinutes?: number;
  testLimit?: number;
  threads?: number;
  samples?: number;
  seed?: number;
  bnImages?: number;
  heldout?: number;
  /** residual networks (configs with `residual`): which convs are prunable (groups.ts) */
  residual?: ResidualMode;
  variantAlpha?: number;
  variantSigma?: 'median' | 'reference';
  /** variant names (variantName) to run (default all 15) */
  variants?: string[];
  recoverBudgets?: string[];
  /** 'setting' or 'setting@allocation': overrides the choice made from the sweeps */
  recoverCmi?: string;
  recoverOther?: string;
  finetuneEpochs?: number;
  /** distillation temperature for the distilled runs */
  distill?: number;
  lr?: number;
  batch?: number;
  /** fine-tune on the first N training images only (quick runs) */
  finetuneLimit?: number;
  /** milliseconds; for the time budget (default performance.now) */
  clock?: () => number;
  /** progress lines (default: stderr unless CMIPRUNE_NO_PROGRESS) */
  log?: (line: string) => void;
}

export interface StepSummary {
  planned: number;
  stored: number;
  computed: number;
}

export interface ExperimentSummary {
  results: string;
  model: string;
  modelSha256: string;
  /** residual networks: the mode every point of this run was keyed with (absent for plain CNNs) */
  residual?: ResidualMode;
  /** per point step (key.step): planned points, stored now, computed in this run */
  steps: Record<string, StepSummary>;
  computed: number;
  stoppedEarly: boolean;
  reason: string | null;
  /** steps that could not be planned yet (the recovered step before the sweeps are complete) */
  waiting: string[];
  files: { markdown: string; section: string; plots: string[] } | null;
  seconds: number;
}

// ---------------------------------------------------------------------------------------------
// time estimates: measured point times (this run, then the store), else these VGG16 priors
// (2 shared cores; README figures), scaled to the model's multiply-adds

const VGG16_MACS = 313_463_808;
const VGG16_FILTERS = 4224;
const PRIOR_SECONDS: Record<string, number> = {
  baseline: 25,
  'baseline-bn': 40,
  'rank:cmi-a2': 70,
  'rank:cmi-a1.01': 1800,
  'rank:l1': 1,
  'rank:random': 1,
  'rank:hrank': 150,
  'rank:chip': 300,
  sensitivity: 200,
  'sweep:surgery': 25,
  'sweep:bn': 60,
  'variant:per-layer': 200,
  'variant:compact': 500,
  'variant:full': 650,
  'recovered-start': 85,
  epoch: 330,
  'epoch:distill': 420,
};

function tagOf(key: PointKey): string {
  switch (key.kind) {
    case 'rank': {
      const c = String(key.criterion);
      return `rank:${c.startsWith('cmi') ? c.replace(/-(median|reference)$/, '') : c}`;
    }
    case 'sweep':
      return `sweep:${key.stage}`;
    case 'variant':
      return `variant:${key.formulation}${key.cutoff === 'ptest' ? ':ptest' : ''}`;
    case 'finetune-epoch':
      return key.distill === 'none' ? 'epoch' : 'epoch:distill';
    default:
      return String(key.kind);
  }
}

/**
 * Seconds a point stands for in the estimates: its measured time, except that a ranking resumed
 * from the ordering's checkpoints counts what its layers took when they were computed.
 */
function estimateSeconds(key: PointKey, value: unknown, seconds: number): number {
  if (key.kind !== 'rank') return seconds;
  const ls = Object.values((value as Partial<RankValue>).layerSeconds ?? {}).filter((x): x is number => typeof x === 'number');
  return Math.max(seconds, ls.reduce((a, x) => a + x, 0));
}

class Estimator {
  private readonly seen = new Map<string, number[]>();
  constructor(
    private readonly scale: { macs: number; filters: number; test: number },
    stored: { key: PointKey; seconds: number }[],
  ) {
    for (const p of stored) this.add(tagOf(p.key), p.seconds);
  }
  add(tag: string, seconds: number): void {
    const l = this.seen.get(tag) ?? [];
    l.push(seconds);
    this.seen.set(tag, l);
  }
  /** seconds the next point of this tag will likely take */
  of(tag: string): number {
    const l = this.seen.get(tag);
    if (l && l.length > 0) return l.reduce((s, x) => s + x, 0) / l.length;
    const base = tag.startsWith('variant:') ? PRIOR_SECONDS[tag.replace(':ptest', '')]! * (tag.endsWith(':ptest') ? 2 : 1) : (PRIOR_SECONDS[tag] ?? 60);
    if (tag.startsWith('rank:')) return base * this.scale.filters;
    if (tag === 'baseline' || tag === 'baseline-bn' || tag.startsWith('sweep:')) return base * this.scale.macs * this.scale.test;
    return base * this.scale.macs;
  }
}

// ---------------------------------------------------------------------------------------------
// the run's state

class StopRun extends Error {}

interface Resolved {
  model: string;
  /** the sweeps of this experiment (its config's steps): the recovered choice reads these */
  sweeps: SweepStep[];
  data: string;
  steps: Step[];
  budgets: string[];
  criteria: string[];
  results: string;
  out: string;
  timeBudgetMinutes: number | null;
  testLimit?: number;
  threads: number;
  samples: number;
  seed: number;
  bnImages: number;
  heldout: number;
  residual?: ResidualMode;
  variantAlpha: number;
  variantSigma: 'median' | 'reference';
  variants: Variant[];
  recoverBudgets: string[];
  recoverCmi?: string;
  recoverOther?: string;
  finetuneEpochs: number;
  distill: number;
  lr: number;
  batch: number;
  finetuneLimit?: number;
}

interface Item {
  /** every point the item writes */
  keys: PointKey[];
  label: string;
  run: () => Promise<void>;
}

class Run {
  private inputsP?: Promise<RunInputs>;
  private costM?: CostModel;
  private rankingsCache = new Map<string, Map<string, GroupRanking>>();
  private lastPruned?: { id: string; model: Model };
  readonly computedBy = new Map<string, number>();
  readonly deadline: number | null;
  readonly t0: number;

  constructor(
    readonly o: Resolved,
    readonly store: ResultStore,
    readonly setup: Setup,
    readonly ft: FinetuneSetup,
    readonly est: Estimator,
    readonly clock: () => number,
    readonly log: (s: string) => void,
  ) {
    this.t0 = clock();
    this.deadline = o.timeBudgetMinutes !== null ? this.t0 + o.timeBudgetMinutes * 60_000 : null;
  }

  /** checkpoints (rankings, fine-tuning); per residual mode, since the mode changes what a group is */
  get ckpt(): string {
    return this.o.residual ? join(this.o.results, 'checkpoints', `residual-${this.o.residual}`) : join(this.o.results, 'checkpoints');
  }

  inputs(): Promise<RunInputs> {
    this.inputsP ??= this.loadInputs();
    return this.inputsP;
  }

  /** prune()'s inputs, with the groups of the residual mode where the config has one */
  private async loadInputs(): Promise<RunInputs> {
    const i = await loadInputs({
      model: this.o.model,
      data: this.o.data,
      criterion: 'experiment',
      samples: this.o.samples,
      heldout: this.o.heldout,
      seed: this.o.seed,
      alpha: 0,
      sigma: '-',
      permutations: 0,
      eta: 0,
      threads: this.o.threads,
      testLimit: this.o.testLimit,
      checkpointDir: this.ckpt,
      ...(this.o.residual ? { residual: this.o.residual } : {}),
    });
    return i;
  }

  /** the cost model of a setting's plans: coupled groups' costs depend on which channels its order keeps */
  async cost(setting: string, allocation: Allocation): Promise<CostModel> {
    const i = await this.inputs();
    const coupled = i.groups.some((g) => g.coupled);
    if (!coupled) return (this.costM ??= costModel(i.model, i.groups));
    return costModel(i.model, i.groups, await this.orders(setting, allocation));
  }

  /** The orders an allocation prunes by: the uniform one's coupled groups stratified (groups.ts stratifiedOrder). */
  async orders(setting: string, allocation: Allocation): Promise<Map<string, GroupRanking>> {
    const r = await this.rankings(setting);
    return allocation === 'uniform' ? uniformRankings(r, (await this.inputs()).prunable) : r;
  }

  /** Would a point of this many seconds likely end after the time budget? */
  fits(seconds: number): boolean {
    return this.deadline === null || this.clock() + 1000 * seconds <= this.deadline;
  }

  async put<V>(key: PointKey, value: V, seconds: { wall: number; cpu: number }, clockSeconds: number): Promise<void> {
    await this.store.put(key, value, seconds);
    this.est.add(tagOf(key), estimateSeconds(key, value, clockSeconds));
    this.computedBy.set(key.step, (this.computedBy.get(key.step) ?? 0) + 1);
  }

  /** An item computing one point: timed (wall, CPU) and stored. */
  single<V>(key: PointKey, label: string, compute: () => Promise<V>): Item {
    return {
      keys: [key],
      label,
      run: async () => {
        await this.inputs(); // loading the model and the data once is no point's time
        const w0 = performance.now();
        const c0 = cpuSeconds();
        const k0 = this.clock();
        const value = await compute();
        await this.put(key, value, { wall: (performance.now() - w0) / 1000, cpu: cpuSeconds() - c0 }, (this.clock() - k0) / 1000);
      },
    };
  }

  // ---- shared computations

  async accuracy(model: Model, label: string): Promise<number> {
    const { test, norm } = await this.inputs();
    return evalAcc(model, test, norm, label);
  }

  async rankings(setting: string): Promise<Map<string, GroupRanking>> {
    const cached = this.rankingsCache.get(setting);
    if (cached) return cached;
    const p = this.store.get<RankValue>(keys.rank(setting, this.setup));
    if (!p) throw new Error(`internal: the ranking of ${setting} is not stored yet`);
    const m = new Map(p.value.rankings.map((r) => [r.group, { ...r } as GroupRanking]));
    this.rankingsCache.set(setting, m);
    return m;
  }

  /** Fractions removed, counted on the two models (filters: conv output channels, whatever the groups are). */
  async removed(model: Model, pruned: Model): Promise<Removed> {
    const before = modelCost(model);
    const after = modelCost(pruned);
    return { filters: 1 - convFilters(pruned) / convFilters(model), params: 1 - after.params / before.params, macs: 1 - after.macs / before.macs };
  }

  async allocate(setting: string, allocation: Allocation, budgetName: string): Promise<{ keep: Record<string, number>; reached: number }> {
    const { prunable } = await this.inputs();
    const budget = parseCutoff(budgetName) as Budget;
    const cost = await this.cost(setting, allocation);
    if (allocation === 'uniform') return allocateUniform(budget, prunable, cost);
    const rankings = await this.rankings(setting);
    if (allocation === 'curve') return allocateByCurve(budget, prunable, rankings, cost);
    const s = this.store.get<SensitivityValue>(keys.sensitivity(setting, this.setup));
    if (!s) throw new Error(`internal: the sensitivity of ${setting} is not stored yet`);
    return allocateBySensitivity(budget, prunable, cost, async (g, k) => {
      const a = s.value.accuracy[g.name]?.[String(k)];
      if (a === undefined) throw new Error(`internal: no held-out accuracy for ${g.name} keeping ${k}`);
      return s.value.baseline - a;
    });
  }

  async pruned(setting: string, allocation: Allocation, budget: string): Promise<{ model: Model; keep: Record<string, number>; reached: number }> {
    const { model } = await this.inputs();
    const a = await this.allocate(setting, allocation, budget);
    const id = `${setting}|${allocation}|${budget}`;
    if (this.lastPruned?.id !== id) {
      const plan: PruningPlan = planOf(await this.orders(setting, allocation), a.keep, (await this.inputs()).groups);
      this.lastPruned = { id, model: applyPlan(model, plan) };
    }
    return { model: this.lastPruned.model, keep: a.keep, reached: a.reached };
  }

  async bnReestimate(pruned: Model): Promise<{ model: Model; seconds: number; images: number }> {
    const { rest, norm } = await this.inputs();
    const r = await reestimateBatchNorm(pruned, rest, { mean: norm.mean, std: norm.std, images: Math.min(this.o.bnImages, rest.n), seed: this.o.seed, threads: this.o.threads });
    return { model: r.model, seconds: r.seconds, images: r.images };
  }

  // ---- items

  baselineItem(): Item {
    return this.single(keys.baseline(this.setup), 'unpruned accuracy', async (): Promise<BaselineValue> => {
      const { model, prunable, test } = await this.inputs();
      const c = modelCost(model);
      return { accuracy: await this.accuracy(model, 'test: unpruned'), test: test.n, filters: convFilters(model), params: c.params, macs: c.macs, layers: prunable.length };
    });
  }

  /** The unpruned model after the sweeps' BN re-estimation: the re-estimation's own cost. */
  baselineBnItem(): Item {
    return this.single(keys.baselineBn(this.setup), 'unpruned accuracy after BN re-estimation', async (): Promise<BaselineBnValue> => {
      const { model, test } = await this.inputs();
      const r = await this.bnReestimate(model);
      return { accuracy: await this.accuracy(r.model, 'test: unpruned after BN re-estimation'), test: test.n, images: r.images };
    });
  }

  rankItem(setting: string): Item {
    return this.single(keys.rank(setting, this.setup), `ranking ${setting}`, async (): Promise<RankValue> => {
      const s = settingOf(setting);
      const { model, prunable, calibration, norm } = await this.inputs();
      const criterion = makeCriterion(s.criterion, {
        alpha: s.alpha ?? 2,
        sigma: s.sigma ?? 'median',
        samples: this.o.samples,
        seed: this.o.seed,
        threads: this.o.threads,
        checkpointDir: join(this.ckpt, 'rank'),
      });
      const list = await criterion.rank(model, prunable, { data: calibration, mean: norm.mean, std: norm.std, seed: this.o.seed, threads: this.o.threads });
      const ev = (r: GroupRanking, k: string) => (r.evidence as Record<string, unknown> | undefined)?.[k];
      return {
        criterion: setting,
        criterionKey: criterion.key,
        rankings: list.map((r) => ({ group: r.group, channels: r.channels, order: r.order, ...(r.curve ? { curve: r.curve } : {}), ...(r.curveTotal !== undefined ? { curveTotal: r.curveTotal } : {}) })),
        resumedLayers: list.filter((r) => ev(r, 'resumed') === true).length,
        layerSeconds: Object.fromEntries(list.map((r) => [r.group, typeof ev(r, 'seconds') === 'number' ? (ev(r, 'seconds') as number) : null])),
        ...(s.criterion === 'cmi' ? { noiseFloorStep: Object.fromEntries(list.map((r) => [r.group, (ev(r, 'noiseFloorStep') as number | null | undefined) ?? null])) } : {}),
      };
    });
  }

  /** Held-out accuracy of the unpruned model with one layer at a time keeping its criterion's first channels, at the sensitivity fractions. */
  sensitivityItem(setting: string): Item {
    return this.single(keys.sensitivity(setting, this.setup), `held-out sensitivity ${setting}`, async (): Promise<SensitivityValue> => {
      const { model, prunable, heldout, norm } = await this.inputs();
      const rankings = await this.rankings(setting);
      const probe = heldoutProbe(model, heldout, norm);
      try {
        const baseline = await probe.baseline();
        const accuracy: Record<string, Record<string, number>> = {};
        const bar = progress(`sensitivity ${setting}`, prunable.length * SENSITIVITY_FRACTIONS.length);
        for (const g of prunable as ChannelGroup[]) {
          accuracy[g.name] = {};
          let last = g.channels;
          // the keeps allocateBySensitivity asks for (minKeep 1)
          for (const f of SENSITIVITY_FRACTIONS) {
            bar.tick(1, { layer: g.name });
            const k = Math.min(g.channels, Math.max(1, Math.round((1 - f) * g.channels)));
            if (k >= last) continue;
            last = k;
            accuracy[g.name]![String(k)] = await probe.withLayer(g, sortedPrefix(rankings.get(g.name)!.order, k, g));
          }
        }
        bar.done();
        return { baseline, heldout: heldout.n, accuracy };
      } finally {
        probe.dispose();
      }
    });
  }

  sweepItems(step: SweepStep): Item[] {
    const items: Item[] = [this.baselineItem(), this.baselineBnItem()];
    for (const c of this.o.criteria) {
      const allocation: Allocation = allocationOf(step, c);
      items.push(this.rankItem(c));
      if (allocation === 'sensitivity') items.push(this.sensitivityItem(c));
      for (const b of this.o.budgets) {
        items.push(
          this.single(keys.sweep(step, c, allocation, b, 'surgery', this.setup), `${step} ${c} ${b} after surgery`, async (): Promise<SweepValue> => {
            const { model } = await this.inputs();
            const p = await this.pruned(c, allocation, b);
            return { keep: p.keep, reached: p.reached, removed: await this.removed(model, p.model), accuracy: await this.accuracy(p.model, `test: ${c} ${b} after surgery`) };
          }),
          this.single(keys.sweep(step, c, allocation, b, 'bn', this.setup), `${step} ${c} ${b} after BN`, async (): Promise<SweepValue> => {
            const { model } = await this.inputs();
            const p = await this.pruned(c, allocation, b);
            const bn = await this.bnReestimate(p.model);
            return { keep: p.keep, reached: p.reached, removed: await this.removed(model, p.model), accuracy: await this.accuracy(bn.model, `test: ${c} ${b} after BN`), bnSeconds: bn.seconds };
          }),
        );
      }
    }
    return items;
  }

  variantItems(): Item[] {
    return this.o.variants.map((v) => {
      const key = keys.variant(v, this.o.variantAlpha, this.o.variantSigma, this.setup);
      return this.single(key, `variant ${variantName(v)}`, async (): Promise<VariantValue> => {
        const out = join(this.o.results, 'runs', this.store.id(key).split('/').pop()!);
        await prune({
          model: this.o.model,
          data: this.o.data,
          criterion: 'cmi',
          cutoff: v.cutoff,
          formulation: v.formulation,
          ...(v.order !== 'independent' ? { order: v.order } : {}),
          alpha: this.o.variantAlpha,
          sigma: this.o.variantSigma,
          samples: this.o.samples,
          seed: this.o.seed,
          heldout: this.o.heldout,
          bnImages: this.o.bnImages,
          // the sweeps' statistics (plain re-estimation): variants are read against them, and the
          // stored variant points were measured so
          bnStats: 'reestimated',
          finetuneEpochs: 0,
          threads: this.o.threads,
          ...(this.o.residual ? { residual: this.o.residual as PruneOptions['residual'] } : {}),
          ...(this.o.testLimit !== undefined ? { testLimit: this.o.testLimit } : {}),
          // prune() keeps its rankings in <checkpointDir>/rank: the sweep's per-layer CMI orderings are reused
          checkpointDir: this.ckpt,
          out,
        });
        const report = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
        // the report stays beside the store; the pruned model and its exports are not needed
        for (const f of ['pruned.onnx', 'pruned_tfjs', 'report.html']) await rm(join(out, f), { recursive: true, force: true });
        return {
          removed: report.cost.removed,
          filters: { before: report.cost.before.filters, after: report.cost.after.filters },
          accuracy: { before: report.accuracy.before, afterSurgery: report.accuracy.afterSurgery, afterBnReestimation: report.accuracy.afterBnReestimation },
          kept: Object.fromEntries((report.layers as { name: string; kept: number }[]).map((l) => [l.name, l.kept])),
          startLayer: report.method.startLayer ?? null,
          chains: report.method.chains ?? [],
          stageSeconds: report.seconds,
        };
      });
    });
  }

  /** The recovered step's configurations, or why they cannot be chosen yet. */
  recoverConfigs(): { configs: { criterion: string; allocation: Allocation }[]; waiting: string | null } {
    const parse = (s: string): { criterion: string; allocation: Allocation } => {
      const [criterion, allocation] = s.split('@') as [string, string | undefined];
      settingOf(criterion);
      return { criterion, allocation: (allocation ?? globalAllocationOf(criterion)) as Allocation };
    };
    if (this.o.recoverCmi && this.o.recoverOther) return { configs: [parse(this.o.recoverCmi), parse(this.o.recoverOther)], waiting: null };
    const choice = chooseRecovered(this.store, this.setup, this.o.criteria, this.o.budgets, this.o.recoverBudgets, this.o.sweeps);
    if (!choice.complete) {
      const missing = choice.scores.filter((s) => s.score === null).length;
      return { configs: [], waiting: `recovered: the best configurations are chosen from the sweeps, and ${missing} of ${choice.scores.length} configurations still lack points (or give --recover-cmi and --recover-other)` };
    }
    const configs = [
      this.o.recoverCmi ? parse(this.o.recoverCmi) : choice.cmi,
      this.o.recoverOther ? parse(this.o.recoverOther) : choice.other,
    ].filter((c): c is { criterion: string; allocation: Allocation } => !!c);
    return { configs: configs.map((c) => ({ criterion: c.criterion, allocation: c.allocation })), waiting: null };
  }

  recoveredItems(): Item[] {
    const { configs } = this.recoverConfigs();
    const items: Item[] = [this.baselineItem()];
    for (const { criterion, allocation } of configs) {
      items.push(this.rankItem(criterion));
      if (allocation === 'sensitivity') items.push(this.sensitivityItem(criterion));
    }
    // budget by budget, every configuration, plain fine-tuning before distillation: a run cut by
    // its time budget leaves whole comparisons
    for (const b of this.o.recoverBudgets) {
      for (const { criterion, allocation } of configs) {
        const startKey = keys.recoveredStart(criterion, allocation, b, this.setup);
        items.push(
          this.single(startKey, `recovered ${criterion} ${allocation} ${b}: surgery + BN`, async (): Promise<RecoveredStartValue> => {
            const { model } = await this.inputs();
            const p = await this.pruned(criterion, allocation, b);
            const afterSurgery = await this.accuracy(p.model, `test: ${criterion} ${b} after surgery`);
            const bn = await this.bnReestimate(p.model);
            return { keep: p.keep, reached: p.reached, removed: await this.removed(model, p.model), afterSurgery, afterBnReestimation: await this.accuracy(bn.model, `test: ${criterion} ${b} after BN`), bnSeconds: bn.seconds };
          }),
        );
        items.push(this.finetuneItem(criterion, allocation, b, null));
      }
      for (const { criterion, allocation } of configs) items.push(this.finetuneItem(criterion, allocation, b, this.o.distill));
    }
    return items;
  }

  finetuneItem(criterion: string, allocation: Allocation, budget: string, distill: number | null): Item {
    const epochKeys = Array.from({ length: this.ft.epochs }, (_, i) => keys.epoch(criterion, allocation, budget, distill, i + 1, this.ft, this.setup));
    const label = `fine-tune ${criterion} ${allocation} ${budget} ${distill === null ? 'plain' : `distilled T=${distill}`}`;
    const ftKey = createHash('sha256').update(this.store.id(epochKeys[0]!)).digest('hex').slice(0, 16);
    const ftDir = join(this.ckpt, 'finetune', ftKey);
    const tag = tagOf(epochKeys[0]!);
    const attempt = async (): Promise<void> => {
      const { model, train, norm } = await this.inputs();
      const trainSet: ImageDataset = this.o.finetuneLimit !== undefined ? limit(train, this.o.finetuneLimit) : train;
      const p = await this.pruned(criterion, allocation, budget);
      const bn = await this.bnReestimate(p.model);
      let c0 = cpuSeconds();
      let k0 = this.clock();
      await finetune(bn.model, trainSet, {
        epochs: this.ft.epochs,
        batch: this.ft.batch,
        lr: this.ft.lr,
        seed: this.o.seed,
        mean: norm.mean,
        std: norm.std,
        threads: this.o.threads,
        checkpointDir: ftDir,
        checkpointKey: ftKey,
        ...(distill !== null ? { teacher: model, distill: { temperature: distill, weight: 0.5 } } : {}),
        label,
        onEpoch: async (e) => {
          const trainCpu = cpuSeconds() - c0;
          const w1 = performance.now();
          const c1 = cpuSeconds();
          const acc = await this.accuracy(e.model, `test: ${label}, epoch ${e.epoch + 1}`);
          const evalSeconds = (performance.now() - w1) / 1000;
          const value: EpochValue = { epoch: e.epoch + 1, testAccuracy: acc, loss: e.loss, trainAccuracy: e.accuracy, lr: e.lr, images: e.images, trainSeconds: e.seconds, trainCpuSeconds: trainCpu, evalSeconds };
          await this.put(epochKeys[e.epoch]!, value, { wall: e.seconds + evalSeconds, cpu: trainCpu + cpuSeconds() - c1 }, (this.clock() - k0) / 1000);
          this.log(`${label}: epoch ${e.epoch + 1}/${this.ft.epochs} test ${(100 * acc).toFixed(2)}% (${e.seconds.toFixed(0)} s training)`);
          if (e.epoch + 1 < this.ft.epochs && !this.fits(this.est.of(tag))) throw new StopRun(`time budget: the next epoch of ${label} would likely not finish in time`);
          c0 = cpuSeconds();
          k0 = this.clock();
        },
      });
    };
    return {
      keys: epochKeys,
      label,
      run: async () => {
        await attempt();
        if (epochKeys.some((k) => !this.store.has(k))) {
          // the checkpoint was ahead of the store (killed between the two): redo from the start
          this.log(`${label}: an epoch's checkpoint exists but its result does not; fine-tuning again from the start`);
          await rm(ftDir, { recursive: true, force: true });
          await attempt();
        }
      },
    };
  }

  itemsOf(step: Step): Item[] {
    switch (step) {
      case 'rankings':
        // the quick orderings first, so a time-boxed session stores as many as it can
        return this.o.criteria.map((c) => this.rankItem(c)).sort((a, b) => this.est.of(tagOf(a.keys[0]!)) - this.est.of(tagOf(b.keys[0]!)));
      case 'sweep-uniform':
      case 'sweep-global':
      case 'sweep-sensitivity':
        return this.sweepItems(step);
      case 'variants':
        return [this.baselineItem(), ...this.variantItems()];
      case 'recovered':
        return this.recoveredItems();
      case 'report':
        return [];
    }
  }

  /** Runs the items not stored yet, each only when it likely fits the time budget. */
  async runItems(step: Step, items: Item[]): Promise<void> {
    const todo = items.filter((it) => it.keys.some((k) => !this.store.has(k)));
    const missingOf = (it: Item) => it.keys.filter((k) => !this.store.has(k)).length;
    const estOf = (it: Item) => missingOf(it) * this.est.of(tagOf(it.keys.find((k) => !this.store.has(k)) ?? it.keys[0]!));
    const eta = () => todo.reduce((s, it) => s + (it.keys.some((k) => !this.store.has(k)) ? estOf(it) : 0), 0);
    this.log(`${step}: ${items.length} items planned, ${items.length - todo.length} stored, ${todo.length} to run (estimated ${fmtMinutes(eta())})`);
    if (todo.length === 0) return;
    const bar = progress(step, todo.length);
    try {
      for (const it of todo) {
        if (it.keys.every((k) => this.store.has(k))) {
          bar.tick(1, { point: it.label });
          continue; // computed meanwhile, as another item's twin
        }
        // a multi-point item (fine-tuning) checks the budget before each of its later points itself
        const first = this.est.of(tagOf(it.keys.find((k) => !this.store.has(k))!));
        if (!this.fits(first)) throw new StopRun(`time budget: ${it.label} (about ${fmtMinutes(first)}) would likely not finish in time`);
        await it.run();
        bar.tick(1, { point: it.label, left: fmtMinutes(eta()) });
      }
    } finally {
      bar.done();
    }
  }
}

function fmtMinutes(s: number): string {
  return s < 90 ? `${Math.round(s)} s` : `${(s / 60).toFixed(s < 600 ? 1 : 0)} min`;
}

// ---------------------------------------------------------------------------------------------

/** The sweep budgets of a run without --budgets: the residual mode's own where the config has them. */
function defaultBudgetsOf(config: ExperimentConfig, residual?: ResidualMode): readonly string[] {
  return (residual && config.residual?.budgets?.[residual]) || config.defaultBudgets;
}

function resolveOptions(config: ExperimentConfig, opts: ExperimentOptions): Resolved {
  const model = resolve(opts.model ?? config.defaultModel.path);
  const mode = config.residual ? (opts.residual ?? config.residual.default) : undefined;
  const budgets = (opts.budgets ?? defaultBudgetsOf(config, mode)).map((b) => normBudget('--budgets', b));
  const recoverBudgets = (opts.recoverBudgets ?? config.defaultRecoverBudgets).map((b) => normBudget('--recover-budgets', b));
  if (opts.steps) {
    const other = opts.steps.filter((st) => !config.steps.includes(st));
    if (other.length > 0) throw new UserError(`--step: '${other[0]}' is not a step of experiment:${config.id} (${config.steps.join(', ')})`);
  }
  if (opts.residual !== undefined && !config.residual) throw new UserError(`--residual: experiment:${config.id} has no residual connections`);
  if (opts.residual !== undefined && !(RESIDUAL_MODES as readonly string[]).includes(opts.residual)) throw new UserError(`--residual: '${opts.residual}' is not one of: ${RESIDUAL_MODES.join(', ')}`);
  const criteria = opts.criteria ?? SWEEP_SETTINGS.map((s) => s.id);
  for (const c of criteria) if (!SWEEP_SETTINGS.some((s) => s.id === c)) throw new UserError(`--criteria: '${c}' is not one of: ${SWEEP_SETTINGS.map((s) => s.id).join(', ')}`);
  if (criteria.length === 0) throw new UserError('--criteria: name at least one');
  const variants = opts.variants
    ? opts.variants.map((n) => {
        const v = VARIANTS.find((x) => variantName(x) === n);
        if (!v) throw new UserError(`--variants: '${n}' is not one of: ${VARIANTS.map(variantName).join(', ')}`);
        return v;
      })
    : [...VARIANTS];
  for (const [opt, r, cmi] of [['--recover-cmi', opts.recoverCmi, true], ['--recover-other', opts.recoverOther, false]] as const) {
    if (r === undefined) continue;
    const [c, a] = r.split('@');
    const ids = SWEEP_SETTINGS.filter((s) => (s.criterion === 'cmi') === cmi).map((s) => s.id);
    if (!ids.includes(c!)) throw new UserError(`${opt}: '${c}' is not one of: ${ids.join(', ')}`);
    if (a !== undefined && !['uniform', 'curve', 'sensitivity'].includes(a)) throw new UserError(`${opt}: allocation '${a}' is not one of: uniform, curve, sensitivity`);
    if (a === 'curve' && !CRITERION_TRAITS[SWEEP_SETTINGS.find((s) => s.id === c)!.criterion].curve) throw new UserError(`${opt}: '${c}' has no curve for the curve allocation`);
  }
  return {
    model,
    sweeps: config.steps.filter((s): s is SweepStep => (SWEEP_STEPS as readonly string[]).includes(s)),
    data: opts.data ?? 'cifar10',
    steps: opts.steps ?? [...config.steps],
    budgets,
    criteria,
    // the default store is committed with the repository (results/points/<id>): every machine a
    // session runs on is fresh, so points in a cache would not reach the next session
    results: resolve(opts.results ?? join(REPO_ROOT, 'results', 'points', config.id)),
    out: resolve(opts.out ?? REPO_ROOT),
    timeBudgetMinutes: opts.timeBudgetMinutes ?? null,
    testLimit: opts.testLimit,
    threads: opts.threads ?? 2,
    samples: opts.samples ?? 256,
    seed: opts.seed ?? 0,
    bnImages: opts.bnImages ?? 2000,
    heldout: opts.heldout ?? 500,
    ...(mode ? { residual: mode } : {}),
    variantAlpha: opts.variantAlpha ?? 2,
    variantSigma: opts.variantSigma ?? 'median',
    variants,
    recoverBudgets,
    recoverCmi: opts.recoverCmi,
    recoverOther: opts.recoverOther,
    finetuneEpochs: opts.finetuneEpochs ?? 3,
    distill: opts.distill ?? 4,
    lr: opts.lr ?? 0.01,
    batch: opts.batch ?? 128,
    finetuneLimit: opts.finetuneLimit,
  };
}

/**
 * 'filters:0.3', or a bare fraction meaning filters; its canonical name. Compound budgets only
 * where a model is pruned once per budget (--recover-budgets): a sweep's x axis and its 30-60%
 * range read one measure.
 */
function normBudget(option: '--budgets' | '--recover-budgets', b: string): string {
  const s = /^[0-9.]+$/.test(b.trim()) ? `filters:${b.trim()}` : b.trim();
  const c = parseCutoff(s);
  const compound = option === '--recover-budgets';
  if (!('fraction' in c) || c.kind === 'keep' || (!compound && 'also' in c && c.also?.length))
    throw new UserError(`${option}: '${b}' is not a global budget (filters:F, params:F, flops:F${compound ? ', or several joined by +' : ''})`);
  return cutoffName(c);
}

async function modelSha256(path: string): Promise<string> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new UserError(`--model ${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
  return createHash('sha256').update(bytes).digest('hex');
}

export async function runExperiment(config: ExperimentConfig, opts: ExperimentOptions = {}): Promise<ExperimentSummary> {
  const w0 = performance.now();
  const o = resolveOptions(config, opts);
  const log = opts.log ?? ((s: string) => (process.env.CMIPRUNE_NO_PROGRESS ? undefined : process.stderr.write(`experiment: ${s}\n`)));
  const sha = await modelSha256(o.model);
  // the default store is per model; --results DIR is used as given (points carry the model's hash anyway)
  if (opts.results === undefined) o.results = join(o.results, sha.slice(0, 16));
  const store = await ResultStore.open(o.results, sha, EXPERIMENT_VERSION);
  if (store.skipped.length > 0) log(`ignoring ${store.skipped.length} unreadable file(s) in the store, e.g. ${store.skipped[0]}`);
  const setup: Setup = { data: o.data, samples: o.samples, seed: o.seed, test: o.testLimit ?? 'all', bnImages: o.bnImages, heldout: o.heldout, ...(o.residual ? { residual: o.residual } : {}) };
  const ft: FinetuneSetup = { epochs: o.finetuneEpochs, lr: o.lr, batch: o.batch, train: o.finetuneLimit ?? 'all' };

  // time estimates: this model's stored points of the same test size, else priors scaled by its size
  const base = store.get<BaselineValue>(keys.baseline(setup))?.value;
  let scale = base ? { macs: base.macs / VGG16_MACS, filters: base.filters / VGG16_FILTERS, test: base.test / 10_000 } : null;
  if (!scale) {
    // nothing measured on this model yet: its size from the file (only when a budget needs estimates)
    const test = o.testLimit !== undefined ? Math.min(1, o.testLimit / 10_000) : 1;
    scale = { macs: 1, filters: 1, test };
    if (o.timeBudgetMinutes !== null && o.steps.some((s) => s !== 'report')) {
      const { model } = await readOnnxModel(o.model);
      const c = modelCost(model);
      const filters = model.nodes.filter((n) => n.op === 'Conv2d').reduce((s, n) => s + model.tensors[(n.params as Record<string, string>).weight!]!.shape[0]!, 0);
      scale = { macs: c.macs / VGG16_MACS, filters: filters / VGG16_FILTERS, test };
    }
  }
  const est = new Estimator(
    scale,
    store
      .list()
      .filter((p) => (p.key.test === undefined || p.key.test === setup.test) && (p.key.residual ?? null) === (setup.residual ?? null))
      .map((p) => ({ key: p.key, seconds: estimateSeconds(p.key, p.value, p.seconds.wall) })),
  );
  const run = new Run(o, store, setup, ft, est, opts.clock ?? (() => performance.now()), log);
  log(`store ${o.results} (${store.size} points of this model); model ${o.model}`);

  let stoppedEarly = false;
  let reason: string | null = null;
  const waiting: string[] = [];
  for (const step of o.steps.filter((s) => s !== 'report')) {
    if (step === 'recovered') {
      const w = run.recoverConfigs().waiting;
      if (w) {
        waiting.push(w);
        log(w);
        continue;
      }
    }
    try {
      await run.runItems(step, run.itemsOf(step));
    } catch (e) {
      if (!(e instanceof StopRun)) throw e;
      stoppedEarly = true;
      reason = e.message;
      log(`stopped: ${e.message}; the store holds every finished point and a rerun resumes`);
      break;
    }
  }

  // what the whole experiment plans, by point step (the recovered step once its choice is known)
  const planned = new Map<string, PointKey>();
  for (const step of config.steps) {
    const w = step === 'recovered' ? run.recoverConfigs().waiting : null;
    if (w) {
      if (!waiting.includes(w)) waiting.push(w);
      continue;
    }
    for (const it of run.itemsOf(step)) for (const k of it.keys) planned.set(store.id(k), k);
  }
  const steps: Record<string, StepSummary> = {};
  for (const k of planned.values()) {
    const s = (steps[k.step] ??= { planned: 0, stored: 0, computed: run.computedBy.get(k.step) ?? 0 });
    s.planned++;
    if (store.has(k)) s.stored++;
  }

  let files: ExperimentSummary['files'] = null;
  if (o.steps.includes('report')) {
    const isDefault = o.model === config.defaultModel.path;
    // a residual mode other than the default is its own section beside the default's (both stay
    // in RESULTS.md): its points are distinct, and the two are read side by side
    const other = config.residual && o.residual !== config.residual.default ? o.residual : null;
    const profile = other
      ? { ...config.report, title: `${config.report.title}, \`--residual ${other}\``, svgDir: `${config.report.svgDir ?? 'results'}-${other}` }
      : config.report;
    const r = await writeResults({
      id: other ? `${config.id}-${other}` : config.id,
      profile,
      store,
      setup,
      finetune: ft,
      settings: o.criteria,
      budgets: o.budgets,
      recoverBudgets: o.recoverBudgets,
      sweeps: o.sweeps,
      variantAlpha: o.variantAlpha,
      variantSigma: o.variantSigma,
      modelPath: isDefault ? config.defaultModel.label : o.model,
      plan: Object.fromEntries(Object.entries(steps).map(([k, v]) => [k, { planned: v.planned, stored: v.stored }])),
      out: o.out,
      command: `npm run experiment:${config.id}${other ? ` -- --residual ${other}` : ''}`,
      ...(isDefault && o.data === 'cifar10' ? {} : { title: `${basename(o.model)} on ${o.data}${other ? `, \`--residual ${other}\`` : ''}` }),
    });
    files = r.files;
    log(`wrote ${r.files.markdown} and ${r.files.plots.length} plot(s)`);
  }
  return {
    results: o.results,
    model: o.model,
    modelSha256: sha,
    ...(o.residual ? { residual: o.residual } : {}),
    steps,
    computed: [...run.computedBy.values()].reduce((s, x) => s + x, 0),
    stoppedEarly,
    reason,
    waiting,
    files,
    seconds: (performance.now() - w0) / 1000,
  };
}

// ---------------------------------------------------------------------------------------------
// command line

function list(v: string): string[] {
  const parts = v.split(',').map((s) => s.trim());
  if (parts.some((s) => s === '')) throw new InvalidArgumentError('expected a comma-separated list');
  return parts;
}

/** --step: 'all' or some of the config's steps, in the config's order. */
function stepsOption(config: ExperimentConfig): (v: string) => Step[] {
  return (v) => {
    const parts = list(v);
    if (parts.includes('all')) return [...config.steps];
    for (const p of parts) if (!(config.steps as readonly string[]).includes(p)) throw new InvalidArgumentError(`expected all or one of: ${config.steps.join(', ')}`);
    return config.steps.filter((s) => parts.includes(s));
  };
}

/** The experiment's command line: options of the steps it has; one JSON summary line on stdout. */
export async function experimentMain(config: ExperimentConfig, argv = process.argv): Promise<void> {
  const hasVariants = config.steps.includes('variants');
  const program = new Command()
    .name(`experiment:${config.id}`)
    .description(config.description)
    .option('--model <path>', 'ONNX model', config.defaultModel.path)
    .option('--data <spec>', 'cifar10, an image folder or arrays (as cmiprune prune)', 'cifar10')
    .option('--step <steps>', `all, or some of: ${config.steps.join(', ')} (comma-separated)`, stepsOption(config), [...config.steps])
    .option(
      '--budgets <list>',
      `sweep budgets (filters:F, params:F, flops:F or bare F = filters) (default: ${config.defaultBudgets.join(',')}` +
        `${Object.entries(config.residual?.budgets ?? {})
          .map(([m, b]) => `; with --residual ${m}: ${b!.join(',')}`)
          .join('')})`,
      list,
    )
    .option('--criteria <list>', `sweep criterion settings: ${SWEEP_SETTINGS.map((s) => s.id).join(', ')}`, list)
    .option('--results <dir>', `result store (default: results/points/${config.id}/<model sha256> in the repository)`)
    .option('--out <dir>', 'where RESULTS.md and results/ go (default: the repository root)')
    .option('--time-budget <minutes>', 'stop cleanly before a point that would likely end after this many minutes', floatOption(0, true))
    .option('--test-limit <n>', 'evaluate on the first N test images only (quick runs)', intOption(1))
    .option('--threads <n>', 'engine and estimator threads', intOption(1), 2)
    .option('--samples <n>', 'calibration images of the criteria', intOption(2), 256)
    .option('--seed <n>', 'seed', intOption(0), 0)
    .option('--bn-images <n>', 'BatchNorm re-estimation images', intOption(1), 2000)
    .option('--heldout <n>', 'held-out training images for the tool\u2019s own choices', intOption(10), 500);
  if (config.residual)
    program.option(
      '--residual <mode>',
      `residual connections: inner (only convs whose channels reach no Add) or all (coupled across the Adds) (default ${config.residual.default})`,
      (v: string) => {
        if (!(RESIDUAL_MODES as readonly string[]).includes(v)) throw new InvalidArgumentError(`expected one of: ${RESIDUAL_MODES.join(', ')}`);
        return v;
      },
    );
  if (hasVariants)
    program
      .option('--variant-alpha <a>', 'alpha of the variants', floatOption(0, true), 2)
      .option('--variant-sigma <rule>', 'kernel width rule of the variants: median or reference', 'median')
      .option('--variants <list>', `variants to run: ${VARIANTS.map(variantName).join(', ')}`, list);
  program
    .option('--recover-budgets <list>', 'budgets of the recovered step', list, [...config.defaultRecoverBudgets])
    .option('--recover-cmi <setting[@allocation]>', 'CMI configuration to fine-tune (default: the best of the sweeps)')
    .option('--recover-other <setting[@allocation]>', 'other criterion to fine-tune (default: the best of the sweeps)')
    .option('--finetune-epochs <n>', 'fine-tuning epochs', intOption(1), 3)
    .option('--distill <T>', 'distillation temperature of the distilled runs', floatOption(0, true), 4)
    .option('--lr <lr>', 'fine-tuning learning rate', floatOption(0, true), 0.01)
    .option('--batch <n>', 'fine-tuning batch', intOption(1), 128)
    .option('--finetune-limit <n>', 'fine-tune on the first N training images only (quick runs)', intOption(2))
    .exitOverride();
  program.parse(argv);
  const a = program.opts();
  if (hasVariants && a.variantSigma !== 'median' && a.variantSigma !== 'reference') throw new UserError(`--variant-sigma: '${a.variantSigma}' is not one of: median, reference`);
  const summary = await runExperiment(config, {
    model: a.model,
    data: a.data,
    steps: a.step,
    budgets: a.budgets,
    criteria: a.criteria,
    results: a.results,
    out: a.out,
    timeBudgetMinutes: a.timeBudget,
    testLimit: a.testLimit,
    threads: a.threads,
    samples: a.samples,
    seed: a.seed,
    bnImages: a.bnImages,
    heldout: a.heldout,
    residual: a.residual,
    variantAlpha: a.variantAlpha,
    variantSigma: a.variantSigma,
    variants: a.variants,
    recoverBudgets: a.recoverBudgets,
    recoverCmi: a.recoverCmi,
    recoverOther: a.recoverOther,
    finetuneEpochs: a.finetuneEpochs,
    distill: a.distill,
    lr: a.lr,
    batch: a.batch,
    finetuneLimit: a.finetuneLimit,
  });
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}

/**
 * Runs experimentMain when `moduleUrl` (the experiment file's import.meta.url) is the process's
 * entry point: user errors are one line and exit 1, internal errors a stack and exit 2.
 */
export async function runIfMain(config: ExperimentConfig, moduleUrl: string): Promise<void> {
  if (!process.argv[1] || resolve(process.argv[1]) !== fileURLToPath(moduleUrl)) return;
  try {
    await experimentMain(config);
  } catch (e) {
    const { CommanderError } = await import('commander');
    if (e instanceof CommanderError) process.exit(e.exitCode);
    if (e instanceof UserError) {
      process.stderr.write(`experiment:${config.id}: ${e.message}\n`);
      process.exit(1);
    }
    process.stderr.write(`experiment:${config.id}: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(2);
  }
}
