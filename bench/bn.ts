// npm run bench:bn — BatchNorm re-estimation on the shared VGG16-BN (2000 CIFAR-10 training images,
// batch 64: 31 batches, 1,984 images; seed 0; 2 threads): reestimateBatchNorm through the engine's
// batchNormStatsStep (a train-mode forward without autograd) against, in the same run, the former
// way (an lr-0 trainStep per batch: forward, loss, backward, zero SGD update), alternating
// new/old REPS times (default 2) after a short warm-up; wall seconds of each whole call (engine
// creation and running-stat read-back included), the ratio, and whether the two agree bit for bit.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadCifar10 } from '../src/data/cifar10.js';
import { resolveNormalization } from '../src/data/normalization.js';
import { setThreads } from '../src/engine/index.js';
import type { Model } from '../src/ir/model.js';
import { loadOnnxFile } from '../src/onnx/index.js';
import { type BnReestimateOptions, reestimateBatchNorm } from '../src/recover/bn.js';

const repoRoot = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const modelPath = process.env.CMIPRUNE_BENCH_MODEL ?? resolve(repoRoot, '../shared/models/vgg16_bn_cifar10.onnx');
const images = Number(process.env.IMAGES ?? 2000);
const threads = Number(process.env.THREADS ?? 2);
const reps = Number(process.env.REPS ?? 2);

async function main(): Promise<void> {
  if (!existsSync(modelPath)) throw new Error(`bench: model not found: ${modelPath} (set CMIPRUNE_BENCH_MODEL)`);
  setThreads(threads);
  const model: Model = await loadOnnxFile(modelPath);
  const train = await loadCifar10('train');
  const norm = resolveNormalization(model, modelPath, {}, 3);
  const base: BnReestimateOptions = { mean: norm.mean, std: norm.std, images, batch: 64, seed: 0, threads };
  const ways = ['batchNormStatsStep', 'trainStep'] as const;

  // warm-up: first calls allocate and pick kernels
  for (const via of ways) await reestimateBatchNorm(model, train, { ...base, images: 128, via });

  const seconds: Record<(typeof ways)[number], number[]> = { batchNormStatsStep: [], trainStep: [] };
  const firsts: Partial<Record<(typeof ways)[number], Model>> = {};
  let used = 0;
  let layers = 0;
  for (let r = 0; r < reps; r++) {
    for (const via of ways) {
      const t0 = performance.now();
      const res = await reestimateBatchNorm(model, train, { ...base, via });
      seconds[via].push(+((performance.now() - t0) / 1000).toFixed(2));
      firsts[via] ??= res.model;
      used = res.images;
      layers = res.layers;
    }
  }

  // the two ways' running statistics, value by value
  let values = 0;
  let differing = 0;
  let worst = 0;
  for (const n of firsts.batchNormStatsStep!.nodes) {
    if (n.op !== 'BatchNorm') continue;
    for (const k of [n.params.runningMean!, n.params.runningVar!]) {
      const a = firsts.batchNormStatsStep!.tensors[k].data;
      const b = firsts.trainStep!.tensors[k].data;
      for (let i = 0; i < a.length; i++) {
        values++;
        if (Object.is(a[i], b[i])) continue;
        differing++;
        worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(1e-30, Math.abs(b[i])));
      }
    }
  }

  const median = (v: number[]) => {
    const s = [...v].sort((a, b) => a - b);
    return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  };
  const ratio = (a: number, b: number) => +(a / b).toFixed(2);
  const result = {
    bench: 'BN re-estimation: batchNormStatsStep vs lr-0 trainStep',
    model: modelPath,
    images: used,
    batch: 64,
    layers,
    threads,
    repetitions: reps,
    seconds,
    medianSeconds: { batchNormStatsStep: median(seconds.batchNormStatsStep), trainStep: median(seconds.trainStep) },
    ratios: {
      trainStepOverBatchNormStatsStepMedian: ratio(median(seconds.trainStep), median(seconds.batchNormStatsStep)),
      trainStepOverBatchNormStatsStepBest: ratio(Math.min(...seconds.trainStep), Math.min(...seconds.batchNormStatsStep)),
    },
    runningStats: { values, differing, maxRelativeDifference: worst },
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

await main();
