// npm run bench:engine — VGG16-BN images/s through the libtorch engine (inference and training
// steps) and, in the same run, onnxruntime-node's inference on the same model, as figures and ratios.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import { setThreads, TorchModel } from '../src/engine/index.js';
import { loadOnnxFile } from '../src/onnx/index.js';
import { Rng } from '../src/util/rng.js';

// dist/bench -> repo root -> ../shared beside the checkout
const repoRoot = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const modelPath = process.env.CMIPRUNE_BENCH_MODEL ?? resolve(repoRoot, '../shared/models/vgg16_bn_cifar10.onnx');
const batch = Number(process.env.BATCH ?? 64);
const threads = Number(process.env.THREADS ?? 2);
const iters = Number(process.env.ITERS ?? 10);

function randomBatch(seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: batch * 3 * 32 * 32 }, () => rng.uniform(-2, 2));
}

async function timeIt(n: number, f: (i: number) => Promise<unknown>): Promise<number> {
  await f(-1); // warm-up: first call allocates and picks kernels
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await f(i);
  return (performance.now() - t0) / 1000;
}

async function main(): Promise<void> {
  if (!existsSync(modelPath)) throw new Error(`bench: model not found: ${modelPath} (set CMIPRUNE_BENCH_MODEL)`);
  setThreads(threads);
  const model = await loadOnnxFile(modelPath);
  const shape = [batch, 3, 32, 32];
  const xs = [randomBatch(1), randomBatch(2)];
  const labels = new Int32Array(batch).map((_, i) => i % 10);

  const engine = TorchModel.create(model);
  const inferSec = await timeIt(iters, (i) => engine.forward(xs[Math.abs(i) % 2]!, shape));
  engine.configureOptimizer({ momentum: 0.9, nesterov: true, weightDecay: 5e-4 });
  const trainSec = await timeIt(iters, (i) => engine.trainStep(xs[Math.abs(i) % 2]!, shape, labels, 1e-3));
  engine.dispose();

  const session = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: threads, interOpNumThreads: 1 });
  const ortSec = await timeIt(iters, (i) =>
    session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', xs[Math.abs(i) % 2]!, shape) }),
  );

  const images = iters * batch;
  const engineInfer = images / inferSec;
  const engineTrain = images / trainSec;
  const ortInfer = images / ortSec;
  const result = {
    model: modelPath,
    batch,
    threads,
    iterations: iters,
    engine: { inferenceImagesPerSec: +engineInfer.toFixed(1), trainingImagesPerSec: +engineTrain.toFixed(1) },
    onnxruntime: { inferenceImagesPerSec: +ortInfer.toFixed(1) },
    ratios: {
      engineInferenceOverOnnxruntime: +(engineInfer / ortInfer).toFixed(3),
      engineTrainingOverEngineInference: +(engineTrain / engineInfer).toFixed(3),
    },
    targets: { inferenceImagesPerSec: 250, trainingImagesPerSec: 80 },
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

await main();
