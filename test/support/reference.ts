// The tests' one reference interpreter of the IR: plain TypeScript in float64, NCHW, PyTorch
// semantics, independent of the engine and of onnxruntime. Every op of src/ir/model.ts, with
// BatchNorm in eval mode (running statistics) or train mode (batch statistics).
import type { BatchNormAttrs, Conv2dAttrs, Model, Node, PadAttrs, PoolAttrs, SliceAttrs, Tensor } from '../../src/ir/model.js';

/** A dense float64 tensor, row-major. */
export interface RefTensor {
  shape: number[];
  data: Float64Array;
}

/** What a train-mode BatchNorm used and what it leaves behind, per channel. */
export interface BatchStats {
  /** the batch mean the normalisation used */
  mean: Float64Array;
  /** the biased batch variance the normalisation used */
  var: Float64Array;
  /** the unbiased batch variance (what the running variance is updated with) */
  varUnbiased: Float64Array;
  /** running statistics after this batch: (1 - momentum) * running + momentum * batch (PyTorch) */
  runningMean: Float64Array;
  runningVar: Float64Array;
}

export interface ReferenceOptions {
  /** BatchNorm on batch statistics (default false: running statistics) */
  train?: boolean;
  /** names of values (graph input or any node output) to return besides the outputs */
  taps?: string[];
}

export interface ReferenceResult {
  /** one per Model.outputs */
  outputs: Record<string, RefTensor>;
  /** one per requested tap */
  taps: Record<string, RefTensor>;
  /** train mode only: per BatchNorm node name */
  batchStats?: Record<string, BatchStats>;
}

const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** Output length of a conv or pool window along one axis (PyTorch, including its ceil-mode rule). */
function outSize(len: number, k: number, s: number, p: number, d: number, ceil: boolean): number {
  let o = Math.floor((len + 2 * p - d * (k - 1) - 1 + (ceil ? s - 1 : 0)) / s) + 1;
  // the last window must start inside the input or its left padding
  if (ceil && (o - 1) * s >= len + p) o--;
  return o;
}

function conv2d(x: RefTensor, w: RefTensor, b: RefTensor | undefined, a: Conv2dAttrs): RefTensor {
  const [N, C, H, W] = x.shape as [number, number, number, number];
  const [O, Cg, KH, KW] = w.shape as [number, number, number, number];
  const [sh, sw] = a.stride, [ph, pw] = a.padding, [dh, dw] = a.dilation, G = a.groups;
  if (C !== Cg * G) throw new Error(`reference Conv2d: input has ${C} channels, weight expects ${Cg} x ${G} groups`);
  const OH = outSize(H, KH, sh, ph, dh, false), OW = outSize(W, KW, sw, pw, dw, false);
  const y = new Float64Array(N * O * OH * OW);
  const Og = O / G;
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++) {
      const g = Math.floor(o / Og);
      for (let oh = 0; oh < OH; oh++)
        for (let ow = 0; ow < OW; ow++) {
          let s = b ? b.data[o]! : 0;
          for (let c = 0; c < Cg; c++)
            for (let kh = 0; kh < KH; kh++) {
              const ih = oh * sh - ph + kh * dh;
              if (ih < 0 || ih >= H) continue;
              for (let kw = 0; kw < KW; kw++) {
                const iw = ow * sw - pw + kw * dw;
                if (iw < 0 || iw >= W) continue;
                s += x.data[((n * C + g * Cg + c) * H + ih) * W + iw]! * w.data[((o * Cg + c) * KH + kh) * KW + kw]!;
              }
            }
          y[((n * O + o) * OH + oh) * OW + ow] = s;
        }
    }
  return { shape: [N, O, OH, OW], data: y };
}

/** BatchNorm over dim 1 of [N,C] or [N,C,H,W]; train mode normalises by the batch's biased variance. */
function batchNorm(x: RefTensor, p: Record<'weight' | 'bias' | 'runningMean' | 'runningVar', RefTensor>, a: BatchNormAttrs, train: boolean): { y: RefTensor; stats?: BatchStats } {
  const [N, C] = x.shape as [number, number];
  const S = numel(x.shape.slice(2));
  const y = new Float64Array(x.data.length);
  const st = train
    ? { mean: new Float64Array(C), var: new Float64Array(C), varUnbiased: new Float64Array(C), runningMean: new Float64Array(C), runningVar: new Float64Array(C) }
    : undefined;
  for (let c = 0; c < C; c++) {
    let mean = p.runningMean.data[c]!, v = p.runningVar.data[c]!;
    if (st) {
      let s = 0, s2 = 0;
      for (let n = 0; n < N; n++) for (let i = 0; i < S; i++) s += x.data[(n * C + c) * S + i]!;
      mean = s / (N * S);
      for (let n = 0; n < N; n++) for (let i = 0; i < S; i++) s2 += (x.data[(n * C + c) * S + i]! - mean) ** 2;
      v = s2 / (N * S);
      st.mean[c] = mean;
      st.var[c] = v;
      st.varUnbiased[c] = s2 / (N * S - 1);
      st.runningMean[c] = (1 - a.momentum) * p.runningMean.data[c]! + a.momentum * mean;
      st.runningVar[c] = (1 - a.momentum) * p.runningVar.data[c]! + a.momentum * st.varUnbiased[c]!;
    }
    const inv = 1 / Math.sqrt(v + a.eps);
    for (let n = 0; n < N; n++)
      for (let i = 0; i < S; i++) {
        const k = (n * C + c) * S + i;
        y[k] = (x.data[k]! - mean) * inv * p.weight.data[c]! + p.bias.data[c]!;
      }
  }
  return { y: { shape: [...x.shape], data: y }, stats: st };
}

function pool(x: RefTensor, a: PoolAttrs, max: boolean): RefTensor {
  const [N, C, H, W] = x.shape as [number, number, number, number];
  const [kh, kw] = a.kernel, [sh, sw] = a.stride, [ph, pw] = a.padding;
  const OH = outSize(H, kh, sh, ph, 1, a.ceilMode), OW = outSize(W, kw, sw, pw, 1, a.ceilMode);
  const y = new Float64Array(N * C * OH * OW);
  for (let nc = 0; nc < N * C; nc++)
    for (let oh = 0; oh < OH; oh++)
      for (let ow = 0; ow < OW; ow++) {
        const h0 = oh * sh - ph, w0 = ow * sw - pw;
        // PyTorch: the include-pad divisor counts padding but not positions past it
        const h1 = Math.min(h0 + kh, H + ph), w1 = Math.min(w0 + kw, W + pw);
        const padCount = (h1 - h0) * (w1 - w0);
        let m = -Infinity, s = 0, cnt = 0;
        for (let ih = Math.max(h0, 0); ih < Math.min(h1, H); ih++)
          for (let iw = Math.max(w0, 0); iw < Math.min(w1, W); iw++) {
            const v = x.data[(nc * H + ih) * W + iw]!;
            m = Math.max(m, v);
            s += v;
            cnt++;
          }
        y[(nc * OH + oh) * OW + ow] = max ? m : s / (a.countIncludePad ? padCount : cnt);
      }
  return { shape: [N, C, OH, OW], data: y };
}

/** x[..., start:end:step, ...] on each listed axis (any rank), by explicit index arithmetic. */
function slice(x: RefTensor, a: SliceAttrs): RefTensor {
  const shape = [...x.shape];
  const pick: number[][] = shape.map((d) => Array.from({ length: d }, (_, i) => i));
  a.axes.forEach((axis, i) => {
    const idx: number[] = [];
    for (let k = a.starts[i]!; k < Math.min(a.ends[i]!, x.shape[axis]!); k += a.steps[i]!) idx.push(k);
    pick[axis] = idx;
    shape[axis] = idx.length;
  });
  const inStride = x.shape.map((_, d) => numel(x.shape.slice(d + 1)));
  const y = new Float64Array(numel(shape));
  const pos = new Array<number>(shape.length).fill(0);
  for (let o = 0; o < y.length; o++) {
    let off = 0;
    for (let d = 0; d < shape.length; d++) off += pick[d]![pos[d]!]! * inStride[d]!;
    y[o] = x.data[off]!;
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++pos[d]! < shape[d]!) break;
      pos[d] = 0;
    }
  }
  return { shape, data: y };
}

/** Constant padding, pads in ONNX order [x1_begin, ..., xr_begin, x1_end, ..., xr_end]. */
function pad(x: RefTensor, a: PadAttrs): RefTensor {
  const r = x.shape.length;
  if (a.pads.length !== 2 * r) throw new Error(`reference Pad: ${a.pads.length} pads for a ${r}-d input`);
  const shape = x.shape.map((d, i) => d + a.pads[i]! + a.pads[i + r]!);
  const y = new Float64Array(numel(shape)).fill(a.value);
  const outStride = shape.map((_, d) => numel(shape.slice(d + 1)));
  const pos = new Array<number>(r).fill(0);
  for (let k = 0; k < x.data.length; k++) {
    let off = 0;
    for (let d = 0; d < r; d++) off += (pos[d]! + a.pads[d]!) * outStride[d]!;
    y[off] = x.data[k]!;
    for (let d = r - 1; d >= 0; d--) {
      if (++pos[d]! < x.shape[d]!) break;
      pos[d] = 0;
    }
  }
  return { shape, data: y };
}

function linear(x: RefTensor, w: RefTensor, b: RefTensor | undefined): RefTensor {
  const [N, I] = x.shape as [number, number];
  const O = w.shape[0]!;
  if (w.shape[1] !== I) throw new Error(`reference Linear: input has ${I} features, weight [${w.shape}]`);
  const d = new Float64Array(N * O);
  for (let i = 0; i < N; i++)
    for (let o = 0; o < O; o++) {
      let s = b ? b.data[o]! : 0;
      for (let k = 0; k < I; k++) s += x.data[i * I + k]! * w.data[o * I + k]!;
      d[i * O + o] = s;
    }
  return { shape: [N, O], data: d };
}

/**
 * Runs the whole model on x (shape with the batch dim) and returns its outputs, the requested taps
 * and, in train mode, each BatchNorm's batch statistics. Weights are read as float64.
 */
export function referenceForward(model: Model, x: Float32Array | Float64Array, shape: number[], opts: ReferenceOptions = {}): ReferenceResult {
  const train = opts.train ?? false;
  if (x.length !== numel(shape)) throw new Error(`referenceForward: input has ${x.length} values, shape [${shape}] needs ${numel(shape)}`);
  const vals = new Map<string, RefTensor>([[model.inputs[0]!.name, { shape: [...shape], data: Float64Array.from(x) }]]);
  const batchStats: Record<string, BatchStats> = {};
  const param = (n: Node, slot: string): RefTensor | undefined => {
    const key = (n.params as Record<string, string | undefined>)[slot];
    if (key === undefined) return undefined;
    const t: Tensor | undefined = model.tensors[key];
    if (!t) throw new Error(`referenceForward: node '${n.name}' param '${slot}' names missing tensor '${key}'`);
    return { shape: [...t.shape], data: Float64Array.from(t.data) };
  };
  const need = (n: Node, slot: string): RefTensor => {
    const t = param(n, slot);
    if (!t) throw new Error(`referenceForward: node '${n.name}' has no param '${slot}'`);
    return t;
  };
  const value = (n: Node, name: string): RefTensor => {
    const v = vals.get(name);
    if (!v) throw new Error(`referenceForward: node '${n.name}' reads '${name}', which no earlier node produces`);
    return v;
  };
  for (const n of model.nodes) {
    const a = value(n, n.inputs[0]!);
    let y: RefTensor;
    switch (n.op) {
      case 'Conv2d':
        y = conv2d(a, need(n, 'weight'), param(n, 'bias'), n.attrs);
        break;
      case 'BatchNorm': {
        const p = { weight: need(n, 'weight'), bias: need(n, 'bias'), runningMean: need(n, 'runningMean'), runningVar: need(n, 'runningVar') };
        const r = batchNorm(a, p, n.attrs, train);
        y = r.y;
        if (r.stats) batchStats[n.name] = r.stats;
        break;
      }
      case 'Relu':
        y = { shape: [...a.shape], data: a.data.map((v) => Math.max(v, 0)) };
        break;
      case 'MaxPool':
      case 'AvgPool':
        y = pool(a, n.attrs, n.op === 'MaxPool');
        break;
      case 'GlobalAvgPool': {
        const [N, C] = a.shape as [number, number];
        const S = numel(a.shape.slice(2));
        const d = new Float64Array(N * C);
        for (let i = 0; i < N * C; i++) {
          let s = 0;
          for (let j = 0; j < S; j++) s += a.data[i * S + j]!;
          d[i] = s / S;
        }
        y = { shape: [N, C, 1, 1], data: d };
        break;
      }
      case 'Flatten': {
        const axis = n.attrs.axis;
        y = { shape: [numel(a.shape.slice(0, axis)), numel(a.shape.slice(axis))], data: a.data.slice() };
        break;
      }
      case 'Linear':
        y = linear(a, need(n, 'weight'), param(n, 'bias'));
        break;
      case 'Add': {
        const b = value(n, n.inputs[1]!);
        if (b.data.length !== a.data.length) throw new Error(`reference Add '${n.name}': shapes [${a.shape}] and [${b.shape}]`);
        y = { shape: [...a.shape], data: a.data.map((v, i) => v + b.data[i]!) };
        break;
      }
      case 'Slice':
        y = slice(a, n.attrs);
        break;
      case 'Pad':
        y = pad(a, n.attrs);
        break;
    }
    vals.set(n.outputs[0], y);
  }
  const pick = (name: string): RefTensor => {
    const v = vals.get(name);
    if (!v) throw new Error(`referenceForward: no value named '${name}'`);
    return v;
  };
  const result: ReferenceResult = {
    outputs: Object.fromEntries(model.outputs.map((o) => [o, pick(o)])),
    taps: Object.fromEntries((opts.taps ?? []).map((t) => [t, pick(t)])),
  };
  if (train) result.batchStats = batchStats;
  return result;
}

/** Largest |a[i] - b[i]| (NaN if any difference is NaN); throws when the lengths differ. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`maxAbsDiff: lengths ${a.length} and ${b.length} differ`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = d; // NaN wins, so it cannot pass a tolerance check
  }
  return m;
}
