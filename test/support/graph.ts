// Builds small IR graphs (any DAG, every op) with seeded weights, for tests. Each node's output is
// named after the node; params are '<node>.weight', '<node>.bias', '<node>.running_mean', ...
import type { Model, Node, Tensor } from '../../src/ir/model.js';
import { type Rng, uniformTensor } from './random.js';

export interface ConvOpts {
  stride?: number;
  pad?: number;
  dil?: number;
  groups?: number;
  /** default true */
  bias?: boolean;
}

export class GraphBuilder {
  nodes: Node[] = [];
  tensors: Record<string, Tensor> = {};

  /** inputName: the graph input's name, which the first node reads */
  constructor(
    private readonly rng: Rng,
    readonly inputName = 'input',
  ) {}

  /** a parameter uniform in [lo, hi) */
  private param(name: string, shape: number[], lo = -0.5, hi = 0.5): string {
    this.tensors[name] = uniformTensor(this.rng, shape, lo, hi);
    return name;
  }

  conv(name: string, x: string, inC: number, outC: number, k: number, o: ConvOpts = {}): string {
    const groups = o.groups ?? 1;
    const params: Record<string, string> = { weight: this.param(`${name}.weight`, [outC, inC / groups, k, k]) };
    if (o.bias ?? true) params.bias = this.param(`${name}.bias`, [outC]);
    const s = o.stride ?? 1, p = o.pad ?? 0, d = o.dil ?? 1;
    this.nodes.push({
      name, op: 'Conv2d', inputs: [x], outputs: [name],
      attrs: { inChannels: inC, outChannels: outC, kernel: [k, k], stride: [s, s], padding: [p, p], dilation: [d, d], groups },
      params,
    });
    return name;
  }

  /** BatchNorm with weight in [0.5, 1.5), running mean in [-0.2, 0.2), running var in [0.5, 2) */
  bn(name: string, x: string, c: number): string {
    this.nodes.push({
      name, op: 'BatchNorm', inputs: [x], outputs: [name], attrs: { numFeatures: c, eps: 1e-5, momentum: 0.1 },
      params: {
        weight: this.param(`${name}.weight`, [c], 0.5, 1.5),
        bias: this.param(`${name}.bias`, [c]),
        runningMean: this.param(`${name}.running_mean`, [c], -0.2, 0.2),
        runningVar: this.param(`${name}.running_var`, [c], 0.5, 2),
      },
    });
    return name;
  }

  simple(op: 'Relu' | 'GlobalAvgPool', name: string, x: string): string {
    this.nodes.push({ name, op, inputs: [x], outputs: [name], attrs: {}, params: {} } as Node);
    return name;
  }

  /** countIncludePad is set on AvgPool only (as the ONNX importer does) */
  pool(op: 'MaxPool' | 'AvgPool', name: string, x: string, k: number, s: number, pad = 0, ceilMode = false, countIncludePad = true): string {
    const attrs = { kernel: [k, k] as [number, number], stride: [s, s] as [number, number], padding: [pad, pad] as [number, number], ceilMode };
    this.nodes.push({ name, op, inputs: [x], outputs: [name], attrs: op === 'AvgPool' ? { ...attrs, countIncludePad } : attrs, params: {} });
    return name;
  }

  flatten(name: string, x: string): string {
    this.nodes.push({ name, op: 'Flatten', inputs: [x], outputs: [name], attrs: { axis: 1 }, params: {} });
    return name;
  }

  linear(name: string, x: string, i: number, o: number, bias = true): string {
    const params: Record<string, string> = { weight: this.param(`${name}.weight`, [o, i]) };
    if (bias) params.bias = this.param(`${name}.bias`, [o]);
    this.nodes.push({ name, op: 'Linear', inputs: [x], outputs: [name], attrs: { inFeatures: i, outFeatures: o }, params });
    return name;
  }

  add(name: string, a: string, b: string): string {
    this.nodes.push({ name, op: 'Add', inputs: [a, b], outputs: [name], attrs: {}, params: {} });
    return name;
  }

  /** strided spatial slice, e.g. slice('sub', x, [2, 3], [0, 0], [32, 32], [2, 2]) for x[:, :, ::2, ::2] */
  slice(name: string, x: string, axes: number[], starts: number[], ends: number[], steps: number[]): string {
    this.nodes.push({ name, op: 'Slice', inputs: [x], outputs: [name], attrs: { axes, starts, ends, steps }, params: {} });
    return name;
  }

  /** constant padding; pads in ONNX order [N,C,H,W begin, N,C,H,W end] */
  pad(name: string, x: string, pads: [number, number, number, number, number, number, number, number], value = 0): string {
    this.nodes.push({ name, op: 'Pad', inputs: [x], outputs: [name], attrs: { pads, mode: 'constant', value }, params: {} });
    return name;
  }

  /** the model so far; inShape without the batch dim */
  model(name: string, inShape: number[], out: string, metadata: Record<string, string> = {}): Model {
    return { name, inputs: [{ name: this.inputName, shape: [-1, ...inShape] }], outputs: [out], nodes: this.nodes, tensors: this.tensors, metadata };
  }
}

/** The model's BatchNorm nodes, in graph order. */
export function bnNodes(m: Model): Extract<Node, { op: 'BatchNorm' }>[] {
  return m.nodes.filter((n): n is Extract<Node, { op: 'BatchNorm' }> => n.op === 'BatchNorm');
}
