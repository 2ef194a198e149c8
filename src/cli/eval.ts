import type { Command } from 'commander';
import { limit as limitDataset } from '../data/dataset.js';
import { checkModelInput, describeDataSpec, loadDataset } from '../data/source.js';
import { setThreads, TorchModel } from '../engine/index.js';
import { inferShapes } from '../ir/shapes.js';
import { loadOnnxFile } from '../onnx/index.js';
import { evaluate } from '../train/evaluate.js';
import { UserError } from '../util/errors.js';
import { choiceOption, floatListOption, intOption } from '../util/options.js';
import { resolveNormalization } from '../data/normalization.js';

export interface EvalOptions {
  model: string;
  /** 'cifar10', an image folder DIR, or x.npy,y.npy[,xtest.npy,ytest.npy] (src/data/source.ts) */
  data: string;
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
  const shapes = inferShapes(model);
  const source = describeDataSpec(opts.data);
  let ds = await loadDataset(opts.data, opts.split);
  if (opts.limit !== undefined) ds = limitDataset(ds, Math.min(opts.limit, ds.n));
  checkModelInput(model, ds, opts.model);
  // labels the model cannot output would silently count as errors
  const out = shapes.get(model.outputs[0]!);
  if (out && out.length === 2 && out[1]! < ds.classes)
    throw new UserError(`${opts.model}: the model outputs ${out[1]} classes, ${ds.name} has ${ds.classes}`);
  const norm = resolveNormalization(model, opts.model, opts, ds.channels);
  const engine = TorchModel.create(model);
  try {
    const r = await evaluate(engine, ds, { batch: opts.batch, mean: norm.mean, std: norm.std });
    return {
      model: opts.model,
      data: opts.data,
      dataSource: { ...source, ...('classNames' in ds ? { classNames: ds.classNames } : {}) },
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
    .option('--data <spec>', "data set: 'cifar10', an image folder DIR (DIR/train|test/<class>/*.png|jpg), or x.npy,y.npy[,xtest.npy,ytest.npy]", 'cifar10')
    .option('--split <split>', 'data split', choiceOption(['test', 'train'] as const), 'test')
    .option('--limit <n>', 'evaluate only the first n images', intOption(1))
    .option('--batch <b>', 'batch size', intOption(1, 65536), 256)
    .option('--threads <t>', 'compute threads', intOption(1, 1024), 2)
    .option('--mean <m>', "per-channel mean (comma list, with --std); overrides the model's metadata", floatListOption)
    .option('--std <s>', "per-channel std (comma list, with --mean); overrides the model's metadata", floatListOption)
    .action(async (opts: EvalOptions) => {
      const result = await runEval(opts);
      process.stdout.write(`${JSON.stringify(result)}\n`);
    });
}
