#!/usr/bin/env node
// npm run experiment:vgg16 -- [--model M] [--step STEP] [--time-budget MINUTES] ...
//
// The VGG16 experiment of the issue: its defaults, targets and published anchors. The steps
// (rankings, sweep-uniform, sweep-global, sweep-sensitivity, variants, recovered, report), the result store and
// --time-budget are src/experiment/runner.ts's, shared with experiment:resnet56.
import {
  type ExperimentConfig,
  type ExperimentOptions,
  type ExperimentSummary,
  DEFAULT_BUDGETS,
  runExperiment as run,
  experimentMain,
  runIfMain,
  sharedModel,
  STEPS,
} from '../src/experiment/runner.js';
import { type PublishedAnchor, targetAhead, targetFilters, targetRecovered } from '../src/experiment/results.js';

export { DEFAULT_BUDGETS, STEPS, VARIANTS, variantName, type ExperimentOptions, type ExperimentSummary, type Step } from '../src/experiment/runner.js';

export const DEFAULT_MODEL = sharedModel('vgg16_bn_cifar10.onnx').path;
/**
 * the published anchors' reductions, both at once as their one model has them: CHIP / HRankPlus
 * remove 81.6% of the parameters and 58.1% of the multiply-adds (which part binds depends on the
 * allocation: one pruned model per configuration, where the issue's target counts both)
 */
export const DEFAULT_RECOVER_BUDGETS = ['params:0.816+flops:0.581'];

/** The papers' VGG16 numbers (not measured here), as restated in ../shared/SPEC.md and the issue. */
export const PUBLISHED_ANCHORS: readonly PublishedAnchor[] = [
  { method: 'CMI (the method’s claim)', source: 'Vu-Van et al., arXiv 2411.18578', before: null, after: null, drop: 0.32, filters: 'over a third', params: '–', macs: '–', finetune: '–' },
  { method: 'CHIP', source: 'Sui et al., NeurIPS 2021', before: 93.96, after: 93.86, params: '81.6%', macs: '58.1%', finetune: '200 epochs' },
  { method: 'HRankPlus', source: 'Lin et al.', before: 93.96, after: 93.73, params: '81.6%', macs: '58.1%', finetune: '–' },
  { method: 'HRank', source: 'Lin et al., CVPR 2020', before: 93.96, after: 93.43, params: '82.9%', macs: '53.5%', finetune: '–' },
  { method: 'L1-norm', source: 'Li et al., ICLR 2017', before: 93.25, after: 93.4, params: '64%', macs: 'about 34%', finetune: '–' },
];

export const VGG16: ExperimentConfig = {
  id: 'vgg16',
  description: 'The VGG16 pruning experiment: criterion sweeps, the method\u2019s variants, recovery; RESULTS.md from the stored points',
  defaultModel: sharedModel('vgg16_bn_cifar10.onnx'),
  steps: STEPS,
  defaultBudgets: DEFAULT_BUDGETS,
  defaultRecoverBudgets: DEFAULT_RECOVER_BUDGETS,
  report: {
    title: 'VGG16-BN on CIFAR-10',
    // the three: ≥ 40% of the filters at ≤ 0.32 points without fine-tuning; ≥ 58% MACs and
    // ≥ 80% parameters at ≤ 0.30 points with ≤ 3 epochs; CMI ahead of the others at 30-60%
    targets: (d) => [targetFilters(d.base, d.cmiNoFinetune, 0.4, 0.32, d.cmiFinetuned, d.baseBn), targetRecovered(d.base, d.cmiFinetuned, 0.58, 0.8, 0.3, 3, { distance: true }), targetAhead(d.records, d.budgets, d.sweeps)],
    anchors: PUBLISHED_ANCHORS,
    variants: true,
    svgDir: 'results/vgg16',
    // this experiment's points set `cmiprune prune`'s method defaults
    defaults: true,
  },
};

export const runExperiment = (opts: ExperimentOptions = {}): Promise<ExperimentSummary> => run(VGG16, opts);
export const main = (argv = process.argv): Promise<void> => experimentMain(VGG16, argv);

await runIfMain(VGG16, import.meta.url);
