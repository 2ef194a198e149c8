import { batchLabels, type ImageDataset, normalizeBatch } from '../data/dataset.js';
import { UserError } from '../util/errors.js';
import { progress } from '../util/progress.js';
import { Rng } from '../util/rng.js';
import { augmentBatch, padFillForBlack } from './augment.js';
import type { DistillTarget, ForwardEngine, TrainableEngine } from './engine.js';
import { scheduleLr, scheduleMomentum, type ScheduleName } from './schedule.js';

export interface TrainOptions {
  /** epochs to run in this call */
  epochs: number;
  /**
   * Resuming a longer run: this call runs epochs startEpoch .. startEpoch + epochs - 1 of a
   * schedule laid out over `totalEpochs` (default startEpoch + epochs), so the learning rate (and
   * one-cycle momentum) of every step is that of the uninterrupted run. Default 0. The sample order
   * and augmentation draws come from `seed` alone: pass the seed the interrupted run used for the
   * same epochs (e.g. one derived per epoch) to reproduce them too. Reported epochs, StepInfo.epoch
   * and globalStep count from startEpoch.
   */
  startEpoch?: number;
  totalEpochs?: number;
  batch: number;
  /** base (cosine) or peak (one-cycle) learning rate */
  lr: number;
  schedule: ScheduleName;
  /** SGD momentum; with schedule 'onecycle' and cycleMomentum on, replaced by OneCycleLR's cycle */
  momentum: number;
  /**
   * With schedule 'onecycle': momentum follows PyTorch OneCycleLR's cycle_momentum, 0.95 down to
   * 0.85 at the learning-rate peak and back to 0.95. Default true, as in PyTorch.
   */
  cycleMomentum?: boolean;
  nesterov: boolean;
  weightDecay: number;
  /** random crop (pad 4) + horizontal flip */
  augment: boolean;
  /** fixes the per-epoch shuffles and the augmentation draws */
  seed: number;
  mean: readonly number[];
  std: readonly number[];
  /**
   * What the crop's padding shows: 'black' (default) pads the raw image with 0 like torchvision's
   * RandomCrop before Normalize; 'mean' pads the normalised batch with 0 (the mean colour).
   */
  padFill?: 'black' | 'mean';
  onStep?: (s: StepInfo) => void;
  /** progress-bar label prefix */
  label?: string;
  /**
   * Knowledge distillation: before each step the teacher's inference forward runs on the same
   * (augmented, normalised) batch the student gets, and its first output's logits go to trainStep
   * as soft targets with `distill`'s temperature and weight (DistillTarget). Both or neither.
   */
  teacher?: ForwardEngine;
  distill?: { temperature: number; weight: number };
}

export interface StepInfo {
  epoch: number;
  /** step within the epoch */
  step: number;
  globalStep: number;
  totalSteps: number;
  lr: number;
  momentum: number;
  loss: number;
  correct: number;
  batch: number;
}

export interface EpochStats {
  epoch: number;
  /** sample-weighted mean training loss */
  loss: number;
  /** training top-1 accuracy (on the augmented batches, in training mode) */
  accuracy: number;
  images: number;
  seconds: number;
  /** learning rate of the epoch's last step */
  lr: number;
}

function checkOpts(o: TrainOptions): void {
  const posInt = (k: 'epochs' | 'batch') => {
    if (!Number.isInteger(o[k]) || o[k] < 1) throw new UserError(`train: ${k} must be a positive integer, got ${o[k]}`);
  };
  posInt('epochs');
  posInt('batch');
  if (!(o.lr > 0)) throw new UserError(`train: lr must be > 0, got ${o.lr}`);
  if (!(o.momentum >= 0 && o.momentum < 1)) throw new UserError(`train: momentum must be in [0, 1), got ${o.momentum}`);
  if (!(o.weightDecay >= 0)) throw new UserError(`train: weightDecay must be >= 0, got ${o.weightDecay}`);
  if (o.nesterov && o.momentum === 0) throw new UserError('train: nesterov needs momentum > 0');
  const start = o.startEpoch ?? 0;
  if (!Number.isInteger(start) || start < 0) throw new UserError(`train: startEpoch must be an integer >= 0, got ${start}`);
  if (o.totalEpochs !== undefined && !(Number.isInteger(o.totalEpochs) && o.totalEpochs >= start + o.epochs))
    throw new UserError(`train: totalEpochs must be an integer >= startEpoch + epochs = ${start + o.epochs}, got ${o.totalEpochs}`);
  if ((o.teacher === undefined) !== (o.distill === undefined))
    throw new UserError('train: distillation needs both teacher and distill {temperature, weight}');
  if (o.distill) {
    const { temperature, weight } = o.distill;
    if (!(Number.isFinite(temperature) && temperature > 0))
      throw new UserError(`train: distill.temperature must be a finite number > 0, got ${temperature}`);
    if (!(weight >= 0 && weight <= 1)) throw new UserError(`train: distill.weight must be in [0, 1], got ${weight}`);
  }
}

/** The teacher's logits (its first output) for a batch, checked to be [b, classes]. */
async function teacherLogits(teacher: ForwardEngine, x: Float32Array, shape: number[]): Promise<Float32Array> {
  const { outputs } = await teacher.forward(x, shape);
  const key = Object.keys(outputs)[0];
  const t = key === undefined ? undefined : outputs[key];
  if (!t || t.shape.length !== 2 || t.shape[0] !== shape[0])
    throw new UserError(`train: the teacher's output ${key ?? '(none)'} has shape [${t?.shape ?? ''}], expected [${shape[0]}, classes]`);
  return t.data;
}

/**
 * SGD training on `ds` through the engine's trainStep. Each epoch visits every sample once in a
 * seeded random order; a final batch of one sample is skipped (BatchNorm cannot train on it).
 * While the engine runs step k, step k+1's batch is gathered, normalised and augmented in two
 * alternating buffers, so data preparation overlaps the native computation. With a teacher, its
 * forward on the batch runs (and is awaited) before the student's step.
 */
export async function train(engine: TrainableEngine, ds: ImageDataset, opts: TrainOptions): Promise<EpochStats[]> {
  checkOpts(opts);
  if (ds.n < 2) throw new UserError(`train: ${ds.name} has ${ds.n} samples, need at least 2`);
  const cycle = opts.cycleMomentum ?? true;
  engine.configureOptimizer({ momentum: opts.momentum, nesterov: opts.nesterov, weightDecay: opts.weightDecay });
  const B = Math.min(opts.batch, ds.n);
  const n = ds.n;
  const size = ds.channels * ds.height * ds.width;
  const stepsPerEpoch = n % B === 1 ? Math.floor(n / B) : Math.ceil(n / B);
  const startEpoch = opts.startEpoch ?? 0;
  const totalEpochs = opts.totalEpochs ?? startEpoch + opts.epochs;
  // steps of this call (k) and of the whole schedule (startStep + k)
  const totalSteps = stepsPerEpoch * opts.epochs;
  const startStep = stepsPerEpoch * startEpoch;
  const scheduleSteps = stepsPerEpoch * totalEpochs;
  // independent streams: switching augmentation off does not change the sample order
  const orderRng = new Rng(opts.seed);
  const augRng = new Rng(opts.seed + 0x632be5ab);
  const fill = opts.padFill === 'mean' ? undefined : padFillForBlack(opts.mean, opts.std);
  const xBufs = [new Float32Array(B * size), new Float32Array(B * size)];
  const yBufs = [new Int32Array(B), new Int32Array(B)];
  const scratch = opts.augment ? new Float32Array(B * size) : undefined;
  let perm: Int32Array = new Int32Array(0);
  let permEpoch = -1;

  // prepare(k) runs strictly in order of k, so the permutation is drawn once per epoch, in order
  const prepare = (k: number) => {
    const epoch = Math.floor(k / stepsPerEpoch);
    if (epoch !== permEpoch) {
      perm = orderRng.permutation(n);
      permEpoch = epoch;
    }
    const step = k % stepsPerEpoch;
    const idx = perm.subarray(step * B, Math.min(n, (step + 1) * B));
    const b = idx.length;
    const shape = [b, ds.channels, ds.height, ds.width];
    let x: Float32Array;
    if (scratch) {
      const norm = normalizeBatch(ds, idx, opts.mean, opts.std, scratch);
      x = augmentBatch(norm, shape, augRng, { pad: 4, flip: true, fill }, xBufs[k % 2]);
    } else {
      x = normalizeBatch(ds, idx, opts.mean, opts.std, xBufs[k % 2]);
    }
    const labels = batchLabels(ds, idx, yBufs[k % 2]);
    return { x, shape, labels, epoch, step, b };
  };

  const stats: EpochStats[] = [];
  let next = prepare(0);
  for (let epoch = 0; epoch < opts.epochs; epoch++) {
    const t0 = performance.now();
    const bar = progress(`${opts.label ?? 'train'} epoch ${startEpoch + epoch + 1}/${totalEpochs}`, stepsPerEpoch);
    let lossSum = 0;
    let correct = 0;
    let images = 0;
    let lr = 0;
    try {
      for (let step = 0; step < stepsPerEpoch; step++) {
        const k = epoch * stepsPerEpoch + step;
        const cur = next;
        lr = scheduleLr(opts.schedule, startStep + k, scheduleSteps, opts.lr);
        const momentum = scheduleMomentum(opts.schedule, startStep + k, scheduleSteps, opts.momentum, cycle);
        let soft: DistillTarget | undefined;
        if (opts.teacher && opts.distill) soft = { ...opts.distill, teacher: await teacherLogits(opts.teacher, cur.x, cur.shape) };
        const pending = soft
          ? engine.trainStep(cur.x, cur.shape, cur.labels, lr, momentum, soft)
          : engine.trainStep(cur.x, cur.shape, cur.labels, lr, momentum);
        if (k + 1 < totalSteps) next = prepare(k + 1);
        const r = await pending;
        if (!Number.isFinite(r.loss))
          throw new UserError(
            `train: loss became ${r.loss} at epoch ${epoch + 1} step ${step + 1} (lr ${lr.toPrecision(3)}); try a lower learning rate`,
          );
        lossSum += r.loss * cur.b;
        correct += r.correct;
        images += cur.b;
        opts.onStep?.({
          epoch: startEpoch + epoch,
          step,
          globalStep: startStep + k,
          totalSteps: scheduleSteps,
          lr,
          momentum,
          loss: r.loss,
          correct: r.correct,
          batch: cur.b,
        });
        bar.tick(1, { loss: (lossSum / images).toFixed(3), acc: ((100 * correct) / images).toFixed(1) + '%' });
      }
    } finally {
      bar.done();
    }
    stats.push({ epoch: startEpoch + epoch, loss: lossSum / images, accuracy: correct / images, images, seconds: (performance.now() - t0) / 1000, lr });
  }
  return stats;
}
