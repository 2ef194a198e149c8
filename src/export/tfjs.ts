// IR -> TF.js Layers model (model.json + binary weight shards), as `tf.loadLayersModel` reads it.
//
// Format: a Keras-style functional Layers model in NHWC. TF.js's pure-JS CPU backend implements
// conv/pool kernels channels-last only, and the Layers format needs no converter, no op-name mapping
// and no TF graph semantics, so a Layers model is the simplest exact choice. The exporter does not
// import TF.js: it writes the JSON topology and little-endian float32 shards directly.
//
// Layout bookkeeping: every 4-d IR value [N,C,H,W] lives in TF.js as [N,H,W,C]. Flattening NHWC
// orders features (h, w, c) while the IR's NCHW Flatten orders them (c, h, w); instead of
// transposing activations, the exporter remembers the permutation on the flattened value and folds
// it into the weights of the consumer (Dense kernel rows, BatchNorm vectors). Only where the IR
// order itself is needed (a model output, an Add with a differently ordered operand) is an explicit
// Reshape -> Permute -> Flatten emitted.
import { mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { AvgPoolNode, Conv2dNode, MaxPoolNode, Model, Node, PadNode, SliceNode, Tensor } from '../ir/model.js';
import { inferShapes } from '../ir/shapes.js';
import { UserError } from '../util/errors.js';
import { metadataArray } from '../data/normalization.js';
import { packageVersion } from '../util/version.js';

export interface TfjsExportOptions {
  /** bytes per weight shard file; default 4 MiB (as tensorflowjs_converter) */
  shardBytes?: number;
}

export interface TfjsOutputInfo {
  /** the IR value name */
  name: string;
  /** 'NC' for [N,F] outputs (logits), 'NHWC' for 4-d outputs */
  layout: 'NC' | 'NHWC';
  /** TF.js shape, batch dimension null */
  shape: (number | null)[];
}

export interface TfjsNormalization {
  /** applied first: x / 255 */
  scale: number;
  /** per channel, in input channel order */
  mean: number[];
  std: number[];
}

export interface TfjsExportResult {
  /** the directory written */
  dir: string;
  /** absolute paths: model.json first, then the weight shards in load order */
  files: string[];
  format: 'layers-model';
  /** the user feeds images channels-last: [N, H, W, C] */
  inputLayout: 'NHWC';
  /** [null, H, W, C] */
  inputShape: (number | null)[];
  /** how pixels are normalised before the model: ((x / 255) - mean[c]) / std[c]; null when the model has no mean/std metadata */
  normalization: TfjsNormalization | null;
  outputs: TfjsOutputInfo[];
  /** total float32 weight bytes over all shards */
  weightBytes: number;
  /** number of TF.js layers (InputLayer included) */
  layers: number;
}

export const DEFAULT_TFJS_SHARD_BYTES = 4 * 1024 * 1024;
const MODEL_JSON = 'model.json';
const SHARD_RE = /^group\d+-shard\d+of\d+\.bin$/;


// ---------- value representation ----------

/**
 * How an IR value is held in the TF.js graph:
 *  map    [N,H,W,C] for IR [N,C,H,W]
 *  gap    [N,C] for IR [N,C,1,1] (GlobalAveragePooling2D drops the unit spatial dims)
 *  vec    [N,F], features in IR order
 *  perm   [N,F], features in (h, w, c) order of a flattened [N,C,H,W] map
 */
interface TfValue {
  layer: string;
  kind: 'map' | 'gap' | 'vec' | 'perm';
  c: number;
  h: number;
  w: number;
}

interface LayerSpec {
  class_name: string;
  config: Record<string, unknown>;
  name: string;
  inbound_nodes: unknown[];
}

interface WeightEntry {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** TF.js tensor names must match /^[A-Za-z0-9][-A-Za-z0-9._\/]*$/; '/' is the scope divider, so it goes too. */
function sanitize(name: string): string {
  let s = name.replace(/[^A-Za-z0-9._-]/g, '_');
  if (!/^[A-Za-z0-9]/.test(s)) s = `n${s}`;
  return s;
}

/**
 * TF.js's 'valid' or 'same' padding when it reproduces PyTorch's windows on one axis (window j starts
 * at j*s - p, `out` windows), else none. Zeros (conv) and ignored cells (max, and avg's in-bounds
 * divisor) outside the input then agree.
 */
function tfPaddingModes(n: number, keff: number, s: number, p: number, out: number): Set<'valid' | 'same'> {
  const modes = new Set<'valid' | 'same'>();
  if (p === 0 && n >= keff && Math.floor((n - keff) / s) + 1 === out) modes.add('valid');
  const outSame = Math.ceil(n / s);
  const total = Math.max((outSame - 1) * s + keff - n, 0);
  if (outSame === out && Math.floor(total / 2) === p) modes.add('same');
  return modes;
}

function commonMode(a: Set<'valid' | 'same'>, b: Set<'valid' | 'same'>): 'valid' | 'same' | undefined {
  if (a.has('valid') && b.has('valid')) return 'valid';
  if (a.has('same') && b.has('same')) return 'same';
  return undefined;
}

class TfjsGraph {
  readonly layers: LayerSpec[] = [];
  readonly weights: WeightEntry[] = [];
  private readonly names = new Set<string>();

  private unique(base: string): string {
    let name = sanitize(base);
    for (let k = 1; this.names.has(name); k++) name = `${sanitize(base)}_${k}`;
    this.names.add(name);
    return name;
  }

  /** adds a layer applied once to `inputs`; returns its (unique) name */
  emit(className: string, base: string, config: Record<string, unknown>, inputs: string[], weights: Omit<WeightEntry, 'name'>[] = [], weightNames: string[] = []): string {
    const name = this.unique(base);
    this.layers.push({
      class_name: className,
      config: { name, trainable: true, dtype: 'float32', ...config },
      name,
      inbound_nodes: inputs.length ? [inputs.map((i) => [i, 0, 0, {}])] : [],
    });
    weights.forEach((w, i) => this.weights.push({ ...w, name: `${name}/${weightNames[i]}` }));
    return name;
  }
}

/** node.params[slot] as a tensor (inferShapes has already checked presence and shape) */
function param(model: Model, node: Node, slot: string): Tensor | undefined {
  const key = (node.params as Record<string, string | undefined>)[slot];
  return key === undefined ? undefined : model.tensors[key];
}

/** parses metadata mean/std (JSON arrays); both or neither */
function normalization(model: Model, channels: number): TfjsNormalization | null {
  const parse = (key: 'mean' | 'std'): number[] | undefined => {
    const v = metadataArray(model, key, 'exportTfjs');
    if (v && v.length !== channels) throw new UserError(`exportTfjs: metadata '${key}' has ${v.length} values, the input has ${channels} channels`);
    return v;
  };
  const mean = parse('mean');
  const std = parse('std');
  if (!mean && !std) return null;
  if (!mean || !std) throw new UserError(`exportTfjs: metadata has '${mean ? 'mean' : 'std'}' but not '${mean ? 'std' : 'mean'}'`);
  if (std.some((s) => s <= 0)) throw new UserError('exportTfjs: metadata std values must be > 0');
  return { scale: 1 / 255, mean, std };
}

/** The nodes the outputs depend on (dead branches would leave weights without a target layer). */
function liveNodes(model: Model): Node[] {
  const producer = new Map(model.nodes.map((n) => [n.outputs[0], n]));
  const needed = new Set<string>(model.outputs);
  const live = new Set<Node>();
  for (let i = model.nodes.length - 1; i >= 0; i--) {
    const n = model.nodes[i]!;
    if (!needed.has(n.outputs[0])) continue;
    live.add(n);
    for (const v of n.inputs) needed.add(v);
  }
  return model.nodes.filter((n) => live.has(n) && producer.get(n.outputs[0]) === n);
}

/** Builds model.json's topology and the weight list in memory; throws before anything is written. */
function convert(model: Model): {
  topology: Record<string, unknown>;
  weights: WeightEntry[];
  inputShape: (number | null)[];
  outputs: TfjsOutputInfo[];
  normalization: TfjsNormalization | null;
  layerCount: number;
} {
  if (model.inputs.length !== 1) throw new UserError(`exportTfjs: model '${model.name}' has ${model.inputs.length} inputs; only one image input is supported`);
  const input = model.inputs[0]!;
  if (input.shape.length !== 4) {
    throw new UserError(`exportTfjs: input '${input.name}' has shape [${input.shape}]; an image input [N,C,H,W] is required`);
  }
  const shapes = inferShapes(model, 1); // validates params against attrs, naming the node
  const [, C, H, W] = input.shape as [number, number, number, number];
  const norm = normalization(model, C);

  const g = new TfjsGraph();
  const values = new Map<string, TfValue>();
  const inputShape = [null, H, W, C];
  const inLayer = g.emit('InputLayer', input.name, { batch_input_shape: inputShape, sparse: false }, []);
  values.set(input.name, { layer: inLayer, kind: 'map', c: C, h: H, w: W });

  const get = (node: Node, i: number): TfValue => {
    const v = values.get(node.inputs[i]!);
    if (!v) throw new UserError(`exportTfjs: node '${node.name}' (${node.op}) reads '${node.inputs[i]}', which is not produced earlier`);
    return v;
  };
  const fail = (node: Node, why: string): never => {
    throw new UserError(`exportTfjs: node '${node.name}' (${node.op}) cannot be expressed in TF.js: ${why}`);
  };
  /** a gap value as the [N,1,1,C] map it stands for */
  const asMap = (node: Node, v: TfValue): TfValue => {
    if (v.kind === 'map') return v;
    if (v.kind === 'gap') {
      const layer = g.emit('Reshape', `${node.name}_to_map`, { target_shape: [1, 1, v.c] }, [v.layer]);
      return { layer, kind: 'map', c: v.c, h: 1, w: 1 };
    }
    return fail(node, `expects a 4-d input, got a 2-d value`);
  };
  /** a (h, w, c)-ordered vector put back into the IR's (c, h, w) order */
  const asVec = (base: string, v: TfValue): TfValue => {
    if (v.kind !== 'perm') return v;
    const r = g.emit('Reshape', `${base}_unflatten`, { target_shape: [v.h, v.w, v.c] }, [v.layer]);
    const p = g.emit('Permute', `${base}_to_chw`, { dims: [3, 1, 2] }, [r]);
    const f = g.emit('Flatten', `${base}_chw_flatten`, { data_format: 'channels_last' }, [p]);
    return { layer: f, kind: 'vec', c: v.c * v.h * v.w, h: 1, w: 1 };
  };
  /** IR feature index for TF feature index t of a perm value: (h, w, c) -> (c, h, w) */
  const irIndex = (v: TfValue, t: number): number => {
    if (v.kind !== 'perm') return t;
    const c = t % v.c;
    const hw = (t - c) / v.c;
    return c * v.h * v.w + hw;
  };
  const spatial = (node: Node): [number, number, number] => {
    const s = shapes.get(node.outputs[0])!;
    return [s[1]!, s[2]!, s[3]!];
  };

  for (const node of liveNodes(model)) {
    let out: TfValue;
    switch (node.op) {
      case 'Conv2d':
        out = convLayer(g, node, asMap(node, get(node, 0)), model, spatial(node));
        break;
      case 'BatchNorm': {
        const x = get(node, 0);
        const a = node.attrs;
        // folded feature permutation: TF feature t carries IR feature irIndex(t)
        const vecOf = (slot: string) => {
          const src = param(model, node, slot)!.data;
          return Float32Array.from({ length: src.length }, (_, t) => src[irIndex(x, t)]!);
        };
        const layer = g.emit(
          'BatchNormalization',
          node.name,
          // Keras momentum weighs the running value, PyTorch's (the IR's) the batch value; unused at inference
          { axis: -1, momentum: 1 - a.momentum, epsilon: a.eps, center: true, scale: true },
          [x.layer],
          ['weight', 'bias', 'runningMean', 'runningVar'].map((s) => ({ shape: [a.numFeatures], data: vecOf(s) })),
          ['gamma', 'beta', 'moving_mean', 'moving_variance'],
        );
        out = { ...x, layer };
        break;
      }
      case 'Relu': {
        const x = get(node, 0);
        out = { ...x, layer: g.emit('Activation', node.name, { activation: 'relu' }, [x.layer]) };
        break;
      }
      case 'MaxPool':
      case 'AvgPool':
        out = poolLayer(g, node, asMap(node, get(node, 0)), spatial(node), fail);
        break;
      case 'GlobalAvgPool': {
        const x = get(node, 0);
        if (x.kind === 'gap') out = x; // already [N,C,1,1]
        else {
          const m = asMap(node, x);
          const layer = g.emit('GlobalAveragePooling2D', node.name, { data_format: 'channels_last' }, [m.layer]);
          out = { layer, kind: 'gap', c: m.c, h: 1, w: 1 };
        }
        break;
      }
      case 'Flatten': {
        const x = get(node, 0);
        if (x.kind === 'map') {
          const layer = g.emit('Flatten', node.name, { data_format: 'channels_last' }, [x.layer]);
          // (h, w, c) equals (c, h, w) when there is one pixel or one channel
          out = x.h * x.w === 1 || x.c === 1 ? { layer, kind: 'vec', c: x.c * x.h * x.w, h: 1, w: 1 } : { ...x, layer, kind: 'perm' };
        } else if (x.kind === 'gap') out = { ...x, kind: 'vec' };
        else out = x; // Flatten(axis 1) of a 2-d value is the identity
        break;
      }
      case 'Linear': {
        const x = get(node, 0);
        if (x.kind === 'map' || x.kind === 'gap') fail(node, 'expects a 2-d input');
        const a = node.attrs;
        const wt = param(model, node, 'weight')!.data;
        const bias = param(model, node, 'bias');
        // Dense kernel is [in, out] = W^T. A flattened NHWC map orders its features (h, w, c) while
        // the IR's NCHW Flatten orders them (c, h, w): kernel row t takes W's column irIndex(t).
        const kernel = new Float32Array(a.inFeatures * a.outFeatures);
        for (let t = 0; t < a.inFeatures; t++) {
          const src = irIndex(x, t);
          for (let o = 0; o < a.outFeatures; o++) kernel[t * a.outFeatures + o] = wt[o * a.inFeatures + src]!;
        }
        const ws = [{ shape: [a.inFeatures, a.outFeatures], data: kernel }];
        if (bias) ws.push({ shape: [a.outFeatures], data: bias.data.slice() });
        const layer = g.emit(
          'Dense',
          node.name,
          { units: a.outFeatures, activation: 'linear', use_bias: !!bias },
          [x.layer],
          ws,
          ['kernel', 'bias'],
        );
        out = { layer, kind: 'vec', c: a.outFeatures, h: 1, w: 1 };
        break;
      }
      case 'Add': {
        let a = get(node, 0);
        let b = get(node, 1);
        if (a.kind === 'gap' && b.kind === 'map') a = asMap(node, a);
        if (b.kind === 'gap' && a.kind === 'map') b = asMap(node, b);
        const samePerm = a.kind === 'perm' && b.kind === 'perm' && a.c === b.c && a.h === b.h && a.w === b.w;
        if (!samePerm) {
          a = asVec(`${node.name}_a`, a);
          b = asVec(`${node.name}_b`, b);
        }
        out = { ...a, layer: g.emit('Add', node.name, {}, [a.layer, b.layer]) };
        break;
      }
      case 'Slice':
        out = sliceLayer(g, node, asMap(node, get(node, 0)), spatial(node));
        break;
      case 'Pad':
        out = padLayer(g, node, asMap(node, get(node, 0)), spatial(node), fail);
        break;
    }
    values.set(node.outputs[0], out);
  }

  // outputs: 2-d values in IR feature order, 4-d values NHWC
  const outputs: TfjsOutputInfo[] = [];
  const outLayers: string[] = [];
  for (const o of model.outputs) {
    let v = values.get(o);
    if (!v) throw new UserError(`exportTfjs: output '${o}' is not produced by any node`);
    if (v.kind === 'perm') v = asVec(`${o}_output`, v);
    if (v.kind === 'gap') {
      const layer = g.emit('Reshape', `${o}_output_map`, { target_shape: [1, 1, v.c] }, [v.layer]);
      v = { ...v, layer, kind: 'map' };
    }
    outLayers.push(v.layer);
    outputs.push(v.kind === 'map' ? { name: o, layout: 'NHWC', shape: [null, v.h, v.w, v.c] } : { name: o, layout: 'NC', shape: [null, v.c] });
  }

  const topology = {
    class_name: 'Model',
    config: {
      name: sanitize(model.name || 'cmiprune'),
      layers: g.layers,
      input_layers: [[inLayer, 0, 0]],
      output_layers: outLayers.map((l) => [l, 0, 0]),
    },
    keras_version: 'tfjs-layers 4.22.0',
    backend: 'tensor_flow.js',
  };
  return { topology, weights: g.weights, inputShape, outputs, normalization: norm, layerCount: g.layers.length };
}

/** OIHW weight -> HWIO kernel (Conv2D), or [kh, kw, in, multiplier] (DepthwiseConv2D, same index order) */
function toHwio(w: Tensor, cin: number, groups: number, dense: boolean): { shape: number[]; data: Float32Array } {
  const [co, cig, kh, kw] = w.shape as [number, number, number, number];
  if (!dense) {
    // depthwise: PyTorch output o = i * mult + m reads input i; TF's depthwise output i * mult + m too
    const mult = co / cin;
    const data = new Float32Array(kh * kw * cin * mult);
    for (let i = 0; i < cin; i++)
      for (let m = 0; m < mult; m++)
        for (let y = 0; y < kh; y++)
          for (let x = 0; x < kw; x++) data[((y * kw + x) * cin + i) * mult + m] = w.data[((i * mult + m) * kh + y) * kw + x]!;
    return { shape: [kh, kw, cin, mult], data };
  }
  // grouped conv as a dense conv with a block-diagonal kernel (zeros across groups: exact)
  const data = new Float32Array(kh * kw * cin * co);
  const coPerGroup = co / groups;
  for (let o = 0; o < co; o++) {
    const base = Math.floor(o / coPerGroup) * cig;
    for (let ci = 0; ci < cig; ci++)
      for (let y = 0; y < kh; y++)
        for (let x = 0; x < kw; x++) data[((y * kw + x) * cin + base + ci) * co + o] = w.data[((o * cig + ci) * kh + y) * kw + x]!;
  }
  return { shape: [kh, kw, cin, co], data };
}

function convLayer(g: TfjsGraph, node: Conv2dNode, x: TfValue, model: Model, outShape: [number, number, number]): TfValue {
  const a = node.attrs;
  const [co, oh, ow] = outShape;
  const keff = [0, 1].map((i) => a.dilation[i]! * (a.kernel[i]! - 1) + 1);
  const dilated = a.dilation[0] > 1 || a.dilation[1] > 1;
  // TF.js refuses stride > 1 together with dilation > 1: convolve at stride 1, then subsample with a
  // 1x1 max pool of that stride (floor((L - 1) / s) + 1 = PyTorch's output size)
  const subsample = dilated && (a.stride[0] > 1 || a.stride[1] > 1);
  const stride = subsample ? [1, 1] : [...a.stride];
  // output size of the (stride-1 when subsampling) convolution itself
  const full = subsample ? [x.h + 2 * a.padding[0] - keff[0]! + 1, x.w + 2 * a.padding[1] - keff[1]! + 1] : [oh, ow];
  let mode = commonMode(
    tfPaddingModes(x.h, keff[0]!, stride[0]!, a.padding[0], full[0]!),
    tfPaddingModes(x.w, keff[1]!, stride[1]!, a.padding[1], full[1]!),
  );
  let src = x.layer;
  if (!mode) {
    src = g.emit('ZeroPadding2D', `${node.name}_pad`, { padding: [[a.padding[0], a.padding[0]], [a.padding[1], a.padding[1]]], data_format: 'channels_last' }, [src]);
    mode = 'valid';
  }
  const weight = param(model, node, 'weight')!;
  const bias = param(model, node, 'bias');
  // DepthwiseConv2D has no dilation in TF.js; other grouped convs become block-diagonal Conv2D
  const depthwise = a.groups > 1 && a.groups === a.inChannels && !dilated;
  const k = toHwio(weight, a.inChannels, a.groups, !depthwise);
  const ws = [k];
  if (bias) ws.push({ shape: [co], data: bias.data.slice() });
  const common = {
    kernel_size: [...a.kernel],
    strides: stride,
    padding: mode,
    data_format: 'channels_last',
    dilation_rate: [...a.dilation],
    activation: 'linear',
    use_bias: !!bias,
  };
  let layer = depthwise
    ? g.emit('DepthwiseConv2D', node.name, { ...common, depth_multiplier: a.outChannels / a.inChannels }, [src], ws, ['depthwise_kernel', 'bias'])
    : g.emit('Conv2D', node.name, { ...common, filters: co }, [src], ws, ['kernel', 'bias']);
  if (subsample) {
    layer = g.emit(
      'MaxPooling2D',
      `${node.name}_stride`,
      { pool_size: [1, 1], strides: [...a.stride], padding: 'valid', data_format: 'channels_last' },
      [layer],
    );
  }
  return { layer, kind: 'map', c: co, h: oh, w: ow };
}

function poolLayer(g: TfjsGraph, node: MaxPoolNode | AvgPoolNode, x: TfValue, outShape: [number, number, number], fail: (n: Node, why: string) => never): TfValue {
  const a = node.attrs;
  const [c, oh, ow] = outShape;
  // PyTorch's AvgPool with count_include_pad divides by the window clipped to the zero-padded input:
  // pad explicitly, then TF.js's in-bounds divisor is that count. MaxPool pads with -inf, which is
  // what TF.js 'same' does (out-of-bounds cells ignored); AvgPool without count_include_pad likewise.
  const explicit = node.op === 'AvgPool' && a.countIncludePad !== false && (a.padding[0] > 0 || a.padding[1] > 0);
  const pre = explicit ? [a.padding[0], a.padding[1]] : [0, 0];
  const n = [x.h + 2 * pre[0]!, x.w + 2 * pre[1]!];
  const mode = commonMode(
    tfPaddingModes(n[0]!, a.kernel[0], a.stride[0], a.padding[0] - pre[0]!, oh),
    tfPaddingModes(n[1]!, a.kernel[1], a.stride[1], a.padding[1] - pre[1]!, ow),
  );
  if (!mode) {
    fail(
      node,
      `kernel [${a.kernel}] stride [${a.stride}] padding [${a.padding}]${a.ceilMode ? ' ceil_mode' : ''} on a ${x.h}x${x.w} input gives ` +
        `${oh}x${ow} windows that neither 'valid' nor 'same' pooling reproduces`,
    );
  }
  let src = x.layer;
  if (explicit) {
    src = g.emit('ZeroPadding2D', `${node.name}_pad`, { padding: [[pre[0], pre[0]], [pre[1], pre[1]]], data_format: 'channels_last' }, [src]);
  }
  const layer = g.emit(
    node.op === 'MaxPool' ? 'MaxPooling2D' : 'AveragePooling2D',
    node.name,
    { pool_size: [...a.kernel], strides: [...a.stride], padding: mode, data_format: 'channels_last' },
    [src],
  );
  return { layer, kind: 'map', c, h: oh, w: ow };
}

/**
 * Strided spatial slice: Cropping2D to [start, end) on each axis, then a 1x1 max pool whose strides
 * are the steps (it picks every step-th element: ceil((end - start) / step) outputs, as the slice).
 */
function sliceLayer(g: TfjsGraph, node: SliceNode, x: TfValue, outShape: [number, number, number]): TfValue {
  const a = node.attrs;
  const [c, oh, ow] = outShape;
  const crop = [[0, 0], [0, 0]];
  const steps = [1, 1];
  a.axes.forEach((axis, i) => {
    const size = axis === 2 ? x.h : x.w;
    crop[axis - 2] = [a.starts[i]!, size - a.ends[i]!];
    steps[axis - 2] = a.steps[i]!;
  });
  let layer = x.layer;
  const cropped = crop.some(([b, e]) => b! > 0 || e! > 0);
  const strided = steps.some((s) => s > 1);
  if (cropped) layer = g.emit('Cropping2D', strided ? `${node.name}_crop` : node.name, { cropping: crop, data_format: 'channels_last' }, [layer]);
  if (strided) {
    layer = g.emit('MaxPooling2D', node.name, { pool_size: [1, 1], strides: steps, padding: 'valid', data_format: 'channels_last' }, [layer]);
  }
  if (!cropped && !strided) layer = g.emit('Activation', node.name, { activation: 'linear' }, [layer]);
  return { layer, kind: 'map', c, h: oh, w: ow };
}

/**
 * Constant padding: new channels by a fixed 1x1 Conv2D that copies channel i to cBegin + i (weights
 * 0/1, so exact) with the pad value as the bias of the new channels; spatial zeros by ZeroPadding2D.
 */
function padLayer(g: TfjsGraph, node: PadNode, x: TfValue, outShape: [number, number, number], fail: (n: Node, why: string) => never): TfValue {
  const [, cb, hb, wb, , ce, he, we] = node.attrs.pads;
  const value = node.attrs.value;
  const [co, oh, ow] = outShape;
  const spatial = hb + he + wb + we > 0;
  if (spatial && value !== 0) fail(node, `spatial padding with the value ${value} (TF.js ZeroPadding2D pads with zeros only)`);
  let layer = x.layer;
  if (cb + ce > 0) {
    const kernel = new Float32Array(x.c * co);
    for (let i = 0; i < x.c; i++) kernel[i * co + cb + i] = 1;
    const ws: Omit<WeightEntry, 'name'>[] = [{ shape: [1, 1, x.c, co], data: kernel }];
    if (value !== 0) {
      const bias = new Float32Array(co).fill(value);
      bias.fill(0, cb, cb + x.c);
      ws.push({ shape: [co], data: bias });
    }
    layer = g.emit(
      'Conv2D',
      spatial ? `${node.name}_channels` : node.name,
      { filters: co, kernel_size: [1, 1], strides: [1, 1], padding: 'valid', data_format: 'channels_last', dilation_rate: [1, 1], activation: 'linear', use_bias: value !== 0 },
      [layer],
      ws,
      ['kernel', 'bias'],
    );
  }
  if (spatial) {
    layer = g.emit('ZeroPadding2D', node.name, { padding: [[hb, he], [wb, we]], data_format: 'channels_last' }, [layer]);
  }
  return { layer, kind: 'map', c: co, h: oh, w: ow };
}

/** little-endian float32 bytes of the weights, concatenated in manifest order */
function weightBytes(weights: WeightEntry[]): Uint8Array {
  const total = weights.reduce((s, w) => s + w.data.length, 0);
  const all = new Float32Array(total);
  let off = 0;
  for (const w of weights) {
    all.set(w.data, off);
    off += w.data.length;
  }
  const bytes = new Uint8Array(all.buffer);
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
    // big-endian host: TF.js weight files are little-endian
    for (let i = 0; i < bytes.length; i += 4) bytes.subarray(i, i + 4).reverse();
  }
  return bytes;
}

/** true when every entry of an existing directory is what an export writes (so replacing it loses nothing else) */
async function isPreviousExport(dir: string): Promise<boolean> {
  const entries = await readdir(dir);
  return entries.every((e) => e === MODEL_JSON || SHARD_RE.test(e));
}

/**
 * Writes `model.json` and `group1-shardKofN.bin` into `dir` atomically: everything goes into a
 * sibling temp directory that is renamed into place. An existing `dir` must be empty or hold only a
 * previous export (model.json + shards), which is then replaced. On any error `dir` is untouched.
 *
 * The model expects NHWC float32 input [N, H, W, C] (batch free), normalised per channel as
 * ((x / 255) - mean[c]) / std[c] with mean/std from the IR metadata; the same facts are recorded in
 * model.json's `userDefinedMetadata.cmiprune` (TF.js keeps it: `model.getUserDefinedMetadata()`).
 */
export async function exportTfjs(model: Model, dir: string, opts: TfjsExportOptions = {}): Promise<TfjsExportResult> {
  const shardBytes = opts.shardBytes ?? DEFAULT_TFJS_SHARD_BYTES;
  if (!Number.isInteger(shardBytes) || shardBytes < 4 || shardBytes % 4 !== 0) {
    throw new UserError(`exportTfjs: shardBytes must be a positive multiple of 4, got ${shardBytes}`);
  }
  const conv = convert(model);
  const bytes = weightBytes(conv.weights);
  const nShards = Math.max(1, Math.ceil(bytes.length / shardBytes));
  const shardNames = Array.from({ length: bytes.length ? nShards : 0 }, (_, i) => `group1-shard${i + 1}of${nShards}.bin`);
  const metadata = {
    cmiprune: {
      version: 1,
      model: model.name,
      inputName: model.inputs[0]!.name,
      inputLayout: 'NHWC',
      inputShape: conv.inputShape,
      normalization: conv.normalization
        ? { ...conv.normalization, formula: 'input[n,h,w,c] = (pixel[n,h,w,c] / 255 - mean[c]) / std[c]' }
        : null,
      outputs: conv.outputs,
      metadata: { ...model.metadata },
    },
  };
  const modelJson = {
    format: 'layers-model',
    generatedBy: `cmiprune ${packageVersion()}`.trim(),
    convertedBy: 'cmiprune exportTfjs',
    modelTopology: conv.topology,
    weightsManifest: [{ paths: shardNames, weights: conv.weights.map((w) => ({ name: w.name, shape: w.shape, dtype: 'float32' })) }],
    userDefinedMetadata: metadata,
  };

  const target = resolve(dir);
  const parent = dirname(target);
  await mkdir(parent, { recursive: true });
  const tmp = join(parent, `.${basename(target)}.tmp-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`);
  let old: string | undefined;
  try {
    await mkdir(tmp);
    await writeFile(join(tmp, MODEL_JSON), JSON.stringify(modelJson));
    for (let i = 0; i < shardNames.length; i++) {
      await writeFile(join(tmp, shardNames[i]!), bytes.subarray(i * shardBytes, Math.min((i + 1) * shardBytes, bytes.length)));
    }
    try {
      await rename(tmp, target); // succeeds when target is absent or an empty directory
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') {
        throw new UserError(`exportTfjs: cannot create ${target}: ${(e as Error).message}`, { cause: e });
      }
      if (!(await isPreviousExport(target))) {
        throw new UserError(`exportTfjs: ${target} exists and holds files other than a TF.js export; refusing to replace it`);
      }
      old = `${tmp}-old`;
      await rename(target, old);
      await rename(tmp, target);
    }
  } catch (e) {
    if (old) await rename(old, target).catch(() => undefined); // put the previous export back
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  if (old) await rm(old, { recursive: true, force: true });
  return {
    dir: target,
    files: [MODEL_JSON, ...shardNames].map((f) => join(target, f)),
    format: 'layers-model',
    inputLayout: 'NHWC',
    inputShape: conv.inputShape,
    normalization: conv.normalization,
    outputs: conv.outputs,
    weightBytes: bytes.length,
    layers: conv.layerCount,
  };
}
