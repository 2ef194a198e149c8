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
  const lambda = symmetricEigenvalues(a_NxN, sideSize(a_NxN));
  let sum = 0;
  for (const l of lambda) sum += Math.pow(Math.abs(l), alpha);
  return Math.log(sum) / (1 - alpha);
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
