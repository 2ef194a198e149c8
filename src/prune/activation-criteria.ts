// The published anchors' activation-based criteria behind the Criterion interface:
//   HRank (Lin et al., CVPR 2020): a filter's importance is the average rank of its feature map;
//   CHIP (Sui et al., NeurIPS 2021): a channel's independence, the drop in the layer's nuclear norm
//   when its row leaves the matrix of flattened maps.
// Both read the maps after Conv -> [BN] -> [ReLU] (the conv unit's tap, as both papers hook the
// ReLU) through one engine for all groups, image chunk by image chunk so memory stays bounded.
// Linear algebra is in float64 on Gram matrices of the smaller side, on the project's own
// eigensolvers (src/cmi/eigen.ts, the addon's LAPACK): written here rather than taken from npm
// because it is ~100 lines on those and the package takes no new dependency for it.
import { collectActivations, type LayerActivations } from '../activations/collect.js';
import { symmetricEigenvalues } from '../cmi/eigen.js';
import { loadLinalg } from '../cmi/native.js';
import { imageSize, subset, type ImageDataset } from '../data/dataset.js';
import { TorchModel } from '../engine/index.js';
import type { ConvUnit } from '../ir/graph.js';
import type { Model } from '../ir/model.js';
import { UserError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import { leftOutCurve, orderByScore } from './criteria.js';
import { groupUnits } from './groups.js';
import type { Calibration, ChannelGroup, Criterion, GroupRanking } from './types.js';

/** torch.finfo(torch.float32).eps: the maps are float32, so matrix_rank's tolerance uses it */
export const FLOAT32_EPS = 2 ** -23;
const FLOAT64_EPS = Number.EPSILON;

// ---------------------------------------------------------------------------------------------
// Small dense linear algebra (row-major float64 unless said otherwise)

/** Eigenvalues of a symmetric n x n matrix (any order). */
export type Eigvalsh = (a: Float64Array, n: number) => ArrayLike<number>;

let nativeEig: Eigvalsh | null | undefined;
/** LAPACK dsytrd+dsterf from the addon when it loads, else null */
function nativeEigvalsh(): Eigvalsh | null {
  if (nativeEig === undefined) {
    try {
      const l = loadLinalg();
      nativeEig = typeof l.cmiEigvalsh === 'function' ? (a, n) => l.cmiEigvalsh(a, n) : null;
    } catch {
      nativeEig = null;
    }
  }
  return nativeEig;
}

// Measured here: the TS Householder+QL beats the addon's call below ~64 rows (the addon's per-call
// workspace), LAPACK wins ~2x from ~100 rows on.
const NATIVE_FROM = 96;

/** Eigenvalues of a symmetric matrix: TS below NATIVE_FROM rows, LAPACK (when built) above. */
export function eigvalsh(a: Float64Array, n: number): ArrayLike<number> {
  if (n === 1) return [a[0]];
  if (n === 2) return eig2(a[0], a[1], a[3]);
  const nat = n >= NATIVE_FROM ? nativeEigvalsh() : null;
  return nat ? nat(a, n) : symmetricEigenvalues(a, n);
}

/** eigenvalues of [[p, q], [q, r]], the smaller one as det / larger (no cancellation) */
function eig2(p: number, q: number, r: number): [number, number] {
  const mid = (p + r) / 2;
  const rad = Math.hypot((p - r) / 2, q);
  const hi = mid + rad;
  return [hi, hi > 0 ? (p * r - q * q) / hi : mid - rad];
}

/**
 * Singular values (descending) of the rows x cols matrix a by one-sided Jacobi (Hestenes) in
 * float64: high relative accuracy, slow; the reference the tests check the Gram paths against.
 */
export function singularValues(a: ArrayLike<number>, rows: number, cols: number): Float64Array {
  // orthogonalise the k vectors of length len, k = min(rows, cols): rows of a or of a^T
  const byRows = rows <= cols;
  const k = byRows ? rows : cols;
  const len = byRows ? cols : rows;
  const u = new Float64Array(k * len);
  for (let i = 0; i < rows; i++)
    for (let j = 0; j < cols; j++) {
      if (byRows) u[i * len + j] = a[i * cols + j];
      else u[j * len + i] = a[i * cols + j];
    }
  for (let sweep = 0; sweep < 80; sweep++) {
    let rotated = false;
    for (let p = 0; p < k - 1; p++) {
      for (let q = p + 1; q < k; q++) {
        let alpha = 0, beta = 0, gamma = 0;
        const op = p * len, oq = q * len;
        for (let t = 0; t < len; t++) {
          const x = u[op + t], y = u[oq + t];
          alpha += x * x;
          beta += y * y;
          gamma += x * y;
        }
        if (gamma === 0 || Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const tan = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const cos = 1 / Math.sqrt(1 + tan * tan);
        const sin = cos * tan;
        for (let t = 0; t < len; t++) {
          const x = u[op + t], y = u[oq + t];
          u[op + t] = cos * x - sin * y;
          u[oq + t] = sin * x + cos * y;
        }
      }
    }
    if (!rotated) break;
  }
  const s = new Float64Array(k);
  for (let i = 0; i < k; i++) {
    let n2 = 0;
    for (let t = 0; t < len; t++) n2 += u[i * len + t] * u[i * len + t];
    s[i] = Math.sqrt(n2);
  }
  return s.sort().reverse();
}

/** Sum of singular values by the reference SVD (tests). */
export function nuclearNormSvd(a: ArrayLike<number>, rows: number, cols: number): number {
  let s = 0;
  for (const v of singularValues(a, rows, cols)) s += v;
  return s;
}

/** a a^T [rows x rows] of the row-major rows x cols matrix a (read from `offset`) */
export function rowGram(a: ArrayLike<number>, rows: number, cols: number, offset = 0): Float64Array {
  const g = new Float64Array(rows * rows);
  for (let i = 0; i < rows; i++) {
    const oi = offset + i * cols;
    for (let j = 0; j <= i; j++) {
      const oj = offset + j * cols;
      let s = 0;
      for (let t = 0; t < cols; t++) s += a[oi + t] * a[oj + t];
      g[i * rows + j] = s;
      g[j * rows + i] = s;
    }
  }
  return g;
}

/** a^T a [cols x cols] of the row-major rows x cols matrix a (read from `offset`) */
export function colGram(a: ArrayLike<number>, rows: number, cols: number, offset = 0): Float64Array {
  const g = new Float64Array(cols * cols);
  for (let r = 0; r < rows; r++) {
    const o = offset + r * cols;
    for (let i = 0; i < cols; i++) {
      const x = a[o + i];
      if (x === 0) continue;
      const gi = i * cols;
      for (let j = 0; j <= i; j++) g[gi + j] += x * a[o + j];
    }
  }
  for (let i = 0; i < cols; i++) for (let j = 0; j < i; j++) g[j * cols + i] = g[i * cols + j];
  return g;
}

/**
 * Numerical rank of the h x w map at `offset` of `data`, as torch.linalg.matrix_rank on a float32
 * matrix: the number of singular values above max(h, w) * eps(float32) * sigma_max. Zero rows and
 * columns (common after ReLU) are dropped first, which leaves the singular values unchanged; the
 * rest is sigma_i^2 = eigenvalues of the smaller Gram in float64, whose rounding on sigma
 * (~sqrt(k eps64) sigma_max, k = min(h, w)) stays >10x under that tolerance at any size.
 */
export function matrixRank(data: ArrayLike<number>, h: number, w: number, offset = 0): number {
  // nonzero rows and columns
  const rowsNz: number[] = [];
  const colNz = new Uint8Array(w);
  for (let i = 0; i < h; i++) {
    let any = false;
    const o = offset + i * w;
    for (let j = 0; j < w; j++)
      if (data[o + j] !== 0) {
        any = true;
        colNz[j] = 1;
      }
    if (any) rowsNz.push(i);
  }
  if (rowsNz.length === 0) return 0;
  const cols: number[] = [];
  for (let j = 0; j < w; j++) if (colNz[j]) cols.push(j);
  const r = rowsNz.length, c = cols.length;
  if (r === 1 || c === 1) return 1;
  const b = new Float64Array(r * c);
  for (let i = 0; i < r; i++) {
    const o = offset + rowsNz[i] * w;
    for (let j = 0; j < c; j++) b[i * c + j] = data[o + cols[j]];
  }
  const k = Math.min(r, c);
  const ev = eigvalsh(r <= c ? rowGram(b, r, c) : colGram(b, r, c), k);
  let max = 0;
  for (let i = 0; i < k; i++) if (ev[i] > max) max = ev[i];
  const tol = Math.max(h, w) * FLOAT32_EPS * Math.sqrt(max);
  const tol2 = tol * tol;
  let rank = 0;
  for (let i = 0; i < k; i++) if (ev[i] > tol2) rank++;
  return rank;
}

/**
 * Nuclear norm from the eigenvalues of a Gram matrix: sum sqrt(lambda_i) over lambda_i above the
 * eigensolver's noise floor k * eps64 * lambda_max (singular values under ~sqrt(k eps64) sigma_max,
 * ~1e-7 sigma_max, below what float32 maps resolve, count as zero instead of adding sqrt(noise)).
 */
export function nuclearFromGram(ev: ArrayLike<number>, k: number): number {
  let max = 0;
  for (let i = 0; i < k; i++) if (ev[i] > max) max = ev[i];
  const floor = k * FLOAT64_EPS * max;
  let s = 0;
  for (let i = 0; i < k; i++) if (ev[i] > floor) s += Math.sqrt(ev[i]);
  return s;
}

/**
 * CHIP's channel independence for one sample: ci[c] = ||A||_* - ||A with row c zeroed||_* for the
 * rows x cols matrix A at `offset` (rows = channels, cols = H*W), added into `out` (length rows).
 * Zero rows (dead channels) score exactly 0 and are dropped, as are zero columns; of the rest
 * (m rows, p columns) the smaller side's Gram is used:
 *   p < m - 1: G = A^T A [p x p] and removing row c is the rank-one downdate G - a_c a_c^T;
 *   else:      K = A A^T [m x m] and removing row c deletes row and column c of K.
 * Cost per sample: m eigenvalue problems of size min(p, m - 1), O(m min(p, m)^3).
 */
export function channelIndependence(
  a: ArrayLike<number>,
  rows: number,
  cols: number,
  out: Float64Array,
  offset = 0,
): void {
  const live: number[] = [];
  const colNz = new Uint8Array(cols);
  for (let c = 0; c < rows; c++) {
    const o = offset + c * cols;
    let any = false;
    for (let j = 0; j < cols; j++)
      if (a[o + j] !== 0) {
        any = true;
        colNz[j] = 1;
      }
    if (any) live.push(c);
  }
  const m = live.length;
  if (m === 0) return;
  const keepCols: number[] = [];
  for (let j = 0; j < cols; j++) if (colNz[j]) keepCols.push(j);
  const p = keepCols.length;
  const b = new Float64Array(m * p);
  for (let i = 0; i < m; i++) {
    const o = offset + live[i] * cols;
    for (let j = 0; j < p; j++) b[i * p + j] = a[o + keepCols[j]];
  }
  if (m === 1) {
    // a single row: its nuclear norm is its length, and nothing is left without it
    let n2 = 0;
    for (let j = 0; j < p; j++) n2 += b[j] * b[j];
    out[live[0]] += Math.sqrt(n2);
    return;
  }
  if (p < m - 1) {
    const gram = colGram(b, m, p);
    const full = nuclearFromGram(eigvalsh(gram, p), p);
    const g = new Float64Array(p * p);
    for (let i = 0; i < m; i++) {
      const o = i * p;
      for (let r = 0; r < p; r++) {
        const x = b[o + r];
        for (let s = 0; s < p; s++) g[r * p + s] = gram[r * p + s] - x * b[o + s];
      }
      out[live[i]] += full - nuclearFromGram(eigvalsh(g, p), p);
    }
  } else {
    const gram = rowGram(b, m, p);
    const full = nuclearFromGram(eigvalsh(gram, m), m);
    const n = m - 1;
    const k = new Float64Array(n * n);
    for (let c = 0; c < m; c++) {
      for (let r = 0, rr = 0; r < m; r++) {
        if (r === c) continue;
        const src = r * m;
        const dst = rr * n;
        for (let s = 0, ss = 0; s < m; s++) if (s !== c) k[dst + ss++] = gram[src + s];
        rr++;
      }
      out[live[c]] += full - nuclearFromGram(eigvalsh(k, n), n);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Activations through the engine, chunk by chunk

const unitsOf = groupUnits;

/** images [start, end) of ds as a view */
function slice(ds: ImageDataset, start: number, end: number): ImageDataset {
  const size = imageSize(ds);
  return { ...ds, images: ds.images.subarray(start * size, end * size), labels: ds.labels.subarray(start, end), n: end - start };
}

/**
 * Runs `data` through one engine `chunk` images at a time and hands each chunk's maps of every
 * unit to `visit` (maps [n, C, H*W] after the unit's tap), in unit order.
 */
async function visitActivations(
  model: Model,
  units: ConvUnit[],
  data: ImageDataset,
  cal: Calibration,
  chunk: number,
  visit: (acts: LayerActivations[], chunkStart: number) => void,
): Promise<void> {
  if (!Number.isInteger(chunk) || chunk < 1) throw new UserError(`batch must be an integer >= 1, got ${chunk}`);
  const engine = TorchModel.create(model);
  try {
    for (let start = 0; start < data.n; start += chunk) {
      const end = Math.min(data.n, start + chunk);
      const acts = await collectActivations(engine, slice(data, start, end), units, { mean: cal.mean, std: cal.std, batch: chunk });
      visit(acts, start);
    }
  } finally {
    engine.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// HRank

export interface HrankOptions {
  /** images per engine forward and per activation chunk (memory, not results); default 64 */
  batch?: number;
}

/**
 * HRank: importance of filter c = mean over the calibration images of rank(map_c), the H x W map
 * after the unit's ReLU, rank as torch.linalg.matrix_rank (singular values above
 * max(H, W) * eps32 * sigma_max). Order by descending mean rank, ties by lower index; curve: the
 * share of the layer's total mean rank left out after keeping the first i+1 (curveTotal 1).
 */
export function hrankCriterion(opts: HrankOptions = {}): Criterion {
  const batch = opts.batch ?? 64;
  return {
    name: 'hrank',
    key: 'hrank/v1/after-relu/tol=maxdim*eps32*smax',
    async rank(model: Model, groups: ChannelGroup[], cal: Calibration): Promise<GroupRanking[]> {
      const units = unitsOf(model, groups);
      const data = cal.data;
      if (data.n < 1) throw new UserError('hrank: the calibration sample is empty');
      const sums = groups.map((g) => new Float64Array(g.channels));
      const shapes: [number, number][] = groups.map(() => [0, 0]);
      const total = data.n * groups.length;
      let done = 0;
      await visitActivations(model, units, data, cal, batch, (acts) => {
        acts.forEach((la, k) => {
          const { n, channels: C, height: H, width: W, spatial: HW, maps } = la;
          shapes[k] = [H, W];
          const sum = sums[k];
          for (let i = 0; i < n; i++)
            for (let c = 0; c < C; c++) sum[c] += matrixRank(maps, H, W, (i * C + c) * HW);
          done += n;
          cal.onProgress?.(done, total, `hrank ${groups[k].name}`);
        });
      });
      return groups.map((g, k) => {
        const avg = Array.from(sums[k], (s) => s / data.n);
        const order = orderByScore(avg);
        return {
          group: g.name,
          channels: g.channels,
          order,
          curve: leftOutCurve(avg, order),
          curveTotal: 1,
          curveName: 'share of the layer\u2019s mean feature-map rank left out',
          evidence: { rank: avg, images: data.n, height: shapes[k][0], width: shapes[k][1], tolerance: 'max(H, W) * eps(float32) * sigma_max' },
        };
      });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// CHIP

export interface ChipOptions {
  /** images per engine forward and per activation chunk (memory, not results); default 64 */
  batch?: number;
  /**
   * at most this many calibration images (a uniform subset seeded by the calibration's seed when
   * the sample is larger; the calibration sample itself is class-balanced); default 256, the CLI's
   * calibration size, so a default run reads all of it. CHIP's own code reads 5 batches of 128
   * (640). Cost is linear in it: VGG16-BN on CIFAR-10 measured ~3 min per 256 images on one core
   * (the 8x8 and 16x16 layers ~20-35 s each), so 640 take ~7-8 min.
   */
  samples?: number;
}

/**
 * CHIP: per image A = [C, H*W] (rows: the channels' flattened maps after ReLU); the channel
 * independence of c is ||A||_* - ||A with row c zeroed||_*, averaged over the images. Order by
 * descending CI, ties by lower index; curve: the share of the layer's total CI left out (curveTotal 1).
 */
export function chipCriterion(opts: ChipOptions = {}): Criterion {
  const batch = opts.batch ?? 64;
  const samples = opts.samples ?? 256;
  if (!Number.isInteger(samples) || samples < 1) throw new UserError(`chip: samples must be an integer >= 1, got ${samples}`);
  return {
    name: 'chip',
    key: `chip/v1/after-relu/samples=${samples}`,
    async rank(model: Model, groups: ChannelGroup[], cal: Calibration): Promise<GroupRanking[]> {
      const units = unitsOf(model, groups);
      let data = cal.data;
      if (data.n < 1) throw new UserError('chip: the calibration sample is empty');
      if (data.n > samples) {
        const pick = new Rng(cal.seed).permutation(data.n).slice(0, samples).sort();
        data = subset(data, pick, `${data.name}[chip ${samples} of ${data.n}, seed ${cal.seed}]`);
      }
      const sums = groups.map((g) => new Float64Array(g.channels));
      const total = data.n * groups.length;
      let done = 0;
      await visitActivations(model, units, data, cal, batch, (acts) => {
        acts.forEach((la, k) => {
          const { n, channels: C, spatial: HW, maps } = la;
          for (let i = 0; i < n; i++) {
            channelIndependence(maps, C, HW, sums[k], i * C * HW);
            cal.onProgress?.(++done, total, `chip ${groups[k].name}`);
          }
        });
      });
      return groups.map((g, k) => {
        const ci = Array.from(sums[k], (s) => s / data.n);
        const order = orderByScore(ci);
        return {
          group: g.name,
          channels: g.channels,
          order,
          curve: leftOutCurve(ci, order),
          curveTotal: 1,
          curveName: 'share of the layer\u2019s channel independence (nuclear-norm drop) left out',
          evidence: { ci, images: data.n },
        };
      });
    },
  };
}
