import { batchLabels, type ImageDataset, limit as limitDataset, normalizeBatch } from '../data/dataset.js';
import { UserError } from '../util/errors.js';
import { progress } from '../util/progress.js';
import type { ForwardEngine } from './engine.js';

export interface EvaluateOptions {
  batch: number;
  mean: readonly number[];
  std: readonly number[];
  /** evaluate only the first `limit` samples */
  limit?: number;
  /** which model output holds the logits (default: the first one returned) */
  output?: string;
  /** progress-bar label */
  label?: string;
}

export interface EvaluateResult {
  accuracy: number;
  correct: number;
  images: number;
  seconds: number;
  /** top-1 class per image, [images] */
  predictions: Int32Array;
}

/**
 * Top-1 accuracy by the engine's inference forward pass, batch by batch. The next batch is
 * normalised while the engine runs the current one (two alternating input buffers).
 */
export async function evaluate(engine: ForwardEngine, ds: ImageDataset, opts: EvaluateOptions): Promise<EvaluateResult> {
  if (!Number.isInteger(opts.batch) || opts.batch < 1) throw new UserError(`evaluate: batch must be a positive integer, got ${opts.batch}`);
  const data = opts.limit !== undefined ? limitDataset(ds, opts.limit) : ds;
  const n = data.n;
  const size = data.channels * data.height * data.width;
  const B = Math.min(opts.batch, Math.max(n, 1));
  const bufs = [new Float32Array(B * size), new Float32Array(B * size)];
  const steps = Math.ceil(n / B);
  const predictions = new Int32Array(n);
  const labels = batchLabels(data, { start: 0, end: n });
  let correct = 0;
  const t0 = performance.now();
  const bar = progress(opts.label ?? `eval ${data.name}`, n);
  const prepare = (k: number) => {
    const start = k * B;
    const end = Math.min(n, start + B);
    const x = normalizeBatch(data, { start, end }, opts.mean, opts.std, bufs[k % 2]);
    return { x, shape: [end - start, data.channels, data.height, data.width], start, end };
  };
  try {
    let next = steps > 0 ? prepare(0) : undefined;
    for (let k = 0; k < steps; k++) {
      const cur = next!;
      const pending = engine.forward(cur.x, cur.shape);
      if (k + 1 < steps) next = prepare(k + 1);
      const { outputs } = await pending;
      const key = opts.output ?? Object.keys(outputs)[0];
      const logits = outputs[key];
      const b = cur.end - cur.start;
      if (!logits) throw new UserError(`evaluate: the model has no output ${JSON.stringify(key)} (has ${Object.keys(outputs).join(', ')})`);
      if (logits.shape.length !== 2 || logits.shape[0] !== b)
        throw new UserError(`evaluate: output ${key} has shape [${logits.shape}], expected [${b}, classes]`);
      const K = logits.shape[1];
      for (let i = 0; i < b; i++) {
        let best = 0;
        let bv = logits.data[i * K];
        for (let j = 1; j < K; j++) {
          const v = logits.data[i * K + j];
          if (v > bv) {
            bv = v;
            best = j;
          }
        }
        predictions[cur.start + i] = best;
        if (best === labels[cur.start + i]) correct++;
      }
      bar.tick(b, { acc: ((100 * correct) / cur.end).toFixed(2) + '%' });
    }
  } finally {
    bar.done();
  }
  const seconds = (performance.now() - t0) / 1000;
  return { accuracy: n > 0 ? correct / n : 0, correct, images: n, seconds, predictions };
}
