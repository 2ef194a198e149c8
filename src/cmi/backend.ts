// Where the heavy entropies are computed: pure TypeScript (small N, no addon) or the native addon
// (LAPACK eigvalsh on both cores). Both take the same requests and return natural-log entropies.
import { renyiEntropy, squaredDistances } from './estimators.js';

/** A batch of joint entropies sharing one conditioning kernel. */
export interface EntropyRequest {
  n: number;
  alpha: number;
  /** [N, N] Hadamard product of the conditioning set's kernels; null = all ones (empty set) */
  base: Float64Array | null;
  /** [N, N] kernel of a second variable (labels); null = only the first entropy is wanted */
  other: Float64Array | null;
  /** [C, N(N+1)/2] per-filter kernels, packed upper triangles (see packedIndex), indexed by `candidates` */
  kernels: Float64Array | null;
  /** filter indices to add to base, one entropy each; -1 = base alone */
  candidates: Int32Array;
  /**
   * Log mode (the 'mean' kernel-width rule, see src/cmi/joint.ts), when given: `base` and `kernels`
   * hold log-kernels (log K_c = -D_c / (2 sigma^2); base = the sum over a set, null = zeros) and
   * candidate c's joint kernel is
   *   M_c = exp(logOffset + logScale * (base + log K_c))      (candidate -1: without log K_c),
   * i.e. logScale = 1/|S| turns the summed log-kernel of the set S into the mean rule's kernel, and
   * logOffset (unscaled; null = zeros) carries the conditioning layers' kernels. Summing logs, not
   * multiplying kernels, keeps a set of hundreds of filters from underflowing before the 1/|S|.
   * `other` stays a plain kernel: entropyOther is S(other o M_c / tr).
   */
  logScale?: number;
  logOffset?: Float64Array | null;
}

export interface EntropyResult {
  /** S((base o K_c) / tr) per candidate, natural log */
  entropy: Float64Array;
  /** S((other o base o K_c) / tr) per candidate; null when `other` was null */
  entropyOther: Float64Array | null;
}

export interface EntropyBackend {
  readonly name: 'ts' | 'native';
  entropies(req: EntropyRequest): Promise<EntropyResult>;
  /**
   * [C, N(N+1)/2] packed Gaussian kernels exp(-||x_i - x_j||^2 / (2 sigma^2)) of maps [N, C, HW];
   * log: their logs -||x_i - x_j||^2 / (2 sigma^2) instead (for log-mode requests)
   */
  filterKernels(maps: Float32Array | Float64Array, n: number, c: number, hw: number, sigma: number, log?: boolean): Promise<Float64Array>;
}

/**
 * Per-filter kernels are stored as packed upper triangles, row by row: entry (i, j), j >= i, of an
 * N x N symmetric matrix at i*N - i*(i-1)/2 + (j - i). Half the memory, and the alpha = 2 pass
 * streams them contiguously.
 */
export function packedSize(n: number): number {
  return (n * (n + 1)) / 2;
}

/** acc_NxN (full, symmetric) *= kernel f of the packed set. */
export function multiplyPackedInto(acc: Float64Array, packed: Float64Array, f: number, n: number): void {
  let p = f * packedSize(n);
  for (let i = 0; i < n; i++) {
    acc[i * n + i] *= packed[p++];
    for (let j = i + 1; j < n; j++) {
      const v = packed[p++];
      acc[i * n + j] *= v;
      acc[j * n + i] *= v;
    }
  }
}

/** acc_NxN (full, symmetric) += log-kernel f of the packed set. */
export function addPackedInto(acc: Float64Array, packed: Float64Array, f: number, n: number): void {
  let p = f * packedSize(n);
  for (let i = 0; i < n; i++) {
    acc[i * n + i] += packed[p++];
    for (let j = i + 1; j < n; j++) {
      const v = packed[p++];
      acc[i * n + j] += v;
      acc[j * n + i] += v;
    }
  }
}

/** Kernel f of the packed set as a full N x N matrix. */
export function unpackKernel(packed: Float64Array, f: number, n: number): Float64Array {
  const full = new Float64Array(n * n).fill(1);
  multiplyPackedInto(full, packed, f, n);
  return full;
}

/**
 * Joint kernel base o K_c (fresh array); in log mode exp(logOffset + logScale * (base + log K_c)),
 * in that order of operations (native/linalg.cc's logJoint does the same).
 */
export function jointKernel(req: EntropyRequest, cand: number): Float64Array {
  const nn = req.n * req.n;
  const m = new Float64Array(nn);
  if (req.logScale !== undefined) {
    if (req.base) m.set(req.base);
    if (cand >= 0) {
      if (!req.kernels) throw new Error('entropies: candidates need kernels');
      addPackedInto(m, req.kernels, cand, req.n);
    }
    const s = req.logScale;
    const off = req.logOffset ?? null;
    for (let i = 0; i < nn; i++) m[i] = Math.exp(off ? off[i] + s * m[i] : s * m[i]);
    return m;
  }
  if (req.base) m.set(req.base);
  else m.fill(1);
  if (cand >= 0) {
    if (!req.kernels) throw new Error('entropies: candidates need kernels');
    multiplyPackedInto(m, req.kernels, cand, req.n);
  }
  return m;
}

function normalisedEntropy(k: Float64Array, n: number, alpha: number): number {
  let tr = 0;
  for (let i = 0; i < n; i++) tr += k[i * n + i];
  const a = new Float64Array(k.length);
  for (let i = 0; i < a.length; i++) a[i] = k[i] / tr;
  return renyiEntropy(a, alpha);
}

export const tsBackend: EntropyBackend = {
  name: 'ts',
  async entropies(req) {
    const m = req.candidates.length;
    const entropy = new Float64Array(m);
    const entropyOther = req.other ? new Float64Array(m) : null;
    for (let k = 0; k < m; k++) {
      const joint = jointKernel(req, req.candidates[k]);
      entropy[k] = normalisedEntropy(joint, req.n, req.alpha);
      if (entropyOther && req.other) {
        for (let i = 0; i < joint.length; i++) joint[i] *= req.other[i];
        entropyOther[k] = normalisedEntropy(joint, req.n, req.alpha);
      }
    }
    return { entropy, entropyOther };
  },
  async filterKernels(maps, n, c, hw, sigma, log = false) {
    const out = new Float64Array(c * packedSize(n));
    const scale = 1 / (2 * sigma * sigma);
    let p = 0;
    for (let f = 0; f < c; f++) {
      const d = squaredDistances(maps, n, hw, f * hw, c * hw);
      if (log) for (let i = 0; i < n; i++) for (let j = i; j < n; j++) out[p++] = j === i ? 0 : -d[i * n + j] * scale;
      else for (let i = 0; i < n; i++) for (let j = i; j < n; j++) out[p++] = Math.exp(-d[i * n + j] * scale);
    }
    return out;
  },
};
