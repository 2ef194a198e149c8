// Greedy forward selection of one layer's filters by mutual information with the labels
// (SPEC sections 2-3, semantics of the reference `filter_number_selection`), with the CMI curve
// from the chain rule and an explicit numerical-noise-floor report (SPEC section 8).
import { Rng } from '../util/rng.js';
import { multiplyPackedInto, packedSize, tsBackend, unpackKernel, type EntropyBackend } from './backend.js';
import { checkAlpha, inBase, labelGram, referenceSigma, type LogBase, type SigmaRule } from './estimators.js';

/** Per-filter maps of one layer: data [N, C, HW] row-major (HW = H*W flattened). */
export interface MapsTensor {
  data: Float32Array | Float64Array;
  n: number;
  c: number;
  hw: number;
}

export interface LayerInput {
  maps: MapsTensor;
  /** class index per sample (the reference uses their one-hot encoding) */
  labels: ArrayLike<number>;
  /** one-hot width; the label kernel width uses d = classes */
  classes: number;
  /** already-selected maps of other layers to condition on (compact / full formulations) */
  before?: MapsTensor[];
  /** optional network input [N, D] for I(X; selected); sigma uses d = sigmaDim (H*W of the image) */
  input?: { data: Float32Array | Float64Array; dim: number; sigmaDim: number };
}

export interface OrderProgress {
  /** selections made so far, of `steps` */
  step: number;
  steps: number;
  /**
   * candidate evaluations done so far (each = two N x N entropies; exact duplicates such as dead
   * filters count once) and the total if run greedily to the end without duplicates
   */
  evaluated: number;
  totalEvaluations: number;
  seconds: number;
}

export interface OrderOptions {
  /** Renyi order, default 1.01 (the reference) */
  alpha?: number;
  /** 'e' (natural, default, as the reference) or '2' */
  logBase?: LogBase;
  /** stop after this many selections (default: until one filter remains, as the reference) */
  maxSelect?: number;
  /** 'auto' (default): native when the addon loads, else TypeScript */
  backend?: 'auto' | 'ts' | 'native' | EntropyBackend;
  /** worker threads of the native backend (default 2) */
  threads?: number;
  /** kernel width rule, default the reference 5 * N^(-1/(4+d)) */
  sigmaRule?: SigmaRule;
  /**
   * After the winning margin first falls below the noise floor: 'secondary' (default) ranks the rest
   * by each filter's own I(Y; f) (ties: lower index) without further candidate evaluations;
   * 'greedy' keeps the reference's greedy order, which there is decided by round-off.
   */
  tail?: 'secondary' | 'greedy';
  /** noise floor = noiseFactor x the largest round-off probe so far (default 10) */
  noiseFactor?: number;
  /** seed of the sample permutation used to probe round-off (default 0) */
  seed?: number;
  onProgress?: (p: OrderProgress) => void;
}

export interface OrderResult {
  /** filter indices in selection order (at most C-1 unless maxSelect is smaller) */
  order: number[];
  /**
   * filters never selected: in index order, or in the secondary rule's order once the noise floor
   * was reached (after a full run this is the one filter the reference leaves over)
   */
  remaining: number[];
  /** winning score per step: I(Y; B u selected_0..i) */
  scores: number[];
  /** cmi[i] = I(Y; remaining | B u selected_0..i) = I(Y; all u B) - scores[i] (chain rule) */
  cmi: number[];
  /** I(Y; selected_0..i), without B */
  miSelected: number[];
  /** I(X; selected_0..i) when an input was given */
  miInputSelected?: number[];
  /** best minus second-best score per step (null when one candidate was left or the step was not greedy) */
  margins: (number | null)[];
  /** |score - score on permuted samples| of each step's winner: a direct sample of round-off */
  roundoff: number[];
  /** noise floor at each step: noiseFactor x running max of roundoff (and x eps x |entropies|) */
  noiseFloor: number[];
  /** first step whose margin fell below the floor, or null; from it on the order is a tie-break */
  noiseFloorStep: number | null;
  /** how the order was decided from noiseFloorStep on */
  tieBreak: 'own-mi-with-labels' | 'greedy-roundoff' | 'none';
  /** the noise-floor and tie-break rules in words, for reports */
  rules: { noiseFloor: string; tieBreak: string };
  /** I(Y; f) per filter (only filled when the secondary rule was used) */
  ownMI?: number[];
  miAll: number;
  entropyLabels: number;
  sigma: { labels: number; maps: number; before: number[]; input?: number };
  alpha: number;
  logBase: LogBase;
  n: number;
  c: number;
  backend: 'ts' | 'native';
  evaluated: number;
  seconds: number;
}

async function resolveBackend(b: OrderOptions['backend'], threads: number): Promise<EntropyBackend> {
  if (b && typeof b === 'object') return b;
  if (b === 'ts') return tsBackend;
  try {
    const { nativeBackend } = await import('./native.js');
    return nativeBackend(threads);
  } catch (err) {
    if (b === 'native') throw err;
    return tsBackend;
  }
}

function checkMaps(m: MapsTensor, what: string): void {
  if (![m.n, m.c, m.hw].every((v) => Number.isInteger(v) && v > 0)) {
    throw new RangeError(`${what}: shape [${m.n}, ${m.c}, ${m.hw}] must be positive integers`);
  }
  if (m.data.length !== m.n * m.c * m.hw) {
    throw new RangeError(`${what}: ${m.data.length} values, shape [${m.n}, ${m.c}, ${m.hw}] needs ${m.n * m.c * m.hw}`);
  }
}


/**
 * group[f] = lowest filter index whose kernel is bitwise identical to f's (dead filters: all ones).
 * Identical kernels score identically at every step, so only one per group is evaluated - exact.
 */
export function kernelGroups(kernels: Float64Array, c: number, n: number): Int32Array {
  const nn = packedSize(n);
  const group = new Int32Array(c);
  const byHash = new Map<string, number[]>();
  const bytes = (f: number) => Buffer.from(kernels.buffer, kernels.byteOffset + f * nn * 8, nn * 8);
  for (let f = 0; f < c; f++) {
    const off = f * nn;
    let h = 0;
    for (let i = 0; i < nn; i += 97) h = h * 31 + kernels[off + i];
    const key = String(h);
    const reps = byHash.get(key) ?? [];
    const same = reps.find((r) => bytes(r).equals(bytes(f)));
    group[f] = same ?? f;
    if (same === undefined) reps.push(f);
    byHash.set(key, reps);
  }
  return group;
}

function permuted(m: Float64Array, perm: Int32Array, n: number): Float64Array {
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const ri = perm[i] * n;
    for (let j = 0; j < n; j++) out[i * n + j] = m[ri + perm[j]];
  }
  return out;
}

/** Orders the filters of one layer by greedy forward selection. */
export async function orderLayer(input: LayerInput, opts: OrderOptions = {}): Promise<OrderResult> {
  const t0 = performance.now();
  const alpha = opts.alpha ?? 1.01;
  checkAlpha(alpha);
  const logBase = opts.logBase ?? 'e';
  const rule = opts.sigmaRule ?? referenceSigma;
  const tail = opts.tail ?? 'secondary';
  const noiseFactor = opts.noiseFactor ?? 10;
  const threads = opts.threads ?? 2;
  const { maps } = input;
  checkMaps(maps, 'activations');
  const { n, c, hw } = maps;
  const nn = n * n;
  if (input.labels.length !== n) throw new RangeError(`labels: ${input.labels.length} samples, activations have ${n}`);
  if (!Number.isInteger(input.classes) || input.classes < 1) throw new RangeError(`classes must be a positive integer`);
  const before = input.before ?? [];
  before.forEach((b, i) => {
    checkMaps(b, `before[${i}]`);
    if (b.n !== n) throw new RangeError(`before[${i}]: ${b.n} samples, activations have ${n}`);
  });
  const maxSteps = Math.max(0, c - 1);
  const steps = Math.min(maxSteps, opts.maxSelect ?? maxSteps);
  if (!Number.isInteger(steps) || steps < 0) throw new RangeError(`maxSelect must be a non-negative integer`);
  const backend = await resolveBackend(opts.backend, threads);

  const sigmaMaps = rule(n, hw);
  const sigmaLabels = rule(n, input.classes);
  const sigmaBefore = before.map((b) => rule(n, b.hw));
  const kernels = await backend.filterKernels(maps.data, n, c, hw, sigmaMaps);
  const group = kernelGroups(kernels, c, n);
  const kY = labelGram(input.labels, sigmaLabels);
  let kB: Float64Array | null = null;
  for (let i = 0; i < before.length; i++) {
    const b = before[i];
    const kb = await backend.filterKernels(b.data, n, b.c, b.hw, sigmaBefore[i]);
    if (!kB) kB = new Float64Array(nn).fill(1);
    for (let f = 0; f < b.c; f++) multiplyPackedInto(kB, kb, f, n);
  }
  let kX: Float64Array | null = null;
  let sigmaInput: number | undefined;
  if (input.input) {
    const x = input.input;
    if (x.data.length !== n * x.dim) throw new RangeError(`input: ${x.data.length} values, needs ${n} x ${x.dim}`);
    sigmaInput = rule(n, x.sigmaDim);
    kX = unpackKernel(await backend.filterKernels(x.data, n, 1, x.dim, sigmaInput), 0, n);
  }

  const single = async (base: Float64Array | null, other: Float64Array | null) => {
    const r = await backend.entropies({ n, alpha, base, other, kernels: null, candidates: Int32Array.of(-1) });
    return { s: r.entropy[0], sOther: r.entropyOther ? r.entropyOther[0] : NaN };
  };
  const sY = (await single(kY, null)).s;
  const sX = kX ? (await single(kX, null)).s : NaN;
  // I(Y; all filters u B): the chain rule's constant
  const kAll = kB ? Float64Array.from(kB) : new Float64Array(nn).fill(1);
  for (let f = 0; f < c; f++) multiplyPackedInto(kAll, kernels, f, n);
  const all = await single(kAll, kY);
  const miAll = sY + all.s - all.sOther;

  const rng = new Rng(opts.seed ?? 0);
  const perm = Int32Array.from({ length: n }, (_, i) => i);
  rng.shuffle(perm);
  const kYPerm = permuted(kY, perm, n);

  const order: number[] = [];
  const scores: number[] = [];
  const miSelected: number[] = [];
  const miInputSelected: number[] = [];
  const margins: (number | null)[] = [];
  const roundoff: number[] = [];
  const noiseFloor: number[] = [];
  let noiseFloorStep: number | null = null;
  let ownMI: number[] | undefined;
  let remaining = Array.from({ length: c }, (_, i) => i);
  let base: Float64Array | null = kB ? Float64Array.from(kB) : null; // B u selected
  let selOnly: Float64Array | null = null; // selected only (for I(Y; selected) without B)
  let maxRoundoff = 0;
  let evaluated = 0;
  let totalEvaluations = 0;
  for (let k = c; k > c - steps; k--) totalEvaluations += k;
  let secondary: number[] | null = null; // tie-break order once below the floor

  const ownMutualInformation = async (): Promise<number[]> => {
    const r = await backend.entropies({ n, alpha, base: null, other: kY, kernels, candidates: Int32Array.from(remaining) });
    const mi = new Array<number>(c).fill(NaN);
    remaining.forEach((f, k) => (mi[f] = sY + r.entropy[k] - r.entropyOther![k]));
    return mi;
  };

  for (let step = 0; step < steps; step++) {
    let winner: number;
    let score: number;
    let sJoint: number;
    let sJointY: number;
    if (!secondary) {
      // one evaluation per group of identical kernels among the remaining filters
      const evalIndex = new Map<number, number>();
      const toEval: number[] = [];
      for (const f of remaining) {
        if (!evalIndex.has(group[f])) {
          evalIndex.set(group[f], toEval.length);
          toEval.push(f);
        }
      }
      const r = await backend.entropies({ n, alpha, base, other: kY, kernels, candidates: Int32Array.from(toEval) });
      evaluated += toEval.length;
      const scoreOf = (k: number) => sY + r.entropy[k] - r.entropyOther![k];
      // argmax, first index on ties (remaining is in ascending index order, as the reference)
      let best = 0;
      let bestScore = -Infinity;
      for (let k = 0; k < remaining.length; k++) {
        const s = scoreOf(evalIndex.get(group[remaining[k]])!);
        if (s > bestScore) {
          bestScore = s;
          best = k;
        }
      }
      winner = remaining[best];
      const wk = evalIndex.get(group[winner])!;
      // margin to the best filter that is not an exact duplicate of the winner
      let second = -Infinity;
      for (let k = 0; k < toEval.length; k++) if (k !== wk) second = Math.max(second, scoreOf(k));
      score = bestScore;
      sJoint = r.entropy[wk];
      sJointY = r.entropyOther![wk];
      margins.push(toEval.length > 1 ? bestScore - second : null);
    } else {
      winner = secondary[0];
      margins.push(null);
      sJoint = sJointY = score = NaN;
    }
    const newBase = base ? Float64Array.from(base) : new Float64Array(nn).fill(1);
    multiplyPackedInto(newBase, kernels, winner, n);
    if (secondary) {
      const r = await single(newBase, kY);
      sJoint = r.s;
      sJointY = r.sOther;
      score = sY + sJoint - sJointY;
    }
    // round-off probe: the same score on a permutation of the samples (identical in exact arithmetic)
    const probe = await single(permuted(newBase, perm, n), kYPerm);
    const ro = Math.abs(sY + probe.s - probe.sOther - score);
    maxRoundoff = Math.max(maxRoundoff, ro, Number.EPSILON * (Math.abs(sJoint) + Math.abs(sJointY) + Math.abs(sY)));
    const floor = noiseFactor * maxRoundoff;
    noiseFloor.push(floor);
    roundoff.push(ro);
    const margin = margins[margins.length - 1];
    if (noiseFloorStep === null && margin !== null && margin < floor) {
      noiseFloorStep = step;
      if (tail === 'secondary') {
        // this step's pick is already a tie: restart it from the secondary rule
        ownMI = await ownMutualInformation();
        const mi = ownMI;
        secondary = [...remaining].sort((a, b) => mi[b] - mi[a] || a - b);
        winner = secondary[0];
        newBase.set(base ?? new Float64Array(nn).fill(1));
        multiplyPackedInto(newBase, kernels, winner, n);
        const r = await single(newBase, kY);
        sJoint = r.s;
        sJointY = r.sOther;
        score = sY + sJoint - sJointY;
      }
    }
    if (secondary) secondary.shift();
    base = newBase;
    remaining = remaining.filter((f) => f !== winner);
    order.push(winner);
    scores.push(score);

    if (!selOnly) selOnly = new Float64Array(nn).fill(1);
    multiplyPackedInto(selOnly, kernels, winner, n);
    if (kB) {
      const r = await single(selOnly, kY);
      miSelected.push(sY + r.s - r.sOther);
    } else {
      miSelected.push(score);
    }
    if (kX) {
      const r = await single(selOnly, kX);
      miInputSelected.push(sX + r.s - r.sOther);
    }
    opts.onProgress?.({ step: step + 1, steps, evaluated, totalEvaluations, seconds: (performance.now() - t0) / 1000 });
  }
  if (secondary) remaining = secondary;

  const conv = (v: number) => inBase(v, logBase);
  return {
    order,
    remaining,
    scores: scores.map(conv),
    cmi: scores.map((s) => conv(miAll - s)),
    miSelected: miSelected.map(conv),
    ...(kX ? { miInputSelected: miInputSelected.map(conv) } : {}),
    margins: margins.map((m) => (m === null ? null : conv(m))),
    roundoff: roundoff.map(conv),
    noiseFloor: noiseFloor.map(conv),
    noiseFloorStep,
    tieBreak: noiseFloorStep === null ? 'none' : tail === 'secondary' ? 'own-mi-with-labels' : 'greedy-roundoff',
    rules: {
      noiseFloor:
        `margin = best score - best score of a filter with a different kernel; floor = ${noiseFactor} x the largest ` +
        'round-off probe so far (|winning score - the same score on a seeded permutation of the samples|, ' +
        'at least eps x the entropies); the noise-floor step is the first step with margin < floor',
      tieBreak:
        tail === 'secondary'
          ? 'from the noise-floor step on: descending I(Y; f) of each remaining filter alone, then lower index'
          : 'greedy to the end (the reference); past the noise-floor step the order is decided by round-off',
    },
    ...(ownMI ? { ownMI: ownMI.map(conv) } : {}),
    miAll: conv(miAll),
    entropyLabels: conv(sY),
    sigma: { labels: sigmaLabels, maps: sigmaMaps, before: sigmaBefore, ...(sigmaInput !== undefined ? { input: sigmaInput } : {}) },
    alpha,
    logBase,
    n,
    c,
    backend: backend.name,
    evaluated,
    seconds: (performance.now() - t0) / 1000,
  };
}
