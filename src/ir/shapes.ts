// Shape inference and cost accounting over the IR. Every check names the node so a bad import or a
// bad surgery is reported where it happened, not as a libtorch error later.
import { UserError } from '../util/errors.js';
import { type Model, type Node, type PoolAttrs, numel } from './model.js';

export class ShapeError extends UserError {
  constructor(node: Node | string, message: string) {
    super(`${typeof node === 'string' ? node : `node '${node.name}' (${node.op})`}: ${message}`);
    this.name = 'ShapeError';
  }
}

export interface LayerCost {
  node: string;
  op: Node['op'];
  /** output shape for one sample (batch dim dropped) */
  outShape: number[];
  params: number;
  /** multiply-accumulates per sample */
  macs: number;
}

export interface ModelCost {
  layers: LayerCost[];
  params: number;
  macs: number;
}

function poolOut(size: number, k: number, s: number, p: number, ceil: boolean, dilation = 1): number {
  const span = size + 2 * p - dilation * (k - 1) - 1;
  let out = (ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
  // PyTorch: with ceil_mode the last window must start inside the input or its left padding
  if (ceil && (out - 1) * s >= size + p) out -= 1;
  return out;
}

function pooled(node: Node, attrs: PoolAttrs, x: number[]): number[] {
  if (x.length !== 4) throw new ShapeError(node, `expects a 4-d input [N,C,H,W], got [${x}]`);
  const [n, c, h, w] = x as [number, number, number, number];
  const oh = poolOut(h, attrs.kernel[0], attrs.stride[0], attrs.padding[0], attrs.ceilMode);
  const ow = poolOut(w, attrs.kernel[1], attrs.stride[1], attrs.padding[1], attrs.ceilMode);
  if (oh < 1 || ow < 1) throw new ShapeError(node, `kernel ${attrs.kernel} does not fit input ${h}x${w}`);
  return [n, c, oh, ow];
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

/** Elements a strided slice [start, end) with step takes: ceil((end - start) / step). */
export function sliceLength(start: number, end: number, step: number): number {
  return Math.max(0, Math.ceil((end - start) / step));
}

function sliced(node: Extract<Node, { op: 'Slice' }>, x: number[]): number[] {
  if (x.length !== 4) throw new ShapeError(node, `expects a 4-d input [N,C,H,W], got [${x}]`);
  const { axes, starts, ends, steps } = node.attrs;
  const k = Array.isArray(axes) ? axes.length : -1;
  if (k < 1 || k > 2 || ![starts, ends, steps].every((v) => Array.isArray(v) && v.length === k)) {
    throw new ShapeError(node, `axes, starts, ends and steps must be lists of the same length 1 or 2, got ${JSON.stringify(node.attrs)}`);
  }
  const out = [...x];
  axes.forEach((axis, i) => {
    if (!isInt(axis) || (axis !== 2 && axis !== 3) || (i > 0 && axis <= axes[i - 1]!)) {
      throw new ShapeError(node, `axes [${axes}] must be spatial (2 = H, 3 = W) and strictly increasing`);
    }
    const [start, end, step] = [starts[i], ends[i], steps[i]];
    if (!isInt(step) || step < 1) throw new ShapeError(node, `step ${step} on axis ${axis} must be an integer >= 1`);
    if (!isInt(start) || !isInt(end) || start < 0 || end <= start || end > x[axis]!) {
      throw new ShapeError(node, `range [${start}, ${end}) on axis ${axis} must satisfy 0 <= start < end <= ${x[axis]} (the input's size)`);
    }
    out[axis] = sliceLength(start, end, step);
  });
  return out;
}

function padded(node: Extract<Node, { op: 'Pad' }>, x: number[]): number[] {
  if (x.length !== 4) throw new ShapeError(node, `expects a 4-d input [N,C,H,W], got [${x}]`);
  const { pads, mode, value } = node.attrs;
  if (!Array.isArray(pads) || pads.length !== 8 || !pads.every((p) => isInt(p) && p >= 0)) {
    throw new ShapeError(node, `pads must be 8 integers >= 0 [N,C,H,W begin, N,C,H,W end], got ${JSON.stringify(pads)}`);
  }
  if (pads[0] !== 0 || pads[4] !== 0) throw new ShapeError(node, `pads [${pads}] pad the batch dimension, which is not supported`);
  if (mode !== 'constant') throw new ShapeError(node, `mode '${mode}' is not supported (only 'constant')`);
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new ShapeError(node, `value ${value} must be a finite number`);
  return x.map((d, i) => d + pads[i]! + pads[i + 4]!);
}

function paramShape(model: Model, node: Node, slot: string): number[] | undefined {
  const key = (node.params as Record<string, string | undefined>)[slot];
  if (key === undefined) return undefined;
  const t = model.tensors[key];
  if (!t) throw new ShapeError(node, `parameter '${slot}' refers to missing tensor '${key}'`);
  if (t.data.length !== numel(t.shape)) {
    throw new ShapeError(node, `tensor '${key}' has ${t.data.length} values for shape [${t.shape}]`);
  }
  return t.shape;
}

function expectShape(node: Node, what: string, got: number[] | undefined, want: number[]): void {
  if (!got) throw new ShapeError(node, `missing parameter '${what}'`);
  if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
    throw new ShapeError(node, `parameter '${what}' has shape [${got}], expected [${want}]`);
  }
}

/** Output shape of one node given its input shapes (batch dim included, any value). */
export function nodeOutputShape(model: Model, node: Node, ins: number[][]): number[] {
  const x = ins[0]!;
  switch (node.op) {
    case 'Conv2d': {
      const a = node.attrs;
      if (x.length !== 4) throw new ShapeError(node, `expects a 4-d input [N,C,H,W], got [${x}]`);
      if (x[1] !== a.inChannels) throw new ShapeError(node, `input has ${x[1]} channels, layer expects ${a.inChannels}`);
      if (a.inChannels % a.groups || a.outChannels % a.groups) {
        throw new ShapeError(node, `channels ${a.inChannels}->${a.outChannels} not divisible by groups ${a.groups}`);
      }
      expectShape(node, 'weight', paramShape(model, node, 'weight'), [
        a.outChannels,
        a.inChannels / a.groups,
        a.kernel[0],
        a.kernel[1],
      ]);
      const b = paramShape(model, node, 'bias');
      if (b) expectShape(node, 'bias', b, [a.outChannels]);
      const oh = poolOut(x[2]!, a.kernel[0], a.stride[0], a.padding[0], false, a.dilation[0]);
      const ow = poolOut(x[3]!, a.kernel[1], a.stride[1], a.padding[1], false, a.dilation[1]);
      if (oh < 1 || ow < 1) throw new ShapeError(node, `kernel ${a.kernel} does not fit input ${x[2]}x${x[3]}`);
      return [x[0]!, a.outChannels, oh, ow];
    }
    case 'BatchNorm': {
      if (x.length !== 2 && x.length !== 4) throw new ShapeError(node, `expects [N,C] or [N,C,H,W], got [${x}]`);
      const c = node.attrs.numFeatures;
      if (x[1] !== c) throw new ShapeError(node, `input has ${x[1]} channels, layer expects ${c}`);
      for (const slot of ['weight', 'bias', 'runningMean', 'runningVar']) {
        expectShape(node, slot, paramShape(model, node, slot), [c]);
      }
      return x;
    }
    case 'Relu':
      return x;
    case 'MaxPool':
    case 'AvgPool':
      return pooled(node, node.attrs, x);
    case 'GlobalAvgPool':
      if (x.length !== 4) throw new ShapeError(node, `expects a 4-d input [N,C,H,W], got [${x}]`);
      return [x[0]!, x[1]!, 1, 1];
    case 'Flatten':
      if (node.attrs.axis !== 1) throw new ShapeError(node, `only axis 1 is supported, got ${node.attrs.axis}`);
      return [x[0]!, numel(x.slice(1))];
    case 'Linear': {
      const a = node.attrs;
      if (x.length !== 2) throw new ShapeError(node, `expects a 2-d input [N,F], got [${x}] (missing Flatten?)`);
      if (x[1] !== a.inFeatures) throw new ShapeError(node, `input has ${x[1]} features, layer expects ${a.inFeatures}`);
      expectShape(node, 'weight', paramShape(model, node, 'weight'), [a.outFeatures, a.inFeatures]);
      const b = paramShape(model, node, 'bias');
      if (b) expectShape(node, 'bias', b, [a.outFeatures]);
      return [x[0]!, a.outFeatures];
    }
    case 'Add': {
      const y = ins[1];
      if (!y) throw new ShapeError(node, 'needs two inputs');
      if (x.length !== y.length || x.some((d, i) => d !== y[i])) {
        throw new ShapeError(node, `input shapes differ: [${x}] vs [${y}]`);
      }
      return x;
    }
    case 'Slice':
      return sliced(node, x);
    case 'Pad':
      return padded(node, x);
  }
}

function nodeCost(model: Model, node: Node, out: number[]): { params: number; macs: number } {
  let params = 0;
  for (const key of Object.values(node.params as Record<string, string>)) {
    // BN running stats are buffers, not parameters (PyTorch's convention for parameter counts)
    if (node.op === 'BatchNorm' && (key === node.params.runningMean || key === node.params.runningVar)) continue;
    params += numel(model.tensors[key]!.shape);
  }
  const perSampleOut = numel(out.slice(1));
  let macs = 0;
  if (node.op === 'Conv2d') {
    const a = node.attrs;
    macs = perSampleOut * (a.inChannels / a.groups) * a.kernel[0] * a.kernel[1];
  } else if (node.op === 'Linear') {
    macs = node.attrs.inFeatures * node.attrs.outFeatures;
  }
  return { params, macs };
}

/**
 * Infers every value's shape (batch dim = `batch`) and checks params against attrs.
 * Throws ShapeError naming the node at the first inconsistency.
 */
export function inferShapes(model: Model, batch = 1): Map<string, number[]> {
  const shapes = new Map<string, number[]>();
  for (const v of model.inputs) {
    shapes.set(v.name, v.shape.map((d, i) => (i === 0 && d < 0 ? batch : d)));
    if (v.shape.slice(1).some((d) => !(d > 0))) throw new ShapeError(`input '${v.name}'`, `needs a static shape, got [${v.shape}]`);
  }
  for (const node of model.nodes) {
    const ins = node.inputs.map((name) => {
      const s = shapes.get(name);
      if (!s) throw new ShapeError(node, `input '${name}' is not produced by any earlier node or model input`);
      return s;
    });
    if (ins.length === 0) throw new ShapeError(node, 'has no inputs');
    const out = nodeOutputShape(model, node, ins);
    if (shapes.has(node.outputs[0])) throw new ShapeError(node, `output '${node.outputs[0]}' is produced twice`);
    shapes.set(node.outputs[0], out);
  }
  for (const o of model.outputs) {
    if (!shapes.has(o)) throw new ShapeError(`output '${o}'`, 'is not produced by any node');
  }
  return shapes;
}

/** Parameters and multiply-adds per layer and in total, for one sample. */
export function modelCost(model: Model): ModelCost {
  const shapes = inferShapes(model, 1);
  const layers = model.nodes.map((node) => {
    const out = shapes.get(node.outputs[0])!;
    return { node: node.name, op: node.op, outShape: out.slice(1), ...nodeCost(model, node, out) };
  });
  return {
    layers,
    params: layers.reduce((s, l) => s + l.params, 0),
    macs: layers.reduce((s, l) => s + l.macs, 0),
  };
}
