// `cmiprune demo`: the whole job on a fresh machine with nothing but CIFAR-10 in the cache: train a
// small VGG-style CNN for a few epochs (seeded, checkpointed per epoch), export it, prune it by
// CMI with an automatic cut-off, re-estimate BN, fine-tune briefly, export ONNX + TF.js, write
// report.json / report.html, and print a before/after table taken from report.json.
import { createHash } from 'node:crypto';
import { copyFile, readFile, rename, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { CIFAR10_MEAN, CIFAR10_STD, loadCifar10 } from '../data/cifar10.js';
import { engineKeyTag, setThreads } from '../engine/index.js';
import { SequentialBuilder } from '../ir/builder.js';
import type { Model } from '../ir/model.js';
import { exportOnnx } from '../onnx/export.js';
import { finetune } from '../recover/finetune.js';
import { checkOutDir, prune, PRUNE_DEFAULTS, type PruneOptions } from '../pipeline/prune.js';
import { cacheDir, writeFileAtomic } from '../util/fs.js';
import { Rng } from '../util/rng.js';

export const DEMO_VERSION = 'demo/1';

export interface DemoOptions {
  out: string;
  /** training epochs of the small CNN (default 4) */
  epochs?: number;
  /** fine-tuning epochs after pruning (default 1) */
  finetuneEpochs?: number;
  seed?: number;
  threads?: number;
  /** ignore checkpoints */
  fresh?: boolean;
  /** passed through to prune (tests shorten the run) */
  prune?: Partial<PruneOptions>;
  /** training images (default all 50,000; tests use fewer) */
  trainLimit?: number;
}

/** A small VGG-style CNN for 32x32 inputs: 3 stages of two 3x3 conv+BN+ReLU, max pool, linear. */
export function demoModel(seed: number): Model {
  const rng = new Rng(seed);
  const b = new SequentialBuilder('cmiprune-demo-vgg', [3, 32, 32], { random: () => rng.next() });
  for (const c of [32, 64, 128]) {
    b.conv(c, 3, { padding: 1, bias: false, init: 'he-uniform' }).bn().relu();
    b.conv(c, 3, { padding: 1, bias: false, init: 'he-uniform' }).bn().relu().maxpool(2);
  }
  const m = b.flatten().linear(10).build();
  m.metadata = { mean: JSON.stringify(CIFAR10_MEAN), std: JSON.stringify(CIFAR10_STD) };
  return m;
}

export interface DemoSummary {
  out: string;
  files: Record<string, string>;
  table: string;
  trainedAccuracy: number | null;
  seconds: number;
}

const pct = (x: number | null | undefined) => (x === null || x === undefined ? '-' : `${(100 * x).toFixed(2)}%`);
const int = (x: number) => x.toLocaleString('en-US');

/** The before/after table, every number read from report.json. */
export function demoTable(report: {
  accuracy: { before: number | null; afterSurgery: number | null; afterBnReestimation: number | null; afterFinetune: number | null };
  cost: { before: { filters: number; params: number; macs: number }; after: { filters: number; params: number; macs: number } };
  latency: { before: { batch: number; msPerImage: number }[]; after: { batch: number; msPerImage: number }[] };
}): string {
  const a = report.accuracy;
  const final = a.afterFinetune ?? a.afterBnReestimation ?? a.afterSurgery;
  const rows: [string, string, string][] = [
    ['test accuracy', pct(a.before), pct(final)],
    ['filters', int(report.cost.before.filters), int(report.cost.after.filters)],
    ['parameters', int(report.cost.before.params), int(report.cost.after.params)],
    ['multiply-adds / image', int(report.cost.before.macs), int(report.cost.after.macs)],
    ...report.latency.before.map((l, i): [string, string, string] => [
      `ONNX Runtime ms / image (batch ${l.batch})`,
      l.msPerImage.toFixed(3),
      report.latency.after[i]!.msPerImage.toFixed(3),
    ]),
  ];
  const w0 = Math.max(...rows.map((r) => r[0].length), 6);
  const w1 = Math.max(...rows.map((r) => r[1].length), 6);
  const w2 = Math.max(...rows.map((r) => r[2].length), 6);
  const line = (r: [string, string, string]) => `${r[0].padEnd(w0)}  ${r[1].padStart(w1)}  ${r[2].padStart(w2)}`;
  return [line(['', 'before', 'after']), ...rows.map(line), '', `accuracy by stage: after surgery ${pct(a.afterSurgery)}, after BN re-estimation ${pct(a.afterBnReestimation)}, after fine-tuning ${pct(a.afterFinetune)}`].join('\n');
}

export async function runDemo(opts: DemoOptions): Promise<DemoSummary> {
  const t0 = performance.now();
  const seed = opts.seed ?? 0;
  const epochs = opts.epochs ?? 4;
  const threads = opts.threads ?? 2;
  await checkOutDir(opts.out);
  setThreads(threads);
  const key = createHash('sha256').update(JSON.stringify([DEMO_VERSION, seed, epochs, opts.trainLimit ?? null, ...engineKeyTag()])).digest('hex').slice(0, 16);
  const ckpt = join(cacheDir(), 'demo', key);
  // --fresh: train from scratch (the training epochs' checkpoints go; prune drops its own)
  if (opts.fresh) await rm(ckpt, { recursive: true, force: true });

  // 1. train the small CNN (resumes per epoch after a kill)
  let train = await loadCifar10('train');
  if (opts.trainLimit !== undefined) train = { ...train, n: opts.trainLimit, images: train.images.subarray(0, opts.trainLimit * 3072), labels: train.labels.subarray(0, opts.trainLimit), name: `${train.name}[:${opts.trainLimit}]` };
  const trained = await finetune(demoModel(seed), train, {
    epochs,
    batch: 128,
    lr: 0.1,
    schedule: 'onecycle',
    momentum: 0.9,
    nesterov: true,
    weightDecay: 5e-4,
    seed,
    mean: CIFAR10_MEAN,
    std: CIFAR10_STD,
    threads,
    checkpointDir: join(ckpt, 'train'),
    checkpointKey: key,
    label: 'demo: train',
  });
  const modelPath = join(ckpt, 'model.onnx');
  await writeFileAtomic(modelPath, exportOnnx(trained.model));

  // 2. prune it: CMI ranking, automatic cut-off, BN re-estimation, fine-tuning, verified export
  const summary = await prune({
    model: modelPath,
    data: 'cifar10',
    // prune's own defaults (criterion, cut-off, formulation, order, BN statistics): the demo shows the tool as it ships
    criterion: PRUNE_DEFAULTS.criterion,
    cutoff: PRUNE_DEFAULTS.cutoff,
    finetuneEpochs: opts.finetuneEpochs ?? 1,
    seed,
    threads,
    fresh: opts.fresh,
    ...opts.prune,
    out: opts.out,
  });
  // the unpruned model beside the pruned one, for comparison
  const unpruned = join(opts.out, 'unpruned.onnx');
  await copyFile(modelPath, `${unpruned}.tmp`);
  await rename(`${unpruned}.tmp`, unpruned);
  const report = JSON.parse(await readFile(summary.files.report!, 'utf8'));
  const table = demoTable(report);
  return {
    out: resolve(opts.out),
    files: { ...summary.files, unpruned },
    table,
    trainedAccuracy: report.accuracy.before,
    seconds: (performance.now() - t0) / 1000,
  };
}
