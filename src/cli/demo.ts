// `cmiprune demo` (npm start): train a small CNN on CIFAR-10, prune it, show before/after.
import type { Command } from 'commander';
import { runDemo } from '../demo/demo.js';
import { intOption } from '../util/options.js';

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('Train a small VGG-style CNN on CIFAR-10 for a few minutes, prune it by CMI, fine-tune, export ONNX + TF.js, write report.json/report.html and print a before/after table')
    .option('--out <dir>', 'output directory', './cmiprune-demo')
    .option('--epochs <e>', 'training epochs of the small CNN', intOption(1, 1000), 4)
    .option('--finetune-epochs <e>', 'fine-tuning epochs after pruning', intOption(0, 1000), 1)
    .option('--seed <s>', 'seed of every random choice', intOption(0), 0)
    .option('--threads <t>', 'compute threads', intOption(1, 1024), 2)
    .option('--fresh', 'ignore checkpoints (training epochs, rankings)')
    .option('--json', 'print the summary as one JSON line instead of the table')
    .action(async (o: { out: string; epochs: number; finetuneEpochs: number; seed: number; threads: number; fresh?: boolean; json?: boolean }) => {
      const s = await runDemo({ out: o.out, epochs: o.epochs, finetuneEpochs: o.finetuneEpochs, seed: o.seed, threads: o.threads, fresh: o.fresh });
      if (o.json) process.stdout.write(`${JSON.stringify(s)}\n`);
      else process.stdout.write(`${s.table}\n\nfiles in ${s.out}: ${Object.values(s.files).map((f) => f.split('/').pop()).join(', ')}\n`);
    });
}
