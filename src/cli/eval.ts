import type { Command } from 'commander';
import { loadCifar10 } from '../data/cifar10.js';
import { limit as limitDataset } from '../data/dataset.js';
import { setThreads, TorchModel } from '../engine/index.js';
import { inferShapes } from '../ir/shapes.js';
import { loadOnnxFile } from '../onnx/index.js';
import { evaluate } from '../train/evaluate.js';
import { UserError } from '../util/errors.js';
import { choiceOption, floatListOption, intOption } from './options.js';
import { resolveNormalization } from '../data/normalization.js';

export interface EvalOptions {
  model: string;
  data: 'cifar10';
  split: 'test' | 'train';
  limit?: number;
  batch: number;
  threads: number;
  mean?: number[];
  std?: number[];
}

export async function runEval(opts: EvalOptions): Promise<Record<string, unknown>> {
  setThreads(opts.threads);
  const model = await loadOnnxFile(opts.model);
  inferShapes(model);
  let ds = await loadCifar10(opts.split);
  if (opts.limit !== undefined) ds = limitDataset(ds, Math.min(opts.limit, ds.n));
  const input = model.inputs[0];
  if (!input || input.shape.length !== 4 || input.shape[1] !== ds.channels || input.shape[2] !== ds.height || input.shape[3] !== ds.width) {
    throw new UserError(
      `${opts.model}: input '${input?.name}' has shape [${input?.shape}], ${ds.name} images are [N,${ds.channels},${ds.height},${ds.width}]`,
    );
  }
  const norm = resolveNormalization(model, opts.model, opts, ds.channels);
  const engine = TorchModel.create(model);
  try {
    const r = await evaluate(engine, ds, { batch: opts.batch, mean: norm.mean, std: norm.std });
    return {
      model: opts.model,
      data: opts.data,
      split: opts.split,
      accuracy: r.accuracy,
      correct: r.correct,
      images: r.images,
      seconds: r.seconds,
      imagesPerSecond: r.images / r.seconds,
      batch: opts.batch,
      threads: opts.threads,
      normalization: norm,
    };
  } finally {
    engine.dispose();
  }
}

export function registerEval(program: Command): void {
  program
    .command('eval')
    .description('Top-1 accuracy of an ONNX model on a data set, computed by the libtorch engine')
    .requiredOption('--model <file>', 'ONNX model file')
    .option('--data <name>', 'data set', choiceOption(['cifar10'] as const), 'cifar10')
    .option('--split <split>', 'data split', choiceOption(['test', 'train'] as const), 'test')
    .option('--limit <n>', 'evaluate only the first n images', intOption(1))
    .option('--batch <b>', 'batch size', intOption(1, 65536), 256)
    .option('--threads <t>', 'compute threads', intOption(1, 1024), 2)
    .option('--mean <m>', 'per-channel mean (comma list) when the model has no metadata', floatListOption)
    .option('--std <s>', 'per-channel std (comma list) when the model has no metadata', floatListOption)
    .action(async (opts: EvalOptions) => {
      const result = await runEval(opts);
      process.stdout.write(`${JSON.stringify(result)}\n`);
    });
}
