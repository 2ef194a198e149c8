// Recovery after pruning: BatchNorm re-estimation and (distilled) fine-tuning with resumable checkpoints.
export { anchorBatchNorm, BN_STATS, chooseBnStats, type BnStats, reestimateBatchNorm, type BnReestimateOptions, type BnReestimateResult } from './bn.js';
export { epochSeed, finetune, type FinetuneOptions, type FinetuneResult } from './finetune.js';
export type { DistillTarget } from '../train/engine.js';
export type { EpochStats } from '../train/train.js';
