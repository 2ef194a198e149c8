// Feature maps of chosen conv units for a fixed sample, taken through the engine (eval mode).
import type { ImageDataset } from '../data/dataset.js';
import { normalizeBatch } from '../data/dataset.js';
import type { TorchModel } from '../engine/index.js';
import type { ConvUnit } from '../ir/graph.js';
import { progress } from '../util/progress.js';

export interface LayerActivations {
  unit: ConvUnit;
  /** [N, C, H*W], sample-major as the engine returns NCHW */
  maps: Float32Array;
  n: number;
  channels: number;
  /** H*W */
  spatial: number;
  height: number;
  width: number;
}

export interface CollectOptions {
  mean: readonly number[];
  std: readonly number[];
  batch?: number;
}

/** Runs `ds` (all of it, in order) through the model and keeps each unit's tap. */
export async function collectActivations(
  engine: TorchModel,
  ds: ImageDataset,
  units: ConvUnit[],
  opts: CollectOptions,
): Promise<LayerActivations[]> {
  const batch = opts.batch ?? 64;
  const taps = units.map((u) => u.tap);
  const out: (LayerActivations | undefined)[] = units.map(() => undefined);
  const bar = progress('activations', ds.n);
  for (let start = 0; start < ds.n; start += batch) {
    const end = Math.min(ds.n, start + batch);
    const x = normalizeBatch(ds, { start, end }, opts.mean, opts.std);
    const r = await engine.forward(x, [end - start, ds.channels, ds.height, ds.width], { taps });
    units.forEach((u, k) => {
      const t = r.taps[u.tap]!;
      const [, c, h, w] = t.shape as [number, number, number, number];
      let la = out[k];
      if (!la) {
        la = { unit: u, maps: new Float32Array(ds.n * c * h * w), n: ds.n, channels: c, spatial: h * w, height: h, width: w };
        out[k] = la;
      }
      la.maps.set(t.data, start * c * h * w);
    });
    bar.tick(end - start);
  }
  bar.done();
  return out as LayerActivations[];
}
