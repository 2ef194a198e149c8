// `cmiprune prune`: rank, cut, operate, recover, export and verify in one run (src/pipeline/prune.ts).
import type { Command } from 'commander';
import { CRITERIA, PRUNE_DEFAULTS, prune, type PruneOptions } from '../pipeline/prune.js';
import { BN_STATS } from '../recover/bn.js';
import { CUTOFF_FORMS, parseCutoff } from '../prune/cutoff-spec.js';
import { sweep, type SweepOptions } from '../pipeline/sweep.js';
import { choiceOption, floatListOption, floatOption, intOption } from '../util/options.js';
import { InvalidArgumentError } from 'commander';

function cutoffOption(v: string): string {
  try {
    parseCutoff(v);
  } catch (e) {
    // commander already names the option and the value: keep only what is wrong with it
    throw new InvalidArgumentError((e as Error).message.replace(/^--cutoff '[^']*':? */, '').replace(/^is not one of/, 'expected one of'));
  }
  return v;
}

/** The options every pruning run shares (prune, sweep): test subset, seed, threads, normalisation. */
function runOptions(cmd: Command): Command {
  return cmd
    .option('--test-limit <n>', 'evaluate on the first n test images only', intOption(1))
    .option('--seed <s>', 'seed of every random choice', intOption(0), PRUNE_DEFAULTS.seed)
    .option('--threads <t>', 'compute threads', intOption(1, 1024), PRUNE_DEFAULTS.threads)
    .option('--mean <m>', 'per-channel mean (comma list); overrides the model\'s metadata', floatListOption)
    .option('--std <s>', 'per-channel std (comma list); overrides the model\'s metadata', floatListOption);
}

export function registerPrune(program: Command): void {
  runOptions(program.command('prune'))
    .description('Prune whole conv filters: criterion -> cut-off -> surgery -> BN re-estimation -> fine-tuning -> verified ONNX + report.json')
    .requiredOption('--model <file>', 'ONNX model file')
    .requiredOption('--out <dir>', 'output directory (pruned.onnx, pruned_tfjs/, report.json, report.html)')
    .option('--data <spec>', 'cifar10, an image folder (DIR/train/<class>/*.png|jpg, DIR/test/...) or x.npy,y.npy,xtest.npy,ytest.npy', PRUNE_DEFAULTS.data)
    .option('--criterion <name>', `filter ranking: ${CRITERIA.join(', ')}`, choiceOption(CRITERIA), PRUNE_DEFAULTS.criterion)
    .option('--cutoff <rule>', `how many filters to keep: ${CUTOFF_FORMS}`, cutoffOption, PRUNE_DEFAULTS.cutoff)
    // no commander default: the default depends on the criterion and --residual (resolveFormulation)
    .option(
      '--formulation <f>',
      `CMI across layers: per-layer, compact (conditioned on the previous pruned layer's kept maps), full (on all earlier pruned layers) (default: ${PRUNE_DEFAULTS.formulation} for cmi; per-layer for the other criteria and with --residual all)`,
      choiceOption(['per-layer', 'compact', 'full'] as const),
    )
    .option('--order <o>', 'with compact/full: forward, or bidirectional (from the most pruned layer outward, two concurrent chains)', choiceOption(['forward', 'bidirectional'] as const), PRUNE_DEFAULTS.order)
    .option(
      '--residual <mode>',
      'residual networks: inner = prune only convs whose channels do not reach an Add (each block\'s first conv); all = also prune each residual stream (its convs, BNs, Adds and shortcut Pads) as one coupled group',
      choiceOption(['inner', 'all'] as const),
      PRUNE_DEFAULTS.residual,
    )
    .option('--allocation <rule>', 'global budgets across layers: sensitivity (held-out accuracy), uniform, curve', choiceOption(['sensitivity', 'uniform', 'curve'] as const), PRUNE_DEFAULTS.allocation)
    .option('--alpha <a>', 'CMI: Renyi order (2: exact fast path; 1.01: the reference)', floatOption(0, true), PRUNE_DEFAULTS.alpha)
    .option('--sigma <rule>', 'CMI: kernel width of the maps: median (scale-aware), mean (scale-aware, a set\'s kernel from its filters\' mean distance: does not saturate) or reference', choiceOption(['median', 'mean', 'reference'] as const), PRUNE_DEFAULTS.sigma)
    .option('--samples <n>', 'CMI: class-balanced training images the criterion reads', intOption(10), PRUNE_DEFAULTS.samples)
    .option('--permutations <p>', 'ptest: permutations per selection', intOption(1), PRUNE_DEFAULTS.permutations)
    .option('--eta <p>', 'ptest: significance level', floatOption(0, true), PRUNE_DEFAULTS.eta)
    .option('--min-keep <k>', 'channels every layer keeps at least', intOption(1), PRUNE_DEFAULTS.minKeep)
    .option('--round-to <k>', 'keep a multiple of k channels per layer, rounded up (aligned widths run faster in some kernels)', intOption(1, 4096), PRUNE_DEFAULTS.roundTo)
    .option('--heldout <n>', 'held-out training images for the tool\'s own choices', intOption(10), PRUNE_DEFAULTS.heldout)
    .option('--tolerance <t>', 'scree/xmeans: held-out accuracy a candidate may lose (layer alone), a fraction: 0.005 = 0.5 points', floatOption(0), PRUNE_DEFAULTS.tolerance)
    .option('--bn-images <n>', 'BatchNorm re-estimation images (0: off)', intOption(0), PRUNE_DEFAULTS.bnImages)
    .option('--no-bn-reestimate', 'skip BatchNorm re-estimation')
    .option('--bn-stats <how>', 'auto: whichever of the next two is more accurate on the held-out images; anchored: the trained statistics moved by the difference of two re-estimates (the unpruned model\'s and the pruned one\'s, same images); reestimated: the pruned model\'s re-estimate alone', choiceOption(BN_STATS), PRUNE_DEFAULTS.bnStats)
    .option('--finetune-epochs <e>', 'fine-tuning epochs (SGD, cosine, crop+flip)', intOption(0), PRUNE_DEFAULTS.finetuneEpochs)
    .option('--lr <lr>', 'fine-tuning learning rate', floatOption(0, true), PRUNE_DEFAULTS.lr)
    .option('--batch <b>', 'fine-tuning batch size', intOption(2, 65536), PRUNE_DEFAULTS.batch)
    .option('--distill <T>', 'distil from the unpruned model at temperature T', floatOption(0, true))
    .option('--distill-weight <w>', 'weight of the soft targets', floatOption(0), PRUNE_DEFAULTS.distillWeight)
    .option('--checkpoint <dir>', 'checkpoint directory (default: under the cache, keyed by the inputs)')
    .option('--fresh', 'ignore checkpoints')
    .action(async (opts: PruneOptions & { bnReestimate: boolean; minKeep: number; checkpoint?: string }) => {
      const { bnReestimate, checkpoint, ...rest } = opts;
      const summary = await prune({ ...rest, bnImages: bnReestimate === false ? 0 : rest.bnImages, checkpointDir: checkpoint });
      process.stdout.write(`${JSON.stringify(summary)}\n`);
    });
}

export function registerSweep(program: Command): void {
  runOptions(program.command('sweep'))
    .description('Accuracy against budget for one or several criteria (no fine-tuning; after surgery and after BN re-estimation), one ranking per criterion; --per-layer: each layer pruned alone at each fraction')
    .requiredOption('--model <file>', 'ONNX model file')
    .requiredOption('--out <dir>', 'output directory (sweep.json, sweep.html)')
    .option('--data <spec>', 'cifar10, an image folder or x.npy,y.npy,xtest.npy,ytest.npy', PRUNE_DEFAULTS.data)
    .option('--criteria <list>', `comma list of: ${CRITERIA.join(', ')}`, (v: string) => v.split(',').map((s) => s.trim()), ['cmi', 'l1'])
    .option('--budgets <list>', 'comma list of budgets: keep:F, filters:F, params:F, flops:F', (v: string) => v.split(',').map((s) => s.trim()), ['filters:0.1', 'filters:0.2', 'filters:0.3', 'filters:0.4', 'filters:0.5', 'filters:0.6', 'filters:0.7'])
    .option('--allocation <rule>', 'global budgets across layers: uniform (isolates the criterion) or curve', choiceOption(['uniform', 'curve'] as const), 'uniform')
    .option('--per-layer', 'also prune each layer alone at each fraction (sensitivity analysis)')
    .option('--residual <mode>', 'residual networks: inner (each block\'s first conv) or all (residual streams as coupled groups too)', choiceOption(['inner', 'all'] as const), PRUNE_DEFAULTS.residual)
    .option('--alpha <a>', 'CMI: Renyi order', floatOption(0, true), PRUNE_DEFAULTS.alpha)
    .option('--sigma <rule>', 'CMI: kernel width of the maps: median, mean or reference', choiceOption(['median', 'mean', 'reference'] as const), PRUNE_DEFAULTS.sigma)
    .option('--samples <n>', 'CMI: class-balanced training images', intOption(10), PRUNE_DEFAULTS.samples)
    .option('--bn-images <n>', 'BatchNorm re-estimation images (0: off)', intOption(0), PRUNE_DEFAULTS.bnImages)
    .option('--bn-stats <how>', 'auto (the more accurate of the two on held-out training images), anchored (trained statistics moved by the difference of two re-estimates) or reestimated (the pruned model\'s re-estimate alone)', choiceOption(BN_STATS), PRUNE_DEFAULTS.bnStats)
    .option('--fresh', 'ignore ranking checkpoints')
    .action(async (opts: SweepOptions) => {
      const s = await sweep(opts);
      process.stdout.write(`${JSON.stringify(s)}\n`);
    });
}
