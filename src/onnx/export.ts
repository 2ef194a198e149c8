// IR -> ONNX (default opset 13), loadable by ONNX Runtime, PyTorch-style node/tensor names kept.
import { packageVersion } from '../util/version.js';
import type { Model, Node } from '../ir/model.js';
import { inferShapes } from '../ir/shapes.js';
import { UserError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import { AttrType, DataType, float32ToRaw, irVersionForOpset, onnx, type pb } from './proto.js';

export interface ExportOptions {
  /** default 13; every exported op has the same semantics in opsets 13..22 */
  opset?: number;
  producerName?: string;
  docString?: string;
}

export const DEFAULT_OPSET = 13;
export const MAX_OPSET = 22;


const ints = (name: string, v: number[]): pb.IAttributeProto => ({ name, type: AttrType.INTS, ints: v });
const int = (name: string, v: number): pb.IAttributeProto => ({ name, type: AttrType.INT, i: v });
const float = (name: string, v: number): pb.IAttributeProto => ({ name, type: AttrType.FLOAT, f: v });

function tensorType(shape: number[]): pb.ITypeProto {
  return {
    tensorType: {
      elemType: DataType.FLOAT,
      shape: { dim: shape.map((d, i) => (i === 0 ? { dimParam: 'batch' } : { dimValue: d })) },
    },
  };
}

/** Adds a constant initializer (int64 vector or float32 scalar) under a fresh name derived from `base`. */
type AddConst = (base: string, t: { int64?: number[]; float?: number }) => string;

function nodeProto(n: Node, addConst: AddConst): pb.INodeProto {
  const base = { name: n.name, input: [...n.inputs], output: [...n.outputs] };
  const p = n.params as Record<string, string | undefined>;
  const withParams = (...slots: string[]): string[] => {
    const ins = [...n.inputs];
    for (const s of slots) if (p[s]) ins.push(p[s]!);
    return ins;
  };
  switch (n.op) {
    case 'Conv2d': {
      const a = n.attrs;
      return {
        ...base,
        opType: 'Conv',
        input: withParams('weight', 'bias'),
        attribute: [
          ints('dilations', a.dilation),
          int('group', a.groups),
          ints('kernel_shape', a.kernel),
          ints('pads', [a.padding[0], a.padding[1], a.padding[0], a.padding[1]]),
          ints('strides', a.stride),
        ],
      };
    }
    case 'BatchNorm':
      return {
        ...base,
        opType: 'BatchNormalization',
        input: withParams('weight', 'bias', 'runningMean', 'runningVar'),
        // ONNX momentum weighs the running value, PyTorch's (the IR's) the batch value
        attribute: [float('epsilon', n.attrs.eps), float('momentum', 1 - n.attrs.momentum)],
      };
    case 'Relu':
      return { ...base, opType: 'Relu' };
    case 'MaxPool':
    case 'AvgPool': {
      const a = n.attrs;
      const attribute = [
        int('ceil_mode', a.ceilMode ? 1 : 0),
        ints('kernel_shape', a.kernel),
        ints('pads', [a.padding[0], a.padding[1], a.padding[0], a.padding[1]]),
        ints('strides', a.stride),
      ];
      // PyTorch's AvgPool2d default is count_include_pad=True
      if (n.op === 'AvgPool') attribute.push(int('count_include_pad', a.countIncludePad === false ? 0 : 1));
      return { ...base, opType: n.op === 'MaxPool' ? 'MaxPool' : 'AveragePool', attribute };
    }
    case 'GlobalAvgPool':
      return { ...base, opType: 'GlobalAveragePool' };
    case 'Flatten':
      return { ...base, opType: 'Flatten', attribute: [int('axis', n.attrs.axis)] };
    case 'Linear':
      return {
        ...base,
        opType: 'Gemm',
        input: withParams('weight', 'bias'),
        attribute: [float('alpha', 1), float('beta', 1), int('transB', 1)],
      };
    case 'Add':
      return { ...base, opType: 'Add' };
    case 'Slice': {
      // opset >= 10: starts/ends/axes/steps are int64 inputs
      const a = n.attrs;
      const input = [n.inputs[0]!];
      for (const k of ['starts', 'ends', 'axes', 'steps'] as const) input.push(addConst(`${n.name}.${k}`, { int64: a[k] }));
      return { ...base, opType: 'Slice', input };
    }
    case 'Pad': {
      // opset >= 11: pads and constant_value are inputs
      const a = n.attrs;
      const input = [n.inputs[0]!, addConst(`${n.name}.pads`, { int64: [...a.pads] }), addConst(`${n.name}.value`, { float: a.value })];
      return { ...base, opType: 'Pad', input, attribute: [{ name: 'mode', type: AttrType.STRING, s: new TextEncoder().encode(a.mode) }] };
    }
  }
}

/** Serialises an IR model to ONNX bytes; float32 initializers as raw_data, symbolic batch dim 'batch'. */
export function exportOnnx(model: Model, opts: ExportOptions = {}): Uint8Array {
  const opset = opts.opset ?? DEFAULT_OPSET;
  if (!Number.isInteger(opset) || opset < DEFAULT_OPSET || opset > MAX_OPSET) {
    throw new UserError(`exportOnnx: opset ${opset} is not supported (use ${DEFAULT_OPSET}..${MAX_OPSET})`);
  }
  const shapes = inferShapes(model, 1); // also validates params against attrs

  const values = new Set<string>([...model.inputs.map((v) => v.name), ...model.nodes.map((n) => n.outputs[0])]);
  const initNames: string[] = [];
  const seen = new Set<string>();
  for (const n of model.nodes) {
    for (const key of Object.values(n.params as Record<string, string>)) {
      if (seen.has(key)) continue;
      if (values.has(key)) throw new UserError(`exportOnnx: tensor '${key}' has the same name as a value in the graph`);
      if (!model.tensors[key]) throw new UserError(`exportOnnx: node '${n.name}' refers to missing tensor '${key}'`);
      seen.add(key);
      initNames.push(key);
    }
  }

  const initializer: pb.ITensorProto[] = initNames.map((key) => {
    const t = model.tensors[key]!;
    return { name: key, dims: [...t.shape], dataType: DataType.FLOAT, rawData: float32ToRaw(t.data) };
  });
  // op constants (Slice bounds, Pad pads/value) get names no value, parameter or other constant has
  const taken = new Set<string>([...values, ...initNames, ...Object.keys(model.tensors)]);
  const addConst: AddConst = (base, t) => {
    let name = base;
    for (let i = 1; taken.has(name); i++) name = `${base}_${i}`;
    taken.add(name);
    if (t.int64) initializer.push({ name, dims: [t.int64.length], dataType: DataType.INT64, int64Data: t.int64 });
    else initializer.push({ name, dims: [], dataType: DataType.FLOAT, rawData: float32ToRaw(Float32Array.of(t.float ?? 0)) });
    return name;
  };
  const graph: pb.IGraphProto = {
    name: model.name || 'cmiprune',
    node: model.nodes.map((n) => nodeProto(n, addConst)),
    initializer,
    input: model.inputs.map((v) => ({ name: v.name, type: tensorType(v.shape) })),
    output: model.outputs.map((o) => ({ name: o, type: tensorType(shapes.get(o)!) })),
  };
  const proto: pb.IModelProto = {
    irVersion: irVersionForOpset(opset),
    opsetImport: [{ domain: '', version: opset }],
    producerName: opts.producerName ?? 'cmiprune',
    producerVersion: packageVersion(),
    docString: opts.docString ?? '',
    graph,
    metadataProps: Object.entries(model.metadata).map(([key, value]) => ({ key, value })),
  };
  return onnx.ModelProto.encode(proto).finish();
}

/** Writes the ONNX file atomically (temp file + rename), so a crash never leaves a half-written model. */
export async function saveOnnxFile(model: Model, path: string, opts: ExportOptions = {}): Promise<void> {
  await writeFileAtomic(path, exportOnnx(model, opts));
}
