// The engine's switches, declared once: each with its default, whether it is a fast path (the
// engine's own code instead of libtorch's op, turned off together by `fastPaths: false` or
// CMIPRUNE_FAST_PATHS=0), and why it exists. TorchModel.create resolves every switch here and
// hands all of them to the addon, which refuses a spec missing one (native/addon.cc), so no
// default lives anywhere else.

export interface SwitchRule {
  default: boolean;
  /** off under fastPaths: false / CMIPRUNE_FAST_PATHS=0 */
  fastPath: boolean;
}

export const ENGINE_SWITCHES = {
  /**
   * NHWC activations and conv weights. Default false: on Debian's libtorch 1.13 (oneDNN jit:avx2)
   * plain NCHW measured 10-20% faster for VGG16-BN inference and training at batch 64. A layout,
   * not a kernel of ours: not a fast path.
   */
  channelsLast: { default: false, fastPath: false },
  /**
   * Inference (forward) folds each BatchNorm into its conv and keeps 4-d activations in oneDNN's
   * blocked layout with conv weights packed once (repacked after writeTensors/trainStep), instead
   * of reordering around every conv. Measured ~17% faster on VGG16-BN here. Training always uses
   * the plain layout. Ignored without mkldnn.
   */
  blockedInference: { default: true, fastPath: true },
  /**
   * 3x3, stride-1, padding-1 convolutions with >= 32 input channels and whole 4x4 output tiles run
   * through Winograd F(4x4,3x3) (36 instead of 144 multiplies per 16 outputs), forward and both
   * gradients. Results differ from the direct convolution by float rounding (~1e-5 relative).
   */
  winograd: { default: true, fastPath: true },
  /**
   * Convolutions whose input image is no larger than the kernel (VGG's 2x2 maps on CIFAR) run as
   * one matrix multiply with the weight expanded to [Cout*OH*OW, Cin*H*W], forward and backward;
   * same rounding caveat.
   */
  smallConv: { default: true, fastPath: true },
  /**
   * The optimizer's update runs as one pass over each parameter, its gradient and its momentum
   * buffer (torch.optim.SGD's rule, dampening 0) instead of libtorch's four element-wise ops;
   * off: libtorch's torch::optim::SGD.
   */
  fusedSgd: { default: true, fastPath: true },
  /**
   * In training, a BatchNorm whose output only feeds a ReLU runs with it as one op that finishes
   * each channel while it is in cache (statistics, normalise, relu; backward likewise) instead of
   * libtorch's five passes over the activation. Same results up to float rounding.
   */
  fuseBnRelu: { default: true, fastPath: true },
  /**
   * Max pooling whose windows tile the input (kernel == stride, no padding: VGG's 2x2 pools) on
   * dense activations runs through the engine's own kernel, which keeps a one-byte window position
   * for backward instead of libtorch's int64 index (none in inference). Identical results,
   * including which element of a tie gets the gradient.
   */
  fastMaxPool: { default: true, fastPath: true },
} as const satisfies Record<string, SwitchRule>;

export type EngineSwitch = keyof typeof ENGINE_SWITCHES;
export type EngineSwitches = Record<EngineSwitch, boolean>;

/** The switches that are fast paths, in the table's order. */
export const FAST_PATHS = (Object.keys(ENGINE_SWITCHES) as EngineSwitch[]).filter((k) => ENGINE_SWITCHES[k].fastPath);

/** CMIPRUNE_FAST_PATHS=0 turns every fast path off for every engine the process creates. */
export function fastPathsDisabledByEnv(): boolean {
  return process.env.CMIPRUNE_FAST_PATHS === '0';
}

/**
 * Every switch's value: the given ones over the table's defaults; with `fastPaths: false` (or
 * CMIPRUNE_FAST_PATHS=0) every fast path is off whatever its own switch says, i.e. libtorch's own
 * ops throughout, so "surgery bug or kernel bug?" is one rerun.
 */
export function resolveSwitches(given: Partial<EngineSwitches> & { fastPaths?: boolean } = {}): EngineSwitches {
  const off = given.fastPaths === false || fastPathsDisabledByEnv();
  const out = {} as EngineSwitches;
  for (const k of Object.keys(ENGINE_SWITCHES) as EngineSwitch[]) {
    const v = given[k];
    out[k] = off && ENGINE_SWITCHES[k].fastPath ? false : typeof v === 'boolean' ? v : ENGINE_SWITCHES[k].default;
  }
  return out;
}

/**
 * What checkpoint and result keys add for the engine: nothing under the defaults (keys written
 * before stay valid), a tag when CMIPRUNE_FAST_PATHS=0, so a rerun with the fast paths off
 * recomputes rankings, fine-tuning and result points instead of resuming ones the fast paths made.
 */
export function engineKeyTag(): string[] {
  return fastPathsDisabledByEnv() ? ['CMIPRUNE_FAST_PATHS=0'] : [];
}
