import { Rng } from '../util/rng.js';

export interface AugmentOptions {
  /** zero-padding of the random crop, in pixels per side (0 disables cropping); default 4 */
  pad?: number;
  /** random horizontal flip with probability 1/2; default true */
  flip?: boolean;
  /**
   * Value of padded pixels per channel, in the batch's (normalised) units. Default 0 = the mean colour.
   * torchvision's RandomCrop(32, padding=4) pads the raw image with black before Normalize, i.e.
   * fill[c] = -mean[c] / std[c]; use padFillForBlack(mean, std) to reproduce that exactly.
   */
  fill?: readonly number[];
}

/** The normalised value of a black (0) raw pixel per channel, what torchvision's padding yields. */
export function padFillForBlack(mean: readonly number[], std: readonly number[]): number[] {
  return mean.map((m, c) => -m / std[c]);
}

/**
 * Random crop (with padding) then random horizontal flip of every image of a batch
 * x [b, c, h, w] (normalised floats), the standard CIFAR training augmentation. Writes into `out`
 * (a new array by default; must not alias x). Per image the rng draws dy, dx in [0, 2*pad] then the
 * flip, so a seed fixes the whole batch.
 */
export function augmentBatch(
  x: Float32Array,
  shape: readonly number[],
  rng: Rng,
  opts: AugmentOptions = {},
  out?: Float32Array,
): Float32Array {
  if (shape.length !== 4) throw new Error(`augmentBatch: shape must be [b, c, h, w], got [${shape}]`);
  const [b, C, H, W] = shape;
  const pad = opts.pad ?? 4;
  const flip = opts.flip ?? true;
  const fill = opts.fill ?? new Array(C).fill(0);
  if (fill.length !== C) throw new Error(`augmentBatch: fill needs ${C} values, got ${fill.length}`);
  const size = C * H * W;
  if (x.length < b * size) throw new Error(`augmentBatch: x has ${x.length} values, shape [${shape}] needs ${b * size}`);
  const dst = out ? out.subarray(0, b * size) : new Float32Array(b * size);
  if (dst.length !== b * size) throw new Error(`augmentBatch: out has ${out?.length} values, need ${b * size}`);
  if (dst.buffer === x.buffer && dst.byteOffset < x.byteOffset + b * size * 4 && x.byteOffset < dst.byteOffset + b * size * 4)
    throw new Error('augmentBatch: out must not overlap x');
  for (let i = 0; i < b; i++) {
    const dy = pad > 0 ? rng.int(2 * pad + 1) - pad : 0;
    const dx = pad > 0 ? rng.int(2 * pad + 1) - pad : 0;
    const f = flip && rng.next() < 0.5;
    // crop: out(y, x') = in(y + dy, x' + dx); flip afterwards: x' = W-1-x
    for (let c = 0; c < C; c++) {
      const src = i * size + c * H * W;
      const o = src;
      const v0 = fill[c];
      for (let y = 0; y < H; y++) {
        const sy = y + dy;
        const row = o + y * W;
        if (sy < 0 || sy >= H) {
          dst.fill(v0, row, row + W);
          continue;
        }
        const srow = src + sy * W;
        for (let xo = 0; xo < W; xo++) {
          const sx = (f ? W - 1 - xo : xo) + dx;
          dst[row + xo] = sx < 0 || sx >= W ? v0 : x[srow + sx];
        }
      }
    }
  }
  return dst;
}
