// Greedy forward selection of one layer's filters by mutual information with the labels
// (SPEC sections 2-3, semantics of the reference `filter_number_selection`), with the CMI curve
// from the chain rule and an explicit numerical-noise-floor report (SPEC section 8).
import { UserError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import { packedSize, tsBackend, unpackKernel, type EntropyBackend } from './backend.js';
import { checkAlpha, inBase, labelGram, meanSigma, medianSigma, referenceSigma, type LogBase, type MedianSigma, type SigmaRule } from './estimators.js';
import { meanRule, productRule, SIGMA_MODES, type FilterSet, type SigmaMode } from './joint.js';

export type { SigmaMode } from './joint.js';

/**
 * Version of the ordering algorithm: part of every checkpoint key (src/cmi/rank-model.ts), so
 * results computed by an older algorithm are never resumed. Bump it whenever rankLayer's order,
 * curve or result fields change for the same inputs and options.
 *   1: greedy selection, chain-rule CMI curve, noise floor with the own-MI tie-break
 *   2: sigma rule ('reference' | 'median') and its record in `sigma.rule`; optional permutation test
 *      (pValues); 'auto' no longer falls back silently to TypeScript for N > 64
 *   3: native entropies finished as log1p(sum(|x|^alpha - x)) with compensated sums (round-off
 *      ~30x smaller near saturation, so noise-floor steps and tie-break tails move)
 */
export const RANK_ALGORITHM_VERSION = '3';

/** Largest N that backend 'auto' orders in TypeScript when the native addon cannot be loaded. */
export const TS_FALLBACK_MAX_N = 64;

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

export interface RankProgress {
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

export interface RankLayerOptions {
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
  /**
   * kernel width of the maps (this layer's and each `before` layer's):
   * 'reference' (default): `sigmaRule` (default the reference 5 * N^(-1/(4+d)), d = H*W);
   * 'median': the median heuristic over the whole layer, 2 sigma^2 = median over sample pairs i < j
   * of sum_c ||x_ic - x_jc||^2 (one sigma for all of a layer's filters; scale-invariant).
   * Both give a set S the kernel exp(-(sum_{c in S} D_c) / (2 sigma^2)), which saturates toward I/N
   * as S grows (SPEC section 8).
   * 'mean': K_S = exp(-(mean_{c in S} D_c) / (2 sigma^2)) = (o_{c in S} K_c)^(1/|S|), with
   * 2 sigma^2 = median over pairs i < j of (1/C) sum_c ||x_ic - x_jc||^2 (scale-invariant, does not
   * saturate); each before-layer contributes its whole-layer mean kernel (src/cmi/joint.ts, meanRule).
   * The labels (and the optional input) always use `sigmaRule`.
   */
  sigma?: SigmaMode;
  /** kernel width rule of the labels, the input, and the maps under sigma 'reference' */
  sigmaRule?: SigmaRule;
  /** SPEC section 4's permutation test after each selection, until the first p >= eta */
  permutationTest?: PermutationTestOptions;
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
  onProgress?: (p: RankProgress) => void;
}

export interface PermutationTestOptions {
  /** permutations per selection (default 100, the reference's P) */
  permutations?: number;
  /** seed of the permutations (default 0) */
  seed?: number;
  /** significance level: the test stops at the first p >= eta (default 0.05); eta > 1 never stops */
  eta?: number;
}

export interface LayerRankResult {
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
  rules: { noiseFloor: string; tieBreak: string; sigma: string; permutationTest?: string };
  /** I(Y; f) per filter (only filled when the secondary rule was used) */
  ownMI?: number[];
  miAll: number;
  entropyLabels: number;
  /**
   * permutation-test p-values (with options.permutationTest): pValues[i] belongs to the (i+1)-th
   * selection, order[i], like cmi[i]; computed up to and including the first p >= eta
   */
  pValues?: number[];
  /**
   * stopIndex = i of the first pValues[i] >= eta, null if every computed p stayed below eta. The
   * selections order[0..stopIndex-1] passed the test, so the test's cut-off keeps stopIndex
   * filters; the reference code keeps len(p) = stopIndex + 1 (it includes the failing pick).
   */
  permutationTest?: { permutations: number; eta: number; seed: number; stopIndex: number | null; evaluated: number };
  /**
   * kernel widths; rule: how the maps' widths were chosen ('custom' = a caller's sigmaRule);
   * labels/input always follow sigmaRule (default the reference rule)
   */
  sigma: { rule: SigmaMode | 'custom'; labels: number; maps: number; before: number[]; input?: number };
  alpha: number;
  logBase: LogBase;
  n: number;
  c: number;
  backend: 'ts' | 'native';
  evaluated: number;
  seconds: number;
}

/** Whether backend 'auto' may order N samples in TypeScript when the native addon is missing. */
export function tsFallbackAllowed(n: number): boolean {
  return n <= TS_FALLBACK_MAX_N;
}

async function loadNativeBackend(threads: number): Promise<EntropyBackend> {
  const { nativeBackend } = await import('./native.js');
  return nativeBackend(threads);
}

let warnedFallback = false;

/**
 * The entropy backend for a layer of n samples. 'auto': native when the addon loads; otherwise
 * TypeScript only for n <= TS_FALLBACK_MAX_N (saying so once on stderr), and a UserError naming the fix above that (the
 * TypeScript eigensolver is ~100x slower: a silent fallback turns minutes into hours).
 * `load` replaces the addon loader (tests).
 */
export async function resolveBackend(
  b: RankLayerOptions['backend'],
  threads: number,
  n: number,
  load: (threads: number) => Promise<EntropyBackend> = loadNativeBackend,
): Promise<EntropyBackend> {
  if (b && typeof b === 'object') return b;
  if (b === 'ts') return tsBackend;
  try {
    return await load(threads);
  } catch (err) {
    if (b === 'native') throw err;
    const why = err instanceof Error ? err.message : String(err);
    if (tsFallbackAllowed(n)) {
      // never silent: one line per process, the first time it happens
      if (!warnedFallback) process.stderr.write(`cmiprune: the native CMI engine could not be loaded (${why}); using the TypeScript backend (N = ${n} <= ${TS_FALLBACK_MAX_N})\n`);
      warnedFallback = true;
      return tsBackend;
    }
    throw new UserError(
      `the native CMI engine is needed for N = ${n} samples (the TypeScript fallback is used only up to N = ${TS_FALLBACK_MAX_N}, ` +
        `being ~100x slower) but it could not be loaded: ${why}. Build it with \`npm run build:native\`, ` +
        `or choose the TypeScript backend explicitly (backend 'ts', CLI --backend ts).`,
      { cause: err },
    );
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

/** Permutation-test options with their defaults filled in; throws on invalid values. */
export function checkPermutationTest(t: PermutationTestOptions): Required<PermutationTestOptions> {
  const permutations = t.permutations ?? 100;
  const eta = t.eta ?? 0.05;
  const seed = t.seed ?? 0;
  if (!Number.isInteger(permutations) || permutations < 1) throw new RangeError(`permutationTest.permutations must be an integer >= 1 (got ${permutations})`);
  if (!Number.isFinite(eta) || eta <= 0) throw new RangeError(`permutationTest.eta must be a number > 0 (got ${eta})`);
  if (!Number.isFinite(seed)) throw new RangeError(`permutationTest.seed must be a finite number (got ${seed})`);
  return { permutations, eta, seed };
}

/** dst[slot] (packed) = kernel f of src with its samples permuted: K~(i, j) = K(perm[i], perm[j]). */
function permutePackedInto(src: Float64Array, f: number, perm: Int32Array, n: number, dst: Float64Array, slot: number): void {
  const len = packedSize(n);
  const s0 = f * len;
  let q = slot * len;
  for (let i = 0; i < n; i++) {
    const pi = perm[i];
    for (let j = i; j < n; j++) {
      const pj = perm[j];
      const a = pi < pj ? pi : pj;
      const b = pi < pj ? pj : pi;
      dst[q++] = src[s0 + a * n - (a * (a - 1)) / 2 + (b - a)];
    }
  }
}

/** Orders the filters of one layer by greedy forward selection. */
export async function rankLayer(input: LayerInput, opts: RankLayerOptions = {}): Promise<LayerRankResult> {
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
  const sigmaMode = opts.sigma ?? 'reference';
  if (!SIGMA_MODES.includes(sigmaMode)) throw new RangeError(`sigma must be one of ${SIGMA_MODES.join(', ')} (got ${String(sigmaMode)})`);
  const ptest = opts.permutationTest ? checkPermutationTest(opts.permutationTest) : null;
  const backend = await resolveBackend(opts.backend, threads, n);

  // maps: one width per layer (this one and each before-layer), by the chosen rule
  const medians: MedianSigma[] = [];
  const layerSigma = (m: MapsTensor): number => {
    if (sigmaMode === 'reference') return rule(m.n, m.hw);
    const med = sigmaMode === 'mean' ? meanSigma(m.data, m.n, m.c, m.hw) : medianSigma(m.data, m.n, m.c * m.hw);
    medians.push(med);
    return med.sigma;
  };
  const sigmaMaps = layerSigma(maps);
  const sigmaLabels = rule(n, input.classes);
  const sigmaBefore = before.map(layerSigma);
  const sigmaRuleName: LayerRankResult['sigma']['rule'] =
    sigmaMode !== 'reference' ? sigmaMode : opts.sigmaRule === undefined || opts.sigmaRule === referenceSigma ? 'reference' : 'custom';
  // how a set of filters (with or without B) becomes one joint kernel: src/cmi/joint.ts
  const joint = await (sigmaMode === 'mean' ? meanRule : productRule)(
    backend,
    n,
    alpha,
    { data: maps.data, c, hw, sigma: sigmaMaps },
    before.map((b, i) => ({ data: b.data, c: b.c, hw: b.hw, sigma: sigmaBefore[i] })),
  );
  const kernels = joint.factors;
  const group = kernelGroups(kernels, c, n);
  const kY = labelGram(input.labels, sigmaLabels);
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
  // I(Y; all filters u B): the chain rule's constant (for the mean rule see meanRule's note)
  const all = await single(joint.kernel(joint.plus(joint.empty(true), Array.from({ length: c }, (_, f) => f))), kY);
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
  let base: FilterSet = joint.empty(true); // B u selected
  let selOnly: FilterSet = joint.empty(false); // selected only (for I(Y; selected) without B)
  let maxRoundoff = 0;
  let evaluated = 0;
  let totalEvaluations = 0;
  for (let k = c; k > c - steps; k--) totalEvaluations += k;
  let secondary: number[] | null = null; // tie-break order once below the floor

  // Permutation test (SPEC section 4). After selection i let Z = B u selected_0..i-1 (the
  // conditioning set before the pick), f = order[i], R = the filters still remaining (f is not in
  // it), and f~ = f with its samples permuted (rows and columns of K_f permuted alike). Then
  //   CMI~ = I(Y; R | Z u f~) = I(Y; R u Z u f~) - I(Y; Z u f~)
  //        = [S(R,Z,f~) - S(Y,R,Z,f~)] - [S(Z,f~) - S(Y,Z,f~)]
  // with the same f~ in BOTH terms: the chain rule is exact for these estimators only when both
  // terms hold the same variables, and then this is exactly the reference's four-entropy CMI
  // recomputed with f~ in the conditioning set. Reusing the unpermuted chain-rule constant
  // I(Y; all u B) instead would give I(Y; R | Z u f~) + [I(Y; R u Z u f) - I(Y; R u Z u f~)]: a
  // CMI plus the information the permutation destroyed (typically > 0), inflating the permuted
  // values and so making p too small. (The reference leaves B out of Z in the permuted CMI only; we keep it, as
  // in the actual CMI.) The actual value goes through the same two requests as the identity
  // permutation (index 0), so actual and permuted values share their arithmetic (it equals cmi[i]
  // up to round-off): p = #{k : CMI~_k <= CMI} / P. Cost: 2 batched requests of P + 1 candidates,
  // 4 (P + 1) entropies per selection, independent of C.
  const pValues: number[] = [];
  let stopIndex: number | null = null;
  let ptestEvaluated = 0;
  const prng = new Rng(ptest?.seed ?? 0);
  const len = packedSize(n);
  // permuted kernels are batched up to ~64 MiB per request
  const chunk = Math.max(1, Math.floor((64 * 2 ** 20) / (8 * len)));
  const permutationPValue = async (z: FilterSet, f: number): Promise<number> => {
    const P = ptest!.permutations;
    const rest = joint.plus(z, remaining); // Z u R
    const perms: Int32Array[] = [Int32Array.from({ length: n }, (_, i) => i)];
    for (let k = 0; k < P; k++) perms.push(prng.permutation(n));
    const stat = new Float64Array(P + 1);
    for (let start = 0; start <= P; start += chunk) {
      const part = perms.slice(start, start + chunk);
      const packed = new Float64Array(part.length * len);
      part.forEach((perm, k) => permutePackedInto(kernels, f, perm, n, packed, k));
      const candidates = Int32Array.from(part.keys());
      const rz = await backend.entropies(joint.request(z, candidates, kY, packed));
      const rall = await backend.entropies(joint.request(rest, candidates, kY, packed));
      for (let k = 0; k < part.length; k++) {
        stat[start + k] = rall.entropy[k] - rall.entropyOther![k] - (rz.entropy[k] - rz.entropyOther![k]);
      }
    }
    ptestEvaluated += 2 * (P + 1);
    let below = 0;
    for (let k = 1; k <= P; k++) if (stat[k] <= stat[0]) below++;
    return below / P;
  };

  const ownMutualInformation = async (): Promise<number[]> => {
    const r = await backend.entropies(joint.request(joint.empty(false), Int32Array.from(remaining), kY));
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
      const r = await backend.entropies(joint.request(base, Int32Array.from(toEval), kY));
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
    let newBase = joint.plus(base, [winner]);
    if (secondary) {
      const r = await single(joint.kernel(newBase), kY);
      sJoint = r.s;
      sJointY = r.sOther;
      score = sY + sJoint - sJointY;
    }
    // round-off probe: the same score on a permutation of the samples (identical in exact arithmetic)
    const probe = await single(permuted(joint.kernel(newBase), perm, n), kYPerm);
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
        newBase = joint.plus(base, [winner]);
        const r = await single(joint.kernel(newBase), kY);
        sJoint = r.s;
        sJointY = r.sOther;
        score = sY + sJoint - sJointY;
      }
    }
    if (secondary) secondary.shift();
    const prevBase = base; // Z = B u selected before this pick
    base = newBase;
    remaining = remaining.filter((f) => f !== winner);
    order.push(winner);
    scores.push(score);
    if (ptest && stopIndex === null) {
      const p = await permutationPValue(prevBase, winner);
      pValues.push(p);
      if (p >= ptest.eta) stopIndex = step;
    }

    selOnly = joint.plus(selOnly, [winner]);
    if (before.length > 0) {
      const r = await single(joint.kernel(selOnly), kY);
      miSelected.push(sY + r.s - r.sOther);
    } else {
      miSelected.push(score);
    }
    if (kX) {
      const r = await single(joint.kernel(selOnly), kX);
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
      sigma:
        sigmaMode === 'mean'
          ? 'maps: mean rule, the kernel of a set S is exp(-(mean_{c in S} ||x_ic - x_jc||^2) / (2 sigma^2)) = ' +
            '(Hadamard product of its filters\' kernels)^(1/|S|), 2 sigma^2 = median over sample pairs i < j of ' +
            '(1/C) sum_c ||x_ic - x_jc||^2 (one sigma per layer; ' +
            medians.map((m) => m.basis).join(', ') +
            '); each before-layer enters as the mean kernel of all its filters; CMI curve = I(Y; all u B) - I(Y; B u selected) ' +
            'with the layer\'s filters one variable; labels: ' +
            (opts.sigmaRule === undefined || opts.sigmaRule === referenceSigma ? 'reference rule 5 N^(-1/(4+d)), d = classes' : "the caller's rule")
          : sigmaMode === 'median'
          ? 'maps (and each before-layer): median heuristic over the whole layer, 2 sigma^2 = median over sample pairs ' +
            'i < j of sum_c ||x_ic - x_jc||^2 (one sigma per layer; ' +
            medians.map((m) => m.basis).join(', ') +
            '); labels: ' +
            (sigmaRuleName === 'custom' ? 'the caller\'s rule' : 'reference rule 5 N^(-1/(4+d)), d = classes')
          : sigmaRuleName === 'custom'
            ? "the caller's sigmaRule(N, d), d = H*W of each layer's maps, classes for the labels"
            : 'reference rule sigma = 5 N^(-1/(4+d)), d = H*W of each layer\'s maps, d = classes for the labels',
      ...(ptest
        ? {
            permutationTest:
              `after selection i: p[i] = fraction of ${ptest.permutations} seeded sample permutations of filter order[i] whose ` +
              'I(Y; remaining | B u selected, order[i] permuted) <= the actual CMI; stops at the first p >= ' +
              `${ptest.eta}; p[i] belongs to the (i+1)-th selection`,
          }
        : {}),
    },
    ...(ownMI ? { ownMI: ownMI.map(conv) } : {}),
    miAll: conv(miAll),
    entropyLabels: conv(sY),
    ...(ptest
      ? {
          pValues,
          permutationTest: { permutations: ptest.permutations, eta: ptest.eta, seed: ptest.seed, stopIndex, evaluated: ptestEvaluated },
        }
      : {}),
    sigma: {
      rule: sigmaRuleName,
      labels: sigmaLabels,
      maps: sigmaMaps,
      before: sigmaBefore,
      ...(sigmaInput !== undefined ? { input: sigmaInput } : {}),
    },
    alpha,
    logBase,
    n,
    c,
    backend: backend.name,
    evaluated,
    seconds: (performance.now() - t0) / 1000,
  };
}
