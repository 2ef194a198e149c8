// How a set of filters becomes one joint Gram matrix, per kernel-width rule (SPEC sections 1 and 8).
// rankLayer (src/cmi/rank.ts) builds every set it scores through one of these two rules, so the
// greedy loop, the chain-rule curve, the round-off probe and the permutation test are written once.
import {
  addPackedInto,
  jointKernel,
  multiplyPackedInto,
  type EntropyBackend,
  type EntropyRequest,
} from './backend.js';

/** Kernel-width rule of the maps: see RankLayerOptions.sigma. */
export type SigmaMode = 'reference' | 'median' | 'mean';

export const SIGMA_MODES: readonly SigmaMode[] = ['reference', 'median', 'mean'];

/** Maps of one layer, [N, C, HW] row-major, with the width its rule chose. */
export interface LayerMaps {
  data: Float32Array | Float64Array;
  c: number;
  hw: number;
  sigma: number;
}

/**
 * A set of filters of the layer being ordered, with or without the conditioning layers B.
 * Product rule: `acc` is the set's joint kernel itself (B's kernel included when withB; null = all
 * ones). Mean rule: `acc` is the sum of the set's per-filter log-kernels (null = zeros); B enters
 * only when the kernel is formed.
 */
export interface FilterSet {
  readonly acc: Float64Array | null;
  /** how many of this layer's filters the set holds */
  readonly size: number;
  readonly withB: boolean;
}

export interface JointRule {
  readonly name: 'product' | 'mean';
  /** packed per-filter factors of the layer: kernels K_c (product) or log-kernels log K_c (mean) */
  readonly factors: Float64Array;
  empty(withB: boolean): FilterSet;
  /** the set plus filters `fs` of `factors` (default this layer's; or e.g. permuted copies) */
  plus(set: FilterSet, fs: Iterable<number>, factors?: Float64Array): FilterSet;
  /** the set's N x N joint kernel (may be `acc` itself: do not modify it) */
  kernel(set: FilterSet): Float64Array;
  /** one entropy request scoring set u {c} for each candidate c >= 0 of `factors`, with `other` */
  request(set: FilterSet, candidates: Int32Array, other: Float64Array | null, factors?: Float64Array): EntropyRequest;
}

/**
 * The paper's rule ('reference' and 'median'): one sigma per layer for every set size, so
 * K_S = prod_{c in S} K_c = exp(-(sum_{c in S} D_c) / (2 sigma^2)), and B u S is the Hadamard
 * product K_B o K_S with K_B the product of every before-layer filter's kernel. The arithmetic
 * (which arrays are copied, in which order factors are multiplied) is the one rankLayer had before
 * the rules were factored out, so results are bit-identical to RANK_ALGORITHM_VERSION 3.
 */
export async function productRule(backend: EntropyBackend, n: number, alpha: number, layer: LayerMaps, before: LayerMaps[]): Promise<JointRule> {
  const nn = n * n;
  const factors = await backend.filterKernels(layer.data, n, layer.c, layer.hw, layer.sigma);
  let kB: Float64Array | null = null;
  for (const b of before) {
    const kb = await backend.filterKernels(b.data, n, b.c, b.hw, b.sigma);
    if (!kB) kB = new Float64Array(nn).fill(1);
    for (let f = 0; f < b.c; f++) multiplyPackedInto(kB, kb, f, n);
  }
  return {
    name: 'product',
    factors,
    empty: (withB) => ({ acc: withB && kB ? Float64Array.from(kB) : null, size: 0, withB }),
    plus(set, fs, k = factors) {
      const acc = set.acc ? Float64Array.from(set.acc) : new Float64Array(nn).fill(1);
      let size = set.size;
      for (const f of fs) {
        multiplyPackedInto(acc, k, f, n);
        size++;
      }
      return { acc, size, withB: set.withB };
    },
    kernel: (set) => set.acc ?? new Float64Array(nn).fill(1),
    request: (set, candidates, other, k = factors) => ({ n, alpha, base: set.acc, other, kernels: k, candidates }),
  };
}

/**
 * The 'mean' rule (SPEC section 8's non-saturating variant). With L_c = log K_c = -D_c / (2 sigma^2)
 * and 2 sigma^2 = median over pairs i < j of (1/C) sum_c D_c[i, j] (meanSigma), a set S of this
 * layer's filters has the kernel
 *   K_S = exp(-(mean_{c in S} D_c) / (2 sigma^2)) = exp((1/|S|) sum_{c in S} L_c) = (o_{c in S} K_c)^(1/|S|),
 * a Gaussian kernel of the set's average per-filter distance: its entries keep the scale of one
 * filter's kernel however many filters S holds, where the product rule's decay geometrically to I/N.
 * Scaling the maps by s scales every D_c and the median by s^2: every kernel is unchanged.
 *
 * A layer's maps remain one variable. Each before-layer b (its own C_b filters and width sigma_b)
 * contributes its whole-layer mean kernel K_b = exp((1/C_b) sum_{c in b} L^b_c), and the joint kernel
 * of B u S (and with the labels) is the Hadamard product of the variables' kernels:
 *   K_{B u S} = (o_b K_b) o K_S = exp(logOffset + (1/|S|) sum_{c in S} L_c),  logOffset = sum_b log K_b,
 *   K_{Y, B u S} = K_Y o K_{B u S}.
 * Sums of log-kernels, not products of kernels, are accumulated: the product of hundreds of filters'
 * kernels underflows to 0 before the 1/|S| root could bring it back.
 *
 * The CMI curve. The rule defines the kernel of a set of this layer's filters, so "R and S
 * together" is the set R u S, whose kernel exp(mean over R u S) is NOT K_R o K_S (each with its own
 * mean) - the Hadamard factorisation of SPEC section 1 fails within a layer. What the curve must
 * report is I(Y; R | B u S) with R u S = all filters, i.e. the four entropies
 *   S(all, B) + S(Y, B, S) - S(Y, all, B) - S(B, S) = I(Y; all u B) - I(Y; B u S),
 * which is exactly the chain-rule difference rankLayer computes: I(Y; all u B) from the mean kernel
 * of all C filters (with B), minus the winning score. That identity holds for this rule by
 * construction (every joint term is the kernel of a union), while the Hadamard form
 * S(K_R o K_S o K_B) would be a different, mixed-width quantity. The permutation test likewise scores
 * R u Z u {f~} and Z u {f~} as sets of this layer (f~ = the winner with permuted samples).
 * Unlike the product rule's, this MI is not monotone in the set: averaging a filter in can dilute
 * the informative ones, so I(Y; B u S) may exceed I(Y; all u B) and the curve may go below 0.
 */
export async function meanRule(backend: EntropyBackend, n: number, alpha: number, layer: LayerMaps, before: LayerMaps[]): Promise<JointRule> {
  const nn = n * n;
  const factors = await backend.filterKernels(layer.data, n, layer.c, layer.hw, layer.sigma, true);
  let logOffset: Float64Array | null = null;
  for (const b of before) {
    const lb = await backend.filterKernels(b.data, n, b.c, b.hw, b.sigma, true);
    const sum = new Float64Array(nn);
    for (let f = 0; f < b.c; f++) addPackedInto(sum, lb, f, n);
    if (!logOffset) logOffset = new Float64Array(nn);
    for (let i = 0; i < nn; i++) logOffset[i] += sum[i] / b.c;
  }
  const offsetOf = (set: FilterSet) => (set.withB ? logOffset : null);
  return {
    name: 'mean',
    factors,
    empty: (withB) => ({ acc: null, size: 0, withB }),
    plus(set, fs, k = factors) {
      const acc = set.acc ? Float64Array.from(set.acc) : new Float64Array(nn);
      let size = set.size;
      for (const f of fs) {
        addPackedInto(acc, k, f, n);
        size++;
      }
      return { acc, size, withB: set.withB };
    },
    // the empty set: exp(logOffset + 1 * 0) = B's kernel, or ones
    kernel: (set) =>
      jointKernel(
        { n, alpha, base: set.acc, other: null, kernels: null, candidates: Int32Array.of(-1), logScale: 1 / Math.max(1, set.size), logOffset: offsetOf(set) },
        -1,
      ),
    request(set, candidates, other, k = factors) {
      // one logScale per request: every candidate makes a set of size + 1 filters
      if (candidates.some((cand) => cand < 0)) throw new Error('meanRule.request: candidates must be filters (>= 0); use kernel() for the set alone');
      return { n, alpha, base: set.acc, other, kernels: k, candidates, logScale: 1 / (set.size + 1), logOffset: offsetOf(set) };
    },
  };
}
