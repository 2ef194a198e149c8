// npm run bench:engine — VGG16-BN images/s through the libtorch engine (inference and training
// steps), in the same run the same engine with every fast path off, i.e. libtorch's own ops
// throughout (the baseline: "libtorch alone"), and onnxruntime-node's inference on the same model,
// as figures and ratios.
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

const reps = Number(process.env.REPS ?? 3);

/** images/s of `iters` calls after one warm-up, `reps` times: this machine's speed drifts by 10-30%
 * between runs, so the best and the median are both reported. */
async function rate(f: (i: number) => Promise<unknown>): Promise<{ best: number; median: number }> {
  await f(-1); // warm-up: first call allocates and picks kernels
  const rates: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    for (let i = 0; i < iters; i++) await f(i);
    rates.push((iters * batch) / ((performance.now() - t0) / 1000));
  }
  rates.sort((a, b) => a - b);
  return { best: +rates[rates.length - 1]!.toFixed(1), median: +rates[Math.floor(rates.length / 2)]!.toFixed(1) };
}

async function main(): Promise<void> {
  if (!existsSync(modelPath)) throw new Error(`bench: model not found: ${modelPath} (set CMIPRUNE_BENCH_MODEL)`);
  setThreads(threads);
  const model = await loadOnnxFile(modelPath);
  const shape = [batch, 3, 32, 32];
  const xs = [randomBatch(1), randomBatch(2)];
  const labels = new Int32Array(batch).map((_, i) => i % 10);
  const x = (i: number) => xs[Math.abs(i) % 2]!;

  // the default engine, and as baseline the same engine with libtorch's own ops throughout
  const measured: Record<string, { inference: { best: number; median: number }; training: { best: number; median: number } }> = {};
  for (const [name, fast] of [['engine', true], ['libtorchOps', false]] as const) {
    const engine = TorchModel.create(model, fast ? {} : { fastPaths: false });
    const inference = await rate((i) => engine.forward(x(i), shape));
    engine.configureOptimizer({ momentum: 0.9, nesterov: true, weightDecay: 5e-4 });
    const training = await rate((i) => engine.trainStep(x(i), shape, labels, 1e-3));
    engine.dispose();
    measured[name] = { inference, training };
  }

  const session = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: threads, interOpNumThreads: 1 });
  const ortInfer = await rate((i) => session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', x(i), shape) }));

  const e = measured.engine!, d = measured.libtorchOps!;
  const ratio = (a: number, b: number) => +(a / b).toFixed(3);
  const result = {
    model: modelPath,
    batch,
    threads,
    iterations: iters,
    repetitions: reps,
    imagesPerSec: {
      engine: e,
      libtorchOps: d,
      onnxruntime: { inference: ortInfer },
    },
    ratios: {
      engineInferenceOverOnnxruntime: ratio(e.inference.median, ortInfer.median),
      engineInferenceOverLibtorchOps: ratio(e.inference.median, d.inference.median),
      engineTrainingOverLibtorchOps: ratio(e.training.median, d.training.median),
    },
    targets: { inferenceImagesPerSec: 250, trainingImagesPerSec: 80 },
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

await main();
