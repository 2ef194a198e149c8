// `cmiprune prune` as a library call: rank -> cut-off -> surgery -> recovery -> verified export.
// Choices the tool makes (scree/X-Means candidates, sensitivity allocation) look only at a
// held-out slice of the training images; accuracies are reported on the test set. Rankings and
// fine-tuning epochs are checkpointed under the cache (keyed by every input and an algorithm
// version), so a killed run resumes; --out receives its files only at the end, as one set
// (util/fs.ts writeDirAtomic).
import { createHash } from 'node:crypto';
import { access, constants as fsConstants, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { classBalancedIndices, type ImageDataset, limit, normalizeBatch, subset } from '../data/dataset.js';
import { type Normalization, resolveNormalization } from '../data/normalization.js';
import { checkModelInput, describeDataSpec, loadDataset } from '../data/source.js';
import { engineKeyTag, setThreads, TorchModel } from '../engine/index.js';
import { exportTfjs } from '../export/tfjs.js';
import { renderReportHtml } from '../report/html.js';
import { assertVerified, ortLatency, verifyWithOnnxRuntime } from '../export/verify.js';
import type { Model } from '../ir/model.js';
import { modelCost } from '../ir/shapes.js';
import { DEFAULT_OPSET, exportOnnx, MAX_OPSET } from '../onnx/export.js';
import { readOnnxModel } from '../onnx/index.js';
import { onnx } from '../onnx/proto.js';
import { finetune } from '../recover/finetune.js';
import { anchorBatchNorm, type BnReestimateOptions, type BnReestimateResult, type BnStats, chooseBnStats, reestimateBatchNorm } from '../recover/bn.js';
import { evaluate } from '../train/evaluate.js';
import { UserError } from '../util/errors.js';
import { cacheDir, writeDirAtomic, writeFileAtomic } from '../util/fs.js';
import { progress } from '../util/progress.js';
import { allocateByCurve, allocateBySensitivity, allocateUniform, type Allocation, type AllocationRule, type Budget } from '../prune/allocate.js';
import { cmiRankOptions, type CmiSettings, toGroupRanking } from '../prune/cmi-criterion.js';
import { convUnits } from '../ir/graph.js';
import { type ChainsResult, type Formulation, type PruneOrder, rankChains } from '../cmi/rank-chains.js';
import { convFilters, costModel } from '../prune/cost.js';
import { requireCurve } from '../prune/criteria.js';
import { type CutoffSpec, cutoffName, parseCutoff } from '../prune/cutoff-spec.js';
import { candidateKeeps, chooseCandidate, fractionCutoff, ptestCutoff, screeCutoff, xmeansCutoff } from '../prune/cutoffs.js';
import { channelGroups, keptChannels, RESIDUAL_MODES, type ResidualMode, uniformRankings } from '../prune/groups.js';
import { applyPlan, foldingNotes, maskPlan } from '../prune/surgery.js';
import type { ChannelGroup, Criterion, CutoffDecision, GroupRanking, PruningPlan } from '../prune/types.js';
import { CRITERIA, CRITERION_TRAITS, type CriterionName, makeCriterion } from '../prune/registry.js';

// the criteria by name live with the prune stage; the pipeline's callers find them here too
export { CRITERIA, CRITERION_TRAITS, type CriterionName, makeCriterion } from '../prune/registry.js';

/** bump when the pipeline's decisions change for the same inputs (part of every checkpoint key) */
export const PRUNE_ALGORITHM_VERSION = 'prune/1';

/**
 * The defaults of prune() and `cmiprune prune`, declared once. The method's (criterion, alpha,
 * sigma, formulation, order, cutoff) are the ones RESULTS.md's VGG16 section ("The tool's
 * defaults") reads off the experiment's points.
 */
export const PRUNE_DEFAULTS = {
  data: 'cifar10',
  criterion: 'cmi' as CriterionName,
  // RESULTS.md, VGG16 "The tool's defaults": X-Means, CMI of the full formulation, bidirectional
  // order keeps the most accuracy above one global threshold cutting as many filters (+27 points at
  // 63% of the filters); scree cuts 2-9% and falls below that threshold
  cutoff: 'xmeans',
  seed: 0,
  samples: 256,
  // RESULTS.md, VGG16 "The tool's defaults": alpha 1.01 with the scale-aware width is 3-5 points
  // ahead of alpha 2 after BN re-estimation over 30-60% of the filters (alpha 2 is ~25x faster)
  alpha: 1.01,
  sigma: 'median' as 'reference' | 'median' | 'mean',
  permutations: 100,
  eta: 0.05,
  allocation: 'sensitivity' as AllocationRule,
  /** CMI's; other criteria, and --residual all, rank per layer (resolveFormulation) */
  formulation: 'full' as Formulation,
  order: 'bidirectional' as PruneOrder,
  residual: 'inner' as ResidualMode,
  roundTo: 1,
  minKeep: 1,
  heldout: 500,
  tolerance: 0.005,
  bnImages: 2000,
  // README "BatchNorm statistics": anchored statistics kept more test accuracy than re-estimation
  // alone at 24 of 28 points measured on VGG16-BN and ResNet-56 (re-estimation alone costs the
  // unpruned models 0.52 and 1.58 points), but not at all of them: held-out images decide per run
  bnStats: 'auto' as BnStats,
  finetuneEpochs: 0,
  lr: 0.01,
  batch: 128,
  distillWeight: 0.5,
  threads: 2,
  fresh: false,
};

export interface PruneOptions {
  model: string;
  /** cifar10, an image folder (DIR/train/<class>/*.png|jpg, DIR/test/...) or x.npy,y.npy[,xtest.npy,ytest.npy] */
  data: string;
  criterion: CriterionName;
  /** scree | xmeans | ptest | keep:F | filters:F | params:F | flops:F */
  cutoff: string;
  out: string;
  seed?: number;
  /** CMI: calibration images (class-balanced training sample), alpha, kernel width rule */
  samples?: number;
  alpha?: number;
  sigma?: 'reference' | 'median' | 'mean';
  /** ptest: permutations and significance level */
  permutations?: number;
  eta?: number;
  /** CMI across layers: per-layer, compact (conditioned on the chain's previous layer's kept maps), full (on every earlier layer of the chain; CMI's default, resolveFormulation) */
  formulation?: Formulation;
  /** the order in which layers are pruned with compact/full: forward or bidirectional (default PRUNE_DEFAULTS.order) */
  order?: PruneOrder;
  /**
   * residual networks: 'inner' (default) prunes only convs whose channels do not reach an Add (the
   * first conv of each block, as the L1-norm and HRank papers do for ResNet-56), convs coupled
   * through an Add keep every channel and the report says why; 'all' also prunes each coupled
   * space (a residual stream, its convs, BNs, Adds and shortcut Pads) as one group
   */
  residual?: ResidualMode;
  /** global budgets' allocation across layers (default sensitivity) */
  allocation?: AllocationRule;
  /** keep a multiple of this many channels per layer, rounded up (default 1: exactly what the cut-off says) */
  roundTo?: number;
  /** channels every prunable layer keeps at least (default 1) */
  minKeep?: number;
  /** held-out training images for the tool's own choices (default 500) */
  heldout?: number;
  /** scree/X-Means: a candidate is acceptable when the held-out accuracy of pruning its layer alone drops at most this much (default 0.005) */
  tolerance?: number;
  /** BatchNorm re-estimation on this many training images (default 2000; 0 turns it off) */
  bnImages?: number;
  /** 'anchored': the trained statistics moved by the difference of two re-estimates (recover/bn.ts anchorBatchNorm); 'reestimated': the pruned model's re-estimate alone; 'auto' (default): the one more accurate on the held-out images */
  bnStats?: BnStats;
  finetuneEpochs?: number;
  lr?: number;
  batch?: number;
  /** distillation temperature (off when absent) and soft-target weight */
  distill?: number;
  distillWeight?: number;
  /** evaluate on the first N test images only (default all 10,000) */
  testLimit?: number;
  threads?: number;
  mean?: number[];
  std?: number[];
  /** ignore checkpoints */
  fresh?: boolean;
  /** checkpoints (default: under the cache, keyed by the run's inputs) */
  checkpointDir?: string;
}

export interface PruneSummary {
  out: string;
  files: Record<string, string>;
  criterion: string;
  cutoff: string;
  filters: { before: number; after: number };
  params: { before: number; after: number };
  macs: { before: number; after: number };
  accuracy: Record<string, number | null>;
  seconds: number;
}

const log = (s: string) => {
  if (!process.env.CMIPRUNE_NO_PROGRESS) process.stderr.write(`prune: ${s}\n`);
};

/** Fails before any work when --out cannot be written; nothing is created there yet. */
export async function checkOutDir(out: string): Promise<void> {
  let dir = resolve(out);
  try {
    const s = await stat(dir);
    if (!s.isDirectory()) throw new UserError(`--out ${out}: exists and is not a directory`);
  } catch (e) {
    if (e instanceof UserError) throw e;
    // not there yet: the nearest existing ancestor must be writable
    while (dirname(dir) !== dir) {
      dir = dirname(dir);
      try {
        if ((await stat(dir)).isDirectory()) break;
        throw new UserError(`--out ${out}: '${dir}' is not a directory`);
      } catch (err) {
        if (err instanceof UserError) throw err;
      }
    }
  }
  try {
    await access(dir, fsConstants.W_OK);
  } catch {
    throw new UserError(`--out ${out}: '${dir}' is not writable`);
  }
}

/**
 * The formulation a run uses when none is given: the default (a cross-layer CMI formulation) where
 * it is defined, per-layer where it is not (another criterion has no conditional form; a chain
 * over coupled residual streams is not defined by the method).
 */
export function resolveFormulation(given: Formulation | undefined, criterion: string, residual: ResidualMode | undefined): Formulation {
  if (given !== undefined) return given;
  return CRITERION_TRAITS[criterion as CriterionName]?.conditional && residual !== 'all' ? PRUNE_DEFAULTS.formulation : 'per-layer';
}

function validate(o: PruneOptions): void {
  if (!(CRITERIA as readonly string[]).includes(o.criterion)) throw new UserError(`--criterion '${o.criterion}' is not one of: ${CRITERIA.join(', ')}`);
  const c = parseCutoff(o.cutoff);
  const traits = CRITERION_TRAITS[o.criterion];
  if (!traits.curve && (c.kind === 'scree' || c.kind === 'xmeans' || c.kind === 'ptest'))
    throw new UserError(`--cutoff ${c.kind} needs a curve, and criterion '${o.criterion}' gives none: use a budget (keep:F, filters:F, params:F, flops:F)`);
  if (c.kind === 'ptest' && !traits.pValues) throw new UserError(`--cutoff ptest is a test on the CMI ranking: use --criterion cmi`);
  if (o.formulation !== undefined && o.formulation !== 'per-layer' && !traits.conditional)
    throw new UserError(`--formulation ${o.formulation} conditions CMI on other layers: use --criterion cmi`);
  if (o.formulation !== undefined && !['per-layer', 'compact', 'full'].includes(o.formulation))
    throw new UserError(`--formulation '${o.formulation}' is not one of: per-layer, compact, full`);
  if (o.order !== undefined && !['forward', 'bidirectional'].includes(o.order)) throw new UserError(`--order '${o.order}' is not one of: forward, bidirectional`);
  if (o.residual !== undefined && !RESIDUAL_MODES.includes(o.residual)) throw new UserError(`--residual '${o.residual}' is not one of: ${RESIDUAL_MODES.join(', ')}`);
  // the cross-layer chains condition one conv's maps on the previous conv's kept maps: a chain over
  // coupled residual streams is not defined by the method (SPEC section 3)
  if (o.residual === 'all' && o.formulation !== undefined && o.formulation !== 'per-layer')
    throw new UserError(`--formulation ${o.formulation} chains plain conv layers; with --residual all use --formulation per-layer`);
  if (o.allocation === 'curve' && !traits.curve) throw new UserError(`--allocation curve needs a curve; criterion '${o.criterion}' gives none`);
  if (o.distill !== undefined && !(o.distill > 0)) throw new UserError(`--distill must be a temperature > 0, got ${o.distill}`);
  if (o.distill !== undefined && !(o.finetuneEpochs! > 0)) throw new UserError(`--distill needs --finetune-epochs >= 1`);
}

/** Top-1 accuracy of a model on a data set through a fresh engine (disposed after). */
export async function evalAcc(model: Model, ds: ImageDataset, norm: { mean: readonly number[]; std: readonly number[] }, label: string): Promise<number> {
  const engine = TorchModel.create(model);
  try {
    return (await evaluate(engine, ds, { batch: 256, mean: norm.mean, std: norm.std, label })).accuracy;
  } finally {
    engine.dispose();
  }
}

/** The first `keep` channels of an order, sorted: a plan's keep list (groups.ts keptChannels). */
export const sortedPrefix = keptChannels;

/**
 * Held-out accuracy of the unpruned model with one layer's filters outside `keepIndices` zeroed
 * (= pruning that layer alone, up to padded borders), on one engine whose weight is swapped in and
 * restored. Calls are serialised (two pruning chains may ask at once) and cached.
 */
export function heldoutProbe(model: Model, heldout: ImageDataset, norm: { mean: readonly number[]; std: readonly number[] }) {
  const engine = TorchModel.create(model);
  const cache = new Map<string, number>();
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(f: () => Promise<T>): Promise<T> => {
    const p = queue.then(f);
    queue = p.catch(() => undefined);
    return p;
  };
  const acc = async () => (await evaluate(engine, heldout, { batch: 250, mean: norm.mean, std: norm.std, label: 'held-out' })).accuracy;
  let base: number | undefined;
  return {
    baseline: () => serial(async () => (base ??= await acc())),
    withLayer: (g: ChannelGroup, keepIndices: number[]) =>
      serial(async () => {
        const key = `${g.name}/${keepIndices.join(',')}`;
        if (cache.has(key)) return cache.get(key)!;
        // every conv writing the group's channels (one for a plain group, all of a coupled one's)
        const wKeys = [...new Set(g.members.filter((m) => m.role === 'out' && m.slot === 'weight').map((m) => (model.nodes.find((n) => n.name === m.node)!.params as Record<string, string>).weight!))].filter(
          (k) => model.tensors[k]!.shape.length === 4,
        );
        if (keepIndices.length < g.channels) {
          const masked = maskPlan(model, { keep: { [g.name]: keepIndices } });
          engine.writeTensors(Object.fromEntries(wKeys.map((k) => [k, masked.tensors[k]!])));
        }
        const a = await acc();
        engine.writeTensors(Object.fromEntries(wKeys.map((k) => [k, model.tensors[k]!])));
        cache.set(key, a);
        return a;
      }),
    dispose: () => engine.dispose(),
  };
}

/**
 * A pruned model's BatchNorm statistics by --bn-stats: its own re-estimate, that re-estimate
 * anchored on the original's (`reOriginal`: the original re-estimated with the same images and
 * options, null for 'reestimated'; a caller pruning many plans computes it once), or for 'auto'
 * whichever of the two is more accurate on the held-out images (chooseBnStats).
 */
export async function batchNormStatistics(a: {
  original: Model;
  reOriginal: Model | null;
  plan: PruningPlan;
  pruned: Model;
  stats: BnStats;
  rest: ImageDataset;
  heldout: ImageDataset;
  norm: { mean: readonly number[]; std: readonly number[] };
  bnOpts: BnReestimateOptions;
}): Promise<{ model: Model; chosen: 'anchored' | 'reestimated'; heldoutAccuracy: { anchored: number; reestimated: number } | null; reestimate: BnReestimateResult }> {
  const r = await reestimateBatchNorm(a.pruned, a.rest, a.bnOpts);
  if (a.stats === 'reestimated' || !a.reOriginal) return { model: r.model, chosen: 'reestimated', heldoutAccuracy: null, reestimate: r };
  const anchored = anchorBatchNorm(a.original, a.reOriginal, a.plan, r.model);
  if (a.stats === 'anchored') return { model: anchored, chosen: 'anchored', heldoutAccuracy: null, reestimate: r };
  const heldoutAccuracy = { anchored: await evalAcc(anchored, a.heldout, a.norm, 'held-out: anchored BN'), reestimated: await evalAcc(r.model, a.heldout, a.norm, 'held-out: re-estimated BN') };
  const chosen = chooseBnStats(heldoutAccuracy);
  return { model: chosen === 'anchored' ? anchored : r.model, chosen, heldoutAccuracy, reestimate: r };
}

/** What every pruning run reads first: the model, its groups, the data and the samples drawn from it. */
export interface RunInputs {
  bytes: Uint8Array;
  modelSha256: string;
  model: Model;
  groups: ChannelGroup[];
  prunable: ChannelGroup[];
  train: ImageDataset;
  test: ImageDataset;
  norm: Normalization;
  /** the criterion's class-balanced training sample */
  calibration: ImageDataset;
  /** training images outside the calibration sample, and a class-balanced held-out slice of them */
  rest: ImageDataset;
  heldout: ImageDataset;
  /** key of the inputs and the ranking settings, and where this run's checkpoints live */
  runKey: string;
  ckptDir: string;
}

export async function loadInputs(o: {
  model: string;
  data: string;
  criterion: string;
  samples: number;
  heldout: number;
  seed: number;
  alpha: number;
  sigma: string;
  permutations: number;
  eta: number;
  threads: number;
  testLimit?: number;
  mean?: number[];
  std?: number[];
  checkpointDir?: string;
  residual?: ResidualMode;
}): Promise<RunInputs> {
  const { bytes, sha256: modelSha256, model } = await readOnnxModel(o.model);
  const groups = channelGroups(model, o.residual ?? 'inner');
  const prunable = groups.filter((g) => g.prunable);
  if (prunable.length === 0) {
    const why = groups.map((g) => `${g.name}: ${g.reason}`).join('; ');
    throw new UserError(`${o.model}: no conv layer can be pruned${why ? ` (${why})` : ''}`);
  }
  setThreads(o.threads);
  const train = await loadDataset(o.data, 'train');
  const testFull = await loadDataset(o.data, 'test');
  const test = o.testLimit !== undefined ? limit(testFull, o.testLimit) : testFull;
  checkModelInput(model, train, o.model);
  const norm = resolveNormalization(model, o.model, o, train.channels);
  // calibration sample for the criterion, and a disjoint held-out slice for the tool's choices
  const calibIdx = classBalancedIndices(train.labels, train.classes, o.samples, o.seed);
  const inCalib = new Set(calibIdx);
  const restIdx = Int32Array.from({ length: train.n }, (_, i) => i).filter((i) => !inCalib.has(i));
  const rest = subset(train, restIdx, `${train.name} minus calibration`);
  const heldIdx = classBalancedIndices(rest.labels, rest.classes, o.heldout, o.seed + 1);
  const heldout = subset(rest, heldIdx, `${train.name} held-out ${o.heldout}`);
  const calibration = subset(train, calibIdx, `${train.name} calibration ${o.samples}`);
  const runKey = createHash('sha256')
    .update(JSON.stringify([PRUNE_ALGORITHM_VERSION, modelSha256, o.data, o.criterion, o.samples, o.seed, o.alpha, o.sigma, o.permutations, o.eta, norm.mean, norm.std, o.residual ?? 'inner', ...engineKeyTag()]))
    .digest('hex')
    .slice(0, 16);
  const ckptDir = o.checkpointDir ?? join(cacheDir(), 'prune', runKey);
  return { bytes, modelSha256, model, groups, prunable, train, test, norm, calibration, heldout, rest, runKey, ckptDir };
}

function sourceOpset(bytes: Uint8Array): number {
  const m = onnx.ModelProto.decode(bytes);
  const def = (m.opsetImport ?? []).find((x) => !x.domain || x.domain === 'ai.onnx');
  return Number(def?.version ?? 0);
}

export async function prune(opts: PruneOptions): Promise<PruneSummary> {
  const t0 = performance.now();
  const seconds: Record<string, number> = {};
  let tStage = performance.now();
  const stage = (name: string) => {
    const now = performance.now();
    seconds[name] = (now - tStage) / 1000;
    tStage = now;
  };
  const o: Required<Omit<PruneOptions, 'distill' | 'testLimit' | 'mean' | 'std' | 'checkpointDir'>> & PruneOptions = {
    ...PRUNE_DEFAULTS,
    ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)),
  } as never;
  o.formulation = resolveFormulation(opts.formulation, o.criterion, o.residual);
  validate(o);
  const cutoff: CutoffSpec = parseCutoff(o.cutoff);
  await checkOutDir(o.out);

  // --- load
  const inputs = await loadInputs(o);
  const { bytes, modelSha256, model, groups, prunable, train, test, norm, calibration, heldout, rest, runKey, ckptDir } = inputs;
  stage('load');

  // --- rank and cut-offs. Per-layer rankings come first whenever something needs all of them
  // (the per-layer formulation, a global budget's allocation, the bidirectional order's start);
  // the cross-layer formulations then re-rank layer by layer, each cut when it is reached.
  const chained = o.formulation !== 'per-layer';
  const cmiSettings: CmiSettings = {
    alpha: o.alpha,
    sigma: o.sigma,
    samples: o.samples,
    seed: o.seed,
    threads: o.threads,
    permutations: cutoff.kind === 'ptest' ? o.permutations : undefined,
    eta: o.eta,
    checkpointDir: join(ckptDir, 'rank'),
    fresh: o.fresh,
  };
  const criterion = makeCriterion(o.criterion, cmiSettings);
  // what ranked the filters, in words: the cross-layer formulations replace the per-layer ordering
  const criterionLabel = chained ? criterion.key.replace('/per-layer/', `/${o.formulation}/${o.order}/`) : criterion.key;
  const budget = 'fraction' in cutoff && cutoff.kind !== 'keep' ? (cutoff as Budget) : undefined;
  const rankings = new Map<string, GroupRanking>();
  // (the bidirectional order's own per-layer pre-pass runs inside rankChains, on the same checkpoints)
  if (!chained || budget) {
    log(`ranking ${prunable.length} layers by ${o.criterion}`);
    const list = await criterion.rank(model, prunable, { data: calibration, mean: norm.mean, std: norm.std, seed: o.seed, threads: o.threads });
    for (const r of list) rankings.set(r.group, r);
  }
  stage('rank');
  // the uniform allocation and keep:F take the same fraction of every conv, also inside a coupled
  // group (groups.ts stratifiedOrder): those groups are cut by their stratified order, while the
  // report keeps the criterion's own order, which its curve belongs to
  const cutOrders = new Map<string, number[]>();
  if ((budget && o.allocation === 'uniform') || cutoff.kind === 'keep')
    for (const [name, r] of uniformRankings(rankings, prunable)) if (r.order !== rankings.get(name)!.order) cutOrders.set(name, r.order);
  const orderOf = (name: string): number[] => cutOrders.get(name) ?? rankings.get(name)!.order;

  const cost = costModel(model, groups, new Map([...rankings.keys()].map((name) => [name, { order: orderOf(name) }])));
  const decisions = new Map<string, CutoffDecision>();
  let allocation: Allocation | undefined;
  const probe = heldoutProbe(model, heldout, norm);
  let heldoutBaseline: number | null = null;
  let chains: ChainsResult | undefined;
  try {
    if (budget) {
      if (o.allocation === 'uniform') allocation = allocateUniform(budget, prunable, cost, o.minKeep);
      else if (o.allocation === 'curve') allocation = allocateByCurve(budget, prunable, rankings, cost, o.minKeep);
      else {
        heldoutBaseline = await probe.baseline();
        const bar = progress('sensitivity (held-out)', prunable.length * 9);
        allocation = await allocateBySensitivity(budget, prunable, cost, async (g, k) => {
          const a = await probe.withLayer(g, sortedPrefix(orderOf(g.name), k, g));
          bar.tick(1, { layer: g.name });
          return heldoutBaseline! - a;
        }, o.minKeep);
        bar.done();
      }
    }
    if (cutoff.kind === 'scree' || cutoff.kind === 'xmeans') heldoutBaseline = await probe.baseline();

    /** --round-to K: keep a multiple of K channels (rounded up, at most all), for kernels that prefer aligned widths. */
    const decide = async (g: ChannelGroup, r: GroupRanking): Promise<CutoffDecision> => {
      const d = await decideRaw(g, r);
      if (o.roundTo <= 1) return d;
      const keep = Math.min(g.channels, Math.ceil(d.keep / o.roundTo) * o.roundTo);
      return keep === d.keep ? d : { ...d, keep, rule: `${d.rule}; ${d.keep} rounded up to ${keep} (--round-to ${o.roundTo})`, evidence: { ...d.evidence, unroundedKeep: d.keep } };
    };
    /** One layer's cut-off from its ranking: the per-layer rules, or the budget's allocated count. */
    const decideRaw = async (g: ChannelGroup, r: GroupRanking): Promise<CutoffDecision> => {
      if (allocation) return { keep: allocation.keep[g.name]!, rule: `${cutoffName(cutoff)} by ${allocation.rule} allocation`, evidence: { reached: allocation.reached, ...(allocation.evidence.reachedParts ? { reachedParts: allocation.evidence.reachedParts } : {}) } };
      if (cutoff.kind === 'keep') return fractionCutoff(g.channels, cutoff.fraction, o.minKeep);
      if (cutoff.kind === 'ptest') return ptestCutoff(r.pValues ?? [], { eta: o.eta, minKeep: o.minKeep, channels: g.channels });
      const d =
        cutoff.kind === 'scree'
          ? screeCutoff(requireCurve(r, o.criterion, 'scree'), { minKeep: o.minKeep })
          : xmeansCutoff(requireCurve(r, o.criterion, 'xmeans'), { seed: o.seed, minKeep: o.minKeep });
      // the held-out accuracy of each candidate, its layer pruned alone; chooseCandidate decides
      const accs: Record<number, number> = {};
      for (const k of candidateKeeps(d)) accs[k] = await probe.withLayer(g, sortedPrefix(r.order, k, g));
      return chooseCandidate(d, accs, heldoutBaseline!, o.tolerance);
    };

    const byName = new Map(prunable.map((g) => [g.name, g]));
    if (!chained) {
      const bar = progress('cut-offs', prunable.length);
      for (const g of prunable) {
        decisions.set(g.name, await decide(g, rankings.get(g.name)!));
        bar.tick(1, { layer: g.name });
      }
      bar.done();
    } else {
      log(`${o.formulation} CMI, ${o.order} order`);
      const units = convUnits(model).filter((u) => byName.has(u.name));
      chains = await rankChains(model, units, calibration, {
        ...cmiRankOptions(cmiSettings, norm),
        formulation: o.formulation,
        order: o.order,
        decide: async (u, layer) => {
          const g = byName.get(u.name)!;
          // the bidirectional start keeps its per-layer decision; every other layer is cut on its chain ranking
          const d = await decide(g, toGroupRanking(layer));
          decisions.set(g.name, d);
          return d.keep;
        },
      });
      for (const l of chains.layers) {
        rankings.set(l.layer, { ...toGroupRanking(l), evidence: { ...toGroupRanking(l).evidence, chain: l.chain, conditionedOn: l.conditionedOn } });
        cutOrders.delete(l.layer); // a chain's ranking is cut as it comes
      }
    }
  } finally {
    probe.dispose();
  }
  const plan: PruningPlan = {
    keep: Object.fromEntries(prunable.map((g) => [g.name, sortedPrefix(orderOf(g.name), decisions.get(g.name)!.keep, g)])),
    provenance: { tool: 'cmiprune', version: PRUNE_ALGORITHM_VERSION, criterion: criterionLabel, formulation: o.formulation, order: o.order, cutoff: cutoffName(cutoff), allocation: allocation?.rule ?? null, seed: o.seed },
  };
  stage('cutoff');

  // --- surgery
  const pruned = applyPlan(model, plan);
  const notes = foldingNotes(model, plan, groups);
  // how much folding moved the logits against the masked model (exact but for padded borders)
  const probeBatch = subset(heldout, Array.from({ length: Math.min(32, heldout.n) }, (_, i) => i));
  const probeX = { x: normalizeBatch(probeBatch, { start: 0, end: probeBatch.n }, norm.mean, norm.std), shape: [probeBatch.n, train.channels, train.height, train.width] };
  const logitsOf = async (m: Model) => {
    const e = TorchModel.create(m);
    try {
      return Object.values((await e.forward(probeX.x, probeX.shape)).outputs)[0]!.data;
    } finally {
      e.dispose();
    }
  };
  const [lMasked, lPruned] = [await logitsOf(maskPlan(model, plan)), await logitsOf(pruned)];
  let foldDiff = 0;
  let maxLogit = 0;
  for (let i = 0; i < lMasked.length; i++) {
    foldDiff = Math.max(foldDiff, Math.abs(lMasked[i]! - lPruned[i]!));
    maxLogit = Math.max(maxLogit, Math.abs(lMasked[i]!));
  }
  stage('surgery');

  // --- accuracies and recovery
  const accuracy: Record<string, number | null> = { before: null, afterSurgery: null, afterBnReestimation: null, afterFinetune: null };
  accuracy.before = await evalAcc(model, test, norm, 'test: unpruned');
  accuracy.afterSurgery = await evalAcc(pruned, test, norm, 'test: after surgery');
  stage('evaluate');
  let current = pruned;
  let bnInfo: Record<string, unknown> = { enabled: false };
  let bnChosen: 'anchored' | 'reestimated' = 'reestimated';
  if (o.bnImages > 0) {
    const bnOpts = { mean: norm.mean, std: norm.std, images: Math.min(o.bnImages, rest.n), seed: o.seed, threads: o.threads };
    const ro = o.bnStats !== 'reestimated' ? await reestimateBatchNorm(model, rest, bnOpts) : null;
    const bn = await batchNormStatistics({ original: model, reOriginal: ro?.model ?? null, plan, pruned, stats: o.bnStats, rest, heldout, norm, bnOpts });
    current = bn.model;
    bnChosen = bn.chosen;
    const { images, layers, seconds } = bn.reestimate;
    bnInfo = { enabled: true, stats: o.bnStats, chosen: bnChosen, heldoutAccuracy: bn.heldoutAccuracy, images, layers, seconds: seconds + (ro?.seconds ?? 0) };
    accuracy.afterBnReestimation = await evalAcc(current, test, norm, 'test: after BN re-estimation');
  }
  stage('bnReestimation');
  const epochs: Record<string, unknown>[] = [];
  if (o.finetuneEpochs > 0) {
    const ftKey = createHash('sha256').update(JSON.stringify([runKey, plan.keep, o.bnImages, ...(bnChosen === 'anchored' ? ['anchored'] : []), o.lr, o.batch, o.finetuneEpochs, o.distill ?? null, o.distillWeight])).digest('hex').slice(0, 16);
    const ftDir = join(ckptDir, 'finetune', ftKey);
    const accPath = join(ftDir, 'test-accuracy.json');
    // --fresh: this run's fine-tuning starts over (its earlier epochs' checkpoints go)
    if (o.fresh) await rm(ftDir, { recursive: true, force: true });
    const accByEpoch: Record<string, number> = await readFile(accPath, 'utf8').then((s) => JSON.parse(s) as Record<string, number>, () => ({}));
    const r = await finetune(current, train, {
      epochs: o.finetuneEpochs,
      batch: o.batch,
      lr: o.lr,
      seed: o.seed,
      mean: norm.mean,
      std: norm.std,
      threads: o.threads,
      checkpointDir: ftDir,
      checkpointKey: ftKey,
      ...(o.distill !== undefined ? { teacher: model, distill: { temperature: o.distill, weight: o.distillWeight } } : {}),
      label: 'fine-tune',
      onEpoch: async (e) => {
        accByEpoch[e.epoch + 1] = await evalAcc(e.model, test, norm, `test: after epoch ${e.epoch + 1}`);
        await writeFileAtomic(accPath, JSON.stringify(accByEpoch));
      },
    });
    current = r.model;
    for (const e of r.epochs) epochs.push({ ...e, testAccuracy: accByEpoch[e.epoch + 1] ?? null });
    const last = accByEpoch[o.finetuneEpochs];
    accuracy.afterFinetune = last ?? (await evalAcc(current, test, norm, 'test: after fine-tuning'));
  }
  stage('finetune');

  // --- export, verify, latency
  // the input's opset when the exporter supports it (13..22), else its default
  const opset = sourceOpset(bytes);
  const outBytes = exportOnnx(current, opset >= DEFAULT_OPSET && opset <= MAX_OPSET ? { opset } : {});
  const verification = await verifyWithOnnxRuntime(outBytes, current, probeX);
  assertVerified(verification, join(o.out, 'pruned.onnx'));
  stage('verify');
  const sample = [train.channels, train.height, train.width];
  const latency = { before: await ortLatency(bytes, sample, { threads: o.threads }), after: await ortLatency(outBytes, sample, { threads: o.threads }) };
  stage('latency');

  const costBefore = modelCost(model);
  const costAfter = modelCost(current);
  // conv filters, counted on the models (a coupled group's channels span several convs' filters)
  const filtersBefore = convFilters(model);
  const filtersAfter = convFilters(current);
  const report = {
    tool: { name: 'cmiprune', algorithm: PRUNE_ALGORITHM_VERSION },
    settings: { ...o, criterionKey: criterionLabel, normalization: norm },
    model: { path: o.model, sha256: modelSha256, input: model.inputs[0], outputs: model.outputs },
    data: { name: o.data, source: describeDataSpec(o.data), calibration: calibration.n, heldout: heldout.n, test: test.n, heldoutFrom: 'training images outside the calibration sample' },
    cutoffRules: {
      offByOne: 'curve[i] is measured after i+1 channels are kept, so curve index i means keep = i + 1',
      cutOrder: "a coupled group under the uniform allocation or keep:F is cut by its cutOrder: the criterion's order stratified so every conv carrying the group loses the same fraction (keepIndices = the first `kept` of it); its curve belongs to `order`, so the curve at `kept` approximates what was removed",
      candidates: 'scree/X-Means: among the candidates, the fewest channels whose held-out accuracy with that layer pruned alone is within the tolerance; else the most',
      budgets: `keep:F per layer; filters/params/flops:F global (several joined by + must all be reached) by the '${o.allocation}' allocation (uniform: one fraction per layer; curve: one threshold on curve/curveTotal; sensitivity: greedy on per-layer held-out drops)`,
    },
    layers: groups.map((g) => {
      const r = rankings.get(g.name);
      const d = decisions.get(g.name);
      return {
        name: g.name,
        index: g.index,
        channels: g.channels,
        kept: plan.keep[g.name]?.length ?? g.channels,
        prunable: g.prunable,
        ...(g.reason ? { reason: g.reason } : {}),
        ...(g.coupled ? { coupled: g.coupled } : {}),
        ...(r ? { order: r.order, curve: r.curve ?? null, curveTotal: r.curveTotal ?? null, curveName: r.curveName ?? null, pValues: r.pValues ?? null, criterion: r.evidence ?? {} } : {}),
        ...(cutOrders.has(g.name) ? { cutOrder: cutOrders.get(g.name) } : {}),
        ...(d ? { cutoff: d } : {}),
        ...(chains ? { chain: chains.layers.find((l) => l.layer === g.name)?.chain ?? null, conditionedOn: chains.layers.find((l) => l.layer === g.name)?.conditionedOn ?? [] } : {}),
        keepIndices: plan.keep[g.name] ?? null,
      };
    }),
    allocation: allocation ?? null,
    method: {
      formulation: o.formulation,
      order: o.formulation === 'per-layer' ? 'independent' : o.order,
      startLayer: chains?.startLayer ?? null,
      chains: chains?.chains ?? [],
    },
    cost: {
      before: { filters: filtersBefore, params: costBefore.params, macs: costBefore.macs },
      after: { filters: filtersAfter, params: costAfter.params, macs: costAfter.macs },
      removed: { filters: 1 - filtersAfter / filtersBefore, params: 1 - costAfter.params / costBefore.params, macs: 1 - costAfter.macs / costBefore.macs },
      counter: 'the IR (src/ir/shapes.ts modelCost): BN running statistics are buffers, not parameters',
    },
    accuracy,
    heldoutBaseline,
    folding: { maxAbsLogitDiffVsMasked: foldDiff, maxAbsLogit: maxLogit, images: probeBatch.n, notes, meaning: 'logits of the pruned model vs the unpruned one with the removed filters zeroed (exact but for zero-padded borders)' },
    bnReestimation: bnInfo,
    finetune: { epochs },
    verification: { onnxruntime: verification },
    latency,
    tfjs: null as Record<string, unknown> | null,
    checkpoints: ckptDir,
    seconds: { ...seconds, total: (performance.now() - t0) / 1000 },
  };

  // --out gets its files only now, as one set (writeDirAtomic): a failure leaves it as it was
  const files: Record<string, string> = { model: join(o.out, 'pruned.onnx'), tfjs: join(o.out, 'pruned_tfjs'), report: join(o.out, 'report.json'), html: join(o.out, 'report.html') };
  await writeDirAtomic(o.out, async (dir) => {
    await writeFile(join(dir, 'pruned.onnx'), outBytes);
    try {
      const t = await exportTfjs(current, join(dir, 'pruned_tfjs'));
      report.tfjs = { exported: true, dir: files.tfjs, inputLayout: t.inputLayout, inputShape: t.inputShape, normalization: t.normalization, files: t.files.length };
    } catch (e) {
      if (!(e instanceof UserError)) throw e;
      // ONNX is the primary output: a model TF.js cannot express is reported, not fatal
      report.tfjs = { exported: false, reason: e.message };
      delete files.tfjs;
    }
    await writeFile(join(dir, 'report.html'), await renderReportHtml(report));
    await writeFile(join(dir, 'report.json'), JSON.stringify(report, null, 1));
    // every output a run may write: one this run does not (TF.js after a failed export) must not survive from an earlier run
  }, ['pruned.onnx', 'pruned_tfjs', 'report.html', 'report.json']);
  return {
    out: o.out,
    files,
    criterion: criterionLabel,
    cutoff: cutoffName(cutoff),
    filters: { before: filtersBefore, after: filtersAfter },
    params: { before: costBefore.params, after: costAfter.params },
    macs: { before: costBefore.macs, after: costAfter.macs },
    accuracy,
    seconds: (performance.now() - t0) / 1000,
  };
}
