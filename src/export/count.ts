// Parameter and multiply-add counts read straight from an ONNX file's protobuf. Deliberately shares
// no code with the IR, the importer or src/ir/shapes.ts modelCost: it exists so tests (and users)
// can check the IR's accounting against a second, independent count of the written file.
import { UserError } from '../util/errors.js';
import { AttrType, DataType, onnx, type pb, toNum, type Int64 } from '../onnx/proto.js';

export interface OnnxConvInfo {
  /** the node's name (its first output's name when the node is unnamed) */
  name: string;
  outChannels: number;
  /** channels of the conv's input (all groups together) */
  inChannels: number;
  /** spatial kernel size, e.g. [kh, kw] */
  kernel: number[];
}

export interface OnnxCount {
  /** elements of the float initializers consumed as Conv W/B, Gemm B/C, BatchNormalization scale/B */
  params: number;
  /** multiply-adds per image (Conv and Gemm only) */
  macs: number;
  /** every Conv in graph order */
  convs: OnnxConvInfo[];
}

/** The ops the shape propagation understands; anything else is refused by name. */
export const COUNTABLE_ONNX_OPS: readonly string[] = [
  'Conv',
  'MaxPool',
  'AveragePool',
  'GlobalAveragePool',
  'Flatten',
  'Gemm',
  'Relu',
  'BatchNormalization',
  'Add',
  'Slice',
  'Pad',
  'Constant',
];

const FLOAT_TYPES: ReadonlySet<number> = new Set([DataType.FLOAT, DataType.FLOAT16, DataType.DOUBLE, DataType.BFLOAT16]);

class CountError extends UserError {
  constructor(message: string) {
    super(`countOnnx: ${message}`);
    this.name = 'CountError';
  }
}

const prod = (xs: readonly number[]): number => xs.reduce((a, b) => a * b, 1);

function attrOf(node: pb.INodeProto, name: string): pb.IAttributeProto | undefined {
  return (node.attribute ?? []).find((a) => a.name === name);
}

function attrInt(node: pb.INodeProto, name: string, dflt: number): number {
  const a = attrOf(node, name);
  if (!a) return dflt;
  if (a.type !== AttrType.INT) throw new CountError(`${label(node)}: attribute '${name}' is not an int`);
  return toNum(a.i as Int64);
}

function attrInts(node: pb.INodeProto, name: string): number[] | undefined {
  const a = attrOf(node, name);
  if (!a) return undefined;
  if (a.type !== AttrType.INTS) throw new CountError(`${label(node)}: attribute '${name}' is not a list of ints`);
  return (a.ints ?? []).map((v) => toNum(v as Int64));
}

function attrString(node: pb.INodeProto, name: string, dflt: string): string {
  const a = attrOf(node, name);
  if (!a) return dflt;
  if (a.type !== AttrType.STRING) throw new CountError(`${label(node)}: attribute '${name}' is not a string`);
  return new TextDecoder().decode(a.s ?? new Uint8Array());
}

function label(node: pb.INodeProto): string {
  return `node '${node.name || node.output?.[0] || '?'}' (${node.opType})`;
}

interface Window {
  kernel: number[];
  strides: number[];
  dilations: number[];
  /** [begin..., end...] as in ONNX */
  pads: number[];
  autoPad: string;
  ceil: boolean;
}

/** Spatial output sizes of a Conv or pooling window, per the ONNX spec (and ORT's ceil-mode rule). */
function windowOut(node: pb.INodeProto, spatial: number[], w: Window): number[] {
  const r = spatial.length;
  if (w.kernel.length !== r || w.strides.length !== r || w.dilations.length !== r || w.pads.length !== 2 * r) {
    throw new CountError(`${label(node)}: kernel/strides/dilations/pads do not match ${r} spatial dims`);
  }
  return spatial.map((size, i) => {
    const k = w.kernel[i]!;
    const s = w.strides[i]!;
    const d = w.dilations[i]!;
    const span = d * (k - 1) + 1;
    let out: number;
    if (w.autoPad === 'SAME_UPPER' || w.autoPad === 'SAME_LOWER') out = Math.ceil(size / s);
    else if (w.autoPad === 'VALID') out = Math.floor((size - span) / s) + 1;
    else if (w.autoPad === 'NOTSET') {
      const padded = size + w.pads[i]! + w.pads[i + r]! - span;
      out = (w.ceil ? Math.ceil(padded / s) : Math.floor(padded / s)) + 1;
      // a window may not start in the end padding (ONNX >= 1.16 reference, ORT, PyTorch)
      if (w.ceil && (out - 1) * s >= size + w.pads[i]!) out -= 1;
    } else throw new CountError(`${label(node)}: unknown auto_pad '${w.autoPad}'`);
    if (!(out >= 1)) throw new CountError(`${label(node)}: window ${k} (stride ${s}) does not fit spatial size ${size}`);
    return out;
  });
}

function windowAttrs(node: pb.INodeProto, r: number, kernel: number[] | undefined, pool: boolean): Window {
  if (!kernel) throw new CountError(`${label(node)}: missing kernel_shape`);
  return {
    kernel,
    strides: attrInts(node, 'strides') ?? new Array(r).fill(1),
    dilations: attrInts(node, 'dilations') ?? new Array(r).fill(1),
    pads: attrInts(node, 'pads') ?? new Array(2 * r).fill(0),
    autoPad: attrString(node, 'auto_pad', 'NOTSET'),
    ceil: pool && attrInt(node, 'ceil_mode', 0) !== 0,
  };
}

/** numpy-style multidirectional broadcast (ONNX Add) */
function broadcast(node: pb.INodeProto, a: number[], b: number[]): number[] {
  const r = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const x = a[a.length - r + i] ?? 1;
    const y = b[b.length - r + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new CountError(`${label(node)}: cannot broadcast [${a}] with [${b}]`);
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** The integers of an int64/int32 tensor (Slice bounds, Pad pads), or undefined for other types. */
function tensorInts(t: pb.ITensorProto): number[] | undefined {
  const n = prod((t.dims ?? []).map((d) => toNum(d as Int64)));
  const raw = t.rawData && t.rawData.length > 0 ? t.rawData : undefined;
  const big = (v: bigint): number => Number(v); // INT64_MAX ends become 9.2e18: clamped like any large end
  if (t.dataType === DataType.INT64) {
    if (raw) {
      const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
      return Array.from({ length: raw.length / 8 }, (_, i) => big(dv.getBigInt64(i * 8, true)));
    }
    return (t.int64Data ?? []).map((v) => (typeof v === 'number' ? v : Number(BigInt((v as { toString(): string }).toString()))));
  }
  if (t.dataType === DataType.INT32) {
    if (raw) {
      const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
      return Array.from({ length: raw.length / 4 }, (_, i) => dv.getInt32(i * 4, true));
    }
    return [...(t.int32Data ?? [])].slice(0, n);
  }
  return undefined;
}

/**
 * Counts parameters and multiply-adds per image of an ONNX model, from its protobuf alone.
 * Parameters follow PyTorch's convention (BatchNormalization running mean/var are buffers, not
 * parameters); each initializer counts once even when several nodes consume it. Multiply-adds:
 * Conv = output elements * (Cin / group) * prod(kernel), Gemm = K * N per row. Shapes are propagated
 * from the graph input with the batch dimension set to 1.
 */
export function countOnnx(onnxBytes: Uint8Array): OnnxCount {
  let model: pb.ModelProto;
  try {
    model = onnx.ModelProto.decode(onnxBytes);
  } catch (e) {
    throw new CountError(`not an ONNX model (${(e as Error).message})`);
  }
  const graph = model.graph;
  if (!graph) throw new CountError('the model has no graph');

  const inits = new Map<string, { dims: number[]; dataType: number }>();
  /** integer constants (initializers and Constant nodes): Slice bounds, Pad pads */
  const intConsts = new Map<string, number[]>();
  for (const t of graph.initializer ?? []) {
    inits.set(t.name ?? '', { dims: (t.dims ?? []).map((d) => toNum(d as Int64)), dataType: t.dataType ?? 0 });
    const v = tensorInts(t);
    if (v) intConsts.set(t.name ?? '', v);
  }

  const shapes = new Map<string, number[]>();
  for (const [name, t] of inits) shapes.set(name, t.dims);
  // old IR versions also list initializers as graph inputs
  const realInputs = (graph.input ?? []).filter((v) => !inits.has(v.name ?? ''));
  if (realInputs.length !== 1) throw new CountError(`expects exactly one graph input, found ${realInputs.length}`);
  const input = realInputs[0]!;
  const dims = input.type?.tensorType?.shape?.dim;
  if (!dims || dims.length < 2) throw new CountError(`graph input '${input.name}' has no usable static shape`);
  const inShape = dims.map((d, i) => {
    if (i === 0) return 1; // per image: batch 1 whatever the file declares
    const v = d.dimValue !== undefined && d.dimValue !== null ? toNum(d.dimValue as Int64) : 0;
    if (!(v > 0)) throw new CountError(`graph input '${input.name}' dim ${i} is not a static positive size`);
    return v;
  });
  shapes.set(input.name ?? '', inShape);

  const counted = new Set<string>();
  let params = 0;
  let macs = 0;
  const convs: OnnxConvInfo[] = [];

  const shapeOf = (node: pb.INodeProto, i: number): number[] => {
    const name = node.input?.[i];
    if (!name) throw new CountError(`${label(node)}: missing input ${i}`);
    const s = shapes.get(name);
    if (!s) throw new CountError(`${label(node)}: input '${name}' is not produced by any earlier node, initializer or graph input`);
    return s;
  };
  /** input i as a constant integer list; undefined when the input is left out */
  const intsOf = (node: pb.INodeProto, i: number, role: string): number[] | undefined => {
    const name = node.input?.[i];
    if (!name) return undefined;
    const v = intConsts.get(name);
    if (!v) throw new CountError(`${label(node)}: ${role} '${name}' is not a constant integer tensor`);
    return v;
  };
  const countParam = (node: pb.INodeProto, i: number): void => {
    const name = node.input?.[i];
    if (!name) return; // optional input left out
    const t = inits.get(name);
    if (!t) return; // computed at run time: not a parameter
    if (!FLOAT_TYPES.has(t.dataType)) {
      throw new CountError(`${label(node)}: initializer '${name}' has non-float data type ${t.dataType}`);
    }
    if (counted.has(name)) return;
    counted.add(name);
    params += prod(t.dims);
  };

  for (const node of graph.node ?? []) {
    const op = node.opType ?? '';
    if ((node.domain && node.domain !== 'ai.onnx') || !COUNTABLE_ONNX_OPS.includes(op)) {
      throw new CountError(
        `${label(node)}${node.domain ? ` in domain '${node.domain}'` : ''} is not supported (known: ${COUNTABLE_ONNX_OPS.join(', ')})`,
      );
    }
    let out: number[];
    switch (op) {
      case 'Conv': {
        const x = shapeOf(node, 0);
        const w = shapeOf(node, 1);
        if (x.length < 3 || w.length !== x.length) throw new CountError(`${label(node)}: input [${x}] and weight [${w}] do not fit`);
        const group = attrInt(node, 'group', 1);
        const cin = x[1]!;
        if (cin % group || w[0]! % group || w[1]! * group !== cin) {
          throw new CountError(`${label(node)}: input has ${cin} channels, weight [${w}] with group ${group}`);
        }
        const kernel = attrInts(node, 'kernel_shape') ?? w.slice(2);
        if (kernel.length !== w.length - 2 || kernel.some((k, i) => k !== w[i + 2])) {
          throw new CountError(`${label(node)}: kernel_shape [${kernel}] does not match weight [${w}]`);
        }
        const spatial = windowOut(node, x.slice(2), windowAttrs(node, x.length - 2, kernel, false));
        out = [x[0]!, w[0]!, ...spatial];
        countParam(node, 1);
        countParam(node, 2);
        macs += prod(out) * (cin / group) * prod(kernel);
        convs.push({ name: node.name || node.output?.[0] || '', outChannels: w[0]!, inChannels: cin, kernel: [...kernel] });
        break;
      }
      case 'MaxPool':
      case 'AveragePool': {
        const x = shapeOf(node, 0);
        if (x.length < 3) throw new CountError(`${label(node)}: expects [N,C,spatial...], got [${x}]`);
        const spatial = windowOut(node, x.slice(2), windowAttrs(node, x.length - 2, attrInts(node, 'kernel_shape'), true));
        out = [x[0]!, x[1]!, ...spatial];
        break;
      }
      case 'GlobalAveragePool': {
        const x = shapeOf(node, 0);
        out = [x[0]!, x[1]!, ...x.slice(2).map(() => 1)];
        break;
      }
      case 'Flatten': {
        const x = shapeOf(node, 0);
        let axis = attrInt(node, 'axis', 1);
        if (axis < 0) axis += x.length;
        if (axis < 0 || axis > x.length) throw new CountError(`${label(node)}: axis out of range for [${x}]`);
        out = [prod(x.slice(0, axis)), prod(x.slice(axis))];
        break;
      }
      case 'Gemm': {
        const a = shapeOf(node, 0);
        const b = shapeOf(node, 1);
        if (a.length !== 2 || b.length !== 2) throw new CountError(`${label(node)}: expects 2-d A and B, got [${a}] and [${b}]`);
        const [m, k] = attrInt(node, 'transA', 0) ? [a[1]!, a[0]!] : [a[0]!, a[1]!];
        const [kb, n] = attrInt(node, 'transB', 0) ? [b[1]!, b[0]!] : [b[0]!, b[1]!];
        if (k !== kb) throw new CountError(`${label(node)}: A [${a}] and B [${b}] do not multiply`);
        out = [m, n];
        countParam(node, 1);
        countParam(node, 2);
        macs += m * k * n;
        break;
      }
      case 'BatchNormalization': {
        const x = shapeOf(node, 0);
        out = x;
        countParam(node, 1); // scale
        countParam(node, 2); // B; inputs 3, 4 (running mean/var) are buffers
        break;
      }
      case 'Relu':
        out = shapeOf(node, 0);
        break;
      case 'Add':
        out = broadcast(node, shapeOf(node, 0), shapeOf(node, 1));
        break;
      case 'Constant': {
        const a = (node.attribute ?? [])[0];
        if (a?.t) {
          out = (a.t.dims ?? []).map((d) => toNum(d as Int64));
          const v = tensorInts(a.t);
          if (v) intConsts.set(node.output?.[0] ?? '', v);
        } else if (a?.name === 'value_ints') {
          const v = (a.ints ?? []).map((d) => toNum(d as Int64));
          out = [v.length];
          intConsts.set(node.output?.[0] ?? '', v);
        } else if (a?.name === 'value_int') {
          out = [];
          intConsts.set(node.output?.[0] ?? '', [toNum(a.i as Int64)]);
        } else if (a?.name === 'value_floats') out = [a.floats?.length ?? 0];
        else out = [];
        break;
      }
      case 'Slice': {
        // no parameters, no multiply-adds: only the shape changes (ONNX clamping of starts/ends)
        const x = shapeOf(node, 0);
        const opsetInputs = (node.input?.length ?? 0) > 1;
        const starts = opsetInputs ? intsOf(node, 1, 'starts') : attrInts(node, 'starts');
        const ends = opsetInputs ? intsOf(node, 2, 'ends') : attrInts(node, 'ends');
        if (!starts || !ends || starts.length !== ends.length) throw new CountError(`${label(node)}: needs starts and ends of one length`);
        const axes = (opsetInputs ? intsOf(node, 3, 'axes') : attrInts(node, 'axes')) ?? starts.map((_, i) => i);
        const steps = (opsetInputs ? intsOf(node, 4, 'steps') : undefined) ?? starts.map(() => 1);
        out = [...x];
        axes.forEach((ax0, i) => {
          const ax = ax0 < 0 ? ax0 + x.length : ax0;
          const d = x[ax];
          const step = steps[i]!;
          if (d === undefined || step === 0) throw new CountError(`${label(node)}: axis ${ax0} / step ${step} do not fit [${x}]`);
          let b = starts[i]! < 0 ? starts[i]! + d : starts[i]!;
          let e = ends[i]! < 0 ? ends[i]! + d : ends[i]!;
          if (step > 0) {
            b = Math.min(Math.max(b, 0), d);
            e = Math.min(Math.max(e, 0), d);
            out[ax] = Math.max(0, Math.ceil((e - b) / step));
          } else {
            b = Math.min(Math.max(b, 0), d - 1);
            e = Math.min(Math.max(e, -1), d - 1);
            out[ax] = Math.max(0, Math.ceil((b - e) / -step));
          }
        });
        break;
      }
      case 'Pad': {
        const x = shapeOf(node, 0);
        const r = x.length;
        let pads = (node.input?.length ?? 0) > 1 ? intsOf(node, 1, 'pads') : attrInts(node, 'pads');
        if (!pads) throw new CountError(`${label(node)}: missing pads`);
        const axes = intsOf(node, 3, 'axes');
        if (axes) {
          const full = new Array<number>(2 * r).fill(0);
          axes.forEach((ax0, i) => {
            const ax = ax0 < 0 ? ax0 + r : ax0;
            full[ax] = pads![i]!;
            full[ax + r] = pads![i + axes.length]!;
          });
          pads = full;
        }
        if (pads.length !== 2 * r) throw new CountError(`${label(node)}: ${pads.length} pads for a ${r}-d input`);
        out = x.map((d, i) => d + pads![i]! + pads![i + r]!);
        break;
      }
      default:
        throw new CountError(`${label(node)} is not supported`);
    }
    const y = node.output?.[0];
    if (!y) throw new CountError(`${label(node)}: has no output`);
    shapes.set(y, out);
  }
  return { params, macs, convs };
}
