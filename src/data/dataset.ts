import { UserError } from '../util/errors.js';
import { Rng } from '../util/rng.js';

/** A labelled image set held as raw bytes; normalisation happens per batch. */
export interface ImageDataset {
  images: Uint8Array /* [n, channels, height, width] planar */;
  labels: Uint8Array /* [n] */;
  n: number;
  channels: number;
  height: number;
  width: number;
  classes: number;
  name: string;
}

export function imageSize(ds: ImageDataset): number {
  return ds.channels * ds.height * ds.width;
}

/** Throws if the arrays disagree with the declared sizes or a label is out of range. */
export function checkDataset(ds: ImageDataset): void {
  const size = imageSize(ds);
  if (ds.images.length !== ds.n * size)
    throw new UserError(`dataset ${ds.name}: ${ds.images.length} image bytes, expected ${ds.n} x ${size}`);
  if (ds.labels.length !== ds.n) throw new UserError(`dataset ${ds.name}: ${ds.labels.length} labels, expected ${ds.n}`);
  for (let i = 0; i < ds.n; i++)
    if (ds.labels[i] >= ds.classes)
      throw new UserError(`dataset ${ds.name}: label ${ds.labels[i]} at index ${i} is not below classes=${ds.classes}`);
}

/** A copy holding the given samples, in the given order. */
export function subset(ds: ImageDataset, indices: ArrayLike<number>, name?: string): ImageDataset {
  const size = imageSize(ds);
  const m = indices.length;
  const images = new Uint8Array(m * size);
  const labels = new Uint8Array(m);
  for (let k = 0; k < m; k++) {
    const i = indices[k];
    if (!Number.isInteger(i) || i < 0 || i >= ds.n)
      throw new UserError(`subset of ${ds.name}: index ${i} out of range [0, ${ds.n})`);
    images.set(ds.images.subarray(i * size, (i + 1) * size), k * size);
    labels[k] = ds.labels[i];
  }
  return { ...ds, images, labels, n: m, name: name ?? `${ds.name}[subset ${m}]` };
}

/** The first n samples (all if n >= ds.n); shares memory with ds (no copy). */
export function limit(ds: ImageDataset, n: number): ImageDataset {
  if (!Number.isInteger(n) || n < 0) throw new UserError(`limit: n must be a non-negative integer, got ${n}`);
  if (n >= ds.n) return ds;
  const size = imageSize(ds);
  return {
    ...ds,
    images: ds.images.subarray(0, n * size),
    labels: ds.labels.subarray(0, n),
    n,
    name: `${ds.name}[:${n}]`,
  };
}

/** Sample counts per class, [classes]. */
export function classCounts(labels: ArrayLike<number>, classes: number): Int32Array {
  const c = new Int32Array(classes);
  for (let i = 0; i < labels.length; i++) c[labels[i]]++;
  return c;
}

/**
 * Indices of a seeded class-balanced sample, in ascending dataset order.
 * `count` as a number is the TOTAL sample size: each class gets floor(total / classes) and the
 * remainder goes one each to the lowest class ids (256 over 10 classes: classes 0-5 get 26, 6-9 get 25).
 * `{ perClass }` takes exactly that many from every class.
 * Within each class the samples are a uniform random choice (seeded partial Fisher-Yates).
 */
export function classBalancedIndices(
  labels: ArrayLike<number>,
  classes: number,
  count: number | { perClass: number } | { total: number },
  seed: number,
): Int32Array {
  const total = typeof count === 'number' ? count : 'total' in count ? count.total : count.perClass * classes;
  if (!Number.isInteger(total) || total < 0)
    throw new UserError(`class-balanced sample: size must be a non-negative integer, got ${JSON.stringify(count)}`);
  const base = Math.floor(total / classes);
  const extra = total - base * classes;
  const byClass: number[][] = Array.from({ length: classes }, () => []);
  for (let i = 0; i < labels.length; i++) byClass[labels[i]].push(i);
  const rng = new Rng(seed);
  const out: number[] = [];
  for (let c = 0; c < classes; c++) {
    const want = base + (c < extra ? 1 : 0);
    const pool = byClass[c];
    if (pool.length < want)
      throw new UserError(`class-balanced sample: class ${c} has ${pool.length} samples, ${want} requested`);
    // partial Fisher-Yates: the first `want` slots become a uniform random subset
    for (let k = 0; k < want; k++) {
      const j = k + rng.int(pool.length - k);
      const t = pool[k];
      pool[k] = pool[j];
      pool[j] = t;
      out.push(pool[k]);
    }
  }
  return Int32Array.from(out).sort();
}

/** A seeded class-balanced subset (see classBalancedIndices for how `count` is read). */
export function classBalancedSample(
  ds: ImageDataset,
  count: number | { perClass: number } | { total: number },
  seed: number,
): ImageDataset {
  const idx = classBalancedIndices(ds.labels, ds.classes, count, seed);
  return subset(ds, idx, `${ds.name}[balanced ${idx.length}, seed ${seed}]`);
}

/** Which samples go into a batch: explicit indices, or the range [start, end). */
export type BatchSelection = ArrayLike<number> | { start: number; end: number };

/**
 * Float batch [b, c, h, w] = (x / 255 - mean[c]) / std[c], the torchvision ToTensor + Normalize
 * convention. `out` (length >= b*c*h*w) is reused when given, so training can double-buffer.
 */
export function normalizeBatch(
  ds: ImageDataset,
  sel: BatchSelection,
  mean: readonly number[],
  std: readonly number[],
  out?: Float32Array,
): Float32Array {
  const C = ds.channels;
  if (mean.length !== C || std.length !== C)
    throw new UserError(`normalize ${ds.name}: mean/std need ${C} values each, got ${mean.length}/${std.length}`);
  for (const s of std) if (!(s > 0)) throw new UserError(`normalize ${ds.name}: std values must be > 0, got [${std}]`);
  const isRange = !('length' in sel);
  const start = isRange ? sel.start : 0;
  const b = isRange ? sel.end - sel.start : sel.length;
  if (isRange && (!Number.isInteger(sel.start) || !Number.isInteger(sel.end) || start < 0 || sel.end > ds.n || b < 0))
    throw new UserError(`normalize ${ds.name}: range [${sel.start}, ${sel.end}) is not within [0, ${ds.n})`);
  const plane = ds.height * ds.width;
  const size = C * plane;
  const dst = out ? out.subarray(0, b * size) : new Float32Array(b * size);
  if (dst.length !== b * size) throw new Error(`normalizeBatch: out has ${out?.length} values, need ${b * size}`);
  // a 256-entry table per channel turns the affine map into one lookup per byte
  const lut = new Float32Array(C * 256);
  for (let c = 0; c < C; c++) for (let v = 0; v < 256; v++) lut[c * 256 + v] = (v / 255 - mean[c]) / std[c];
  for (let k = 0; k < b; k++) {
    const i = isRange ? start + k : sel[k];
    if (!isRange && (!Number.isInteger(i) || i < 0 || i >= ds.n))
      throw new UserError(`normalize ${ds.name}: index ${i} out of range [0, ${ds.n})`);
    const src = i * size;
    const o = k * size;
    for (let c = 0; c < C; c++) {
      const lo = c * 256;
      const s0 = src + c * plane;
      const d0 = o + c * plane;
      for (let p = 0; p < plane; p++) dst[d0 + p] = lut[lo + ds.images[s0 + p]];
    }
  }
  return dst;
}

/** Labels of a batch as Int32Array (the engine's loss takes int32 class ids). */
export function batchLabels(ds: ImageDataset, sel: BatchSelection, out?: Int32Array): Int32Array {
  const isRange = !('length' in sel);
  const b = isRange ? sel.end - sel.start : sel.length;
  const dst = out ? out.subarray(0, b) : new Int32Array(b);
  for (let k = 0; k < b; k++) dst[k] = ds.labels[isRange ? sel.start + k : sel[k]];
  return dst;
}
