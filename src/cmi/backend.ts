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
  /** [C, N, N] per-filter kernels, indexed by `candidates` */
  kernels: Float64Array | null;
  /** filter indices to add to base, one entropy each; -1 = base alone */
  candidates: Int32Array;
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
  /** [C, N, N] Gaussian kernels exp(-||x_i - x_j||^2 / (2 sigma^2)) of maps [N, C, HW] */
  filterKernels(maps: Float32Array | Float64Array, n: number, c: number, hw: number, sigma: number): Promise<Float64Array>;
}

/** Joint kernel base o K_c (fresh array). */
export function jointKernel(req: EntropyRequest, cand: number): Float64Array {
  const nn = req.n * req.n;
  const m = new Float64Array(nn);
  if (req.base) m.set(req.base);
  else m.fill(1);
  if (cand >= 0) {
    if (!req.kernels) throw new Error('entropies: candidates need kernels');
    const off = cand * nn;
    for (let i = 0; i < nn; i++) m[i] *= req.kernels[off + i];
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
  async filterKernels(maps, n, c, hw, sigma) {
    const nn = n * n;
    const out = new Float64Array(c * nn);
    const scale = 1 / (2 * sigma * sigma);
    for (let f = 0; f < c; f++) {
      const d = squaredDistances(maps, n, hw, f * hw, c * hw);
      for (let i = 0; i < nn; i++) out[f * nn + i] = Math.exp(-d[i] * scale);
    }
    return out;
  },
};
