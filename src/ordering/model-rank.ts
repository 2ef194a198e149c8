// Orders the filters of a model's conv layers from activations taken through the engine on a
// seeded, class-balanced sample; each finished layer is checkpointed so an interrupted run resumes.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { collectActivations, type LayerActivations } from '../activations/collect.js';
import { orderLayer, type OrderResult } from '../cmi/order.js';
import { loadCifar10 } from '../data/cifar10.js';
import { classBalancedSample } from '../data/dataset.js';
import { setThreads, TorchModel } from '../engine/index.js';
import { convUnits, type ConvUnit } from '../ir/graph.js';
import { importOnnx } from '../onnx/index.js';
import { resolveNormalization } from '../data/normalization.js';
import { UserError } from '../util/errors.js';
import { cacheDir, writeFileAtomic } from '../util/fs.js';
import { progress } from '../util/progress.js';

export interface RankModelOptions {
  model: string;
  data: 'cifar10';
  /** number of training images in the class-balanced sample (the reference uses 256) */
  samples: number;
  seed: number;
  /** 'all', a conv node name, or a 0-based conv index */
  layer: string;
  alpha: number;
  log2?: boolean;
  maxSelect?: number;
  threads: number;
  mean?: number[];
  std?: number[];
  /** directory of per-layer checkpoints; default: a key of the run's inputs under the cache */
  checkpointDir?: string;
  /** ignore existing checkpoints */
  fresh?: boolean;
  greedyTail?: boolean;
}

export interface LayerRanking extends Omit<OrderResult, 'ownMI'> {
  layer: string;
  index: number;
  tap: string;
  channels: number;
  mapShape: [number, number];
  resumed: boolean;
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
  checkpointDir: string;
  layers: LayerRanking[];
  seconds: number;
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

/** Ranks every selected layer; results go to stdout as JSON by the caller. */
export async function rankModel(opts: RankModelOptions): Promise<ModelRanking> {
  const t0 = performance.now();
  let bytes: Uint8Array;
  try {
    bytes = await readFile(opts.model);
  } catch (e) {
    throw new UserError(`${opts.model}: cannot read model file (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
  const modelSha256 = createHash('sha256').update(bytes).digest('hex');
  const model = importOnnx(bytes, { fileName: opts.model });
  const units = selectUnits(convUnits(model), opts.layer, opts.model);
  if (units.length === 0) throw new UserError(`${opts.model}: the model has no conv layers to rank`);
  setThreads(opts.threads);
  const train = await loadCifar10('train');
  const sample = classBalancedSample(train, opts.samples, opts.seed);
  const norm = resolveNormalization(model, opts.model, opts, train.channels);

  // a checkpoint is valid only for the same model bytes, sample and estimator settings
  const key = createHash('sha256')
    .update(JSON.stringify([modelSha256, opts.data, opts.samples, opts.seed, opts.alpha, !!opts.log2, opts.maxSelect ?? null, !!opts.greedyTail, norm.mean, norm.std]))
    .digest('hex')
    .slice(0, 16);
  const checkpointDir = opts.checkpointDir ?? join(cacheDir(), 'rank', key);
  const ckptPath = (u: ConvUnit) => join(checkpointDir, `layer-${String(u.index).padStart(3, '0')}.json`);

  const done = new Map<number, LayerRanking>();
  if (!opts.fresh) {
    for (const u of units) {
      try {
        const saved = JSON.parse(await readFile(ckptPath(u), 'utf8')) as { key: string; result: LayerRanking };
        if (saved.key === key && saved.result.layer === u.name) done.set(u.index, { ...saved.result, resumed: true });
      } catch {
        // no checkpoint (or unreadable): compute the layer
      }
    }
    if (done.size > 0) process.stderr.write(`rank: resuming, ${done.size} of ${units.length} layers already done (${checkpointDir})\n`);
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
  const total = todo.reduce((s, u) => s + cost(u.channels, stepsOf(u.channels)), 0);
  const bar = progress('rank', total);
  try {
    for (const a of acts) {
      const u = a.unit;
      let last = 0;
      const r = await orderLayer(
        { maps: { data: a.maps, n: a.n, c: a.channels, hw: a.spatial }, labels: sample.labels, classes: sample.classes },
        {
          alpha: opts.alpha,
          logBase: opts.log2 ? '2' : 'e',
          maxSelect: opts.maxSelect,
          threads: opts.threads,
          tail: opts.greedyTail ? 'greedy' : 'secondary',
          onProgress: (p) => {
            bar.tick(p.evaluated - last, { layer: `${u.index + 1}/${units.length} ${u.name}`, step: `${p.step}/${p.steps}` });
            last = p.evaluated;
          },
        },
      );
      // the bar's unit is the greedy cost; a layer that ended early (tie-break tail) jumps ahead
      bar.tick(cost(u.channels, stepsOf(u.channels)) - last);
      const { ownMI: _ownMI, ...rest } = r;
      const layer: LayerRanking = {
        layer: u.name,
        index: u.index,
        tap: u.tap,
        channels: u.channels,
        mapShape: [a.height, a.width],
        resumed: false,
        ...rest,
      };
      await writeFileAtomic(ckptPath(u), JSON.stringify({ key, result: layer }));
      done.set(u.index, layer);
    }
  } finally {
    bar.done();
  }

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
    checkpointDir,
    layers: units.map((u) => done.get(u.index)!),
    seconds: (performance.now() - t0) / 1000,
  };
}
