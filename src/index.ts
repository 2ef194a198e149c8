// The library's front door (package.json "main"): the stages of the data flow, in order.
// data -> activations -> cmi -> prune -> recover -> export / report, and the pipeline that runs them
// end to end. The CLI (src/cli) is a thin layer over these.
export type { Model, Node, Tensor, OpType } from './ir/model.js';
export { cloneModel } from './ir/model.js';
export { inferShapes, modelCost } from './ir/shapes.js';
export { SequentialBuilder, vgg16bn } from './ir/builder.js';
export { importOnnx, loadOnnxFile, exportOnnx, saveOnnxFile } from './onnx/index.js';

export { loadCifar10, CIFAR10_CLASSES } from './data/cifar10.js';
export { type ImageDataset, classBalancedSample, subset, limit, normalizeBatch } from './data/dataset.js';
export { loadDataset, describeDataSpec, type DataSplit } from './data/source.js';
export { loadImageFolder } from './data/folder.js';
export { readNpy, writeNpy } from './data/npy.js';

export { TorchModel, setThreads, engineInfo, ENGINE_SWITCHES, FAST_PATHS, type CreateOptions } from './engine/index.js';

export { collectActivations, type LayerActivations } from './activations/collect.js';
export { evaluate } from './train/evaluate.js';
export { train } from './train/train.js';

export { rankLayer, RANK_ALGORITHM_VERSION } from './cmi/rank.js';
export { rankModel } from './cmi/rank-model.js';
export { rankChains, type Formulation, type PruneOrder } from './cmi/rank-chains.js';

export type { ChannelGroup, PruningPlan, Criterion, GroupRanking, CutoffDecision, Calibration } from './prune/types.js';
export { channelGroups, keptChannels, OP_RULES, type ResidualMode } from './prune/groups.js';
export { applyPlan, maskPlan, foldingNotes } from './prune/surgery.js';
export { costModel } from './prune/cost.js';
export { l1Criterion, randomCriterion } from './prune/criteria.js';
export { hrankCriterion, chipCriterion } from './prune/activation-criteria.js';
export { cmiCriterion } from './prune/cmi-criterion.js';
export { CRITERIA, CRITERION_TRAITS, type CriterionName, makeCriterion } from './prune/registry.js';
export { screeCutoff, xmeansCutoff, ptestCutoff, fractionCutoff } from './prune/cutoffs.js';
export { parseCutoff, cutoffName, type CutoffSpec } from './prune/cutoff-spec.js';
export { allocateUniform, allocateByCurve, allocateBySensitivity } from './prune/allocate.js';
export { prune, PRUNE_DEFAULTS, resolveFormulation, type PruneOptions, type PruneSummary } from './pipeline/prune.js';
export { sweep, type SweepOptions, type SweepSummary } from './pipeline/sweep.js';

export { reestimateBatchNorm, anchorBatchNorm, BN_STATS, type BnStats, finetune } from './recover/index.js';
export { verifyWithOnnxRuntime, ortLatency, countOnnx, exportTfjs } from './export/index.js';
export { renderReportHtml, writeReportHtml } from './report/html.js';
