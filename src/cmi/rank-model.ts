// Orders the filters of a model's conv layers from activations taken through the engine on a
// seeded, class-balanced sample; each finished layer is checkpointed so an interrupted run resumes.
//   rankConvUnits: the core, on an already-loaded Model and sample (a pruning pipeline calls it)
//   rankModel:     the file-reading wrapper behind `cmiprune rank --model`
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { collectActivations, type LayerActivations } from '../activations/collect.js';
import {
  checkPermutationTest,
  RANK_ALGORITHM_VERSION,
  rankLayer,
  type MapsTensor,
  type RankProgress,
  type LayerRankResult,
  type PermutationTestOptions,
  type SigmaMode,
} from './rank.js';
import { loadCifar10 } from '../data/cifar10.js';
import { classBalancedSample, type ImageDataset } from '../data/dataset.js';
import { engineKeyTag, setThreads, TorchModel } from '../engine/index.js';
import { convUnits, type ConvUnit } from '../ir/graph.js';
import type { Model } from '../ir/model.js';
import { readOnnxModel } from '../onnx/index.js';
import { resolveNormalization } from '../data/normalization.js';
import { UserError } from '../util/errors.js';
import { cacheDir, writeFileAtomic } from '../util/fs.js';
import { progress } from '../util/progress.js';

/** Ordering settings shared by the core and the wrapper. */
export interface RankSettings {
  /** Renyi order (default 1.01) */
  alpha?: number;
  log2?: boolean;
  maxSelect?: number;
  /** CMI worker threads (default 2) */
  threads?: number;
  greedyTail?: boolean;
  /** kernel width of the maps (default 'reference'); see RankLayerOptions.sigma */
  sigma?: SigmaMode;
  /** SPEC section 4's permutation test per layer; see RankLayerOptions.permutationTest */
  permutationTest?: PermutationTestOptions;
}

export interface RankUnitsOptions extends RankSettings {
  /** input normalisation; default: the model's mean/std metadata */
  mean?: readonly number[];
  std?: readonly number[];
  /** per-layer checkpoints go here (layer-NNN.json) and are resumed from it; absent: none */
  checkpointDir?: string;
  /** ignore existing checkpoints (they are still written) */
  fresh?: boolean;
  /**
   * identity of the model in checkpoint keys (e.g. the ONNX file's sha256); default: sha256 of the
   * graph and every weight, so an edited in-memory model never resumes another model's layers
   */
  modelKey?: string;
  /** entropy backend (default 'auto') */
  backend?: 'auto' | 'ts' | 'native';
  /** after each layer, resumed or computed, in network order of completion */
  onLayer?: (e: { layer: LayerRanking; done: number; total: number }) => void;
  /** label of the stderr progress bar (default 'rank') */
  progressLabel?: string;
}

export interface RankModelOptions extends RankSettings {
  model: string;
  data: 'cifar10';
  /** number of training images in the class-balanced sample (the reference uses 256) */
  samples: number;
  seed: number;
  /** 'all', a conv node name, or a 0-based conv index */
  layer: string;
  alpha: number;
  threads: number;
  mean?: number[];
  std?: number[];
  /** directory of per-layer checkpoints; default: a key of the run's inputs under the cache */
  checkpointDir?: string;
  /** ignore existing checkpoints */
  fresh?: boolean;
  onLayer?: RankUnitsOptions['onLayer'];
}

export interface LayerRanking extends Omit<LayerRankResult, 'ownMI'> {
  layer: string;
  index: number;
  tap: string;
  channels: number;
  mapShape: [number, number];
  resumed: boolean;
}

export interface UnitsRanking {
  /** one per unit, in the order given */
  layers: LayerRanking[];
  /** checkpoint key of this run's inputs and settings */
  key: string;
  checkpointDir: string | null;
  mean: number[];
  std: number[];
  orderAlgorithmVersion: string;
  seconds: number;
}

export interface ModelRanking {
  model: string;
  modelSha256: string;
  data: string;
  split: 'train';
  samples: number;
  seed: number;
  alpha: number;
  logBaseName: string;
  formulation: 'per-layer';
  sigma: SigmaMode;
  permutationTest: Required<PermutationTestOptions> | null;
  orderAlgorithmVersion: string;
  checkpointDir: string;
  layers: LayerRanking[];
  seconds: number;
}

/** Everything a layer's result depends on; hashed into the checkpoint key and stored beside it. */
export interface CheckpointKeyParts {
  /** RANK_ALGORITHM_VERSION of the code that wrote the checkpoint */
  version: string;
  model: string;
  sample: string;
  alpha: number;
  log2: boolean;
  maxSelect: number | null;
  greedyTail: boolean;
  sigma: SigmaMode;
  permutationTest: Required<PermutationTestOptions> | null;
  mean: readonly number[];
  std: readonly number[];
}

/** 16 hex digits of sha256 over the parts, in a fixed field order. */
export function checkpointKey(p: CheckpointKeyParts): string {
  const fields = [
    p.version,
    p.model,
    p.sample,
    p.alpha,
    p.log2,
    p.maxSelect,
    p.greedyTail,
    p.sigma,
    p.permutationTest && [p.permutationTest.permutations, p.permutationTest.eta, p.permutationTest.seed],
    [...p.mean],
    [...p.std],
    // only when CMIPRUNE_FAST_PATHS=0 (maps taken by libtorch's own ops): default keys unchanged
    ...engineKeyTag(),
  ];
  return createHash('sha256').update(JSON.stringify(fields)).digest('hex').slice(0, 16);
}

/** sha256 of a model's graph (nodes, inputs, outputs) and every tensor's name, shape and bytes. */
export function modelFingerprint(model: Model): string {
  const h = createHash('sha256');
  h.update(JSON.stringify([model.inputs, model.outputs, model.nodes]));
  for (const name of Object.keys(model.tensors).sort()) {
    const t = model.tensors[name]!;
    h.update(JSON.stringify([name, t.shape]));
    h.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
  return h.digest('hex');
}

/** sha256 of a sample's images, labels and class count. */
export function sampleFingerprint(ds: ImageDataset): string {
  const h = createHash('sha256');
  h.update(JSON.stringify([ds.n, ds.channels, ds.height, ds.width, ds.classes]));
  h.update(ds.images);
  h.update(ds.labels);
  return h.digest('hex');
}

/** The checkpoint key parts of a run of `units` of `model` on `sample` (everything but the layer). */
export function keyParts(model: Model, sample: ImageDataset, opts: RankUnitsOptions, norm: { mean: readonly number[]; std: readonly number[] }): CheckpointKeyParts {
  return {
    version: RANK_ALGORITHM_VERSION,
    model: opts.modelKey ?? modelFingerprint(model),
    sample: sampleFingerprint(sample),
    alpha: opts.alpha ?? 1.01,
    log2: !!opts.log2,
    maxSelect: opts.maxSelect ?? null,
    greedyTail: !!opts.greedyTail,
    sigma: opts.sigma ?? 'reference',
    permutationTest: opts.permutationTest ? checkPermutationTest(opts.permutationTest) : null,
    mean: [...norm.mean],
    std: [...norm.std],
  };
}

/** Path of a unit's checkpoint in a checkpoint directory. */
export function checkpointPath(dir: string, u: ConvUnit): string {
  return join(dir, `layer-${String(u.index).padStart(3, '0')}.json`);
}

/** A checkpoint file: the key it was written under, the key's parts (for diagnosis), the result. */
export interface Checkpoint {
  key: string;
  parts: CheckpointKeyParts;
  result: LayerRanking;
}

/**
 * The layer of a checkpoint file when it exists, is readable, was written under `key` and is of
 * unit `u` at its tap (marked resumed); null otherwise (then the layer is computed).
 */
export async function readCheckpoint(path: string, key: string, u: ConvUnit): Promise<LayerRanking | null> {
  try {
    const saved = JSON.parse(await readFile(path, 'utf8')) as Checkpoint;
    // the tap too: a coupled group (--residual all) is named after its first conv but reads another value
    if (saved.key === key && saved.result.layer === u.name && saved.result.tap === u.tap) return { ...saved.result, resumed: true };
  } catch {
    // no checkpoint (or unreadable): compute the layer
  }
  return null;
}

/** The input normalisation of a run: opts.mean/std when both are given, else the model's metadata. */
export function rankNormalization(model: Model, sample: ImageDataset, opts: Pick<RankUnitsOptions, 'mean' | 'std'>): { mean: number[]; std: number[] } {
  return opts.mean && opts.std
    ? { mean: [...opts.mean], std: [...opts.std] }
    : resolveNormalization(model, model.name, { mean: opts.mean ? [...opts.mean] : undefined, std: opts.std ? [...opts.std] : undefined }, sample.channels);
}

/**
 * Orders one unit's filters from its activations with the run's settings (`parts` of keyParts and
 * the options the key does not hold), conditioned on `before` (empty: the per-layer formulation).
 */
export async function rankUnit(
  a: LayerActivations,
  sample: ImageDataset,
  parts: CheckpointKeyParts,
  opts: Pick<RankUnitsOptions, 'maxSelect' | 'threads' | 'backend'> & { before?: MapsTensor[]; onProgress?: (p: RankProgress) => void },
): Promise<LayerRanking> {
  const u = a.unit;
  const r = await rankLayer(
    {
      maps: { data: a.maps, n: a.n, c: a.channels, hw: a.spatial },
      labels: sample.labels,
      classes: sample.classes,
      ...(opts.before && opts.before.length > 0 ? { before: opts.before } : {}),
    },
    {
      alpha: parts.alpha,
      logBase: parts.log2 ? '2' : 'e',
      maxSelect: opts.maxSelect,
      threads: opts.threads ?? 2,
      backend: opts.backend ?? 'auto',
      tail: parts.greedyTail ? 'greedy' : 'secondary',
      sigma: parts.sigma,
      ...(parts.permutationTest ? { permutationTest: parts.permutationTest } : {}),
      ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    },
  );
  const { ownMI: _ownMI, ...rest } = r;
  return {
    layer: u.name,
    index: u.index,
    tap: u.tap,
    channels: u.channels,
    mapShape: [a.height, a.width],
    resumed: false,
    ...rest,
  };
}

/**
 * The core: activations of `units` on `sample` through the engine, rankLayer per layer, per-layer
 * checkpoints (when checkpointDir is given) and progress. The model is not modified.
 */
export async function rankConvUnits(model: Model, units: ConvUnit[], sample: ImageDataset, opts: RankUnitsOptions = {}): Promise<UnitsRanking> {
  const t0 = performance.now();
  const norm = rankNormalization(model, sample, opts);
  // a checkpoint is valid only for the same algorithm version, model, sample and settings
  const parts = keyParts(model, sample, opts, norm);
  const key = checkpointKey(parts);
  const dir = opts.checkpointDir ?? null;
  const total = units.length;
  const done = new Map<number, LayerRanking>();
  const finished = (layer: LayerRanking) => {
    done.set(layer.index, layer);
    opts.onLayer?.({ layer, done: done.size, total });
  };

  if (dir && !opts.fresh) {
    for (const u of units) {
      const saved = await readCheckpoint(checkpointPath(dir, u), key, u);
      if (saved) finished(saved);
    }
    if (done.size > 0) process.stderr.write(`rank: resuming, ${done.size} of ${units.length} layers already done (${dir})\n`);
  }

  const todo = units.filter((u) => !done.has(u.index));
  let acts: LayerActivations[] = [];
  if (todo.length > 0) {
    const engine = TorchModel.create(model);
    try {
      acts = await collectActivations(engine, sample, todo, { mean: norm.mean, std: norm.std, batch: 64 });
    } finally {
      engine.dispose();
    }
  }

  // ~C^2/2 candidate evaluations per layer dominate the cost: the overall bar counts those
  const cost = (c: number, steps: number) => {
    let s = 0;
    for (let k = c; k > c - steps; k--) s += k;
    return s;
  };
  const stepsOf = (c: number) => Math.min(c - 1, opts.maxSelect ?? c - 1);
  const bar = progress(opts.progressLabel ?? 'rank', todo.reduce((s, u) => s + cost(u.channels, stepsOf(u.channels)), 0));
  try {
    for (const a of acts) {
      const u = a.unit;
      let last = 0;
      const layer = await rankUnit(a, sample, parts, {
        maxSelect: opts.maxSelect,
        threads: opts.threads,
        backend: opts.backend,
        onProgress: (p) => {
          bar.tick(p.evaluated - last, { layer: `${u.index + 1} ${u.name}`, step: `${p.step}/${p.steps}` });
          last = p.evaluated;
        },
      });
      // the bar's unit is the greedy cost; a layer that ended early (tie-break tail) jumps ahead
      bar.tick(cost(u.channels, stepsOf(u.channels)) - last);
      if (dir) await writeFileAtomic(checkpointPath(dir, u), JSON.stringify({ key, parts, result: layer } satisfies Checkpoint));
      finished(layer);
    }
  } finally {
    bar.done();
  }

  return {
    layers: units.map((u) => done.get(u.index)!),
    key,
    checkpointDir: dir,
    mean: [...norm.mean],
    std: [...norm.std],
    orderAlgorithmVersion: RANK_ALGORITHM_VERSION,
    seconds: (performance.now() - t0) / 1000,
  };
}

function selectUnits(units: ConvUnit[], layer: string, modelPath: string): ConvUnit[] {
  if (layer === 'all') return units;
  const byName = units.find((u) => u.name === layer);
  if (byName) return [byName];
  if (/^\d+$/.test(layer) && Number(layer) < units.length) return [units[Number(layer)]!];
  throw new UserError(
    `${modelPath}: --layer '${layer}' is not a conv layer; use 'all', an index 0-${units.length - 1}, or one of: ${units.map((u) => u.name).join(', ')}`,
  );
}

/** Reads the model and the data, then ranks every selected layer; the caller prints the result. */
export async function rankModel(opts: RankModelOptions): Promise<ModelRanking> {
  const t0 = performance.now();
  const { sha256: modelSha256, model } = await readOnnxModel(opts.model);
  const units = selectUnits(convUnits(model), opts.layer, opts.model);
  if (units.length === 0) throw new UserError(`${opts.model}: the model has no conv layers to rank`);
  setThreads(opts.threads);
  const train = await loadCifar10('train');
  const sample = classBalancedSample(train, opts.samples, opts.seed);
  const norm = resolveNormalization(model, opts.model, opts, train.channels);
  const core: RankUnitsOptions = { ...opts, mean: norm.mean, std: norm.std, modelKey: modelSha256 };
  const checkpointDir = opts.checkpointDir ?? join(cacheDir(), 'rank', checkpointKey(keyParts(model, sample, core, norm)));
  const r = await rankConvUnits(model, units, sample, { ...core, checkpointDir });
  return {
    model: opts.model,
    modelSha256,
    data: opts.data,
    split: 'train',
    samples: sample.n,
    seed: opts.seed,
    alpha: opts.alpha,
    logBaseName: opts.log2 ? 'log2 (bits)' : 'natural log (nats)',
    formulation: 'per-layer',
    sigma: opts.sigma ?? 'reference',
    permutationTest: opts.permutationTest ? checkPermutationTest(opts.permutationTest) : null,
    orderAlgorithmVersion: r.orderAlgorithmVersion,
    checkpointDir,
    layers: r.layers,
    seconds: (performance.now() - t0) / 1000,
  };
}
