// What training and evaluation need from the engine, stated structurally so this code depends on
// the contract rather than on the addon (src/engine TorchModel satisfies it).
import type { Tensor } from '../ir/model.js';

export interface ForwardEngine {
  /** inference-mode forward pass (BN uses running statistics) */
  forward(
    x: Float32Array,
    shape: number[],
    opts?: { taps?: string[] },
  ): Promise<{ outputs: Record<string, Tensor>; taps: Record<string, Tensor> }>;
}

export interface OptimizerConfig {
  momentum: number;
  nesterov: boolean;
  weightDecay: number;
}

/**
 * A teacher's soft targets for one training step (knowledge distillation, Hinton et al. 2015):
 * loss = (1 - weight) * CE(logits, labels) + weight * T^2 * KL(softmax(teacher / T) || softmax(logits / T)),
 * the KL averaged over the batch (torch's kl_div(reduction='batchmean')).
 */
export interface DistillTarget {
  /** the teacher's logits for this batch, [batch, classes] row-major */
  teacher: Float32Array;
  /** T > 0 */
  temperature: number;
  /** in [0, 1]: 0 is plain cross-entropy, 1 the soft targets alone */
  weight: number;
}

export interface TrainableEngine extends ForwardEngine {
  configureOptimizer(cfg: OptimizerConfig): void;
  /**
   * One SGD step on a batch in training mode; loss is the batch-mean cross-entropy, correct the
   * top-1 hits. `momentum`, when given, replaces the optimizer's momentum from this step on.
   * `distill`, when given, mixes in a teacher's soft targets (DistillTarget); loss is then the
   * mixed loss and correct still the top-1 hits against `labels`.
   */
  trainStep(
    x: Float32Array,
    shape: number[],
    labels: Int32Array,
    lr: number,
    momentum?: number,
    distill?: DistillTarget,
  ): Promise<{ loss: number; correct: number }>;
}
