// The experiments' vocabulary (criterion settings, point keys, the values each point holds) and
// their RESULTS sections: tables and plots generated from the result store, the issue's targets
// evaluated from the same data, the published anchors beside them (labelled as published). Each
// experiment (experiments/<id>.ts) renders its own section, results/sections/<id>.md, and
// RESULTS.md is every section present, concatenated (VGG16 first), so one experiment's report
// never clobbers another's. Every number except the anchors is read from stored points; nothing
// here measures anything.
import type { SigmaMode } from '../cmi/joint.js';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { CRITERION_TRAITS, type CriterionName, PRUNE_DEFAULTS } from '../pipeline/prune.js';
import { renderSvg, type SweepRow, sweepSpec } from '../report/charts.js';
import { writeFileAtomic } from '../util/fs.js';
import type { Json, PointKey, ResultStore, StoredPoint } from './store.js';

// ---------------------------------------------------------------------------------------------
// criterion settings

export interface CriterionSetting {
  /** stable id used in point keys, e.g. 'cmi-a2-median' */
  id: string;
  criterion: CriterionName;
  alpha?: number;
  sigma?: SigmaMode;
  label: string;
}

/**
 * Every criterion setting of the sweep: CMI at alpha 1.01 and 2 with the three kernel-width rules
 * (median and mean-distance are scale-aware; mean-distance does not saturate as filters are
 * added), and the other criteria.
 */
export const SWEEP_SETTINGS: readonly CriterionSetting[] = [
  { id: 'cmi-a2-median', criterion: 'cmi', alpha: 2, sigma: 'median', label: 'CMI α=2, scale-aware width' },
  { id: 'cmi-a2-reference', criterion: 'cmi', alpha: 2, sigma: 'reference', label: 'CMI α=2, reference width' },
  { id: 'cmi-a1.01-median', criterion: 'cmi', alpha: 1.01, sigma: 'median', label: 'CMI α=1.01, scale-aware width' },
  { id: 'cmi-a1.01-reference', criterion: 'cmi', alpha: 1.01, sigma: 'reference', label: 'CMI α=1.01, reference width' },
  { id: 'cmi-a2-mean', criterion: 'cmi', alpha: 2, sigma: 'mean', label: 'CMI α=2, mean-distance width' },
  { id: 'cmi-a1.01-mean', criterion: 'cmi', alpha: 1.01, sigma: 'mean', label: 'CMI α=1.01, mean-distance width' },
  { id: 'l1', criterion: 'l1', label: 'L1 norm' },
  { id: 'random', criterion: 'random', label: 'random' },
  { id: 'hrank', criterion: 'hrank', label: 'HRank' },
  { id: 'chip', criterion: 'chip', label: 'CHIP' },
];

export function settingOf(id: string): CriterionSetting {
  const s = SWEEP_SETTINGS.find((x) => x.id === id);
  if (!s) throw new Error(`unknown criterion setting '${id}' (one of: ${SWEEP_SETTINGS.map((x) => x.id).join(', ')})`);
  return s;
}

export const isCmiSetting = (id: string) => settingOf(id).criterion === 'cmi';
export const labelOf = (id: string) => SWEEP_SETTINGS.find((x) => x.id === id)?.label ?? id;

/**
 * A criterion's own global allocation: one threshold on its normalised importance curve across
 * layers ('curve') where it gives a curve; the random order gives none, so its layers are sized
 * by their held-out sensitivity ('sensitivity').
 */
export function globalAllocationOf(id: string): 'curve' | 'sensitivity' {
  return CRITERION_TRAITS[settingOf(id).criterion].curve ? 'curve' : 'sensitivity';
}

// ---------------------------------------------------------------------------------------------
// setup and point keys

/** What every evaluated point depends on besides its own settings. */
export interface Setup {
  data: string;
  /** calibration images of the criteria (class-balanced training sample) */
  samples: number;
  seed: number;
  /** test images evaluated: the first N, or 'all' */
  test: number | 'all';
  /** BatchNorm re-estimation images */
  bnImages: number;
  /** held-out training images for the tool's own choices (sensitivity allocation, cut-off candidates) */
  heldout: number;
  /**
   * residual networks only: which convs are prunable ('inner' | 'all', src/experiment/residual.ts).
   * Absent for plain CNNs, and then absent from every key (so their ids do not change).
   */
  residual?: string;
}

export interface FinetuneSetup {
  epochs: number;
  lr: number;
  batch: number;
  /** training images fine-tuned on: the first N, or 'all' */
  train: number | 'all';
}

export type Allocation = 'uniform' | 'curve' | 'sensitivity';
export type SweepStage = 'surgery' | 'bn';
/**
 * The sweeps: (a) one fraction for every layer (isolates the criterion); (b) each criterion's own
 * global allocation; (c) every criterion with the held-out sensitivity allocation (prune's default
 * allocation), which separates the allocation from the criterion.
 */
export const SWEEP_STEPS = ['sweep-uniform', 'sweep-global', 'sweep-sensitivity'] as const;
export type SweepStep = (typeof SWEEP_STEPS)[number];
/** a sweep's name in the tables, e.g. '(c) sensitivity' */
export const SWEEP_TAG: Record<SweepStep, string> = { 'sweep-uniform': '(a)', 'sweep-global': '(b)', 'sweep-sensitivity': '(c)' };

/** The allocation a sweep step gives a criterion setting. */
export function allocationOf(step: SweepStep, id: string): Allocation {
  return step === 'sweep-uniform' ? 'uniform' : step === 'sweep-sensitivity' ? 'sensitivity' : globalAllocationOf(id);
}

export interface Variant {
  formulation: 'per-layer' | 'compact' | 'full';
  /** 'independent' for per-layer */
  order: 'independent' | 'forward' | 'bidirectional';
  cutoff: 'scree' | 'xmeans' | 'ptest';
}
export const variantName = (v: { formulation: string; order: string; cutoff: string }) => `${v.formulation}${v.order === 'independent' ? '' : `-${v.order}`}/${v.cutoff}`;

/** the residual mode as a key field, only where there is one */
const residualField = (s: Setup): { residual?: string } => (s.residual !== undefined ? { residual: s.residual } : {});
const evalFields = (s: Setup) => ({ data: s.data, samples: s.samples, seed: s.seed, test: s.test, bnImages: s.bnImages, ...residualField(s) });

/**
 * Uniform allocations of coupled groups (--residual all) take the same fraction of every conv of
 * the group (groups.ts stratifiedOrder) since experiment points of this field; points without it
 * took a plain prefix of the group's order and are not reused. No field where nothing is coupled.
 */
const stratifiedField = (allocation: Allocation, s: Setup): Record<string, Json> => (allocation === 'uniform' && s.residual === 'all' ? { uniform: 'per-conv' } : {});

/** Whether a stored point's uniform allocation took the stratified orders this setup's keys ask for. */
const sameStratification = (k: PointKey, s: Setup) => (k.uniform ?? null) === (stratifiedField(k.allocation as Allocation, s).uniform ?? null);

export const keys = {
  baseline: (s: Setup): PointKey => ({ step: 'baseline', kind: 'baseline', data: s.data, test: s.test }),
  /** the unpruned model after the sweeps' BN re-estimation: what the re-estimation alone costs (no groups involved: no residual field) */
  baselineBn: (s: Setup): PointKey => ({ step: 'baseline', kind: 'baseline-bn', data: s.data, samples: s.samples, seed: s.seed, test: s.test, bnImages: s.bnImages, heldout: s.heldout }),
  rank: (criterion: string, s: Setup): PointKey => ({ step: 'rankings', kind: 'rank', criterion, data: s.data, samples: s.samples, seed: s.seed, ...residualField(s) }),
  sensitivity: (criterion: string, s: Setup): PointKey => ({ step: 'sensitivity', kind: 'sensitivity', criterion, data: s.data, samples: s.samples, seed: s.seed, heldout: s.heldout, ...residualField(s) }),
  sweep: (step: SweepStep, criterion: string, allocation: Allocation, budget: string, stage: SweepStage, s: Setup): PointKey => ({
    step,
    kind: 'sweep',
    criterion,
    allocation,
    budget,
    stage,
    ...evalFields(s),
    ...(allocation === 'sensitivity' ? { heldout: s.heldout } : {}),
    ...stratifiedField(allocation, s),
  }),
  variant: (v: Variant, alpha: number, sigma: string, s: Setup): PointKey => ({
    step: 'variants',
    kind: 'variant',
    formulation: v.formulation,
    order: v.order,
    cutoff: v.cutoff,
    alpha,
    sigma,
    ...evalFields(s),
    heldout: s.heldout,
  }),
  recoveredStart: (criterion: string, allocation: Allocation, budget: string, s: Setup): PointKey => ({
    step: 'recovered',
    kind: 'recovered-start',
    criterion,
    allocation,
    budget,
    ...evalFields(s),
    ...(allocation === 'sensitivity' ? { heldout: s.heldout } : {}),
    ...stratifiedField(allocation, s),
  }),
  epoch: (criterion: string, allocation: Allocation, budget: string, distill: number | null, epoch: number, f: FinetuneSetup, s: Setup): PointKey => ({
    step: 'recovered',
    kind: 'finetune-epoch',
    criterion,
    allocation,
    budget,
    distill: distill === null ? 'none' : `T=${distill}`,
    epoch,
    epochs: f.epochs,
    lr: f.lr,
    batch: f.batch,
    train: f.train,
    ...evalFields(s),
    ...(allocation === 'sensitivity' ? { heldout: s.heldout } : {}),
    ...stratifiedField(allocation, s),
  }),
};

// ---------------------------------------------------------------------------------------------
// what the points hold

/** Fractions of the unpruned model's filters / parameters / multiply-adds removed. */
export interface Removed {
  filters: number;
  params: number;
  macs: number;
}

export interface BaselineValue {
  accuracy: number;
  test: number;
  filters: number;
  params: number;
  macs: number;
  layers: number;
}

/** The unpruned model's test accuracy after the same BN re-estimation as the sweeps' points. */
export interface BaselineBnValue {
  accuracy: number;
  test: number;
  /** training images the statistics were re-estimated on */
  images: number;
}

export interface StoredRanking {
  group: string;
  channels: number;
  order: number[];
  curve?: number[];
  curveTotal?: number;
}

export interface RankValue {
  criterion: string;
  /** the criterion's own key (algorithm and settings) */
  criterionKey: string;
  rankings: StoredRanking[];
  /** CMI: layers read from the ordering's checkpoints instead of computed in this call (their time is not in `seconds`) */
  resumedLayers: number;
  /** CMI: wall seconds of each layer's ordering as recorded when it was computed (also for resumed layers) */
  layerSeconds: Record<string, number | null>;
  noiseFloorStep?: Record<string, number | null>;
}

export interface SensitivityValue {
  /** held-out accuracy of the unpruned model */
  baseline: number;
  heldout: number;
  /** layer -> channels kept (that layer alone pruned, the criterion's first ones) -> held-out accuracy */
  accuracy: Record<string, Record<string, number>>;
}

export interface SweepValue {
  keep: Record<string, number>;
  /** the budget's measure actually removed */
  reached: number;
  removed: Removed;
  accuracy: number;
  /** stage 'bn': seconds of the re-estimation itself */
  bnSeconds?: number;
}

export interface VariantValue {
  removed: Removed;
  filters: { before: number; after: number };
  accuracy: { before: number | null; afterSurgery: number | null; afterBnReestimation: number | null };
  kept: Record<string, number>;
  startLayer: string | null;
  chains: { name: string; layers: string[]; seconds: number; threads: number }[];
  /** wall seconds of prune()'s stages (report.json `seconds`) */
  stageSeconds: Record<string, number>;
}

export interface RecoveredStartValue {
  keep: Record<string, number>;
  reached: number;
  removed: Removed;
  afterSurgery: number;
  afterBnReestimation: number;
  bnSeconds: number;
}

export interface EpochValue {
  epoch: number;
  testAccuracy: number;
  /** training loss and accuracy of the epoch (augmented batches, training mode) */
  loss: number;
  trainAccuracy: number;
  lr: number;
  images: number;
  /** wall and CPU seconds of the epoch's training alone (the test evaluation is in evalSeconds) */
  trainSeconds: number;
  trainCpuSeconds: number;
  evalSeconds: number;
}

// ---------------------------------------------------------------------------------------------
// budgets

export interface BudgetPartName {
  kind: string;
  fraction: number;
}

/** A budget name's parts: 'flops:0.5', or a compound one every part of which is reached ('params:0.816+flops:0.581'). */
export function budgetPartsOf(b: string): BudgetPartName[] {
  return b.split('+').map((t) => {
    const m = /^(filters|params|flops|keep):(.+)$/.exec(t);
    if (!m) throw new Error(`not a budget: ${b}`);
    return { kind: m[1]!, fraction: Number(m[2]) };
  });
}

/** A budget's first part (a sweep budget has one). */
export const parseBudgetName = (b: string): BudgetPartName => budgetPartsOf(b)[0]!;

export function budgetLabel(b: string): string {
  return budgetPartsOf(b)
    .map(({ kind, fraction }) => `${fmtFrac(fraction)} ${kind === 'flops' ? 'multiply-adds' : kind === 'params' ? 'parameters' : kind === 'keep' ? 'kept per layer' : 'filters'}`)
    .join(' and ');
}

function compareBudgets(a: string, b: string): number {
  const x = parseBudgetName(a);
  const y = parseBudgetName(b);
  return x.kind !== y.kind ? (x.kind < y.kind ? -1 : 1) : x.fraction - y.fraction || (a < b ? -1 : a > b ? 1 : 0);
}

/** Budgets whose fraction is in [lo, hi] (the targets' 30-60% range). */
export const inRange = (b: string, lo = 0.3, hi = 0.6) => {
  const f = parseBudgetName(b).fraction;
  return f >= lo - 1e-9 && f <= hi + 1e-9;
};

// ---------------------------------------------------------------------------------------------
// reading the store

const byKey = (p: StoredPoint, k: string) => p.key[k] as Json;
const same = (p: StoredPoint, fields: Record<string, Json>) => Object.entries(fields).every(([k, v]) => JSON.stringify(p.key[k] ?? null) === JSON.stringify(v));

export interface SweepRecord {
  step: SweepStep;
  criterion: string;
  allocation: Allocation;
  budget: string;
  surgery?: SweepValue;
  bn?: SweepValue;
}

/** The sweep points of a setup, merged per (step, criterion, allocation, budget). */
export function sweepRecords(store: ResultStore, s: Setup): SweepRecord[] {
  const out = new Map<string, SweepRecord>();
  for (const p of store.list<SweepValue>({ kind: 'sweep' })) {
    if (!same(p, evalFields(s))) continue;
    if (p.key.allocation === 'sensitivity' && p.key.heldout !== s.heldout) continue;
    if (!sameStratification(p.key, s)) continue;
    const id = [byKey(p, 'step'), byKey(p, 'criterion'), byKey(p, 'allocation'), byKey(p, 'budget')].join('|');
    const r = out.get(id) ?? { step: p.key.step as SweepStep, criterion: String(p.key.criterion), allocation: p.key.allocation as Allocation, budget: String(p.key.budget) };
    r[p.key.stage as SweepStage] = p.value;
    out.set(id, r);
  }
  return [...out.values()];
}

export interface RecoveredRecord {
  criterion: string;
  allocation: Allocation;
  budget: string;
  distill: string;
  start?: RecoveredStartValue;
  epochs: { value: EpochValue; cpu: number; wall: number }[];
}

export function recoveredRecords(store: ResultStore, s: Setup, f: FinetuneSetup): RecoveredRecord[] {
  const starts = new Map<string, RecoveredStartValue>();
  for (const p of store.list<RecoveredStartValue>({ kind: 'recovered-start' })) {
    if (!same(p, evalFields(s)) || !sameStratification(p.key, s)) continue;
    starts.set([p.key.criterion, p.key.allocation, p.key.budget].join('|'), p.value);
  }
  const out = new Map<string, RecoveredRecord>();
  for (const p of store.list<EpochValue>({ kind: 'finetune-epoch' })) {
    if (!same(p, { ...evalFields(s), epochs: f.epochs, lr: f.lr, batch: f.batch, train: f.train }) || !sameStratification(p.key, s)) continue;
    const base = [p.key.criterion, p.key.allocation, p.key.budget].join('|');
    const id = `${base}|${p.key.distill}`;
    const r = out.get(id) ?? {
      criterion: String(p.key.criterion),
      allocation: p.key.allocation as Allocation,
      budget: String(p.key.budget),
      distill: String(p.key.distill),
      start: starts.get(base),
      epochs: [],
    };
    r.epochs.push({ value: p.value, cpu: p.seconds.cpu, wall: p.seconds.wall });
    out.set(id, r);
  }
  for (const r of out.values()) r.epochs.sort((a, b) => a.value.epoch - b.value.epoch);
  // starts without any epoch yet still show what surgery and BN re-estimation gave
  for (const [base, v] of starts) {
    if ([...out.values()].some((r) => [r.criterion, r.allocation, r.budget].join('|') === base)) continue;
    const [criterion, allocation, budget] = base.split('|') as [string, Allocation, string];
    out.set(`${base}|-`, { criterion, allocation, budget, distill: '-', start: v, epochs: [] });
  }
  return [...out.values()].sort((a, b) => compareBudgets(a.budget, b.budget) || (a.criterion < b.criterion ? -1 : a.criterion > b.criterion ? 1 : 0) || (a.distill < b.distill ? -1 : 1));
}

// ---------------------------------------------------------------------------------------------
// the recovered step's choice: best CMI configuration and best other criterion

export interface ConfigScore {
  criterion: string;
  allocation: Allocation;
  /** mean accuracy after BN re-estimation at the recovery budgets (chooseRecovered); null when a sweep point is missing */
  score: number | null;
  budgets: string[];
}

export interface RecoveredChoice {
  cmi: ConfigScore | null;
  other: ConfigScore | null;
  /** every candidate configuration has all its points */
  complete: boolean;
  scores: ConfigScore[];
  rule: string;
}

/** A budget part's measure of a pruned model: what `flops:F`, `params:F` or `filters:F` counts. */
const measureOf = (kind: string, r: Removed): number => (kind === 'flops' ? r.macs : kind === 'params' ? r.params : r.filters);

/**
 * Accuracy where a sweep first reaches every part of a budget: along the sweep's points (sorted by
 * filters removed; every measure grows along a sweep), each part is reached at a fractional
 * position, linear between the two points around it; the accuracy is read, linear again, at the
 * latest of those positions. Outside the swept range, the nearest end point's (no extrapolation).
 */
export function accuracyWhereReached(points: readonly { removed: Removed; accuracy: number }[], parts: readonly BudgetPartName[]): number {
  const pts = [...points].sort((a, b) => a.removed.filters - b.removed.filters);
  const last = pts.length - 1;
  const positionOf = ({ kind, fraction }: BudgetPartName): number => {
    const m = pts.map((p) => measureOf(kind, p.removed));
    if (fraction <= m[0]!) return 0;
    for (let i = 1; i <= last; i++) if (fraction <= m[i]!) return m[i] === m[i - 1] ? i : i - 1 + (fraction - m[i - 1]!) / (m[i]! - m[i - 1]!);
    return last;
  };
  const s = Math.max(...parts.map(positionOf));
  const i = Math.min(Math.floor(s), last);
  return i === last ? pts[last]!.accuracy : pts[i]!.accuracy + (s - i) * (pts[i + 1]!.accuracy - pts[i]!.accuracy);
}

/**
 * A sweep's accuracy after BN re-estimation at `filters` removed (linear between its points; with
 * `base`, the unpruned model's accuracy as its point at 0 removed), or null when a budget's point
 * is missing or `filters` lies outside the swept range (no reading off the ends): what a
 * per-layer cut-off's result is compared with.
 */
export function sweepBnAtFilters(records: readonly SweepRecord[], budgets: readonly string[], step: SweepStep, criterion: string, allocation: Allocation, filters: number, base?: number | null): number | null {
  const found = budgets.map((b) => records.find((r) => r.step === step && r.criterion === criterion && r.allocation === allocation && r.budget === b)?.bn);
  if (found.length === 0 || !found.every((v): v is SweepValue => v !== undefined)) return null;
  // the unpruned model is the sweep's point at 0 removed, when given
  const bn: { removed: Removed; accuracy: number }[] = typeof base === 'number' ? [{ removed: { filters: 0, params: 0, macs: 0 }, accuracy: base }, ...found] : found;
  const xs = bn.map((v) => v.removed.filters);
  if (filters < Math.min(...xs) - 1e-9 || filters > Math.max(...xs) + 1e-9) return null;
  return accuracyWhereReached(bn, [{ kind: 'filters', fraction: filters }]);
}

export interface EstimatorScore {
  setting: string;
  /** mean test accuracy after BN re-estimation over the 30-60% budgets: uniform sweep, own (curve) allocation, sensitivity allocation */
  uniform: number | null;
  curve: number | null;
  /** null also where the sensitivity sweep is not among the scored ones */
  sensitivity: number | null;
  /** the mean of the scored sweeps' means */
  score: number | null;
}

export interface VariantScore {
  name: string;
  formulation: string;
  order: string;
  cutoff: string;
  filters: number;
  bn: number | null;
  /** bn minus the variants' CMI setting's curve sweep at the same fraction of filters (null: not comparable) */
  margin: number | null;
  /** the same against its sensitivity-allocation sweep (c), where that sweep is scored (else null) */
  marginSensitivity: number | null;
}

export interface DefaultsChoice {
  estimators: EstimatorScore[];
  estimator: EstimatorScore | null;
  variants: VariantScore[];
  variant: VariantScore | null;
  /** every CMI setting has all its 30-60% points on the scored sweeps, every planned variant is stored, and the curve sweep the variants are read against is complete */
  complete: boolean;
}

/**
 * The method's defaults read off the points. Estimator (alpha, width): the CMI setting with the
 * best mean test accuracy after BN re-estimation over the 30-60% budgets (the range the targets
 * judge), averaged over the scored sweeps (the experiment's planned ones). Formulation, order and cut-off: the variant whose accuracy after BN
 * re-estimation is furthest above its CMI setting's curve sweep at the same fraction of filters
 * (with the unpruned model as that sweep's point at 0): a per-layer rule decides how much to cut,
 * so it is judged against one threshold cutting as much.
 */
export function chooseDefaults(
  records: readonly SweepRecord[],
  settings: readonly string[],
  budgets: readonly string[],
  variants: readonly StoredPoint<VariantValue>[],
  variantSetting: string | null,
  base: number | null,
  plannedVariants: number,
  sweeps: readonly SweepStep[] = ['sweep-uniform', 'sweep-global'],
): DefaultsChoice {
  const scored = budgets.filter((b) => inRange(b));
  const mean = (step: SweepStep, setting: string): number | null => {
    const allocation = allocationOf(step, setting);
    const v = scored.map((b) => records.find((r) => r.step === step && r.criterion === setting && r.allocation === allocation && r.budget === b)?.bn?.accuracy);
    return v.length > 0 && v.every((x): x is number => typeof x === 'number') ? v.reduce((a, x) => a + x, 0) / v.length : null;
  };
  const estimators = settings.filter(isCmiSetting).map((setting): EstimatorScore => {
    const of = (step: SweepStep) => (sweeps.includes(step) ? mean(step, setting) : null);
    const scored = sweeps.map((step) => mean(step, setting));
    const score = scored.length > 0 && scored.every((x): x is number => x !== null) ? scored.reduce((a, x) => a + x, 0) / scored.length : null;
    return { setting, uniform: of('sweep-uniform'), curve: of('sweep-global'), sensitivity: of('sweep-sensitivity'), score };
  });
  const vs = variants.map((p): VariantScore => {
    const bn = p.value.accuracy.afterBnReestimation;
    const at = variantSetting && typeof bn === 'number' ? sweepBnAtFilters(records, budgets, 'sweep-global', variantSetting, 'curve', p.value.removed.filters, base) : null;
    const atSens =
      variantSetting && typeof bn === 'number' && sweeps.includes('sweep-sensitivity')
        ? sweepBnAtFilters(records, budgets, 'sweep-sensitivity', variantSetting, 'sensitivity', p.value.removed.filters, base)
        : null;
    return {
      name: variantName({ formulation: String(p.key.formulation), order: String(p.key.order), cutoff: String(p.key.cutoff) }),
      formulation: String(p.key.formulation),
      order: String(p.key.order),
      cutoff: String(p.key.cutoff),
      filters: p.value.removed.filters,
      bn,
      margin: at === null || typeof bn !== 'number' ? null : bn - at,
      marginSensitivity: atSens === null || typeof bn !== 'number' ? null : bn - atSens,
    };
  });
  const best = <T,>(xs: T[], f: (x: T) => number | null) => xs.filter((x) => f(x) !== null).sort((a, b) => f(b)! - f(a)!)[0] ?? null;
  return {
    estimators,
    estimator: best(estimators, (x) => x.score),
    variants: vs,
    variant: best(vs, (x) => x.margin),
    // a variant outside the swept range has no margin however complete the sweep is
    complete:
      estimators.every((x) => x.score !== null) &&
      vs.length >= plannedVariants &&
      vs.every((x) => x.bn !== null) &&
      variantSetting !== null &&
      budgets.every((b) => records.some((r) => r.step === 'sweep-global' && r.criterion === variantSetting && r.allocation === allocationOf('sweep-global', variantSetting) && r.budget === b && r.bn)),
  };
}

/**
 * Each (criterion setting, allocation) of the sweeps scored where it will be fine-tuned: its test
 * accuracy after BN re-estimation at each recovery budget's reduction (multiply-adds for flops:F,
 * parameters for params:F, filters for filters:F; where all are reached for a compound budget),
 * read off its sweep points by accuracyWhereReached, mean
 * over the recovery budgets; the best CMI configuration and the best of the other criteria. (A
 * score over the sweep's 30-60% filters would pick by budgets other than the recovered ones: on
 * ResNet-56 it preferred CHIP, which is 4 points behind L1 at the recovery budgets.) `complete` is
 * false while any planned configuration lacks one of its sweep points (the choice could change).
 */
export function chooseRecovered(
  store: ResultStore,
  s: Setup,
  settings: readonly string[],
  budgets: readonly string[],
  recoverBudgets: readonly string[],
  sweeps: readonly SweepStep[] = SWEEP_STEPS,
): RecoveredChoice {
  const recs = sweepRecords(store, s);
  const scores: ConfigScore[] = [];
  for (const c of settings) {
    for (const step of sweeps) {
      const allocation = allocationOf(step, c);
      // random's (b) is its sensitivity allocation: scored once
      if (step === 'sweep-sensitivity' && allocationOf('sweep-global', c) === 'sensitivity') continue;
      const bn = budgets.map((b) => recs.find((r) => r.step === step && r.criterion === c && r.allocation === allocation && r.budget === b)?.bn);
      const ok = bn.length > 0 && recoverBudgets.length > 0 && bn.every((v): v is SweepValue => v !== undefined);
      const score = ok
        ? recoverBudgets.reduce((sum, rb) => sum + accuracyWhereReached(bn as SweepValue[], budgetPartsOf(rb)), 0) / recoverBudgets.length
        : null;
      scores.push({ criterion: c, allocation, budgets: [...recoverBudgets], score });
    }
  }
  const best = (cmi: boolean) =>
    scores
      .filter((x) => isCmiSetting(x.criterion) === cmi && x.score !== null)
      .sort((a, b) => b.score! - a.score! || (a.criterion < b.criterion ? -1 : 1))[0] ?? null;
  return {
    cmi: best(true),
    other: best(false),
    complete: scores.every((x) => x.score !== null),
    scores,
    rule: `test accuracy after BN re-estimation on the sweeps, read at each recovery budget (${recoverBudgets.map(budgetLabel).join(', ')} removed) between the sweep points around it, mean over those budgets, over every sweep's allocation`,
  };
}

// ---------------------------------------------------------------------------------------------
// formatting

export function fmtAcc(a: number | null | undefined): string {
  return typeof a === 'number' && Number.isFinite(a) ? `${(100 * a).toFixed(2)}%` : '–';
}

/** A fraction as a percentage, one decimal unless it is a whole number of percent. */
export function fmtFrac(x: number | null | undefined): string {
  if (typeof x !== 'number' || !Number.isFinite(x)) return '–';
  const p = 100 * x;
  return Math.abs(p - Math.round(p)) < 1e-9 ? `${Math.round(p)}%` : `${p.toFixed(1)}%`;
}

/** Accuracy change against the unpruned model, in percentage points with a sign. */
export function fmtChange(acc: number | null | undefined, base: number | null | undefined): string {
  if (typeof acc !== 'number' || typeof base !== 'number') return '–';
  const d = 100 * (acc - base);
  return `${d > 0 ? '+' : d < 0 ? '−' : '±'}${Math.abs(d).toFixed(2)}`;
}

export function fmtSeconds(s: number | null | undefined): string {
  if (typeof s !== 'number' || !Number.isFinite(s)) return '–';
  if (s < 10) return `${s.toFixed(2)} s`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(2)} h`;
}

const int = (n: number) => Math.round(n).toLocaleString('en-US');

function mdTable(headers: string[], rows: string[][]): string {
  const esc = (c: string) => c.replace(/\|/g, '\\|').replace(/\n/g, ' ');
  return [`| ${headers.map(esc).join(' | ')} |`, `| ${headers.map(() => '---').join(' | ')} |`, ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`)].join('\n');
}

// ---------------------------------------------------------------------------------------------
// targets

export interface TargetResult {
  target: string;
  /** null: no data yet */
  met: boolean | null;
  statement: string;
  /** when missed: what the data say would close the gap (generated from the points, like the statement) */
  closing?: string;
}

/** One accuracy without fine-tuning, from the sweep or the variants. */
export interface NoFinetunePoint {
  label: string;
  filters: number;
  params: number;
  macs: number;
  accuracy: number;
}

const DROP_EPS = 1e-9;
const dropPoints = (acc: number, base: number) => 100 * (base - acc);

/** Target 1: at least 40% of the filters removed at a drop of at most 0.32 points, without fine-tuning. */
export function targetFilters(
  base: number | null,
  cmiPoints: NoFinetunePoint[],
  minFilters = 0.4,
  maxDrop = 0.32,
  finetuned: RecoveredPoint[] = [],
  baseBn: number | null = null,
): TargetResult {
  const target = `≥ ${fmtFrac(minFilters)} of the filters removed at ≤ ${maxDrop.toFixed(2)}-point drop, without fine-tuning (CMI)`;
  if (base === null || cmiPoints.length === 0) return { target, met: null, statement: 'not measured yet' };
  const within = cmiPoints.filter((p) => dropPoints(p.accuracy, base) <= maxDrop + DROP_EPS).sort((a, b) => b.filters - a.filters || b.accuracy - a.accuracy);
  const atLeast = cmiPoints.filter((p) => p.filters >= minFilters - DROP_EPS).sort((a, b) => b.accuracy - a.accuracy);
  const best = within[0];
  const d = (p: NoFinetunePoint) => `${fmtChange(p.accuracy, base)} points`;
  if (best && best.filters >= minFilters - DROP_EPS)
    return { target, met: true, statement: `met: ${fmtFrac(best.filters)} of the filters removed, accuracy change ${d(best)} (${best.label})` };
  const parts: string[] = [];
  parts.push(
    best
      ? `at most ${fmtFrac(best.filters)} of the filters within a ${maxDrop.toFixed(2)}-point drop (${best.label}, change ${d(best)}): short of ${fmtFrac(minFilters)} by ${(100 * (minFilters - best.filters)).toFixed(1)} percentage points of filters`
      : `no CMI point stays within a ${maxDrop.toFixed(2)}-point drop`,
  );
  if (atLeast[0])
    parts.push(`with ≥ ${fmtFrac(minFilters)} removed the smallest drop is ${dropPoints(atLeast[0].accuracy, base).toFixed(2)} points (${atLeast[0].label}, ${fmtFrac(atLeast[0].filters)} of the filters): ${(dropPoints(atLeast[0].accuracy, base) - maxDrop).toFixed(2)} points over`);
  // what closes it: BN re-estimation is already in these numbers, and costs the unpruned model
  // something itself; the fine-tuned runs that remove at least the target's filters show what
  // training adds
  const closings: string[] = [];
  if (baseBn !== null && baseBn < base) {
    const own = dropPoints(baseBn, base);
    const rest = atLeast[0] ? dropPoints(atLeast[0].accuracy, baseBn) : null;
    closings.push(
      `BN re-estimation is already counted in these points, and costs the unpruned model itself ${own.toFixed(2)} points (${fmtAcc(baseBn)} after the same re-estimation)` +
        (rest === null
          ? '.'
          : `: measured from there, the best point with ≥ ${fmtFrac(minFilters)} removed loses ${rest.toFixed(2)} points, ${rest <= maxDrop + DROP_EPS ? 'within' : 'still over'} ${maxDrop.toFixed(2)}, so re-estimated statistics as good as the trained ones (keeping the trained statistics where pruning left a BN's inputs unchanged, more or augmented images) ${rest <= maxDrop + DROP_EPS ? 'would close it' : `would narrow it to ${(rest - maxDrop).toFixed(2)} points`}.`),
    );
  } else closings.push('BN re-estimation is already counted in these points.');
  const ft = finetuned.filter((p) => p.filters !== undefined && p.filters >= minFilters - DROP_EPS).sort((a, b) => b.accuracy - a.accuracy)[0];
  const ftDrop = ft ? dropPoints(ft.accuracy, base) : 0;
  if (ft)
    closings.push(
      `Fine-tuned for ${ft.epoch} epoch${ft.epoch === 1 ? '' : 's'}, a CMI model removing ${fmtFrac(ft.filters)} of the filters (${fmtFrac(ft.params)} of the parameters, ${fmtFrac(ft.macs)} of the multiply-adds) ends at ${fmtChange(ft.accuracy, base)} points (${ft.label}): ${ftDrop <= maxDrop + DROP_EPS ? 'training, which this target excludes, closes it' : `training narrows the gap, but not to ${maxDrop.toFixed(2)} points`}; without training only a smaller budget would.`,
    );
  const closing = ft || baseBn !== null ? closings.join(' ') : undefined;
  return { target, met: false, statement: `not met: ${parts.join('; ')}`, ...(closing ? { closing } : {}) };
}

export interface RecoveredPoint {
  label: string;
  /** fraction of the filters removed, when known */
  filters?: number;
  params: number;
  macs: number;
  epoch: number;
  accuracy: number;
  /** the same model's test accuracy before fine-tuning (after BN re-estimation): what fine-tuning added */
  start?: number;
}

/**
 * Target 2: ≥ 58% fewer multiply-adds and ≥ 80% fewer parameters at ≤ 0.30-point drop with ≤ 3 epochs.
 * `distance`: when no point removes both, also say by how many percentage points the closest falls short of each.
 */
export function targetRecovered(base: number | null, cmiPoints: RecoveredPoint[], minMacs = 0.58, minParams = 0.8, maxDrop = 0.3, maxEpochs = 3, o: { distance?: boolean } = {}): TargetResult {
  const target = `≥ ${fmtFrac(minMacs)} fewer multiply-adds and ≥ ${fmtFrac(minParams)} fewer parameters at ≤ ${maxDrop.toFixed(2)}-point drop with ≤ ${maxEpochs} fine-tuning epochs (CMI)`;
  const pts = cmiPoints.filter((p) => p.epoch <= maxEpochs);
  if (base === null || pts.length === 0) return { target, met: null, statement: 'not measured yet' };
  const big = pts.filter((p) => p.macs >= minMacs - DROP_EPS && p.params >= minParams - DROP_EPS).sort((a, b) => b.accuracy - a.accuracy);
  if (big.length === 0) {
    const m = [...pts].sort((a, b) => Math.min(b.macs / minMacs, b.params / minParams) - Math.min(a.macs / minMacs, a.params / minParams))[0]!;
    const short = (x: number, min: number, what: string) => (x >= min - DROP_EPS ? `${what} reached` : `${(100 * (min - x)).toFixed(1)} percentage points short of ${fmtFrac(min)} ${what}`);
    const distance = o.distance
      ? `: ${short(m.macs, minMacs, 'multiply-adds')}, ${short(m.params, minParams, 'parameters')}, at an accuracy change of ${fmtChange(m.accuracy, base)} points after ${m.epoch} epoch${m.epoch === 1 ? '' : 's'}`
      : '';
    return {
      target,
      met: false,
      statement: `not met: no fine-tuned CMI point removes both; the closest removes ${fmtFrac(m.macs)} of the multiply-adds and ${fmtFrac(m.params)} of the parameters (${m.label})${distance}`,
    };
  }
  const b = big[0]!;
  const drop = dropPoints(b.accuracy, base);
  const what = `${fmtFrac(b.macs)} fewer multiply-adds, ${fmtFrac(b.params)} fewer parameters, accuracy change ${fmtChange(b.accuracy, base)} points after ${b.epoch} epoch${b.epoch === 1 ? '' : 's'} (${b.label})`;
  if (drop <= maxDrop + DROP_EPS) return { target, met: true, statement: `met: ${what}` };
  // what closes it: how much the short schedule recovered (the learning rate anneals to 0 over the
  // epochs, so the last epoch's change would say little about a longer schedule)
  const epochs = `${b.epoch} epoch${b.epoch === 1 ? '' : 's'}`;
  const closing =
    b.start === undefined
      ? undefined
      : b.accuracy > b.start
        ? `fine-tuning recovered ${(100 * (b.accuracy - b.start)).toFixed(2)} points in ${epochs} (from ${fmtAcc(b.start)} after BN re-estimation to ${fmtAcc(b.accuracy)}); the ${(drop - maxDrop).toFixed(2)} points left are for a longer schedule than this target's ${maxEpochs} epochs (the published anchors' is in their table) or a smaller budget.`
        : `fine-tuning did not improve on the model after BN re-estimation (${fmtAcc(b.start)} to ${fmtAcc(b.accuracy)} in ${epochs}): the learning rate or the budget, not the number of epochs, is what to change.`;
  return { target, met: false, statement: `not met: best ${what}: a drop ${(drop - maxDrop).toFixed(2)} points over ${maxDrop.toFixed(2)}`, ...(closing ? { closing } : {}) };
}

/** Target 3: the best CMI setting ahead of the best other criterion at every budget of 30-60%, per allocation and stage. */
export function targetAhead(records: SweepRecord[], budgets: readonly string[], sweeps: readonly SweepStep[] = SWEEP_STEPS): TargetResult {
  const target = 'CMI ahead of every other criterion at every budget of 30-60% (best CMI setting vs best other, per allocation and stage, no fine-tuning)';
  const scored = budgets.filter((b) => inRange(b));
  const rows: { where: string; margin: number; accuracy: number }[] = [];
  let missing = 0;
  for (const step of sweeps) {
    for (const stage of ['surgery', 'bn'] as SweepStage[]) {
      for (const b of scored) {
        const at = records.filter((r) => r.step === step && r.budget === b && r[stage]);
        const cmi = Math.max(...at.filter((r) => isCmiSetting(r.criterion)).map((r) => r[stage]!.accuracy));
        const other = Math.max(...at.filter((r) => !isCmiSetting(r.criterion)).map((r) => r[stage]!.accuracy));
        if (!Number.isFinite(cmi) || !Number.isFinite(other)) {
          missing++;
          continue;
        }
        rows.push({ where: `${SWEEP_TAG[step]} ${step === 'sweep-uniform' ? 'uniform' : step === 'sweep-global' ? 'global' : 'sensitivity'}, ${stage === 'bn' ? 'after BN' : 'after surgery'}, ${budgetLabel(b)}`, margin: 100 * (cmi - other), accuracy: cmi });
      }
    }
  }
  if (rows.length === 0) return { target, met: null, statement: 'not measured yet' };
  // level: the same accuracy to the test set's resolution (one image in 10,000 is 0.01 points), e.g.
  // both at chance after surgery: not ahead, but not behind either
  const LEVEL = 0.005;
  const behind = rows.filter((r) => r.margin < -LEVEL).sort((a, b) => a.margin - b.margin);
  const level = rows.filter((r) => Math.abs(r.margin) <= LEVEL);
  const tail = missing > 0 ? ` (${missing} comparison${missing === 1 ? '' : 's'} not measured yet)` : '';
  if (behind.length === 0 && level.length === 0) {
    const min = rows.reduce((m, r) => (r.margin < m.margin ? r : m));
    return { target, met: missing === 0 ? true : null, statement: `${missing === 0 ? 'met' : 'so far met'}: ahead in all ${rows.length} comparisons, by at least ${min.margin.toFixed(2)} points (${min.where})${tail}` };
  }
  return {
    target,
    met: false,
    statement: `not met: ahead in ${rows.length - behind.length - level.length} of ${rows.length} comparisons${behind.length > 0 ? `; behind at ${behind.map((r) => `${r.where} by ${(-r.margin).toFixed(2)}`).join('; ')} points` : ''}${level.length > 0 ? `; level (the same accuracy) at ${level.map((r) => `${r.where} (${fmtAcc(r.accuracy)})`).join('; ')}` : ''}${tail}`,
  };
}

// ---------------------------------------------------------------------------------------------
// the published anchors (not measured here: the papers' numbers, as restated in ../shared/SPEC.md and the issue)

export interface PublishedAnchor {
  method: string;
  source: string;
  before: number | null;
  after: number | null;
  /** accuracy drop in points, when only that is published */
  drop?: number;
  filters?: string;
  params: string;
  macs: string;
  finetune: string;
}

// ---------------------------------------------------------------------------------------------
// RESULTS sections

/** What the targets are evaluated on: every CMI point of the section's data. */
export interface TargetData {
  /** unpruned test accuracy (null: not measured yet) */
  base: number | null;
  /** the unpruned model's after the sweeps' BN re-estimation (null: not measured yet) */
  baseBn: number | null;
  /** CMI without fine-tuning: sweep points (both stages) and variants */
  cmiNoFinetune: NoFinetunePoint[];
  /** CMI fine-tuned: each run after its last epoch */
  cmiFinetuned: RecoveredPoint[];
  /** the sweep records of the planned settings and budgets */
  records: SweepRecord[];
  budgets: readonly string[];
  /** the sweeps this experiment plans */
  sweeps: readonly SweepStep[];
}

/** One experiment's section: how it is titled, which targets it states, which anchors it shows. */
export interface ReportProfile {
  /** what was pruned, e.g. 'VGG16-BN on CIFAR-10' (another model or data set: its file and data instead) */
  title: string;
  targets: (d: TargetData) => TargetResult[];
  /** the papers' numbers, shown labelled as published */
  anchors: readonly PublishedAnchor[];
  /** the method's variants section (VGG16 only) */
  variants: boolean;
  /** paragraphs after the setup (e.g. what the residual mode prunes) */
  notes?: (setup: Setup) => string[];
  /** folder of the section's plots under the output folder (default 'results') */
  svgDir?: string;
  /** the section that reads the tool's defaults off the points (the experiment that sets them) */
  defaults?: boolean;
}

export interface ResultsInput {
  /** the experiment's id: its section is results/sections/<id>.md */
  id: string;
  profile: ReportProfile;
  store: ResultStore;
  setup: Setup;
  finetune: FinetuneSetup;
  /** the sweep's planned criterion settings and budgets */
  settings: readonly string[];
  budgets: readonly string[];
  /** the recovered step's budgets (its configurations are chosen at them) */
  recoverBudgets: readonly string[];
  /** the sweeps this experiment plans (default all) */
  sweeps?: readonly SweepStep[];
  /** variants' alpha and width rule */
  variantAlpha: number;
  variantSigma: string;
  modelPath: string;
  /** planned / stored points per step (from the runner's plan) */
  plan?: Record<string, { planned: number; stored: number }>;
  /** where RESULTS.md goes; the section to `<out>/results/sections/<id>.md`, the plots to `<out>/<profile.svgDir>/` */
  out: string;
  /** the command that regenerates it (for the header) */
  command?: string;
  /** what was pruned, for the title (default: the profile's) */
  title?: string;
}

export interface ResultsOutput {
  /** this experiment's section */
  markdown: string;
  /** RESULTS.md (every section present), this section's file, its plots */
  files: { markdown: string; section: string; plots: string[] };
}

/** the sections RESULTS.md puts first, in this order; any other follows by name */
const SECTION_ORDER = ['vgg16', 'resnet56'];
export const sectionsDir = (out: string) => join(out, 'results', 'sections');

/**
 * RESULTS.md from every section file present under `out`, concatenated: with one section it is
 * exactly that section. Image links in a section are relative to RESULTS.md (the output folder).
 */
export async function assembleResults(out: string): Promise<{ path: string; markdown: string; sections: string[] }> {
  const dir = sectionsDir(out);
  let names: string[];
  try {
    names = (await readdir(dir)).filter((f) => f.endsWith('.md')).map((f) => f.slice(0, -3));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    names = [];
  }
  const rank = (n: string) => (SECTION_ORDER.includes(n) ? SECTION_ORDER.indexOf(n) : SECTION_ORDER.length);
  names.sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
  const parts: string[] = [];
  for (const n of names) parts.push(await readFile(join(dir, `${n}.md`), 'utf8'));
  const markdown = parts.join('\n');
  const path = join(out, 'RESULTS.md');
  await writeFileAtomic(path, markdown);
  return { path, markdown, sections: names };
}

const STAGE_LABEL: Record<SweepStage, string> = { surgery: 'after surgery', bn: 'after BN re-estimation' };

export async function writeResults(r: ResultsInput): Promise<ResultsOutput> {
  const { store, setup, profile } = r;
  const svgDir = profile.svgDir ?? 'results';
  // sections are numbered in order; the variants section is the profile's choice
  let sectionNo = 0;
  const section = (title: string) => `## ${++sectionNo}. ${title}`;
  const anchorsNo = profile.variants ? 4 : 3;
  const basePoint = store.get<BaselineValue>(keys.baseline(setup));
  const base = basePoint?.value.accuracy ?? null;
  const baseBnPoint = store.get<BaselineBnValue>(keys.baselineBn(setup));
  const baseBn = baseBnPoint?.value.accuracy ?? null;
  const records = sweepRecords(store, setup).filter((x) => r.settings.includes(x.criterion) && r.budgets.includes(x.budget));
  const variantRank = (p: StoredPoint<VariantValue>) =>
    ['per-layer', 'compact', 'full'].indexOf(String(p.key.formulation)) * 100 + ['independent', 'forward', 'bidirectional'].indexOf(String(p.key.order)) * 10 + ['scree', 'xmeans', 'ptest'].indexOf(String(p.key.cutoff));
  const variants = !profile.variants
    ? []
    : store
        .list<VariantValue>({ kind: 'variant', alpha: r.variantAlpha, sigma: r.variantSigma })
        .filter((p) => same(p, { ...evalFields(setup), heldout: setup.heldout }))
        .sort((a, b) => variantRank(a) - variantRank(b));
  // the sweep setting the variants share their estimator with
  const variantSetting = SWEEP_SETTINGS.find((x) => x.criterion === 'cmi' && x.alpha === r.variantAlpha && x.sigma === r.variantSigma)?.id ?? null;
  // the planned recovery budgets' runs only (a run at a budget since dropped stays in the store)
  const recovered = recoveredRecords(store, setup, r.finetune).filter((x) => r.recoverBudgets.includes(x.budget));
  // this setup's rankings: the header's prunable count and the time table
  const rankPoints = store.list<RankValue>({ kind: 'rank', data: setup.data, samples: setup.samples, seed: setup.seed, residual: setup.residual });
  const choice = chooseRecovered(store, setup, r.settings, r.budgets, r.recoverBudgets, r.sweeps);
  const md: string[] = [];
  const plots: string[] = [];

  // ---- header
  // the store may hold another residual mode's points too (its own section): count this setup's
  const pointsOfSetup = store.list().filter((p) => p.key.residual === undefined || p.key.residual === setup.residual).length;
  md.push(`# ${r.title ?? profile.title}: pruning by conditional mutual information against other criteria`);
  md.push('');
  md.push(
    `Generated by \`${r.command ?? `npm run experiment:${r.id}`}\` from ${pointsOfSetup} stored result points (${store.version}); every number in this file except the published anchors (section ${anchorsNo}, labelled *published*) is read from those points, none is typed by hand. Model \`${r.modelPath}\`, SHA-256 \`${store.modelSha256.slice(0, 16)}…\`.`,
  );
  md.push('');
  if (basePoint) {
    const b = basePoint.value;
    // the baseline is shared by the residual modes, its prunable count by the mode it ran under:
    // this setup's rankings say how many groups this mode prunes
    const layers = rankPoints[0]?.value.rankings.length ?? b.layers;
    md.push(
      `Unpruned: **${fmtAcc(b.accuracy)}** top-1 on ${int(b.test)} test images; ${int(b.filters)} conv filters; ${layers} prunable conv layers (a coupled group counted as one); ${int(b.params)} parameters, ${int(b.macs)} multiply-adds per image. Drops below are in percentage points against this accuracy, on the same test images.`,
    );
  } else md.push('Unpruned accuracy: not measured yet.');
  md.push('');
  md.push(
    `Setup: criteria read a class-balanced sample of ${setup.samples} ${setup.data} training images (seed ${setup.seed}); BatchNorm re-estimation on ${int(setup.bnImages)} training images outside that sample; the tool's own choices (held-out sensitivity, cut-off candidates) on ${setup.heldout} other training images; the test set is only ever reported.`,
  );
  for (const note of profile.notes?.(setup) ?? []) {
    md.push('');
    md.push(note);
  }
  if (r.plan) {
    md.push('');
    md.push(mdTable(['step', 'points planned', 'stored'], Object.entries(r.plan).map(([k, v]) => [k, String(v.planned), `${v.stored}${v.stored < v.planned ? ' (incomplete)' : ''}`])));
  }
  md.push('');

  // ---- targets
  const cmiNoFt: NoFinetunePoint[] = [];
  for (const x of records) {
    if (!isCmiSetting(x.criterion)) continue;
    for (const st of ['surgery', 'bn'] as SweepStage[]) {
      const v = x[st];
      if (v) cmiNoFt.push({ label: `${labelOf(x.criterion)}, ${x.allocation} allocation, ${budgetLabel(x.budget)}, ${STAGE_LABEL[st]}`, ...v.removed, accuracy: v.accuracy });
    }
  }
  for (const p of variants) {
    const v = p.value;
    const name = `${p.key.formulation}${p.key.order !== 'independent' ? ` ${p.key.order}` : ''}, ${p.key.cutoff}`;
    if (v.accuracy.afterSurgery !== null) cmiNoFt.push({ label: `variant ${name}, after surgery`, ...v.removed, accuracy: v.accuracy.afterSurgery });
    if (v.accuracy.afterBnReestimation !== null) cmiNoFt.push({ label: `variant ${name}, after BN re-estimation`, ...v.removed, accuracy: v.accuracy.afterBnReestimation });
  }
  // each fine-tuning run's result after its last epoch (choosing an earlier epoch by its test accuracy would select on the test set)
  const cmiFt: RecoveredPoint[] = [];
  for (const x of recovered) {
    if (!isCmiSetting(x.criterion) || !x.start) continue;
    const e = x.epochs.find((y) => y.value.epoch === r.finetune.epochs);
    if (e)
      cmiFt.push({
        label: `${labelOf(x.criterion)}, ${x.allocation}, ${budgetLabel(x.budget)}, distillation ${x.distill}`,
        filters: x.start.removed.filters,
        params: x.start.removed.params,
        macs: x.start.removed.macs,
        epoch: e.value.epoch,
        accuracy: e.value.testAccuracy,
        start: x.start.afterBnReestimation,
      });
  }
  const targets = profile.targets({ base, baseBn, cmiNoFinetune: cmiNoFt, cmiFinetuned: cmiFt, records, budgets: r.budgets, sweeps: r.sweeps ?? SWEEP_STEPS });
  md.push('## Targets');
  md.push('');
  md.push(mdTable(['target', 'met', 'from the data'], targets.map((t) => [t.target, t.met === null ? 'not yet known' : t.met ? '**yes**' : '**no**', t.statement])));
  md.push('');
  const closings = targets.filter((t) => t.met === false && t.closing);
  if (closings.length > 0) {
    md.push('What would close the missed targets, from the same points:');
    md.push('');
    for (const t of closings) md.push(`- *${t.target}*: ${t.closing}`);
    md.push('');
  }

  // ---- sweep
  md.push(section('Criterion sweep without fine-tuning'));
  md.push('');
  md.push(
    `Test accuracy after surgery (removed filters folded away, no other change) and after BatchNorm re-estimation, against the fraction of all ${basePoint ? int(basePoint.value.filters) : ''} conv filters removed. (a) every layer loses the same fraction (isolates the criterion); (b) each criterion's own global allocation: one threshold on its normalised importance curve across layers (\`curve\`), or, for the random order, which has no curve, the layers' held-out sensitivity (\`sensitivity\`)${(r.sweeps ?? SWEEP_STEPS).includes('sweep-sensitivity') ? "; (c) every criterion with that held-out sensitivity allocation (\`cmiprune prune\`'s default: each layer pruned alone at 10-90% on held-out training images, the cheapest accuracy drops per unit of budget taken greedily), which separates the allocation from the criterion" : ''}. One ranking per criterion setting, reused at every budget.`,
  );
  md.push('');
  const criteriaLabels = r.settings.map(labelOf);
  for (const [step, title, file] of [
    ['sweep-uniform', '(a) uniform fraction per layer', 'sweep-uniform.svg'],
    ['sweep-global', '(b) each criterion’s global allocation', 'sweep-global.svg'],
    ['sweep-sensitivity', '(c) every criterion with the held-out sensitivity allocation', 'sweep-sensitivity.svg'],
  ] as [SweepStep, string, string][]) {
    // a sweep this experiment does not plan has no plot
    if (!(r.sweeps ?? SWEEP_STEPS).includes(step)) continue;
    const rows: SweepRow[] = [];
    for (const x of records.filter((y) => y.step === step)) {
      for (const st of ['surgery', 'bn'] as SweepStage[]) {
        const v = x[st];
        if (v) rows.push({ criterion: labelOf(x.criterion), budget: x.budget, stage: STAGE_LABEL[st], filters: v.removed.filters, macs: v.removed.macs, accuracy: v.accuracy });
      }
    }
    if (rows.length === 0) {
      md.push(`${title}: not measured yet.`);
      md.push('');
      continue;
    }
    const svg = await renderSvg(sweepSpec(rows, { criteria: criteriaLabels.filter((c) => rows.some((x) => x.criterion === c)), stages: [STAGE_LABEL.surgery, STAGE_LABEL.bn], baseline: base }));
    const path = join(r.out, svgDir, file);
    await writeFileAtomic(path, svg);
    plots.push(path);
    md.push(`**${title}** (solid: after surgery; dashed: after BN re-estimation; grey: unpruned)`);
    md.push('');
    md.push(`![${title}](${relative(r.out, path).split('\\').join('/')})`);
    md.push('');
  }
  const budgets = [...r.budgets].sort(compareBudgets);
  if (records.length > 0) {
    md.push(`Test accuracy, after surgery / after BN re-estimation (change against the unpruned ${fmtAcc(base)} after BN re-estimation, in points):`);
    md.push('');
    if (baseBnPoint && base !== null)
      md.push(
        `The unpruned model, its BN statistics re-estimated the same way (${int(baseBnPoint.value.images)} training images), scores ${fmtAcc(baseBnPoint.value.accuracy)} (${fmtChange(baseBnPoint.value.accuracy, base)} points)${baseBnPoint.value.accuracy < base ? ": the re-estimation has a cost of its own, and that much of every drop after BN re-estimation below is not the pruning's" : ''}.`,
        '',
      );
    const trows: string[][] = [];
    for (const step of SWEEP_STEPS) {
      for (const c of r.settings) {
        const mine = records.filter((x) => x.step === step && x.criterion === c);
        if (mine.length === 0) continue;
        trows.push([
          labelOf(c),
          `${SWEEP_TAG[step]} ${mine[0]!.allocation}`,
          ...budgets.map((b) => {
            const x = mine.find((y) => y.budget === b);
            if (!x) return '–';
            return `${fmtAcc(x.surgery?.accuracy)} / ${fmtAcc(x.bn?.accuracy)} (${fmtChange(x.bn?.accuracy, base)})`;
          }),
        ]);
      }
    }
    md.push(mdTable(['criterion', 'allocation', ...budgets.map((b) => budgetLabel(b) + ' removed')], trows));
    md.push('');
    md.push('<details><summary>Every sweep point: what it removed and its accuracies</summary>');
    md.push('');
    md.push(
      mdTable(
        ['criterion', 'allocation', 'budget', 'filters removed', 'parameters removed', 'multiply-adds removed', 'after surgery', 'after BN re-estimation'],
        records
          .slice()
          .sort((a, b) => (a.step < b.step ? -1 : a.step > b.step ? 1 : 0) || r.settings.indexOf(a.criterion) - r.settings.indexOf(b.criterion) || compareBudgets(a.budget, b.budget))
          .map((x) => {
            const v = x.surgery ?? x.bn!;
            return [labelOf(x.criterion), x.allocation, x.budget, fmtFrac(v.removed.filters), fmtFrac(v.removed.params), fmtFrac(v.removed.macs), fmtAcc(x.surgery?.accuracy), fmtAcc(x.bn?.accuracy)];
          }),
      ),
    );
    md.push('');
    md.push('</details>');
    md.push('');
  }

  // ---- variants (VGG16 only)
  if (profile.variants) {
    md.push(section("The method's variants"));
    md.push('');
    md.push(
      `The paper's formulations (per-layer; compact: conditioned on the kept maps of the previous layer of the chain; full: on every layer already pruned in the chain), orders (forward; bidirectional) and cut-offs (scree, X-Means, permutation test), CMI at α=${r.variantAlpha} with the ${r.variantSigma === 'median' ? 'scale-aware' : r.variantSigma} width, each run through \`cmiprune prune\` without fine-tuning.`,
    );
    md.push('');
    if (variants.length === 0) md.push('Not measured yet.');
    else {
      // a per-layer cut-off removes what it removes: it is compared with the sweeps of the same CMI
      // setting at the same fraction of filters removed (after BN re-estimation), i.e. with one
      // fraction for every layer and with one threshold on the curves
      md.push(
        variantSetting
          ? `*vs uniform / curve sweep*: the variant's accuracy after BN re-estimation minus the ${labelOf(variantSetting)} sweep's at the same fraction of filters removed (linear between its points; – outside the swept range or while its points are missing), with one fraction per layer and with one threshold on the curves (the unpruned model as both sweeps' point at 0).`
          : `No sweep setting has the variants' α and width: no comparison with the sweeps.`,
      );
      md.push('');
      md.push(
        mdTable(
          ['formulation', 'order', 'cut-off', 'filters removed', 'parameters removed', 'multiply-adds removed', 'after surgery', 'after BN re-estimation', 'change (points)', 'vs uniform sweep', 'vs curve sweep', 'wall', 'CPU'],
          variants.map((p) => {
            const bn = p.value.accuracy.afterBnReestimation;
            const vs = (step: SweepStep, allocation: Allocation) => {
              const a = variantSetting ? sweepBnAtFilters(records, r.budgets, step, variantSetting, allocation, p.value.removed.filters, base) : null;
              return a === null || typeof bn !== 'number' ? '–' : fmtChange(bn, a);
            };
            return [
              String(p.key.formulation),
              String(p.key.order),
              String(p.key.cutoff),
              fmtFrac(p.value.removed.filters),
              fmtFrac(p.value.removed.params),
              fmtFrac(p.value.removed.macs),
              fmtAcc(p.value.accuracy.afterSurgery),
              fmtAcc(bn),
              fmtChange(bn, base),
              vs('sweep-uniform', 'uniform'),
              vs('sweep-global', 'curve'),
              fmtSeconds(p.seconds.wall),
              fmtSeconds(p.seconds.cpu),
            ];
          }),
        ),
      );
    }
    md.push('');
  }

  // ---- recovered
  md.push(section('Recovered by fine-tuning'));
  md.push('');
  md.push(
    `The best CMI configuration and the best other criterion (${choice.rule}${choice.complete ? '' : '; some sweep points are still missing, so this choice is provisional'}): ${choice.cmi ? `${labelOf(choice.cmi.criterion)} with ${choice.cmi.allocation} allocation (${fmtAcc(choice.cmi.score)})` : 'not known yet'} and ${choice.other ? `${labelOf(choice.other.criterion)} with ${choice.other.allocation} allocation (${fmtAcc(choice.other.score)})` : 'not known yet'}. Each pruned at the same budgets, BN re-estimated, then fine-tuned ${r.finetune.epochs} epochs (SGD Nesterov, cosine, lr ${r.finetune.lr}, batch ${r.finetune.batch}, crop+flip, ${r.finetune.train === 'all' ? 'all' : int(r.finetune.train)} training images), without and with distillation from the unpruned model.`,
  );
  md.push('');
  if (recovered.length === 0) md.push('Not measured yet.');
  else {
    const epochCols = Array.from({ length: r.finetune.epochs }, (_, i) => `epoch ${i + 1}`);
    md.push(
      mdTable(
        ['criterion', 'allocation', 'budget', 'distillation', 'filters / params / MACs removed', 'after surgery', 'after BN', ...epochCols, 'change (points)'],
        recovered.map((x) => {
          const last = x.epochs[x.epochs.length - 1]?.value.testAccuracy;
          return [
            labelOf(x.criterion),
            x.allocation,
            budgetLabel(x.budget),
            x.distill,
            x.start ? `${fmtFrac(x.start.removed.filters)} / ${fmtFrac(x.start.removed.params)} / ${fmtFrac(x.start.removed.macs)}` : '–',
            fmtAcc(x.start?.afterSurgery),
            fmtAcc(x.start?.afterBnReestimation),
            ...epochCols.map((_, i) => fmtAcc(x.epochs.find((e) => e.value.epoch === i + 1)?.value.testAccuracy)),
            fmtChange(last, base),
          ];
        }),
      ),
    );
  }
  md.push('');

  // ---- anchors beside ours
  md.push(section('Published anchors beside ours'));
  md.push('');
  md.push(
    'Rows marked *published* are the papers’ own numbers (their baselines, training recipes and fine-tuning budgets differ from ours), not reproduced here; rows marked *ours* come from the store.',
  );
  md.push('');
  const arows: string[][] = profile.anchors.map((a) => [
    '*published*',
    a.method,
    a.source,
    a.before !== null && a.after !== null ? `${a.before.toFixed(2)}% → ${a.after.toFixed(2)}%` : '–',
    a.before !== null && a.after !== null ? fmtChange(a.after / 100, a.before / 100) : a.drop !== undefined ? `−${a.drop.toFixed(2)}` : '–',
    a.filters ?? '–',
    a.params,
    a.macs,
    a.finetune,
  ]);
  const bestNoFt = [...cmiNoFt].filter((p) => base !== null && p.filters >= 1 / 3).sort((a, b) => b.accuracy - a.accuracy)[0];
  if (bestNoFt && base !== null)
    arows.push(['*ours*', 'CMI, best with over a third of the filters removed', bestNoFt.label, `${fmtAcc(base)} → ${fmtAcc(bestNoFt.accuracy)}`, fmtChange(bestNoFt.accuracy, base), fmtFrac(bestNoFt.filters), fmtFrac(bestNoFt.params), fmtFrac(bestNoFt.macs), 'none']);
  for (const x of recovered) {
    const last = x.epochs[x.epochs.length - 1];
    if (!last || !x.start || base === null) continue;
    arows.push([
      '*ours*',
      labelOf(x.criterion),
      `${x.allocation}, ${budgetLabel(x.budget)} removed, distillation ${x.distill}`,
      `${fmtAcc(base)} → ${fmtAcc(last.value.testAccuracy)}`,
      fmtChange(last.value.testAccuracy, base),
      fmtFrac(x.start.removed.filters),
      fmtFrac(x.start.removed.params),
      fmtFrac(x.start.removed.macs),
      `${last.value.epoch} epoch${last.value.epoch === 1 ? '' : 's'}`,
    ]);
  }
  md.push(mdTable(['', 'method', 'source / configuration', 'accuracy', 'change (points)', 'filters removed', 'parameters removed', 'multiply-adds removed', 'fine-tuning'], arows));
  md.push('');

  // ---- CPU time
  md.push(section('Time'));
  md.push('');
  md.push(
    'CPU seconds are this process’s user + system time (every thread) while the step ran; wall seconds are elapsed time. The machine (2 cores) may have been shared, so both are upper bounds.',
  );
  md.push('');
  const ranks = rankPoints.filter((p) => r.settings.includes(String(p.key.criterion)));
  if (ranks.length > 0) {
    md.push('Orderings (one per criterion setting, every prunable layer):');
    md.push('');
    md.push(
      mdTable(
        ['criterion', 'layers', 'layers resumed from checkpoints', 'ordering wall (sum of layers, as computed)', 'wall of this call', 'CPU of this call'],
        ranks
          .slice()
          .sort((a, b) => r.settings.indexOf(String(a.key.criterion)) - r.settings.indexOf(String(b.key.criterion)))
          .map((p) => {
            const ls = Object.values(p.value.layerSeconds).filter((x): x is number => typeof x === 'number');
            return [
              labelOf(String(p.key.criterion)),
              String(p.value.rankings.length),
              String(p.value.resumedLayers),
              ls.length > 0 ? fmtSeconds(ls.reduce((s, x) => s + x, 0)) : '–',
              fmtSeconds(p.seconds.wall),
              `${fmtSeconds(p.seconds.cpu)}${p.value.resumedLayers > 0 ? ' (resumed layers not included)' : ''}`,
            ];
          }),
      ),
    );
    md.push('');
  }
  const sens = store.list({ kind: 'sensitivity', data: setup.data, samples: setup.samples, seed: setup.seed, heldout: setup.heldout, residual: setup.residual });
  if (sens.length > 0) {
    md.push(mdTable(['held-out sensitivity (global allocation)', 'wall', 'CPU'], sens.map((p) => [labelOf(String(p.key.criterion)), fmtSeconds(p.seconds.wall), fmtSeconds(p.seconds.cpu)])));
    md.push('');
  }
  if (variants.length > 0) {
    md.push('The variants (whole `prune` run: ordering, cut-offs, surgery, evaluations, BN re-estimation, export check); the ordering stages are wall times from its report:');
    md.push('');
    md.push(
      mdTable(
        ['variant', 'rank (wall)', 'cut-off incl. chain orderings (wall)', 'total wall', 'total CPU'],
        variants.map((p) => [
          `${p.key.formulation} ${p.key.order} ${p.key.cutoff}`,
          fmtSeconds(p.value.stageSeconds.rank),
          fmtSeconds(p.value.stageSeconds.cutoff),
          fmtSeconds(p.seconds.wall),
          fmtSeconds(p.seconds.cpu),
        ]),
      ),
    );
    md.push('');
  }
  const epochRows = recovered.flatMap((x) =>
    x.epochs.map((e) => [`${labelOf(x.criterion)}, ${x.allocation}, ${budgetLabel(x.budget)}, distillation ${x.distill}`, String(e.value.epoch), fmtSeconds(e.value.trainSeconds), fmtSeconds(e.value.trainCpuSeconds), fmtSeconds(e.value.evalSeconds)]),
  );
  if (epochRows.length > 0) {
    md.push('Fine-tuning epochs:');
    md.push('');
    md.push(mdTable(['configuration', 'epoch', 'training wall', 'training CPU', 'test evaluation wall'], epochRows));
    md.push('');
  }

  // ---- the tool's defaults (the model whose experiment sets them)
  if (profile.defaults) {
    const scoredSweeps = r.sweeps ?? SWEEP_STEPS;
    const d = chooseDefaults(records, r.settings, r.budgets, variants, variantSetting, base, r.plan?.variants?.planned ?? variants.length, scoredSweeps);
    const sweepCols: [SweepStep, string, (e: EstimatorScore) => number | null][] = (
      [
        ['sweep-uniform', '(a) uniform, mean after BN, 30-60%', (e) => e.uniform],
        ['sweep-global', '(b) curve, mean after BN, 30-60%', (e) => e.curve],
        ['sweep-sensitivity', '(c) sensitivity, mean after BN, 30-60%', (e) => e.sensitivity],
      ] as [SweepStep, string, (e: EstimatorScore) => number | null][]
    ).filter(([step]) => scoredSweeps.includes(step));
    md.push(section("The tool's defaults, by these points"));
    md.push('');
    md.push(
      `Estimator (α and kernel width): the CMI setting with the best mean test accuracy after BN re-estimation over the 30-60% budgets, averaged over ${sweepCols.map(([, h]) => h.replace(/, mean.*$/, '')).join(', ')}. Formulation, order and cut-off: the variant (α=${r.variantAlpha}, ${r.variantSigma} width) whose accuracy after BN re-estimation is furthest above the ${variantSetting ? labelOf(variantSetting) : 'same setting’s'} curve sweep at the same fraction of filters removed (the unpruned model as that sweep's point at 0): a per-layer cut-off decides how much to cut, so it is judged against one threshold cutting as much.`,
    );
    md.push('');
    const layerSum = (setting: string) => {
      const p = rankPoints.find((x) => String(x.key.criterion) === setting);
      const ls = p ? Object.values(p.value.layerSeconds).filter((x): x is number => typeof x === 'number') : [];
      return ls.length > 0 ? fmtSeconds(ls.reduce((a, x) => a + x, 0)) : '–';
    };
    md.push(
      mdTable(
        ['CMI setting', ...sweepCols.map(([, h]) => h), 'mean', 'ordering wall (sum of layers)'],
        [...d.estimators]
          .sort((a, b) => (b.score ?? -1) - (a.score ?? -1))
          .map((e) => [`${labelOf(e.setting)}${d.estimator?.setting === e.setting ? ' (chosen)' : ''}`, ...sweepCols.map(([, , f]) => fmtAcc(f(e))), fmtAcc(e.score), layerSum(e.setting)]),
      ),
    );
    md.push('');
    const withSens = scoredSweeps.includes('sweep-sensitivity');
    const fmtPoints = (m: number | null) => (m === null ? '–' : `${m > 0 ? '+' : m < 0 ? '−' : '±'}${Math.abs(100 * m).toFixed(2)}`);
    if (d.variants.length > 0) {
      md.push(
        mdTable(
          ['variant', 'filters removed', 'after BN re-estimation', 'vs curve sweep at the same filters (points)', ...(withSens ? ['vs sensitivity sweep (c) at the same filters (points)'] : [])],
          [...d.variants]
            .sort((a, b) => (b.margin ?? -Infinity) - (a.margin ?? -Infinity))
            .map((v) => [`${v.name}${d.variant?.name === v.name ? ' (chosen)' : ''}`, fmtFrac(v.filters), fmtAcc(v.bn), fmtPoints(v.margin), ...(withSens ? [fmtPoints(v.marginSensitivity)] : [])]),
        ),
      );
      md.push('');
    }
    const est = d.estimator ? settingOf(d.estimator.setting) : null;
    const chosen: [string, string | number | undefined][] = [
      ['--alpha', est?.alpha],
      ['--sigma', est?.sigma],
      ['--formulation', d.variant?.formulation],
      // the per-layer formulation has no order: nothing to read off for --order
      ['--order', d.variant && d.variant.order !== 'independent' ? d.variant.order : undefined],
      ['--cutoff', d.variant?.cutoff],
    ];
    const tool: Record<string, string | number> = { '--alpha': PRUNE_DEFAULTS.alpha, '--sigma': PRUNE_DEFAULTS.sigma, '--formulation': PRUNE_DEFAULTS.formulation, '--order': PRUNE_DEFAULTS.order, '--cutoff': PRUNE_DEFAULTS.cutoff };
    const known = chosen.filter((c): c is [string, string | number] => c[1] !== undefined);
    const differ = known.filter(([k, v]) => String(tool[k]) !== String(v));
    md.push(
      `Read off these points${d.complete ? '' : ' (not final: some points are still missing)'}: ${known.length > 0 ? known.map(([k, v]) => `\`${k} ${v}\``).join(', ') : 'nothing yet'}${d.variant?.order === 'independent' ? ' (the per-layer formulation has no order)' : ''}. \`cmiprune prune\`'s defaults: ${Object.entries(tool)
        .map(([k, v]) => `\`${k} ${v}\``)
        .join(', ')}: ${known.length === 0 ? 'not compared yet' : differ.length === 0 ? '**they agree**' : `**they differ** in ${differ.map(([k]) => `\`${k}\``).join(', ')}`}.`,
    );
    md.push('');
  }
  const markdown = md.join('\n');
  const sectionPath = join(sectionsDir(r.out), `${r.id}.md`);
  await writeFileAtomic(sectionPath, markdown);
  const all = await assembleResults(r.out);
  return { markdown, files: { markdown: all.path, section: sectionPath, plots } };
}
