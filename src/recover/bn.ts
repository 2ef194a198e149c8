// BatchNorm re-estimation after surgery: the running statistics of a pruned model describe the
// activations of the model it was cut from, so they are recomputed from a sample of training data.
import { type ImageDataset, normalizeBatch } from '../data/dataset.js';
import { getThreads, setThreads, TorchModel } from '../engine/index.js';
import { type BatchNormNode, cloneModel, type Model, type Node, type Tensor } from '../ir/model.js';
import { checkPlan, memberKeep } from '../prune/surgery.js';
import type { PruningPlan } from '../prune/types.js';
import { UserError } from '../util/errors.js';
import { Rng } from '../util/rng.js';

/**
 * How a pruned model's BatchNorm statistics are set: anchorBatchNorm's, the pruned model's
 * re-estimate alone, or 'auto': whichever of the two is more accurate on held-out training images
 * (chooseBnStats).
 */
export type BnStats = 'auto' | 'anchored' | 'reestimated';
export const BN_STATS = ['auto', 'anchored', 'reestimated'] as const satisfies readonly BnStats[];

/**
 * 'auto''s choice from the held-out accuracies of both: anchored unless re-estimation alone is
 * strictly more accurate (anchoring was ahead wherever the pruned model kept most of its accuracy,
 * and can fall behind on heavily damaged ones: README "BatchNorm statistics").
 */
export function chooseBnStats(heldoutAccuracy: { anchored: number; reestimated: number }): 'anchored' | 'reestimated' {
  return heldoutAccuracy.reestimated > heldoutAccuracy.anchored ? 'reestimated' : 'anchored';
}

export interface BnReestimateOptions {
  /** per-channel normalisation of the raw images (torchvision ToTensor + Normalize convention) */
  mean: readonly number[];
  std: readonly number[];
  /** how many training images to sample (default 2000; all of them when the set is smaller) */
  images?: number;
  /** batch size (default 64); batch statistics are taken over whole batches only */
  batch?: number;
  /**
   * Fixes the sample: the first images - (images mod batch) entries of new Rng(seed).permutation(n),
   * in that order, cut into consecutive batches.
   */
  seed: number;
  /** engine threads for the duration of the call (the previous count is restored) */
  threads?: number;
  /**
   * The engine call per batch: 'batchNormStatsStep' (default), a train-mode forward without
   * autograd; 'trainStep', the former way, a whole training step with learning rate 0 (forward,
   * loss, backward, a zero SGD update). Same running statistics, bit for bit; the second, 2.6-2.7x
   * slower on VGG16-BN, is kept as the reference the tests and `npm run bench:bn` compare against.
   */
  via?: 'batchNormStatsStep' | 'trainStep';
}

export interface BnReestimateResult {
  /** a new model: the input's structure and weights, BN running statistics replaced */
  model: Model;
  /** images actually used: whole batches of the sample (the remainder of images / batch is dropped) */
  images: number;
  seconds: number;
  /** BatchNorm layers re-estimated */
  layers: number;
}

/**
 * Recomputes every BatchNorm's running mean and variance the way PyTorch does with momentum=None
 * (cumulative average), the usual recalibration after pruning: with every BN in training mode
 * (each normalising with its own batch statistics, so later layers see what a train-mode forward
 * shows them), running_mean = the average over batches of the batch means and running_var = the
 * average of the unbiased batch variances, on a seeded sample of `images` training images without
 * augmentation. Batches are equal-sized (the remainder of the sample is dropped), so the plain
 * average over batches is PyTorch's cumulative average and also the per-image average of the means.
 *
 * How: a copy of the model whose BNs have momentum 1 (after each train-mode forward the running
 * stats are exactly that batch's statistics) runs one engine batchNormStatsStep per batch (a
 * train-mode forward without autograd; no loss, backward or optimizer), and after each step only
 * the running stats are read back and summed here in float64. The returned model takes its weights
 * from the input, never from the engine, so they are untouched by construction; BN momenta are the
 * input's. The input model is not modified.
 */
export async function reestimateBatchNorm(
  model: Model,
  data: ImageDataset,
  opts: BnReestimateOptions,
): Promise<BnReestimateResult> {
  const t0 = performance.now();
  const want = opts.images ?? 2000;
  const batch = opts.batch ?? 64;
  if (!Number.isInteger(want) || want < 2) throw new UserError(`reestimateBatchNorm: images must be an integer >= 2, got ${want}`);
  if (!Number.isInteger(batch) || batch < 2) throw new UserError(`reestimateBatchNorm: batch must be an integer >= 2, got ${batch}`);
  if (!Number.isFinite(opts.seed)) throw new UserError(`reestimateBatchNorm: seed must be a number, got ${opts.seed}`);
  if (opts.threads !== undefined && !(Number.isInteger(opts.threads) && opts.threads >= 1))
    throw new UserError(`reestimateBatchNorm: threads must be an integer >= 1, got ${opts.threads}`);
  const via = opts.via ?? 'batchNormStatsStep';
  if (via !== 'batchNormStatsStep' && via !== 'trainStep')
    throw new UserError(`reestimateBatchNorm: via must be 'batchNormStatsStep' or 'trainStep', got ${JSON.stringify(via)}`);

  const bns = model.nodes.filter((n): n is BatchNormNode => n.op === 'BatchNorm');
  const result = cloneModel(model);
  if (bns.length === 0) return { model: result, images: 0, seconds: (performance.now() - t0) / 1000, layers: 0 };

  const available = Math.min(want, data.n);
  const B = Math.min(batch, available);
  if (B < 2) throw new UserError(`reestimateBatchNorm: ${data.name} has ${data.n} images, need at least 2`);
  const batches = Math.floor(available / B);
  const used = batches * B;
  const sample = new Rng(opts.seed).permutation(data.n).subarray(0, used);

  // each BN's running stats, which must be its own (two BNs updating one tensor have no defined result)
  const stats: string[] = [];
  const owner = new Map<string, string>();
  for (const n of bns) {
    for (const k of [n.params.runningMean!, n.params.runningVar!]) {
      const other = owner.get(k);
      if (other !== undefined)
        throw new UserError(`reestimateBatchNorm: BatchNorm nodes '${other}' and '${n.name}' share running-stat tensor '${k}'`);
      owner.set(k, n.name);
      stats.push(k);
    }
  }

  // momentum 1: running = batch statistic; reset to mean 0 / var 1 so 0 * (old inf or NaN) cannot leak in
  const tensors: Record<string, Tensor> = { ...model.tensors };
  for (const n of bns) {
    const c = n.attrs.numFeatures;
    tensors[n.params.runningMean!] = { shape: [c], data: new Float32Array(c) };
    tensors[n.params.runningVar!] = { shape: [c], data: new Float32Array(c).fill(1) };
  }
  const nodes: Node[] = model.nodes.map((n) => (n.op === 'BatchNorm' ? { ...n, attrs: { ...n.attrs, momentum: 1 } } : n));
  const work: Model = { ...model, nodes, tensors };

  const prevThreads = opts.threads !== undefined ? getThreads() : undefined;
  if (opts.threads !== undefined) setThreads(opts.threads);
  const engine = TorchModel.create(work);
  try {
    // the former way: lr 0 with no weight decay or momentum, so the SGD update is p -= 0 * grad
    if (via === 'trainStep') engine.configureOptimizer({ momentum: 0, nesterov: false, weightDecay: 0 });
    const sums = new Map(stats.map((k) => [k, new Float64Array(work.tensors[k].data.length)]));
    const shape = [B, data.channels, data.height, data.width];
    const size = data.channels * data.height * data.width;
    const bufs = [new Float32Array(B * size), new Float32Array(B * size)];
    // trainStep's loss is never used; class 0 exists for any classifier head
    const labels = new Int32Array(B);
    const step = (x: Float32Array) =>
      via === 'trainStep' ? engine.trainStep(x, shape, labels, 0) : engine.batchNormStatsStep(x, shape);
    const prepare = (k: number) => normalizeBatch(data, sample.subarray(k * B, (k + 1) * B), opts.mean, opts.std, bufs[k % 2]);
    let next = prepare(0);
    for (let k = 0; k < batches; k++) {
      const pending = step(next);
      if (k + 1 < batches) next = prepare(k + 1);
      await pending;
      const got = engine.readTensors(stats);
      for (const key of stats) {
        const s = sums.get(key)!;
        const d = got[key].data;
        for (let i = 0; i < s.length; i++) s[i] += d[i];
      }
    }
    for (const key of stats) {
      const s = sums.get(key)!;
      const avg = new Float32Array(s.length);
      for (let i = 0; i < s.length; i++) avg[i] = s[i] / batches;
      result.tensors[key] = { shape: [...model.tensors[key].shape], data: avg };
    }
  } finally {
    engine.dispose();
    if (prevThreads !== undefined) setThreads(prevThreads);
  }
  return { model: result, images: used, seconds: (performance.now() - t0) / 1000, layers: bns.length };
}

/**
 * Anchored BatchNorm statistics for a pruned model: the trained statistics, moved by what pruning
 * changed as re-estimation measures it,
 *
 *   mean_c = trainedMean_c + (reMean_c(pruned) - reMean_c(original))
 *   var_c  = trainedVar_c  *  reVar_c(pruned) / reVar_c(original)
 *
 * for every kept channel c of every BatchNorm. Why: re-estimation has its own error (on the shared
 * VGG16-BN the unpruned model loses 0.52 points, ResNet-56 1.58, when its trained statistics are
 * replaced by re-estimated ones), and the same error sits in the pruned model's re-estimate; the
 * difference of two re-estimates on the same images cancels it (a control variate), so an empty
 * plan gives back the trained statistics exactly and a BN whose inputs pruning left unchanged keeps
 * them. The variance moves by a ratio so it stays positive; a channel whose re-estimated variance
 * in the original is not positive takes the pruned model's re-estimate.
 *
 * `original` is the model the plan was applied to (its statistics are the trained ones);
 * `reOriginal` and `rePruned` are reestimateBatchNorm's results for original and
 * applyPlan(original, plan), on the same images and seed. Returns a copy of `rePruned` with its
 * statistics anchored; weights untouched.
 */
export function anchorBatchNorm(original: Model, reOriginal: Model, plan: PruningPlan, rePruned: Model): Model {
  // each BN's kept channels, from the groups the plan prunes (BNs in no pruned group keep all)
  const kept = new Map<string, number[]>();
  for (const g of checkPlan(original, plan)) {
    for (const m of g.members) {
      const node = original.nodes.find((n) => n.name === m.node);
      // a BatchNorm1d after Flatten carries `span` features per channel
      if (node?.op === 'BatchNorm' && m.slot === 'runningMean')
        kept.set(node.name, memberKeep(m, plan.keep[g.name]!).flatMap((ch) => Array.from({ length: m.span }, (_, f) => ch * m.span + f)));
    }
  }
  const out = cloneModel(rePruned);
  for (const n of original.nodes) {
    if (n.op !== 'BatchNorm') continue;
    const p = out.nodes.find((x) => x.name === n.name);
    if (p?.op !== 'BatchNorm') throw new UserError(`anchorBatchNorm: BatchNorm '${n.name}' of the original model is not a BatchNorm of the pruned one`);
    const c = n.attrs.numFeatures;
    const keep = kept.get(n.name) ?? Array.from({ length: c }, (_, i) => i);
    const stat = (m: Model, node: BatchNormNode, slot: 'runningMean' | 'runningVar') => m.tensors[node.params[slot]!]!.data;
    const [tMean, tVar] = [stat(original, n, 'runningMean'), stat(original, n, 'runningVar')];
    const ro = reOriginal.nodes.find((x) => x.name === n.name) as BatchNormNode;
    const [oMean, oVar] = [stat(reOriginal, ro, 'runningMean'), stat(reOriginal, ro, 'runningVar')];
    const [pMean, pVar] = [stat(rePruned, p, 'runningMean'), stat(rePruned, p, 'runningVar')];
    if (pMean.length !== keep.length || oMean.length !== c)
      throw new UserError(`anchorBatchNorm: BatchNorm '${n.name}' has ${pMean.length} channels in the pruned model, the plan keeps ${keep.length} of ${c}`);
    const mean = new Float32Array(keep.length);
    const variance = new Float32Array(keep.length);
    keep.forEach((src, j) => {
      mean[j] = tMean[src]! + (pMean[j]! - oMean[src]!);
      variance[j] = oVar[src]! > 0 && Number.isFinite(oVar[src]!) ? (tVar[src]! * pVar[j]!) / oVar[src]! : pVar[j]!;
    });
    out.tensors[p.params.runningMean!] = { shape: [keep.length], data: mean };
    out.tensors[p.params.runningVar!] = { shape: [keep.length], data: variance };
  }
  return out;
}
