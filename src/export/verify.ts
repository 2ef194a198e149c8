// Checks a written ONNX file against the engine that produced it, and measures it in ONNX Runtime:
// the evidence that the physically smaller model computes what the pruned IR computes.
import ort from 'onnxruntime-node';
import { TorchModel } from '../engine/index.js';
import { type Model, numel } from '../ir/model.js';
import { UserError } from '../util/errors.js';
import { Rng } from '../util/rng.js';

/** Absolute tolerance on logits, as the ONNX round-trip tests use. */
export const DEFAULT_VERIFY_TOLERANCE = 1e-4;

/**
 * ONNX Runtime session options for the comparison and the latency runs: CPU execution provider,
 * `threads` intra-op threads (2 unless told), one inter-op thread, sequential execution, and
 * graph optimisation level 'all' (ORT_ENABLE_ALL, ORT's default level: constant folding, Conv+BN and
 * Conv+Relu fusions, the NCHWc layout transform), pinned here rather than left to the runtime so
 * the file is checked the way a default deployment runs it.
 */
export function ortSessionOptions(threads = 2): ort.InferenceSession.SessionOptions {
  if (!Number.isInteger(threads) || threads < 1) throw new UserError(`ONNX Runtime threads must be an integer >= 1, got ${threads}`);
  return {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  };
}

async function openSession(onnxBytes: Uint8Array, threads: number): Promise<ort.InferenceSession> {
  try {
    return await ort.InferenceSession.create(onnxBytes, ortSessionOptions(threads));
  } catch (e) {
    throw new UserError(`ONNX Runtime cannot load the model: ${(e as Error).message}`, { cause: e });
  }
}

function singleInput(s: ort.InferenceSession): string {
  if (s.inputNames.length !== 1) {
    throw new UserError(`the ONNX model has ${s.inputNames.length} inputs (${s.inputNames.join(', ')}); exactly one is supported`);
  }
  if (s.outputNames.length < 1) throw new UserError('the ONNX model has no outputs');
  return s.inputNames[0]!;
}

export interface VerifyResult {
  /** max over all logits of |ORT - engine|; NaN when either side produced a NaN */
  maxAbsDiff: number;
  /** max |logit| of ONNX Runtime's output, for scale */
  maxAbsLogit: number;
  /** absolute tolerance applied to maxAbsDiff */
  tolerance: number;
  /** images in the batch */
  images: number;
  ok: boolean;
}

/**
 * Runs one batch through ONNX Runtime (the file's single input, its first output) and through the
 * engine (TorchModel of `engineModel`, its first output) and compares the logits elementwise:
 * ok when max |difference| <= tolerance (absolute, default 1e-4). Output shape mismatches throw.
 */
export async function verifyWithOnnxRuntime(
  onnxBytes: Uint8Array,
  engineModel: Model,
  batch: { x: Float32Array; shape: number[] },
  opts: { tolerance?: number } = {},
): Promise<VerifyResult> {
  const tolerance = opts.tolerance ?? DEFAULT_VERIFY_TOLERANCE;
  if (!(tolerance >= 0)) throw new UserError(`verify: tolerance must be >= 0, got ${tolerance}`);
  const { x, shape } = batch;
  if (!(x instanceof Float32Array)) throw new UserError('verify: batch.x must be a Float32Array');
  if (shape.length < 1 || !shape.every((d) => Number.isInteger(d) && d > 0) || numel(shape) !== x.length) {
    throw new UserError(`verify: batch has ${x.length} values, shape [${shape}] needs ${numel(shape)}`);
  }

  let ortOut: ort.Tensor;
  const session = await openSession(onnxBytes, 2);
  try {
    const input = singleInput(session);
    // ORT may keep a view of the input: hand it its own copy, the engine gets the caller's
    const res = await session.run({ [input]: new ort.Tensor('float32', x.slice(), shape) });
    ortOut = res[session.outputNames[0]!]!;
  } catch (e) {
    throw e instanceof UserError ? e : new UserError(`ONNX Runtime failed on a batch of shape [${shape}]: ${(e as Error).message}`, { cause: e });
  } finally {
    await session.release();
  }
  if (ortOut.type !== 'float32') throw new UserError(`ONNX Runtime's output is ${ortOut.type}, expected float32`);
  const a = ortOut.data as Float32Array;

  const engine = TorchModel.create(engineModel);
  let b: Float32Array;
  let bShape: number[];
  try {
    const out = (await engine.forward(x, shape)).outputs[engineModel.outputs[0]!]!;
    b = out.data;
    bShape = out.shape;
  } finally {
    engine.dispose();
  }

  const aShape = [...ortOut.dims];
  if (aShape.length !== bShape.length || aShape.some((d, i) => d !== bShape[i])) {
    throw new UserError(`verify: ONNX Runtime's output has shape [${aShape}], the engine's [${bShape}]`);
  }
  let maxAbsDiff = 0;
  let maxAbsLogit = 0;
  let nan = false;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (Number.isNaN(d)) nan = true;
    else if (d > maxAbsDiff) maxAbsDiff = d;
    const l = Math.abs(a[i]!);
    if (l > maxAbsLogit) maxAbsLogit = l;
  }
  if (nan) maxAbsDiff = NaN;
  return { maxAbsDiff, maxAbsLogit, tolerance, images: shape[0]!, ok: !nan && maxAbsDiff <= tolerance };
}

/** Throws a UserError naming `what` (typically the ONNX file) and the numbers when `result` is not ok. */
export function assertVerified(result: VerifyResult, what: string): void {
  if (result.ok) return;
  throw new UserError(
    `${what}: ONNX Runtime and the engine disagree on ${result.images} image(s): ` +
      `max |logit difference| ${result.maxAbsDiff} > tolerance ${result.tolerance} (max |logit| ${result.maxAbsLogit})`,
  );
}

export interface LatencyResult {
  batch: number;
  /** median batch time / batch */
  msPerImage: number;
  msPerBatchMedian: number;
  /** timed runs (after warm-up) */
  repeats: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((p, q) => p - q);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * ONNX Runtime CPU latency of the file on uniform random input in [-1, 1) (seeded, so reruns feed
 * the same data): per batch size, `warmup` untimed runs, then `repeats` timed runs (default 20 for
 * batches below 64, 5 from 64 up); reports the median batch time and that divided by the batch.
 * `inputShape` is one sample's shape, e.g. [C, H, W].
 */
export async function ortLatency(
  onnxBytes: Uint8Array,
  inputShape: number[],
  opts: { batches?: number[]; warmup?: number; repeats?: number; threads?: number; seed?: number } = {},
): Promise<LatencyResult[]> {
  const batches = opts.batches ?? [1, 64];
  const warmup = opts.warmup ?? 2;
  if (inputShape.length < 1 || !inputShape.every((d) => Number.isInteger(d) && d > 0)) {
    throw new UserError(`ortLatency: input shape [${inputShape}] must be positive integers, e.g. [C, H, W]`);
  }
  if (!batches.every((b) => Number.isInteger(b) && b > 0)) throw new UserError(`ortLatency: batches [${batches}] must be positive integers`);
  if (!Number.isInteger(warmup) || warmup < 0) throw new UserError(`ortLatency: warmup must be an integer >= 0, got ${warmup}`);
  if (opts.repeats !== undefined && !(Number.isInteger(opts.repeats) && opts.repeats >= 1)) {
    throw new UserError(`ortLatency: repeats must be an integer >= 1, got ${opts.repeats}`);
  }
  const rng = new Rng(opts.seed ?? 1);
  const session = await openSession(onnxBytes, opts.threads ?? 2);
  try {
    const input = singleInput(session);
    const results: LatencyResult[] = [];
    for (const batch of batches) {
      const repeats = opts.repeats ?? (batch >= 64 ? 5 : 20);
      const shape = [batch, ...inputShape];
      const x = new Float32Array(numel(shape));
      for (let i = 0; i < x.length; i++) x[i] = rng.uniform(-1, 1);
      const feeds = { [input]: new ort.Tensor('float32', x, shape) };
      const times: number[] = [];
      try {
        for (let i = 0; i < warmup; i++) await session.run(feeds);
        for (let i = 0; i < repeats; i++) {
          const t0 = performance.now();
          await session.run(feeds);
          times.push(performance.now() - t0);
        }
      } catch (e) {
        throw new UserError(`ONNX Runtime failed on a batch of shape [${shape}]: ${(e as Error).message}`, { cause: e });
      }
      const msPerBatchMedian = median(times);
      results.push({ batch, msPerImage: msPerBatchMedian / batch, msPerBatchMedian, repeats });
    }
    return results;
  } finally {
    await session.release();
  }
}
