// Typed access to the estimators' functions in the native addon (native/linalg.cc).
import { loadEngine } from '../engine/index.js';
import type { EntropyBackend, EntropyRequest, EntropyResult } from './backend.js';

export interface LinalgAddon {
  /** lapack: reduce each matrix with LAPACK dsytrd instead of the 4-lane AVX2 kernel (for checks) */
  cmiEntropies(req: EntropyRequest & { threads: number; lapack?: boolean }): Promise<EntropyResult>;
  cmiFilterKernels(
    maps: Float32Array | Float64Array,
    n: number,
    c: number,
    hw: number,
    sigma: number,
    threads: number,
    /** the log-kernels -D / (2 sigma^2) instead of the kernels */
    log?: boolean,
  ): Promise<Float64Array>;
  /** ascending eigenvalues of a symmetric n x n matrix (LAPACK dsytrd + dsterf) */
  cmiEigvalsh(a: Float64Array, n: number): Float64Array;
}

/** The linalg part of the addon; throws if the addon is not built or lacks these functions. */
export function loadLinalg(): LinalgAddon {
  const addon = loadEngine() as unknown as Partial<LinalgAddon>;
  if (typeof addon.cmiEntropies !== 'function' || typeof addon.cmiFilterKernels !== 'function') {
    throw new Error('native addon has no CMI estimators: rebuild it with `npm run build:native`');
  }
  return addon as LinalgAddon;
}

/** Entropies on `threads` native worker threads, one single-threaded LAPACK call each. */
export function nativeBackend(threads = 2, addon: LinalgAddon = loadLinalg()): EntropyBackend {
  if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`threads must be an integer >= 1, got ${threads}`);
  return {
    name: 'native',
    entropies: (req) => addon.cmiEntropies({ ...req, threads }),
    filterKernels: (maps, n, c, hw, sigma, log = false) => addon.cmiFilterKernels(maps, n, c, hw, sigma, threads, log),
  };
}
