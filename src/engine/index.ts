// The compute engine: runs any model in the IR on libtorch through the native addon.
// The addon interprets the node list generically; this wrapper validates input and owns the IR.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

import { numel, type Model, type Node, type Tensor } from '../ir/model.js';
import type { DistillTarget, OptimizerConfig, TrainableEngine } from '../train/engine.js';
import { UserError } from '../util/errors.js';
import { type EngineSwitches, resolveSwitches } from './switches.js';

export { ENGINE_SWITCHES, engineKeyTag, type EngineSwitch, type EngineSwitches, FAST_PATHS, fastPathsDisabledByEnv, resolveSwitches } from './switches.js';

/** What the addon's Model constructor takes: the IR's graph, every tensor and every switch (switches.ts). */
export interface AddonModelSpec extends EngineSwitches {
  inputs: string[];
  outputs: string[];
  nodes: Node[];
  tensors: Record<string, Tensor>;
}

export interface AddonModel {
  /** resolves to one tensor per name in `want`, in order; tensors own their memory */
  forward(x: Float32Array, shape: number[], want: string[]): Promise<Tensor[]>;
  /** the training contract's signature (TorchModel checks its arguments before the call) */
  trainStep: TrainableEngine['trainStep'];
  configureOptimizer(momentum: number, nesterov: boolean, weightDecay: number): void;
  /** one train-mode forward without autograd: updates the BatchNorm running statistics, nothing else */
  batchNormStatsStep(x: Float32Array, shape: number[]): Promise<void>;
  /** copies; all tensors when names is omitted */
  readTensors(names?: string[]): Record<string, Tensor>;
  writeTensors(tensors: Record<string, Tensor>): void;
  dispose(): void;
  readonly busy: boolean;
}

export interface EngineInfo {
  torchVersion: string;
  mkldnn: boolean;
  openmp: boolean;
  device: string;
}

/** The engine's cache of large CPU blocks (native/alloc.h). */
export interface EngineCacheStats {
  /** false when CMIPRUNE_CPU_CACHE_MB=0 left libtorch's allocator in place */
  installed: boolean;
  /** idle bytes held for reuse (capped by CMIPRUNE_CPU_CACHE_MB, default 2048 MiB) */
  cachedBytes: number;
  /** large-block requests served from the cache, and by a new block */
  hits: number;
  misses: number;
}

export interface EngineAddon {
  Model: new (spec: AddonModelSpec) => AddonModel;
  setThreads(n: number): void;
  getThreads(): number;
  info(): EngineInfo;
  cacheStats(): EngineCacheStats;
  emptyCache(): void;
  /** the estimators' linalg functions (native/linalg.cc) are registered on the same object */
  [name: string]: unknown;
}

// dist/src/engine/index.js -> package root -> build/Release
const ADDON_PATH = fileURLToPath(new URL('../../../build/Release/cmiprune_engine.node', import.meta.url));
let addon: EngineAddon | undefined;

export function loadEngine(): EngineAddon {
  if (addon) return addon;
  if (!existsSync(ADDON_PATH)) throw new UserError('native engine not built: run `npm run build:native`');
  try {
    addon = createRequire(import.meta.url)(ADDON_PATH) as EngineAddon;
  } catch (e) {
    // typically libtorch missing or upgraded under a stale build
    throw new UserError(`native engine failed to load (${(e as Error).message}): run \`npm run build:native\``, {
      cause: e,
    });
  }
  return addon;
}

export function setThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new UserError(`thread count must be an integer >= 1, got ${n}`);
  loadEngine().setThreads(n);
}

export function getThreads(): number {
  return loadEngine().getThreads();
}

export function engineInfo(): EngineInfo {
  return loadEngine().info();
}

/**
 * Large CPU blocks freed by the engine wait for reuse by the next request of the same size: a
 * training loop then stops paying page faults for its per-step buffers.
 */
export function engineCacheStats(): EngineCacheStats {
  return loadEngine().cacheStats();
}

/** Returns the engine's idle cached blocks to the system (e.g. after training, before a long idle). */
export function releaseCachedMemory(): void {
  loadEngine().emptyCache();
}

// defined with the training contract that takes them; re-exported for callers of TorchModel
export type { DistillTarget, OptimizerConfig };

/** Engine switches (switches.ts declares each with its default and purpose); absent ones take the default. */
export interface CreateOptions extends Partial<EngineSwitches> {
  /**
   * false: every fast path (switches.ts FAST_PATHS) off, i.e. libtorch's own ops throughout,
   * whatever the individual switches say. The environment variable CMIPRUNE_FAST_PATHS=0 does the
   * same for every engine a process creates (any CLI command), so a suspicious result is one rerun
   * away from telling a kernel bug from a surgery bug.
   */
  fastPaths?: boolean;
}

const ARITY: Record<Node['op'], number> = {
  Conv2d: 1,
  BatchNorm: 1,
  Relu: 1,
  MaxPool: 1,
  AvgPool: 1,
  GlobalAvgPool: 1,
  Flatten: 1,
  Linear: 1,
  Add: 2,
  Slice: 1,
  Pad: 1,
};

function label(n: Node): string {
  return `node '${n.name}' (${n.op})`;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function checkPair(n: Node, attr: string, v: unknown, min: number): void {
  if (!Array.isArray(v) || v.length !== 2 || !v.every((d) => Number.isInteger(d) && d >= min))
    throw new UserError(`${label(n)}: attr ${attr} must be two integers >= ${min}, got ${JSON.stringify(v)}`);
}

/** Expected shape per param slot, or throws naming the node. */
function paramShapes(n: Node): { required: Record<string, number[]>; optional: Record<string, number[]> } {
  switch (n.op) {
    case 'Conv2d': {
      const a = n.attrs;
      for (const k of ['kernel', 'stride', 'dilation'] as const) checkPair(n, k, a[k], 1);
      checkPair(n, 'padding', a.padding, 0);
      if (!Number.isInteger(a.groups) || a.groups < 1 || a.inChannels % a.groups || a.outChannels % a.groups)
        throw new UserError(
          `${label(n)}: groups ${a.groups} must divide inChannels ${a.inChannels} and outChannels ${a.outChannels}`,
        );
      return {
        required: { weight: [a.outChannels, a.inChannels / a.groups, a.kernel[0], a.kernel[1]] },
        optional: { bias: [a.outChannels] },
      };
    }
    case 'BatchNorm': {
      const c = [n.attrs.numFeatures];
      return { required: { weight: c, bias: c, runningMean: c, runningVar: c }, optional: {} };
    }
    case 'Linear':
      return {
        required: { weight: [n.attrs.outFeatures, n.attrs.inFeatures] },
        optional: { bias: [n.attrs.outFeatures] },
      };
    case 'MaxPool':
    case 'AvgPool':
      for (const k of ['kernel', 'stride'] as const) checkPair(n, k, n.attrs[k], 1);
      checkPair(n, 'padding', n.attrs.padding, 0);
      return { required: {}, optional: {} };
    case 'Flatten':
      if (!Number.isInteger(n.attrs.axis) || n.attrs.axis < 0)
        throw new UserError(`${label(n)}: axis must be a non-negative integer, got ${n.attrs.axis}`);
      return { required: {}, optional: {} };
    case 'Slice': {
      const { axes, starts, ends, steps } = n.attrs;
      const ints = (v: unknown, min: number) => Array.isArray(v) && v.every((d) => Number.isInteger(d) && d >= min);
      const k = Array.isArray(axes) ? axes.length : 0;
      if (k < 1 || k > 2 || ![starts, ends, steps].every((v) => Array.isArray(v) && v.length === k))
        throw new UserError(`${label(n)}: attrs axes, starts, ends, steps must be lists of one length (1 or 2), got ${JSON.stringify(n.attrs)}`);
      if (!ints(axes, 2) || axes.some((a) => a > 3) || (k === 2 && axes[0]! >= axes[1]!))
        throw new UserError(`${label(n)}: attr axes must be spatial (2, 3) and increasing, got ${JSON.stringify(axes)}`);
      if (!ints(starts, 0) || !ints(steps, 1) || !ints(ends, 1) || starts.some((s, i) => s >= ends[i]!))
        throw new UserError(`${label(n)}: needs integers 0 <= start < end and step >= 1, got ${JSON.stringify(n.attrs)}`);
      return { required: {}, optional: {} };
    }
    case 'Pad': {
      const { pads, mode, value } = n.attrs;
      if (!Array.isArray(pads) || pads.length !== 8 || !pads.every((d) => Number.isInteger(d) && d >= 0) || pads[0] || pads[4])
        throw new UserError(`${label(n)}: attr pads must be 8 integers >= 0 with no batch padding, got ${JSON.stringify(pads)}`);
      if (mode !== 'constant') throw new UserError(`${label(n)}: attr mode must be 'constant', got ${JSON.stringify(mode)}`);
      if (typeof value !== 'number' || !Number.isFinite(value))
        throw new UserError(`${label(n)}: attr value must be a finite number, got ${JSON.stringify(value)}`);
      return { required: {}, optional: {} };
    }
    default:
      return { required: {}, optional: {} };
  }
}

/** Checks structure and every param reference; throws one UserError naming the offending node/tensor. */
export function validateModel(model: Model): void {
  if (model.inputs.length !== 1)
    throw new UserError(`model '${model.name}': the engine needs exactly one input, got ${model.inputs.length}`);
  for (const [k, t] of Object.entries(model.tensors)) {
    if (!(t.data instanceof Float32Array) || t.data.length !== numel(t.shape))
      throw new UserError(`tensor '${k}': data has ${t.data?.length} values, shape [${t.shape}] needs ${numel(t.shape)}`);
  }
  const defined = new Set<string>([model.inputs[0].name]);
  for (const n of model.nodes) {
    const arity = ARITY[n.op];
    if (arity === undefined) throw new UserError(`node '${n.name}': unsupported op '${(n as Node).op}'`);
    if (n.inputs.length !== arity)
      throw new UserError(`${label(n)}: expects ${arity} input(s), got ${n.inputs.length}`);
    for (const i of n.inputs)
      if (!defined.has(i)) throw new UserError(`${label(n)}: input '${i}' is not produced by an earlier node`);
    if (n.outputs.length !== 1) throw new UserError(`${label(n)}: expects exactly one output`);
    if (defined.has(n.outputs[0])) throw new UserError(`${label(n)}: output '${n.outputs[0]}' is already defined`);
    defined.add(n.outputs[0]);

    const { required, optional } = paramShapes(n);
    const params = n.params as Record<string, string | undefined>;
    for (const slot of Object.keys(params))
      if (params[slot] !== undefined && !(slot in required) && !(slot in optional))
        throw new UserError(`${label(n)}: unexpected param slot '${slot}'`);
    for (const [slot, shape] of [...Object.entries(required), ...Object.entries(optional)]) {
      const key = params[slot];
      if (key === undefined) {
        if (slot in required) throw new UserError(`${label(n)}: missing param '${slot}'`);
        continue;
      }
      const t = model.tensors[key];
      if (!t) throw new UserError(`${label(n)}: param '${slot}' refers to tensor '${key}', which is not in model.tensors`);
      if (!sameShape(t.shape, shape))
        throw new UserError(`${label(n)}: param '${slot}' (tensor '${key}') has shape [${t.shape}], expected [${shape}]`);
    }
  }
  for (const o of model.outputs)
    if (!defined.has(o)) throw new UserError(`model '${model.name}': output '${o}' is not produced by any node`);
}

export class TorchModel implements TrainableEngine {
  readonly model: Model;
  private native: AddonModel | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private pending = 0;
  private optimizerReady = false;
  private readonly values: Set<string>;
  private readonly shapes: Map<string, number[]>;

  private constructor(model: Model, native: AddonModel, shapes: Map<string, number[]>) {
    this.model = model;
    this.native = native;
    this.shapes = shapes;
    this.values = new Set([...model.inputs.map((v) => v.name), ...model.nodes.map((n) => n.outputs[0])]);
  }

  /** Validates the IR and uploads its weights (copied; later edits to `model.tensors` are not seen). */
  static create(model: Model, opts: CreateOptions = {}): TorchModel {
    validateModel(model);
    const addon = loadEngine();
    let native: AddonModel;
    try {
      native = new addon.Model({
        inputs: model.inputs.map((v) => v.name),
        outputs: model.outputs,
        nodes: model.nodes,
        tensors: model.tensors,
        ...resolveSwitches(opts),
      });
    } catch (e) {
      throw new UserError(`model '${model.name}': ${(e as Error).message}`, { cause: e });
    }
    const structure: Model = { ...model, tensors: {} };
    const shapes = new Map(Object.entries(model.tensors).map(([k, t]) => [k, [...t.shape]]));
    return new TorchModel(structuredClone(structure), native, shapes);
  }

  private use(what: string): AddonModel {
    if (!this.native) throw new Error(`TorchModel.${what}: model has been disposed`);
    return this.native;
  }

  private useIdle(what: string): AddonModel {
    const n = this.use(what);
    if (this.pending > 0)
      throw new Error(`TorchModel.${what}: a forward/trainStep/batchNormStatsStep is in progress; await it first`);
    return n;
  }

  private checkInput(x: Float32Array, shape: number[]): void {
    if (!(x instanceof Float32Array)) throw new UserError('input must be a Float32Array');
    if (!shape.every((d) => Number.isInteger(d) && d >= 0)) throw new UserError(`input shape [${shape}] is invalid`);
    if (x.length !== numel(shape))
      throw new UserError(`input has ${x.length} values, shape [${shape}] needs ${numel(shape)}`);
    const expected = this.model.inputs[0].shape;
    if (expected.length > 0) {
      const ok = expected.length === shape.length && expected.every((d, i) => i === 0 || d < 0 || d === shape[i]);
      if (!ok)
        throw new UserError(
          `input shape [${shape}] does not match model input '${this.model.inputs[0].name}' [${expected}]`,
        );
    }
  }

  /**
   * Serialises async calls on this model. An idle model starts the call now (the addon copies the
   * input synchronously); a queued call copies it, since callers may refill their buffers.
   */
  private enqueue<T>(x: Float32Array, run: (x: Float32Array) => Promise<T>): Promise<T> {
    const start = (input: Float32Array) => new Promise<T>((resolve) => resolve(run(input)));
    let p: Promise<T>;
    if (this.pending === 0) p = start(x);
    else {
      const input = x.slice();
      p = this.queue.then(() => start(input));
    }
    this.pending++;
    this.queue = p.catch(() => undefined);
    return p
      .catch((e: Error) => {
        throw e instanceof UserError ? e : new UserError(`model '${this.model.name}': ${e.message}`, { cause: e });
      })
      .finally(() => {
        this.pending--;
      });
  }

  async forward(
    x: Float32Array,
    shape: number[],
    opts: { taps?: string[] } = {},
  ): Promise<{ outputs: Record<string, Tensor>; taps: Record<string, Tensor> }> {
    const native = this.use('forward');
    this.checkInput(x, shape);
    const taps = opts.taps ?? [];
    for (const t of taps)
      if (!this.values.has(t)) throw new UserError(`model '${this.model.name}': no value named '${t}' to tap`);
    const outs = this.model.outputs;
    const res = await this.enqueue(x, (input) => native.forward(input, shape, [...outs, ...taps]));
    const outputs: Record<string, Tensor> = {};
    const tapped: Record<string, Tensor> = {};
    outs.forEach((o, i) => (outputs[o] = res[i]));
    taps.forEach((t, i) => (tapped[t] = res[outs.length + i]));
    return { outputs, taps: tapped };
  }

  configureOptimizer(cfg: OptimizerConfig): void {
    const native = this.useIdle('configureOptimizer');
    const { momentum, nesterov, weightDecay } = cfg;
    if (!(momentum >= 0) || !(weightDecay >= 0))
      throw new UserError(`optimizer: momentum (${momentum}) and weightDecay (${weightDecay}) must be >= 0`);
    if (nesterov && !(momentum > 0)) throw new UserError('optimizer: nesterov needs momentum > 0');
    native.configureOptimizer(momentum, nesterov, weightDecay);
    this.optimizerReady = true;
  }

  /**
   * One SGD step; `momentum`, when given, replaces the optimizer's momentum from this step on.
   * `distill`, when given, mixes a teacher's soft targets into the loss (DistillTarget in
   * src/train/engine.ts); its teacher logits must hold batch x classes values.
   */
  async trainStep(
    x: Float32Array,
    shape: number[],
    labels: Int32Array,
    lr: number,
    momentum?: number,
    distill?: DistillTarget,
  ): Promise<{ loss: number; correct: number }> {
    const native = this.use('trainStep');
    if (!this.optimizerReady) throw new Error('TorchModel.trainStep: call configureOptimizer first');
    this.checkInput(x, shape);
    if (!(labels instanceof Int32Array) || labels.length !== shape[0])
      throw new UserError(`trainStep: need ${shape[0]} labels as an Int32Array, got ${labels?.length}`);
    if (!Number.isFinite(lr) || lr < 0) throw new UserError(`trainStep: learning rate must be >= 0, got ${lr}`);
    if (momentum !== undefined && !(momentum >= 0 && momentum < 1))
      throw new UserError(`trainStep: momentum must be in [0, 1), got ${momentum}`);
    const head = this.model.nodes.find((n) => n.outputs[0] === this.model.outputs[0]);
    if (head?.op === 'Linear') {
      const k = head.attrs.outFeatures;
      const bad = labels.findIndex((l) => l < 0 || l >= k);
      if (bad >= 0) throw new UserError(`trainStep: label ${labels[bad]} at index ${bad} is outside [0, ${k})`);
    }
    let soft: DistillTarget | undefined;
    if (distill !== undefined) {
      const { teacher, temperature, weight } = distill;
      const b = shape[0];
      const k = head?.op === 'Linear' ? head.attrs.outFeatures : undefined;
      if (!(teacher instanceof Float32Array))
        throw new UserError('trainStep: distill.teacher must be a Float32Array of teacher logits');
      if (k !== undefined ? teacher.length !== b * k : b === 0 || teacher.length === 0 || teacher.length % b !== 0)
        throw new UserError(
          `trainStep: distill.teacher has ${teacher.length} values, need batch x classes = ${b} x ${k ?? 'classes'}`,
        );
      if (!(Number.isFinite(temperature) && temperature > 0))
        throw new UserError(`trainStep: distill.temperature must be a finite number > 0, got ${temperature}`);
      if (!(weight >= 0 && weight <= 1)) throw new UserError(`trainStep: distill.weight must be in [0, 1], got ${weight}`);
      soft = { teacher: this.pending > 0 ? teacher.slice() : teacher, temperature, weight };
    }
    const lab = this.pending > 0 ? labels.slice() : labels;
    return this.enqueue(x, (input) => native.trainStep(input, shape, lab, lr, momentum, soft));
  }

  /**
   * One train-mode forward pass without autograd that only updates the BatchNorm running
   * statistics: every BN normalises with the batch's statistics (so later layers see what a
   * training step shows them) and moves its running mean and unbiased variance by its momentum.
   * No loss, no backward, no optimizer (configureOptimizer is not needed); weights are untouched.
   * The forward is trainStep's (same kernels and BN+ReLU fusion), so the running statistics end up
   * as a trainStep with learning rate 0 leaves them. Needs more than one
   * value per BN channel (batch > 1, or spatial maps), as any train-mode BN does.
   */
  async batchNormStatsStep(x: Float32Array, shape: number[]): Promise<void> {
    const native = this.use('batchNormStatsStep');
    this.checkInput(x, shape);
    return this.enqueue(x, (input) => native.batchNormStatsStep(input, shape));
  }

  /** Copies of the model's tensors: those named in `names` (in any order), or all of them. */
  readTensors(names?: string[]): Record<string, Tensor> {
    const native = this.useIdle('readTensors');
    if (names === undefined) return native.readTensors();
    for (const k of names)
      if (!this.shapes.has(k)) throw new UserError(`readTensors: model '${this.model.name}' has no tensor '${k}'`);
    return native.readTensors(names);
  }

  /** Partial updates allowed; every tensor is checked before any is written. */
  writeTensors(t: Record<string, Tensor>): void {
    const native = this.useIdle('writeTensors');
    for (const [k, v] of Object.entries(t)) {
      const shape = this.shapes.get(k);
      if (!shape) throw new UserError(`writeTensors: model '${this.model.name}' has no tensor '${k}'`);
      if (!sameShape(shape, v.shape))
        throw new UserError(`writeTensors: tensor '${k}' has shape [${v.shape}], the model's is [${shape}]`);
      if (!(v.data instanceof Float32Array) || v.data.length !== numel(v.shape))
        throw new UserError(`writeTensors: tensor '${k}' data does not hold ${numel(v.shape)} float32 values`);
    }
    native.writeTensors(t);
  }

  /** The IR structure with the current weights (a deep copy). */
  toModel(): Model {
    const tensors = this.readTensors();
    return { ...structuredClone(this.model), tensors };
  }

  dispose(): void {
    if (!this.native) return;
    this.useIdle('dispose').dispose();
    this.native = undefined;
  }
}
