// Matrix-based Renyi alpha-order entropy estimators (SPEC section 1), written to read like the
// formulas. Everything is float64: near saturation the signal sits in the 4th+ significant digit.
import { symmetricEigenvalues } from './eigen.js';

export type LogBase = 'e' | '2';

/** A kernel-width rule: sigma from the sample count N and the per-variable dimension d. */
export type SigmaRule = (n: number, d: number) => number;

/** The reference rule `sigma = 5 * N^(-1/(4+d))`. */
export const referenceSigma: SigmaRule = (n, d) => 5 * Math.pow(n, -1 / (4 + d));

export function checkAlpha(alpha: number): void {
  if (!Number.isFinite(alpha) || alpha <= 0 || alpha === 1) {
    throw new RangeError(`alpha must be a finite number > 0 and != 1 (got ${alpha})`);
  }
}

/** Pairwise squared Euclidean distances D[i][j] = ||x_i - x_j||^2 of rows x (N x D, row stride `stride`). */
export function squaredDistances(
  x: Float32Array | Float64Array,
  n: number,
  d: number,
  offset = 0,
  stride = d,
): Float64Array /* [N, N] */ {
  const dist_NxN = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const oi = offset + i * stride;
    for (let j = 0; j < i; j++) {
      const oj = offset + j * stride;
      let s = 0;
      for (let k = 0; k < d; k++) {
        const t = x[oi + k] - x[oj + k];
        s += t * t;
      }
      dist_NxN[i * n + j] = s;
      dist_NxN[j * n + i] = s;
    }
  }
  return dist_NxN;
}

/** A kernel width and how it was reached (see medianSigma). */
export interface MedianSigma {
  sigma: number;
  /** median over sample pairs i < j of the summed squared distances (= 2 sigma^2 unless a fallback applied) */
  median: number;
  /** 'median'; 'median-of-positive' when over half the pairs are identical; 'constant' when all are */
  basis: 'median' | 'median-of-positive' | 'constant';
}

/**
 * Median heuristic over a whole layer: 2 sigma^2 = median over pairs i < j of
 * sum_c ||x_ic - x_jc||^2, the distance summed over ALL of the layer's C filters. One sigma for
 * every filter, so the Hadamard-product identity (SPEC section 1) still holds, and scaling the
 * maps by s scales sigma by s: every kernel, hence the order, is scale-invariant.
 *
 * maps [N, C, HW] row-major: a sample's C*HW values are contiguous, so the summed per-filter
 * distance is the plain distance of those rows. One O(N^2 C HW) pass, the same arithmetic as the
 * per-filter kernels (it is not shared with them: the native filterKernels returns only
 * exp(-D / 2 sigma^2), and taking logs back would lose the digits near saturation), then a sort of
 * the N(N-1)/2 sums. Even count: mean of the two middle values. Median 0 (over half of the pairs
 * identical, e.g. a mostly dead layer): the median of the positive sums; none positive (every map
 * constant across samples, all kernels 1 whatever sigma): sigma = 1.
 */
export function medianSigma(x: Float32Array | Float64Array, n: number, d: number): MedianSigma {
  if (x.length !== n * d) throw new RangeError(`medianSigma: ${x.length} values, [${n}, ${d}] needs ${n * d}`);
  const m = (n * (n - 1)) / 2;
  if (m === 0) return { sigma: 1, median: 0, basis: 'constant' };
  const sums = new Float64Array(m);
  let p = 0;
  for (let i = 1; i < n; i++) {
    const oi = i * d;
    for (let j = 0; j < i; j++) {
      const oj = j * d;
      let s0 = 0;
      let s1 = 0;
      let k = 0;
      for (; k + 1 < d; k += 2) {
        const t0 = x[oi + k] - x[oj + k];
        const t1 = x[oi + k + 1] - x[oj + k + 1];
        s0 += t0 * t0;
        s1 += t1 * t1;
      }
      if (k < d) {
        const t = x[oi + k] - x[oj + k];
        s0 += t * t;
      }
      sums[p++] = s0 + s1;
    }
  }
  sums.sort();
  const medianOf = (a: Float64Array) => (a.length % 2 === 1 ? a[(a.length - 1) / 2] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2);
  let median = medianOf(sums);
  let basis: MedianSigma['basis'] = 'median';
  if (!(median > 0)) {
    const firstPositive = sums.findIndex((v) => v > 0);
    if (firstPositive < 0) return { sigma: 1, median: 0, basis: 'constant' };
    median = medianOf(sums.subarray(firstPositive));
    basis = 'median-of-positive';
  }
  return { sigma: Math.sqrt(median / 2), median, basis };
}

/**
 * Width of the 'mean' rule for a layer of C filters: 2 sigma^2 = median over pairs i < j of
 * (1/C) sum_c ||x_ic - x_jc||^2, i.e. the median heuristic (medianSigma) divided by C. The kernel
 * of a set S is then exp(-(mean_{c in S} D_c) / (2 sigma^2)): for S = all C filters its median
 * off-diagonal exponent is exactly 1, whatever the layer's scale or width. `median` keeps the
 * summed distances' median (as medianSigma); the fallbacks are medianSigma's (sigma = 1 when
 * every pair is identical: every kernel is 1 whatever sigma).
 */
export function meanSigma(x: Float32Array | Float64Array, n: number, c: number, hw: number): MedianSigma {
  const med = medianSigma(x, n, c * hw);
  if (med.basis === 'constant') return med;
  return { ...med, sigma: Math.sqrt(med.median / (2 * c)) };
}

/** Gaussian Gram matrix K = exp(-D / (2 sigma^2)) from squared distances (unit diagonal). */
export function gaussianGram(dist_NxN: Float64Array, sigma: number): Float64Array /* [N, N] */ {
  const k = new Float64Array(dist_NxN.length);
  const scale = 1 / (2 * sigma * sigma);
  for (let i = 0; i < k.length; i++) k[i] = Math.exp(-dist_NxN[i] * scale);
  return k;
}

/** Gram matrix of N samples of a D-dimensional variable. */
export function gramOf(x: Float32Array | Float64Array, n: number, d: number, sigma: number): Float64Array {
  return gaussianGram(squaredDistances(x, n, d), sigma);
}

/** Gram matrix of one-hot labels: K = 1 on equal labels, exp(-2 / (2 sigma^2)) otherwise. */
export function labelGram(labels: ArrayLike<number>, sigma: number): Float64Array /* [N, N] */ {
  const n = labels.length;
  const other = Math.exp(-2 / (2 * sigma * sigma));
  const k = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) k[i * n + j] = labels[i] === labels[j] ? 1 : other;
  return k;
}

/** Element-wise (Hadamard) product of Gram matrices of the same size. */
export function hadamard(...grams: Float64Array[]): Float64Array {
  if (grams.length === 0) throw new Error('hadamard: needs at least one matrix');
  const out = Float64Array.from(grams[0]);
  for (let g = 1; g < grams.length; g++) {
    const m = grams[g];
    if (m.length !== out.length) throw new Error('hadamard: matrices differ in size');
    for (let i = 0; i < out.length; i++) out[i] *= m[i];
  }
  return out;
}

/** A = K / tr(K): trace normalisation (= K / N for unit-diagonal kernels). */
export function traceNormalise(k_NxN: Float64Array, n: number): Float64Array {
  let tr = 0;
  for (let i = 0; i < n; i++) tr += k_NxN[i * n + i];
  const a = new Float64Array(k_NxN.length);
  for (let i = 0; i < a.length; i++) a[i] = k_NxN[i] / tr;
  return a;
}

function sideSize(a: Float64Array): number {
  const n = Math.round(Math.sqrt(a.length));
  if (n * n !== a.length) throw new Error(`expected a square matrix, got ${a.length} entries`);
  return n;
}

/**
 * S_alpha(A) = 1/(1-alpha) * log(sum_i |lambda_i(A)|^alpha) for a trace-normalised A, via the
 * eigenvalues (|lambda| as the reference: round-off makes tiny negatives). Natural log.
 * For alpha < 1 round-off eigenvalues (~1e-17) weigh in as ~1e-17^alpha each: expect noise of
 * about N * (N eps)^alpha in the sum.
 */
export function renyiEntropyEigen(a_NxN: Float64Array, alpha: number): number {
  checkAlpha(alpha);
  const n = sideSize(a_NxN);
  const lambda = symmetricEigenvalues(a_NxN, n);
  // Near saturation every lambda is ~1/N and S = sum lambda^alpha is 1 + a tiny excess that
  // 1/(1-alpha) (100 at alpha 1.01) magnifies: accumulate that excess directly. With sum lambda =
  // tr(A): S - 1 = (tr(A) - 1) + sum (|lambda|^alpha - lambda), each term |l| expm1((alpha-1) ln|l|)
  // (+ 2|l| for a round-off negative), summed with Neumaier compensation, finished with log1p.
  // Same finish as native/linalg.cc, so both paths agree to a few ulp.
  const excess = new NeumaierSum();
  const trace = new NeumaierSum();
  for (let i = 0; i < n; i++) trace.add(a_NxN[i * n + i]!);
  excess.add(trace.value() - 1);
  const direct = new NeumaierSum();
  for (const l of lambda) {
    const x = Math.abs(l);
    if (x === 0) continue;
    excess.add(x * Math.expm1((alpha - 1) * Math.log(x)) + (l < 0 ? 2 * x : 0));
    direct.add(Math.pow(x, alpha));
  }
  const sMinus1 = excess.value();
  // far from 1 (large alpha) log1p has no advantage and the direct sum is the accurate one
  return sMinus1 < -0.5 ? Math.log(direct.value()) / (1 - alpha) : Math.log1p(sMinus1) / (1 - alpha);
}

/** Neumaier's compensated summation: the rounding error of each addition is carried along. */
class NeumaierSum {
  private sum = 0;
  private comp = 0;
  add(v: number): void {
    const t = this.sum + v;
    this.comp += Math.abs(this.sum) >= Math.abs(v) ? this.sum - t + v : v - t + this.sum;
    this.sum = t;
  }
  value(): number {
    return this.sum + this.comp;
  }
}

/** alpha = 2: sum lambda^2 = tr(A^2) = sum_ij A_ij^2, no eigendecomposition. Natural log. */
export function renyiEntropy2(a_NxN: Float64Array): number {
  let sum = 0;
  for (const v of a_NxN) sum += v * v;
  return -Math.log(sum);
}

/** Renyi entropy of a trace-normalised Gram matrix (natural log); exact fast path for alpha = 2. */
export function renyiEntropy(a_NxN: Float64Array, alpha: number): number {
  return alpha === 2 ? renyiEntropy2(a_NxN) : renyiEntropyEigen(a_NxN, alpha);
}

/** Joint entropy S(A1, ..., Ak) = S((K1 o ... o Kk) / tr) from unnormalised Gram matrices K_i. */
export function jointEntropy(grams: Float64Array[], alpha: number): number {
  const k = hadamard(...grams);
  return renyiEntropy(traceNormalise(k, sideSize(k)), alpha);
}

/** I(X;Y) = S(X) + S(Y) - S(X,Y); each variable is a list of Gram matrices (a set of filters). */
export function mutualInformation(x: Float64Array[], y: Float64Array[], alpha: number): number {
  return jointEntropy(x, alpha) + jointEntropy(y, alpha) - jointEntropy([...x, ...y], alpha);
}

/** I(X;Y|Z) = S(X,Z) + S(Y,Z) - S(X,Y,Z) - S(Z). */
export function conditionalMutualInformation(
  x: Float64Array[],
  y: Float64Array[],
  z: Float64Array[],
  alpha: number,
): number {
  return (
    jointEntropy([...x, ...z], alpha) +
    jointEntropy([...y, ...z], alpha) -
    jointEntropy([...x, ...y, ...z], alpha) -
    jointEntropy(z, alpha)
  );
}

/** Converts a natural-log information quantity to the requested base. */
export function inBase(natural: number, base: LogBase): number {
  return base === 'e' ? natural : natural / Math.LN2;
}
