// Seeded test data from the project's Rng (src/util/rng.ts): the same seed gives the same tensors.
import { type Model, numel, type Tensor } from '../../src/ir/model.js';
import { Rng } from '../../src/util/rng.js';

export { Rng };

/**
 * One approximately standard-normal value: the sum of three uniforms, centred and scaled to unit
 * variance (bounded by +-3, so no outliers). Three draws from rng.
 */
export function approxNormal(rng: Rng): number {
  return (rng.next() + rng.next() + rng.next() - 1.5) * 2;
}

/** n approxNormal float32 values times scale. */
export function randn(rng: Rng, n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => approxNormal(rng) * scale);
}

/**
 * n standard-normal float64 values times scale, by Box-Muller: uniforms u, v give the radius
 * r = sqrt(-2 ln(1 - u)) * scale and the values r cos(2 pi v) and, with `pairs` (the default),
 * r sin(2 pi v) next. Without pairs each value takes its own two draws (cos only, as bench/cmi.ts
 * draws its synthetic layer). Either way the draws are fixed by the seed: tests whose expected
 * numbers were computed from these sequences depend on them, so do not change the arithmetic.
 */
export function gaussian(rng: Rng, n: number, scale = 1, { pairs = true }: { pairs?: boolean } = {}): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i += pairs ? 2 : 1) {
    const u = 1 - rng.next();
    const v = rng.next();
    const r = Math.sqrt(-2 * Math.log(u)) * scale;
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (pairs && i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/** A float32 tensor of values uniform in [lo, hi). */
export function uniformTensor(rng: Rng, shape: number[], lo = -1, hi = 1): Tensor {
  const data = new Float32Array(numel(shape));
  for (let i = 0; i < data.length; i++) data[i] = rng.uniform(lo, hi);
  return { shape: [...shape], data };
}

/** A seeded uniform [0, 1) source, for APIs that take `random: () => number` (SequentialBuilder, vgg16bn). */
export function randomSource(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}

/** [lo, hi) per BatchNorm tensor: affine weight and bias, running mean and variance */
export interface BatchNormRanges {
  weight: [number, number];
  bias: [number, number];
  mean: [number, number];
  var: [number, number];
}

/**
 * Gives every BatchNorm of `model` (in place) uniform affine parameters and running statistics in
 * the ranges, node by node (weight, bias, mean, var): BN away from identity, so a test's layers
 * depend on them. Returns the model.
 */
export function randomizeBatchNorm(model: Model, rng: Rng, r: BatchNormRanges): Model {
  for (const n of model.nodes) {
    if (n.op !== 'BatchNorm') continue;
    const fill = (key: string, [lo, hi]: [number, number]) => {
      const t = model.tensors[key]!;
      for (let i = 0; i < t.data.length; i++) t.data[i] = rng.uniform(lo, hi);
    };
    fill(n.params.weight!, r.weight);
    fill(n.params.bias!, r.bias);
    fill(n.params.runningMean!, r.mean);
    fill(n.params.runningVar!, r.var);
  }
  return model;
}
