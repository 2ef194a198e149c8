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

export interface TrainableEngine extends ForwardEngine {
  configureOptimizer(cfg: OptimizerConfig): void;
  /**
   * One SGD step on a batch in training mode; loss is the batch-mean cross-entropy, correct the
   * top-1 hits. `momentum`, when given, replaces the optimizer's momentum from this step on.
   */
  trainStep(
    x: Float32Array,
    shape: number[],
    labels: Int32Array,
    lr: number,
    momentum?: number,
  ): Promise<{ loss: number; correct: number }>;
}
