// Fine-tuning a pruned model to recover accuracy, optionally distilled from the unpruned one,
// one epoch at a time with a checkpoint after each so an interrupted run resumes.
import { createHash } from 'node:crypto';
import { endianness } from 'node:os';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { ImageDataset } from '../data/dataset.js';
import { getThreads, setThreads, TorchModel } from '../engine/index.js';
import { numel, type Model, type Tensor } from '../ir/model.js';
import type { ScheduleName } from '../train/schedule.js';
import { type EpochStats, train } from '../train/train.js';
import { UserError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';

export interface FinetuneOptions {
  epochs: number;
  /** default 128 */
  batch?: number;
  /** base learning rate (default 0.01) */
  lr?: number;
  /** default 'cosine' (to 0 over all `epochs`) */
  schedule?: ScheduleName;
  /** SGD momentum, default 0.9 */
  momentum?: number;
  /** default true */
  nesterov?: boolean;
  /** default 5e-4 */
  weightDecay?: number;
  /** random crop (pad 4) + horizontal flip, default true */
  augment?: boolean;
  /** what the crop's padding shows (TrainOptions.padFill), default 'black' */
  padFill?: 'black' | 'mean';
  /** epoch k's sample order and augmentation come from a seed derived from (seed, k) */
  seed: number;
  mean: readonly number[];
  std: readonly number[];
  /** distil from this model (typically the unpruned one): its inference logits on each batch */
  teacher?: Model;
  /** with `teacher`: temperature T (required) and weight of the soft-target term (default 0.5) */
  distill?: { temperature: number; weight?: number };
  /** after every epoch the model goes here as epoch-<k>.bin + epoch-<k>.json (k = epochs finished) */
  checkpointDir?: string;
  /**
   * Required with checkpointDir: identifies the run (e.g. a hash of the model and data choice);
   * checkpoints with another key, or written with other settings, are ignored.
   */
  checkpointKey?: string;
  /** runs after each epoch's checkpoint is written, with a copy of the model as it then is */
  onEpoch?: (e: EpochStats & { model: Model }) => Promise<void> | void;
  /** engine threads for the duration of the call (the previous count is restored) */
  threads?: number;
  /** progress-bar label prefix */
  label?: string;
}

export interface FinetuneResult {
  model: Model;
  /** every epoch's statistics, those before a resume taken from the checkpoint */
  epochs: EpochStats[];
  /** epochs already done by the checkpoint this run resumed from (0: started from `model`) */
  resumedFrom: number;
}

const FORMAT = 'cmiprune-finetune-checkpoint';
const VERSION = 1;

interface TensorEntry {
  name: string;
  shape: number[];
  /** byte offset in the .bin */
  offset: number;
}

interface CheckpointIndex {
  format: typeof FORMAT;
  version: number;
  key: string;
  /** the settings that determine the run: a checkpoint written under others is not resumed */
  settings: Record<string, unknown>;
  /** epochs finished */
  epoch: number;
  stats: EpochStats[];
  model: Omit<Model, 'tensors'>;
  tensors: TensorEntry[];
  /** the .bin's length and SHA-256: a .bin overwritten after this index was written is detected */
  bytes: number;
  sha256: string;
}

/** Epoch k's seed for train(): the same whether the epoch runs straight on or after a resume. */
export function epochSeed(seed: number, epoch: number): number {
  let z = (Math.trunc(seed) ^ Math.imul(epoch + 1, 0x9e3779b1)) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

function checkpointName(epoch: number): string {
  return `epoch-${epoch}`;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function checkLittleEndian(): void {
  if (endianness() !== 'LE') throw new UserError('finetune checkpoints are written as little-endian float32; this machine is big-endian');
}

/** Writes the model as epoch-<k>.bin (all tensors, float32 LE, back to back) then epoch-<k>.json, each atomically. */
async function writeCheckpoint(
  dir: string,
  key: string,
  settings: Record<string, unknown>,
  epoch: number,
  stats: EpochStats[],
  model: Model,
): Promise<void> {
  checkLittleEndian();
  const names = Object.keys(model.tensors).sort();
  const entries: TensorEntry[] = [];
  let bytes = 0;
  for (const name of names) {
    entries.push({ name, shape: [...model.tensors[name].shape], offset: bytes });
    bytes += model.tensors[name].data.byteLength;
  }
  const bin = new Uint8Array(bytes);
  for (const e of entries) {
    const d = model.tensors[e.name].data;
    bin.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), e.offset);
  }
  const { tensors: _omit, ...structure } = model;
  const index: CheckpointIndex = {
    format: FORMAT,
    version: VERSION,
    key,
    settings,
    epoch,
    stats,
    model: structure,
    tensors: entries,
    bytes,
    sha256: createHash('sha256').update(bin).digest('hex'),
  };
  const base = join(dir, checkpointName(epoch));
  // the index is written last: it is what makes a checkpoint count
  await writeFileAtomic(`${base}.bin`, bin);
  await writeFileAtomic(`${base}.json`, JSON.stringify(index));
}

/**
 * The latest usable checkpoint in `dir` for this key and settings, or undefined. Unreadable,
 * incomplete or foreign (other key, other settings) checkpoints are skipped; one with the right key
 * and settings whose tensors do not fit `model` is an error (the key was reused for another model).
 */
async function loadCheckpoint(
  dir: string,
  key: string,
  settings: Record<string, unknown>,
  model: Model,
  epochs: number,
): Promise<{ epoch: number; stats: EpochStats[]; model: Model } | undefined> {
  let files: string[];
  try {
    files = await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const found = files
    .map((f) => /^epoch-(\d+)\.json$/.exec(f))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .filter((k) => k >= 1 && k <= epochs)
    .sort((a, b) => b - a);
  const wantSettings = JSON.stringify(settings);
  for (const k of found) {
    const base = join(dir, checkpointName(k));
    let index: CheckpointIndex;
    try {
      index = JSON.parse(await readFile(`${base}.json`, 'utf8')) as CheckpointIndex;
    } catch {
      continue;
    }
    if (index.format !== FORMAT || index.version !== VERSION || index.key !== key || index.epoch !== k) continue;
    if (JSON.stringify(index.settings) !== wantSettings) continue;
    let bin: Buffer;
    try {
      bin = await readFile(`${base}.bin`);
    } catch {
      continue;
    }
    if (bin.length !== index.bytes || createHash('sha256').update(bin).digest('hex') !== index.sha256) continue;
    checkLittleEndian();
    const names = Object.keys(model.tensors).sort();
    const listed = index.tensors.map((t) => t.name).sort();
    if (names.length !== listed.length || names.some((n, i) => n !== listed[i]))
      throw new UserError(`finetune: checkpoint ${base}.json (key ${JSON.stringify(key)}) holds other tensors than the model`);
    const tensors: Record<string, Tensor> = {};
    for (const t of index.tensors) {
      const own = model.tensors[t.name];
      if (!sameShape(own.shape, t.shape))
        throw new UserError(`finetune: checkpoint ${base}.json: tensor '${t.name}' has shape [${t.shape}], the model's is [${own.shape}]`);
      const data = new Float32Array(numel(t.shape));
      new Uint8Array(data.buffer).set(bin.subarray(t.offset, t.offset + data.byteLength));
      tensors[t.name] = { shape: [...t.shape], data };
    }
    return { epoch: k, stats: index.stats, model: { ...structuredClone(index.model), tensors } };
  }
  return undefined;
}

/**
 * Fine-tunes `model` on `data` with SGD through the existing train(), one epoch per call so that
 * after each epoch the weights can go to `checkpointDir` (epoch-<k>.bin + .json, k = epochs
 * finished, written atomically, the .json last). A rerun with the same checkpointDir, key and
 * settings resumes after the last finished epoch: the learning rate of every step is that of the
 * uninterrupted run (train's startEpoch/totalEpochs), and epoch k's sample order and augmentation
 * come from epochSeed(seed, k), so a resumed run reproduces the straight one.
 *
 * The optimizer's momentum buffers start afresh at every epoch (they are not in the checkpoint),
 * the same in a straight and a resumed run. With `teacher`, each batch's loss mixes the teacher's
 * soft targets in (DistillTarget). Pure: `model` and `teacher` are not modified.
 */
export async function finetune(model: Model, data: ImageDataset, opts: FinetuneOptions): Promise<FinetuneResult> {
  const epochs = opts.epochs;
  if (!Number.isInteger(epochs) || epochs < 1) throw new UserError(`finetune: epochs must be a positive integer, got ${epochs}`);
  if (!Number.isInteger(opts.seed)) throw new UserError(`finetune: seed must be an integer, got ${opts.seed}`);
  if ((opts.teacher === undefined) !== (opts.distill === undefined))
    throw new UserError('finetune: distillation needs both teacher and distill {temperature, weight?}');
  if (opts.checkpointDir !== undefined && typeof opts.checkpointKey !== 'string')
    throw new UserError('finetune: checkpointDir needs a checkpointKey (a string identifying the run)');
  if (opts.threads !== undefined && !(Number.isInteger(opts.threads) && opts.threads >= 1))
    throw new UserError(`finetune: threads must be an integer >= 1, got ${opts.threads}`);
  const distill = opts.distill ? { temperature: opts.distill.temperature, weight: opts.distill.weight ?? 0.5 } : undefined;
  const cfg = {
    batch: opts.batch ?? 128,
    lr: opts.lr ?? 0.01,
    schedule: opts.schedule ?? ('cosine' as ScheduleName),
    momentum: opts.momentum ?? 0.9,
    nesterov: opts.nesterov ?? true,
    weightDecay: opts.weightDecay ?? 5e-4,
    augment: opts.augment ?? true,
    padFill: opts.padFill ?? ('black' as const),
    mean: [...opts.mean],
    std: [...opts.std],
  };
  const settings: Record<string, unknown> = { epochs, seed: opts.seed, ...cfg, data: data.name, n: data.n, distill: distill ?? null };

  let start = model;
  let resumedFrom = 0;
  const stats: EpochStats[] = [];
  if (opts.checkpointDir !== undefined) {
    const ck = await loadCheckpoint(opts.checkpointDir, opts.checkpointKey!, settings, model, epochs);
    if (ck) {
      start = ck.model;
      resumedFrom = ck.epoch;
      stats.push(...ck.stats);
    }
  }
  if (resumedFrom >= epochs) return { model: start, epochs: stats, resumedFrom };

  const prevThreads = opts.threads !== undefined ? getThreads() : undefined;
  if (opts.threads !== undefined) setThreads(opts.threads);
  let engine: TorchModel | undefined;
  let teacher: TorchModel | undefined;
  try {
    engine = TorchModel.create(start);
    teacher = opts.teacher ? TorchModel.create(opts.teacher) : undefined;
    for (let e = resumedFrom; e < epochs; e++) {
      const [st] = await train(engine, data, {
        ...cfg,
        epochs: 1,
        startEpoch: e,
        totalEpochs: epochs,
        seed: epochSeed(opts.seed, e),
        teacher,
        distill,
        label: opts.label ?? 'finetune',
      });
      const current = engine.toModel();
      stats.push(st);
      if (opts.checkpointDir !== undefined)
        await writeCheckpoint(opts.checkpointDir, opts.checkpointKey!, settings, e + 1, stats, current);
      await opts.onEpoch?.({ ...st, model: current });
    }
    // a copy of its own: the epoch callback's model may be kept and changed by the caller
    return { model: engine.toModel(), epochs: stats, resumedFrom };
  } finally {
    engine?.dispose();
    teacher?.dispose();
    if (prevThreads !== undefined) setThreads(prevThreads);
  }
}
