import { createHash } from 'node:crypto';
// ONNX -> IR. Accepts both PyTorch exporters' styles (TorchScript: module-path names, BN kept or
// folded; dynamo: node_Conv_N names, ReduceMean + Reshape for global pooling, constant shapes/axes).
// ResNet option-A shortcuts (strided spatial Slice, constant Pad) become IR Slice/Pad nodes; shape
// arithmetic on constants (e.g. PyTorch's unfolded F.pad `pads`) is evaluated here (constant folding).
// Everything the IR cannot express is refused with one message naming the file, node and op.
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import {
  type BatchNormNode,
  type Conv2dNode,
  type LinearNode,
  type Model,
  type Node,
  type PoolAttrs,
  type Tensor,
  type ValueInfo,
  numel,
} from '../ir/model.js';
import { inferShapes, nodeOutputShape } from '../ir/shapes.js';
import { UserError } from '../util/errors.js';
import {
  AttrType,
  DTYPE_NAMES,
  DataType,
  bfloat16ToFloat,
  halfToFloat,
  onnx,
  type pb,
  rawToFloat32,
  toNum,
  type Int64,
} from './proto.js';

export class OnnxImportError extends UserError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'OnnxImportError';
  }
}

export const SUPPORTED_ONNX_OPS: readonly string[] = [
  'Conv',
  'BatchNormalization',
  'Relu',
  'MaxPool',
  'AveragePool',
  'GlobalAveragePool',
  'Flatten',
  'Gemm',
  'MatMul',
  'Add',
  'Reshape',
  'ReduceMean',
  'Squeeze',
  'Identity',
  'Dropout',
  'Constant',
  'Slice',
  'Pad',
];

/**
 * Integer ops accepted only on shape values (never on activations): enough for the
 * `Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1]))` flatten that exporters emit for a
 * dynamic batch. On activations they are reported as unsupported.
 */
export const SHAPE_ONLY_ONNX_OPS: readonly string[] = ['Shape', 'Gather', 'Unsqueeze', 'Concat', 'Slice', 'Cast', 'Size'];

/**
 * Ops accepted only when every input is a constant (or a static shape value): they are evaluated at
 * import (constant folding), e.g. the `pads` arithmetic that PyTorch's exporter emits for F.pad
 * without constant folding: Concat(Cast(pad), ConstantOfShape(Sub(Mul(rank, 2), Size(pad)))) ->
 * Reshape [-1, 2] -> Slice (flip) -> Transpose -> Reshape [-1] -> Cast.
 */
export const CONSTANT_ONLY_ONNX_OPS: readonly string[] = ['ConstantOfShape', 'Transpose', 'Sub', 'Mul', 'Div', 'Neg'];

/** Ops the importer evaluates when all their inputs are known (constants or static shape values). */
const FOLDABLE: ReadonlySet<string> = new Set([
  ...CONSTANT_ONLY_ONNX_OPS,
  'Shape',
  'Size',
  'Gather',
  'Unsqueeze',
  'Squeeze',
  'Concat',
  'Reshape',
  'Slice',
  'Cast',
  'Add',
]);

/** Folded constants larger than this are refused (a corrupt or hostile shape would exhaust memory). */
const MAX_FOLDED_ELEMENTS = 1 << 24;

/** Attributes each op may carry; anything else changes semantics we do not model, so it is refused. */
const KNOWN_ATTRS: Record<string, readonly string[]> = {
  Conv: ['auto_pad', 'dilations', 'group', 'kernel_shape', 'pads', 'strides'],
  BatchNormalization: ['epsilon', 'momentum', 'training_mode', 'spatial', 'is_test', 'consumed_inputs'],
  Relu: ['consumed_inputs'],
  MaxPool: ['auto_pad', 'ceil_mode', 'dilations', 'kernel_shape', 'pads', 'storage_order', 'strides'],
  AveragePool: ['auto_pad', 'ceil_mode', 'count_include_pad', 'dilations', 'kernel_shape', 'pads', 'strides'],
  GlobalAveragePool: [],
  Flatten: ['axis'],
  Gemm: ['alpha', 'beta', 'transA', 'transB', 'broadcast'],
  MatMul: [],
  Add: ['axis', 'broadcast', 'consumed_inputs'],
  Reshape: ['allowzero', 'shape'],
  ReduceMean: ['axes', 'keepdims', 'noop_with_empty_axes'],
  Squeeze: ['axes'],
  Identity: [],
  Dropout: ['ratio', 'seed', 'is_test', 'consumed_inputs'],
  Constant: ['value', 'value_float', 'value_floats', 'value_int', 'value_ints'],
  Shape: ['start', 'end'],
  Gather: ['axis'],
  Unsqueeze: ['axes'],
  Concat: ['axis'],
  Slice: ['starts', 'ends', 'axes'],
  Cast: ['to', 'saturate'],
  Size: [],
  Pad: ['mode', 'pads', 'value'],
  ConstantOfShape: ['value'],
  Transpose: ['perm'],
  Sub: ['axis', 'broadcast'],
  Mul: ['axis', 'broadcast', 'consumed_inputs'],
  Div: ['axis', 'broadcast'],
  Neg: ['consumed_inputs'],
};

/** A fully known tensor (a constant, or a shape value without the batch size), row-major. */
interface Known {
  dims: number[];
  vals: number[];
  float: boolean;
}

const FLOAT_DTYPES: ReadonlySet<number> = new Set([DataType.FLOAT, DataType.DOUBLE, DataType.FLOAT16, DataType.BFLOAT16]);
const INT_DTYPES: ReadonlySet<number> = new Set([
  DataType.INT64,
  DataType.INT32,
  DataType.INT16,
  DataType.INT8,
  DataType.UINT64,
  DataType.UINT32,
  DataType.UINT16,
  DataType.UINT8,
  DataType.BOOL,
]);

function stridesOf(dims: readonly number[]): number[] {
  const st = new Array<number>(dims.length);
  let acc = 1;
  for (let i = dims.length - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= dims[i]!;
  }
  return st;
}

/** Calls f(flat input offset) for every element of `dims`, given per-axis input strides and offsets. */
function gatherBy(dims: readonly number[], inStrides: readonly number[], base: number, f: (offset: number) => void): void {
  const n = numel(dims);
  const idx = new Array<number>(dims.length).fill(0);
  for (let k = 0; k < n; k++) {
    let off = base;
    for (let d = 0; d < dims.length; d++) off += idx[d]! * inStrides[d]!;
    f(off);
    for (let d = dims.length - 1; d >= 0; d--) {
      if (++idx[d]! < dims[d]!) break;
      idx[d] = 0;
    }
  }
}

/** ONNX Slice bounds on one axis of size `dim` (negative indices count from the end, then clamped). */
function sliceBounds(start: number, end: number, step: number, dim: number): { start: number; end: number; count: number } {
  if (start < 0) start += dim;
  if (end < 0) end += dim;
  if (step > 0) {
    start = Math.min(Math.max(start, 0), dim);
    end = Math.min(Math.max(end, 0), dim);
    return { start, end, count: Math.max(0, Math.ceil((end - start) / step)) };
  }
  start = Math.min(Math.max(start, 0), dim - 1);
  end = Math.min(Math.max(end, -1), dim - 1);
  return { start, end, count: Math.max(0, Math.ceil((start - end) / -step)) };
}

function normAxis(axis: number, rank: number, what: string): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) throw new NodeError(`${what} ${axis} is out of range for rank ${rank}`);
  return a;
}

/** An integer vector computed from shapes; 'N' is the (symbolic) batch size. */
interface SymInts {
  vals: (number | 'N')[];
  scalar: boolean;
}

/** A constant (initializer or Constant node output): floats for weights, ints for shapes/axes. */
interface Const {
  name: string;
  dims: number[];
  floats?: Float32Array;
  ints?: number[];
  /** true for graph initializers, whose names become IR tensor keys */
  initializer: boolean;
}

type OnnxNode = pb.NodeProto;
type OnnxAttr = pb.IAttributeProto;

const standard = (n: pb.NodeProto): boolean => !n.domain || n.domain === 'ai.onnx';

/** Error inside one node; the importer prefixes the file name. */
class NodeError extends Error {}

function decodeTensor(t: pb.ITensorProto, what: string, initializer: boolean): Const {
  const name = t.name ?? '';
  if (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL || (t.externalData?.length ?? 0) > 0) {
    const loc = t.externalData?.find((e) => e.key === 'location')?.value;
    throw new NodeError(
      `${what} '${name}' keeps its data in an external file${loc ? ` ('${loc}')` : ''}; ` +
        'external data is not supported - re-save the model with all tensors inside the .onnx file',
    );
  }
  const dims = (t.dims ?? []).map((d) => toNum(d as Int64));
  const n = numel(dims);
  const dtype = t.dataType ?? 0;
  const raw = t.rawData && t.rawData.length > 0 ? t.rawData : undefined;
  const dtypeName = DTYPE_NAMES[dtype] ?? String(dtype);
  let floats: Float32Array | undefined;
  let ints: number[] | undefined;
  const rawView = (bytesPer: number): DataView => {
    if (raw!.length !== n * bytesPer) {
      throw new NodeError(`${what} '${name}' has ${raw!.length} bytes of ${dtypeName} data for shape [${dims}] (truncated or corrupt)`);
    }
    return new DataView(raw!.buffer, raw!.byteOffset, raw!.byteLength);
  };
  switch (dtype) {
    case DataType.FLOAT:
      if (raw) {
        rawView(4);
        floats = rawToFloat32(raw);
      } else floats = Float32Array.from(t.floatData ?? []);
      break;
    case DataType.DOUBLE:
      if (raw) {
        const dv = rawView(8);
        floats = new Float32Array(n);
        for (let i = 0; i < n; i++) floats[i] = dv.getFloat64(i * 8, true);
      } else floats = Float32Array.from(t.doubleData ?? []);
      break;
    case DataType.FLOAT16:
    case DataType.BFLOAT16: {
      const conv = dtype === DataType.FLOAT16 ? halfToFloat : bfloat16ToFloat;
      if (raw) {
        const dv = rawView(2);
        floats = new Float32Array(n);
        for (let i = 0; i < n; i++) floats[i] = conv(dv.getUint16(i * 2, true));
      } else floats = Float32Array.from(t.int32Data ?? [], conv); // bit patterns stored in int32_data
      break;
    }
    case DataType.INT64:
    case DataType.UINT64:
      if (raw) {
        const dv = rawView(8);
        ints = [];
        for (let i = 0; i < n; i++) {
          const v = dtype === DataType.INT64 ? dv.getBigInt64(i * 8, true) : dv.getBigUint64(i * 8, true);
          ints.push(Number(v));
        }
      } else ints = (dtype === DataType.INT64 ? t.int64Data ?? [] : t.uint64Data ?? []).map((v) => wideNum(v as Int64));
      break;
    case DataType.INT32:
    case DataType.UINT32:
    case DataType.INT16:
    case DataType.UINT16:
    case DataType.INT8:
    case DataType.UINT8:
    case DataType.BOOL: {
      const size = dtype === DataType.INT32 || dtype === DataType.UINT32 ? 4 : dtype === DataType.INT16 || dtype === DataType.UINT16 ? 2 : 1;
      if (raw) {
        const dv = rawView(size);
        ints = [];
        for (let i = 0; i < n; i++) {
          const o = i * size;
          ints.push(
            dtype === DataType.INT32 ? dv.getInt32(o, true)
            : dtype === DataType.UINT32 ? dv.getUint32(o, true)
            : dtype === DataType.INT16 ? dv.getInt16(o, true)
            : dtype === DataType.UINT16 ? dv.getUint16(o, true)
            : dtype === DataType.INT8 ? dv.getInt8(o)
            : dv.getUint8(o),
          );
        }
      } else if (dtype === DataType.UINT32) ints = (t.uint64Data ?? []).map((v) => toNum(v as Int64));
      else ints = [...(t.int32Data ?? [])];
      break;
    }
    default:
      throw new NodeError(`${what} '${name}' has data type ${dtypeName}, which is not supported (need float32/float16/double or integers)`);
  }
  const got = floats ? floats.length : ints!.length;
  if (got !== n) throw new NodeError(`${what} '${name}' has ${got} values for shape [${dims}] (truncated or corrupt)`);
  return { name, dims, floats, ints, initializer };
}

/**
 * An int64 as a double, never throwing: exporters write INT64_MAX/MIN as "to the end" in Slice
 * bounds, which only need to compare as huge (as the raw-data path's Number(bigint) does).
 */
function wideNum(v: Int64 | null | undefined): number {
  if (v === null || v === undefined) return 0;
  return typeof v === 'number' ? v : Number(v.toString());
}

function attrMap(node: OnnxNode): Map<string, OnnxAttr> {
  const m = new Map<string, OnnxAttr>();
  for (const a of node.attribute) {
    if (a.refAttrName) throw new NodeError(`attribute '${a.name}' refers to a function attribute, which is not supported`);
    m.set(a.name ?? '', a);
  }
  const known = KNOWN_ATTRS[node.opType] ?? [];
  for (const k of m.keys()) if (!known.includes(k)) throw new NodeError(`attribute '${k}' is not supported`);
  return m;
}

function attrInt(m: Map<string, OnnxAttr>, name: string, dflt: number): number {
  const a = m.get(name);
  if (!a) return dflt;
  if (a.type !== AttrType.INT) throw new NodeError(`attribute '${name}' should be an int`);
  return toNum(a.i as Int64);
}
function attrFloat(m: Map<string, OnnxAttr>, name: string, dflt: number): number {
  const a = m.get(name);
  if (!a) return dflt;
  if (a.type !== AttrType.FLOAT) throw new NodeError(`attribute '${name}' should be a float`);
  return a.f ?? 0;
}
function attrInts(m: Map<string, OnnxAttr>, name: string): number[] | undefined {
  const a = m.get(name);
  if (!a) return undefined;
  if (a.type !== AttrType.INTS) throw new NodeError(`attribute '${name}' should be a list of ints`);
  return (a.ints ?? []).map((v) => wideNum(v as Int64));
}
function attrString(m: Map<string, OnnxAttr>, name: string, dflt: string): string {
  const a = m.get(name);
  if (!a) return dflt;
  if (a.type !== AttrType.STRING) throw new NodeError(`attribute '${name}' should be a string`);
  return Buffer.from(a.s ?? new Uint8Array()).toString('utf8');
}

/** float32 stored values like 0.8999999761581421 back to the decimal the exporter was given. */
function tidy(x: number): number {
  return Number(Math.fround(x).toPrecision(7));
}

function pair(v: number[] | undefined, dflt: number, what: string): [number, number] {
  if (v === undefined) return [dflt, dflt];
  if (v.length !== 2) throw new NodeError(`${what} [${v}] must have 2 values (only 2-d spatial ops are supported)`);
  return [v[0]!, v[1]!];
}

function transpose2d(src: Float32Array, rows: number, cols: number): Float32Array /* [cols, rows] */ {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = src[r * cols + c]!;
  return out;
}

/** Constants by value name; initializers are decoded on first use so unused odd ones never fail an import. */
class ConstTable {
  private readonly decoded = new Map<string, Const>();
  private readonly pending = new Map<string, pb.ITensorProto>();
  addInitializer(t: pb.ITensorProto): void {
    this.pending.set(t.name ?? '', t);
  }
  set(name: string, c: Const): void {
    this.decoded.set(name, c);
  }
  has(name: string): boolean {
    return this.decoded.has(name) || this.pending.has(name);
  }
  get(name: string): Const | undefined {
    const t = this.pending.get(name);
    if (t) {
      this.pending.delete(name);
      this.decoded.set(name, decodeTensor(t, 'initializer', true));
    }
    return this.decoded.get(name);
  }
}

class Importer {
  private readonly consts = new ConstTable();
  private readonly symInts = new Map<string, SymInts>();
  /** activation value -> shape with batch -1 */
  private readonly shapes = new Map<string, number[]>();
  /** removed node output -> its input (Identity, Dropout, no-op Reshape) */
  private readonly alias = new Map<string, string>();
  private readonly producer = new Map<string, Node>();
  /** ONNX value -> number of consumers (node inputs + graph outputs) */
  private readonly uses = new Map<string, number>();
  private readonly nodes: Node[] = [];
  private readonly tensors: Record<string, Tensor> = {};
  private readonly names = new Set<string>();
  private readonly graphOutputs = new Set<string>();
  private readonly inputNames = new Set<string>();

  constructor(private readonly file: string) {}

  private fail(message: string, cause?: unknown): never {
    throw new OnnxImportError(`${this.file}: ${message}`, { cause });
  }

  run(bytes: Uint8Array): Model {
    let proto: pb.ModelProto;
    try {
      proto = onnx.ModelProto.decode(bytes);
    } catch (e) {
      this.fail(`not a valid ONNX model (truncated or corrupt): ${(e as Error).message}`, e);
    }
    // decoded messages are class instances with defaults filled; the generated field types are looser
    const g = proto.graph as pb.GraphProto | null | undefined;
    if (!g || g.node.length === 0) this.fail('not a valid ONNX model (truncated or corrupt): it has no graph nodes');
    if (g.sparseInitializer.length > 0) this.fail('sparse initializers are not supported');

    const nodesP = g.node as pb.NodeProto[];
    const inputsP = g.input as pb.ValueInfoProto[];
    const outputsP = g.output as pb.ValueInfoProto[];
    for (const t of g.initializer as pb.TensorProto[]) this.consts.addInitializer(t);
    const inputs: ValueInfo[] = [];
    for (const vi of inputsP) {
      if (this.consts.has(vi.name)) continue; // IR < 4 lists initializers as inputs too
      inputs.push({ name: vi.name, shape: this.inputShape(vi) });
      this.shapes.set(vi.name, inputs[inputs.length - 1]!.shape);
      this.inputNames.add(vi.name);
    }
    if (inputs.length === 0) this.fail('the graph has no (non-initializer) inputs');

    for (const n of nodesP) for (const i of n.input) if (i) this.uses.set(i, (this.uses.get(i) ?? 0) + 1);
    for (const o of outputsP) {
      this.uses.set(o.name, (this.uses.get(o.name) ?? 0) + 1);
      this.graphOutputs.add(o.name);
    }

    nodesP.forEach((n, idx) => {
      const label = `node '${n.name || `#${idx} ${n.opType}`}' (op ${n.opType})`;
      if (!this.supported(n)) {
        // name every offending op once, so the user learns the whole gap from one run
        const counts = new Map<string, number>();
        for (const m of nodesP) {
          const conditional = SHAPE_ONLY_ONNX_OPS.includes(m.opType) || CONSTANT_ONLY_ONNX_OPS.includes(m.opType);
          const bad = !standard(m) || (!SUPPORTED_ONNX_OPS.includes(m.opType) && (!conditional || m.opType === n.opType));
          if (bad) counts.set(m.opType, (counts.get(m.opType) ?? 0) + 1);
        }
        const all = [...counts].map(([op, c]) => `${op} x${c}`).join(', ');
        this.fail(
          `${label}${n.domain ? ` in domain '${n.domain}'` : ''} is not supported; supported: ${SUPPORTED_ONNX_OPS.join(', ')}, ` +
            `${SHAPE_ONLY_ONNX_OPS.join('/')} on shape values, and ${CONSTANT_ONLY_ONNX_OPS.join('/')} on constants ` +
            `(folded at import) (unsupported in this graph: ${all})`,
        );
      }
      for (const o of n.output) {
        if (o && (this.shapes.has(o) || this.consts.has(o) || this.alias.has(o) || this.symInts.has(o))) {
          this.fail(`${label}: output '${o}' is produced twice`);
        }
      }
      try {
        this.convert(n, n.name || `${n.opType}_${idx}`);
      } catch (e) {
        if (e instanceof NodeError) this.fail(`${label}: ${e.message}`, e);
        throw e;
      }
    });

    const outputs: string[] = [];
    for (const o of outputsP) {
      const r = this.resolve(o.name);
      if (!this.shapes.has(r)) {
        this.fail(
          this.consts.has(r)
            ? `graph output '${o.name}' is a constant, not computed from the input`
            : `graph output '${o.name}' is not produced by any node`,
        );
      }
      // keep the file's output names even when an Identity/Dropout fed them
      if (r !== o.name && this.producer.has(r) && !this.graphOutputs.has(r)) this.rename(r, o.name);
      outputs.push(this.producer.has(o.name) || this.inputNames.has(o.name) ? o.name : r);
    }

    const nodes = this.pruneDead(outputs);
    const used = new Set(nodes.flatMap((n) => Object.values(n.params as Record<string, string>)));
    const tensors: Record<string, Tensor> = {};
    for (const [k, t] of Object.entries(this.tensors)) if (used.has(k)) tensors[k] = t;

    const metadata: Record<string, string> = {};
    for (const p of proto.metadataProps as pb.StringStringEntryProto[]) metadata[p.key] = p.value;
    const model: Model = {
      name: g.name || basename(this.file).replace(/\.onnx$/i, '') || 'model',
      inputs,
      outputs,
      nodes,
      tensors,
      metadata,
    };
    try {
      inferShapes(model, 1);
    } catch (e) {
      this.fail(`imported model is inconsistent: ${(e as Error).message}`, e);
    }
    return model;
  }

  private inputShape(vi: pb.IValueInfoProto): number[] {
    const tt = vi.type?.tensorType;
    if (!tt) this.fail(`graph input '${vi.name}' is not a tensor`);
    if (tt.elemType !== DataType.FLOAT) {
      this.fail(`graph input '${vi.name}' has element type ${DTYPE_NAMES[tt.elemType ?? 0] ?? tt.elemType}; only float32 is supported`);
    }
    const dims = tt.shape?.dim;
    if (!dims || dims.length === 0) this.fail(`graph input '${vi.name}' has no shape; a static [N, C, H, W] shape is needed`);
    return dims.map((d, i) => {
      if (i === 0) return -1;
      const v = d.dimValue === null || d.dimValue === undefined ? 0 : toNum(d.dimValue as Int64);
      if (!(v > 0)) {
        this.fail(
          `graph input '${vi.name}' has a symbolic dimension ${d.dimParam ? `'${d.dimParam}' ` : ''}at position ${i}; only the batch dimension may be symbolic`,
        );
      }
      return v;
    });
  }

  private supported(n: pb.NodeProto): boolean {
    if (!standard(n)) return false;
    if (SUPPORTED_ONNX_OPS.includes(n.opType)) return true;
    if (this.foldable(n)) return true;
    if (!SHAPE_ONLY_ONNX_OPS.includes(n.opType)) return false;
    if (n.opType === 'Shape') return true;
    const data = n.opType === 'Concat' ? n.input.filter((i) => i) : [n.input[0] ?? ''];
    return data.every((i) => this.isIntValue(i));
  }

  private isIntValue(name: string): boolean {
    const r = this.resolve(name);
    if (this.symInts.has(r)) return true;
    if (!this.consts.has(r)) return false;
    try {
      return this.consts.get(r)!.ints !== undefined;
    } catch {
      return false; // an undecodable initializer is reported where it is used as one
    }
  }

  /** True when the importer can evaluate the node now: a foldable op whose inputs are all known. */
  private foldable(n: pb.NodeProto): boolean {
    return FOLDABLE.has(n.opType) && n.input.some((i) => i) && n.input.every((i) => !i || this.isKnown(i));
  }

  /** A constant or a shape value that does not depend on the batch size. */
  private isKnown(name: string): boolean {
    const r = this.resolve(name);
    const sym = this.symInts.get(r);
    if (sym) return !sym.vals.includes('N');
    if (!this.consts.has(r)) return false;
    try {
      this.consts.get(r);
      return true;
    } catch {
      return false; // an undecodable initializer is reported where it is used as one
    }
  }

  private known(name: string | undefined, role: string): Known {
    if (!name) throw new NodeError(`missing ${role} input`);
    const r = this.resolve(name);
    const sym = this.symInts.get(r);
    if (sym) {
      if (sym.vals.includes('N')) throw new NodeError(`${role} input '${name}' depends on the batch size; a constant is expected`);
      return { dims: sym.scalar ? [] : [sym.vals.length], vals: sym.vals as number[], float: false };
    }
    const c = this.constant(name, role);
    return c.ints ? { dims: c.dims, vals: c.ints, float: false } : { dims: c.dims, vals: Array.from(c.floats!), float: true };
  }

  /**
   * Constant folding: evaluates a foldable op whose inputs are all known (ONNX semantics, integers
   * as exact doubles) and records the result as a constant, so shape arithmetic never reaches the IR.
   */
  private fold(n: OnnxNode, a: Map<string, OnnxAttr>, out: string): void {
    const ins = n.input.map((i, k) => (i ? this.known(i, `input ${k}`) : undefined));
    const x = ins[0];
    const need = (k: number, role: string): Known => {
      const v = ins[k];
      if (!v) throw new NodeError(`missing ${role} input`);
      return v;
    };
    const ints1d = (k: number, role: string): number[] | undefined => {
      const v = ins[k];
      if (!v) return undefined;
      if (v.float || v.dims.length > 1) throw new NodeError(`${role} must be a 1-d integer tensor, got [${v.dims}]`);
      return v.vals;
    };
    let r: Known;
    switch (n.opType) {
      case 'Cast': {
        const v = need(0, 'input');
        const to = attrInt(a, 'to', 0);
        if (FLOAT_DTYPES.has(to)) r = { ...v, vals: v.vals.map((e) => (to === DataType.DOUBLE ? e : Math.fround(e))), float: true };
        else if (to === DataType.BOOL) r = { ...v, vals: v.vals.map((e) => (e !== 0 ? 1 : 0)), float: false };
        else if (INT_DTYPES.has(to)) r = { ...v, vals: v.vals.map((e) => Math.trunc(e)), float: false };
        else throw new NodeError(`casting to ${DTYPE_NAMES[to] ?? to} is not supported`);
        break;
      }
      case 'Shape': {
        const d = need(0, 'data').dims;
        const rank = d.length;
        const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + rank : v, 0), rank);
        const vals = d.slice(clamp(attrInt(a, 'start', 0)), clamp(attrInt(a, 'end', rank)));
        r = { dims: [vals.length], vals, float: false };
        break;
      }
      case 'Size':
        r = { dims: [], vals: [numel(need(0, 'data').dims)], float: false };
        break;
      case 'Gather': {
        const data = need(0, 'data');
        const idx = need(1, 'indices');
        if (idx.float) throw new NodeError('indices must be integers');
        const axis = normAxis(attrInt(a, 'axis', 0), data.dims.length, 'axis');
        const len = data.dims[axis]!;
        const outer = numel(data.dims.slice(0, axis));
        const inner = numel(data.dims.slice(axis + 1));
        const vals: number[] = [];
        for (let o = 0; o < outer; o++)
          for (const i0 of idx.vals) {
            const i = i0 < 0 ? i0 + len : i0;
            if (!(i >= 0 && i < len)) throw new NodeError(`index ${i0} is out of range for axis ${axis} of size ${len}`);
            for (let j = 0; j < inner; j++) vals.push(data.vals[(o * len + i) * inner + j]!);
          }
        r = { dims: [...data.dims.slice(0, axis), ...idx.dims, ...data.dims.slice(axis + 1)], vals, float: data.float };
        break;
      }
      case 'Unsqueeze': {
        const v = need(0, 'data');
        const axes = ints1d(1, 'axes') ?? attrInts(a, 'axes');
        if (!axes) throw new NodeError('axes are required');
        const rank = v.dims.length + axes.length;
        const norm = axes.map((ax) => normAxis(ax, rank, 'axis')).sort((p, q) => p - q);
        if (new Set(norm).size !== norm.length) throw new NodeError(`axes [${axes}] repeat an axis`);
        const dims = [...v.dims];
        for (const ax of norm) dims.splice(ax, 0, 1);
        r = { ...v, dims };
        break;
      }
      case 'Squeeze': {
        const v = need(0, 'data');
        const axes = ints1d(1, 'axes') ?? attrInts(a, 'axes');
        const norm = new Set((axes ?? v.dims.flatMap((d, i) => (d === 1 ? [i] : []))).map((ax) => normAxis(ax, v.dims.length, 'axis')));
        for (const ax of norm) if (v.dims[ax] !== 1) throw new NodeError(`cannot squeeze axis ${ax} of size ${v.dims[ax]}`);
        r = { ...v, dims: v.dims.filter((_, i) => !norm.has(i)) };
        break;
      }
      case 'Concat': {
        const parts = ins.filter((v): v is Known => v !== undefined);
        const rank = parts[0]!.dims.length;
        if (!a.has('axis')) throw new NodeError("attribute 'axis' is required");
        const axis = normAxis(attrInt(a, 'axis', 0), rank, 'axis');
        for (const p of parts) {
          if (p.dims.length !== rank || p.dims.some((d, i) => i !== axis && d !== parts[0]!.dims[i])) {
            throw new NodeError(`cannot concatenate [${parts.map((q) => `[${q.dims}]`).join(', ')}] along axis ${axis}`);
          }
        }
        const outer = numel(parts[0]!.dims.slice(0, axis));
        const inner = numel(parts[0]!.dims.slice(axis + 1));
        const vals: number[] = [];
        for (let o = 0; o < outer; o++) for (const p of parts) vals.push(...p.vals.slice(o * p.dims[axis]! * inner, (o + 1) * p.dims[axis]! * inner));
        const dims = [...parts[0]!.dims];
        dims[axis] = parts.reduce((t, p) => t + p.dims[axis]!, 0);
        r = { dims, vals, float: parts.some((p) => p.float) };
        break;
      }
      case 'Reshape': {
        const v = need(0, 'data');
        if (a.has('shape')) throw new NodeError("the 'shape' attribute (opset < 5) is not supported");
        const shape = ints1d(1, 'shape');
        if (!shape) throw new NodeError('missing shape input');
        const allowZero = attrInt(a, 'allowzero', 0) !== 0;
        const dims = shape.map((d, i) => (d === 0 && !allowZero ? v.dims[i] ?? -2 : d));
        const free = dims.filter((d) => d === -1).length;
        const known = numel(dims.filter((d) => d !== -1));
        if (free > 1 || dims.some((d) => d < -1) || (free === 1 ? known === 0 || v.vals.length % known !== 0 : known !== v.vals.length)) {
          throw new NodeError(`cannot reshape [${v.dims}] to [${shape}]`);
        }
        r = { ...v, dims: dims.map((d) => (d === -1 ? v.vals.length / known : d)) };
        break;
      }
      case 'Slice': {
        const v = need(0, 'data');
        const get = (k: number, attr: string) => (n.input[k] ? ints1d(k, attr) : attrInts(a, attr));
        const starts = get(1, 'starts');
        const ends = get(2, 'ends');
        if (!starts || !ends || starts.length !== ends.length) throw new NodeError('starts and ends are required and must have the same length');
        const axes = (get(3, 'axes') ?? starts.map((_, i) => i)).map((ax) => normAxis(ax, v.dims.length, 'axis'));
        const steps = (n.input[4] ? ints1d(4, 'steps') : undefined) ?? starts.map(() => 1);
        if (axes.length !== starts.length || steps.length !== starts.length || new Set(axes).size !== axes.length) {
          throw new NodeError('axes and steps must match starts and name each axis once');
        }
        const st = stridesOf(v.dims);
        const dims = [...v.dims];
        const inStrides = [...st];
        let base = 0;
        axes.forEach((ax, i) => {
          if (steps[i] === 0) throw new NodeError('a step of 0 is not allowed');
          const b = sliceBounds(starts[i]!, ends[i]!, steps[i]!, v.dims[ax]!);
          dims[ax] = b.count;
          base += b.start * st[ax]!;
          inStrides[ax] = st[ax]! * steps[i]!;
        });
        const vals: number[] = [];
        if (numel(dims) > 0) gatherBy(dims, inStrides, base, (off) => vals.push(v.vals[off]!));
        r = { dims, vals, float: v.float };
        break;
      }
      case 'ConstantOfShape': {
        const dims = ints1d(0, 'shape') ?? [];
        if (dims.some((d) => d < 0)) throw new NodeError(`shape [${dims}] has a negative dimension`);
        let fill = 0;
        let float = true;
        const at = a.get('value');
        if (at) {
          if (!at.t) throw new NodeError("attribute 'value' has no tensor");
          const c = decodeTensor(at.t, 'value', false);
          const vs = c.ints ?? Array.from(c.floats!);
          if (vs.length !== 1) throw new NodeError("attribute 'value' must hold one element");
          fill = vs[0]!;
          float = !c.ints;
        }
        if (numel(dims) > MAX_FOLDED_ELEMENTS) throw new NodeError(`shape [${dims}] is too large to fold`);
        r = { dims, vals: new Array<number>(numel(dims)).fill(fill), float };
        break;
      }
      case 'Transpose': {
        const v = need(0, 'data');
        const rank = v.dims.length;
        const perm = attrInts(a, 'perm') ?? v.dims.map((_, i) => rank - 1 - i);
        if (perm.length !== rank || [...perm].sort((p, q) => p - q).some((p, i) => p !== i)) {
          throw new NodeError(`perm [${perm}] is not a permutation of ${rank} axes`);
        }
        const st = stridesOf(v.dims);
        const vals: number[] = [];
        gatherBy(perm.map((p) => v.dims[p]!), perm.map((p) => st[p]!), 0, (off) => vals.push(v.vals[off]!));
        r = { dims: perm.map((p) => v.dims[p]!), vals, float: v.float };
        break;
      }
      case 'Neg': {
        const v = need(0, 'X');
        r = { ...v, vals: v.vals.map((e) => -e) };
        break;
      }
      case 'Add':
      case 'Sub':
      case 'Mul':
      case 'Div': {
        if (a.has('broadcast') || a.has('axis')) throw new NodeError('legacy broadcast attributes (opset < 7) are not supported');
        const p = need(0, 'A');
        const q = need(1, 'B');
        if (p.float !== q.float) throw new NodeError('inputs A and B have different element types');
        const rank = Math.max(p.dims.length, q.dims.length);
        const pd = [...new Array<number>(rank - p.dims.length).fill(1), ...p.dims];
        const qd = [...new Array<number>(rank - q.dims.length).fill(1), ...q.dims];
        const dims = pd.map((d, i) => {
          const e = qd[i]!;
          if (d !== e && d !== 1 && e !== 1) throw new NodeError(`cannot broadcast [${p.dims}] with [${q.dims}]`);
          return d === 1 ? e : d;
        });
        const ps = stridesOf(pd).map((s0, i) => (pd[i] === 1 ? 0 : s0));
        const qs = stridesOf(qd).map((s0, i) => (qd[i] === 1 ? 0 : s0));
        const pv: number[] = [];
        const qv: number[] = [];
        gatherBy(dims, ps, 0, (off) => pv.push(p.vals[off]!));
        gatherBy(dims, qs, 0, (off) => qv.push(q.vals[off]!));
        const op = n.opType;
        const vals = pv.map((u, i) => {
          const w = qv[i]!;
          if (op === 'Add') return u + w;
          if (op === 'Sub') return u - w;
          if (op === 'Mul') return u * w;
          if (!p.float && w === 0) throw new NodeError('integer division by zero');
          return p.float ? u / w : Math.trunc(u / w);
        });
        r = { dims, vals: p.float ? vals.map(Math.fround) : vals, float: p.float };
        break;
      }
      default:
        throw new NodeError('is not supported');
    }
    if (numel(r.dims) > MAX_FOLDED_ELEMENTS) throw new NodeError(`the folded result [${r.dims}] is too large`);
    const c: Const = r.float
      ? { name: out, dims: r.dims, floats: Float32Array.from(r.vals), initializer: false }
      : { name: out, dims: r.dims, ints: r.vals, initializer: false };
    this.consts.set(out, c);
  }

  /** An integer vector: a shape computation or an integer constant. */
  private intVals(name: string | undefined, role: string): SymInts {
    if (!name) throw new NodeError(`missing ${role} input`);
    const sym = this.symInts.get(this.resolve(name));
    if (sym) return sym;
    const c = this.constant(name, role);
    if (!c.ints) throw new NodeError(`${role} '${c.name}' must be an integer tensor`);
    if (c.dims.length > 1) throw new NodeError(`${role} '${c.name}' has shape [${c.dims}]; a 1-d integer tensor is expected`);
    return { vals: c.ints, scalar: c.dims.length === 0 };
  }

  private resolve(name: string): string {
    let r = name;
    while (this.alias.has(r)) r = this.alias.get(r)!;
    return r;
  }

  private activation(name: string | undefined, role: string): { name: string; shape: number[] } {
    if (!name) throw new NodeError(`missing ${role} input`);
    const r = this.resolve(name);
    const shape = this.shapes.get(r);
    if (shape) return { name: r, shape };
    if (this.consts.has(r)) throw new NodeError(`${role} input '${name}' is a constant; a computed tensor is expected`);
    if (this.symInts.has(r)) throw new NodeError(`${role} input '${name}' is a shape value; a computed tensor is expected`);
    throw new NodeError(`input '${name}' is not produced by any earlier node, initializer or graph input (dangling)`);
  }

  private constant(name: string | undefined, role: string): Const {
    if (!name) throw new NodeError(`missing ${role} input`);
    const c = this.consts.get(this.resolve(name));
    if (c) return c;
    if (this.shapes.has(this.resolve(name)) || this.symInts.has(this.resolve(name))) {
      throw new NodeError(`${role} input '${name}' is computed at run time; only constant ${role}s are supported`);
    }
    throw new NodeError(`input '${name}' is not produced by any earlier node, initializer or graph input (dangling)`);
  }

  private floatConst(name: string | undefined, role: string, rank?: number): Const & { floats: Float32Array } {
    const c = this.constant(name, role);
    if (!c.floats) throw new NodeError(`${role} '${c.name}' must be a float tensor`);
    if (rank !== undefined && c.dims.length !== rank) throw new NodeError(`${role} '${c.name}' has shape [${c.dims}], expected ${rank}-d`);
    return c as Const & { floats: Float32Array };
  }

  /** A Linear node without parameters yet (Gemm and MatMul fill weight and bias their own way). */
  private linearNode(name: string, input: string, out: string, inF: number, outF: number): LinearNode {
    return { name: this.uniqueName(name), op: 'Linear', inputs: [input], outputs: [out], attrs: { inFeatures: inF, outFeatures: outF }, params: {} };
  }

  /** Squeeze/ReduceMean axes: an input from opset 13/18 on, an attribute before; non-negative, sorted. */
  private reduceAxes(n: OnnxNode, a: Map<string, OnnxAttr>, rank: number): { axes?: number[]; norm: number[] } {
    const axes = n.input[1] ? this.intsConst(n.input[1], 'axes') : attrInts(a, 'axes');
    return { axes, norm: (axes ?? []).map((v) => (v < 0 ? v + rank : v)).sort() };
  }

  private intsConst(name: string | undefined, role: string): number[] {
    const v = this.intVals(name, role);
    if (v.vals.includes('N')) throw new NodeError(`${role} input '${name}' depends on the batch size; a constant is expected`);
    return v.vals as number[];
  }

  private uniqueName(base: string): string {
    let n = base;
    for (let i = 1; this.names.has(n); i++) n = `${base}_${i}`;
    this.names.add(n);
    return n;
  }

  /** Registers a parameter; initializer names are kept unless the data was changed or is shared. */
  private param(c: Const | undefined, data: Float32Array, shape: number[], nodeName: string, slot: string): string {
    let key = c && c.initializer && c.floats === data && !(c.name in this.tensors) ? c.name : `${nodeName}.${slot}`;
    if (key !== c?.name) for (let i = 1; key in this.tensors || this.consts.has(key); i++) key = `${nodeName}.${slot}_${i}`;
    // a second user of the same constant gets its own copy, so surgery on one layer never edits another
    this.tensors[key] = { shape, data: key !== c?.name && data === c?.floats ? data.slice() : data };
    return key;
  }

  private emit(node: Node): void {
    let out: number[];
    try {
      const ins = node.inputs.map((i) => this.shapes.get(i)!);
      out = nodeOutputShape({ tensors: this.tensors } as Model, node, ins);
    } catch (e) {
      // ShapeError names the IR node; the caller's label already names the ONNX node
      if (e instanceof UserError) throw new NodeError(e.message.replace(`node '${node.name}' (${node.op}): `, ''));
      throw e;
    }
    this.nodes.push(node);
    this.shapes.set(node.outputs[0], out);
    this.producer.set(node.outputs[0], node);
  }

  private rename(from: string, to: string): void {
    for (const n of this.nodes) {
      n.inputs = n.inputs.map((i) => (i === from ? to : i));
      if (n.outputs[0] === from) n.outputs = [to];
    }
    this.shapes.set(to, this.shapes.get(from)!);
    this.shapes.delete(from);
    this.producer.set(to, this.producer.get(from)!);
    this.producer.delete(from);
    for (const [k, v] of this.alias) if (v === from) this.alias.set(k, to);
  }

  /** Drops IR nodes whose result reaches no graph output (e.g. unused BN training outputs). */
  private pruneDead(outputs: string[]): Node[] {
    const need = new Set(outputs);
    const keep: Node[] = [];
    for (let i = this.nodes.length - 1; i >= 0; i--) {
      const n = this.nodes[i]!;
      if (!need.has(n.outputs[0])) continue;
      keep.push(n);
      for (const x of n.inputs) need.add(x);
    }
    return keep.reverse();
  }

  private noExtraOutputs(n: OnnxNode, keep: number): void {
    for (let i = keep; i < n.output.length; i++) {
      const o = n.output[i];
      if (o && (this.uses.get(o) ?? 0) > 0) throw new NodeError(`output ${i} ('${o}') is used, but only the main output is supported`);
    }
  }

  /** Explicit symmetric [padH, padW] from pads/auto_pad; the IR has no asymmetric padding. */
  private padding(a: Map<string, OnnxAttr>, x: number[], k: [number, number], s: [number, number], d: [number, number]): [number, number] {
    const autoPad = attrString(a, 'auto_pad', 'NOTSET');
    if (autoPad === 'NOTSET') {
      const pads = attrInts(a, 'pads') ?? [0, 0, 0, 0];
      if (pads.length !== 4) throw new NodeError(`pads [${pads}] must have 4 values (only 2-d spatial ops are supported)`);
      if (pads[0] !== pads[2] || pads[1] !== pads[3]) {
        throw new NodeError(`asymmetric pads [${pads}] are not supported (the IR has symmetric padding only)`);
      }
      if (pads.some((p) => p < 0)) throw new NodeError(`negative pads [${pads}] are not supported`);
      return [pads[0]!, pads[1]!];
    }
    if (autoPad === 'VALID') return [0, 0];
    if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
      const p = [0, 1].map((i) => {
        const size = x[2 + i]!;
        const total = Math.max((Math.ceil(size / s[i]!) - 1) * s[i]! + (k[i]! - 1) * d[i]! + 1 - size, 0);
        if (total % 2) throw new NodeError(`auto_pad ${autoPad} needs asymmetric padding here, which is not supported`);
        return total / 2;
      });
      return [p[0]!, p[1]!];
    }
    throw new NodeError(`auto_pad '${autoPad}' is not supported`);
  }

  private convert(n: OnnxNode, name: string): void {
    const a = attrMap(n);
    const out = n.output[0];
    if (!out) throw new NodeError('has no output');
    if (this.foldable(n)) {
      this.fold(n, a, out);
      return;
    }
    switch (n.opType) {
      case 'Constant': {
        let c: Const;
        const [key] = [...a.keys()];
        if (a.size !== 1 || !key) throw new NodeError('needs exactly one value attribute');
        const at = a.get(key)!;
        if (key === 'value') {
          if (!at.t) throw new NodeError("attribute 'value' has no tensor");
          c = decodeTensor(at.t, 'constant', false);
        } else if (key === 'value_float') c = { name: out, dims: [], floats: Float32Array.of(at.f ?? 0), initializer: false };
        else if (key === 'value_floats') c = { name: out, dims: [at.floats?.length ?? 0], floats: Float32Array.from(at.floats ?? []), initializer: false };
        else if (key === 'value_int') c = { name: out, dims: [], ints: [toNum(at.i as Int64)], initializer: false };
        else c = { name: out, dims: [at.ints?.length ?? 0], ints: (at.ints ?? []).map((v) => wideNum(v as Int64)), initializer: false };
        this.consts.set(out, { ...c, name: out });
        return;
      }
      case 'Identity':
      case 'Dropout': {
        this.noExtraOutputs(n, 1);
        const src = this.resolve(n.input[0] ?? '');
        if (this.consts.has(src)) this.consts.set(out, this.consts.get(src)!);
        else if (this.symInts.has(src)) this.symInts.set(out, this.symInts.get(src)!);
        else this.alias.set(out, this.activation(n.input[0], 'data').name);
        return;
      }
      case 'Conv': {
        const x = this.activation(n.input[0], 'data');
        const w = this.floatConst(n.input[1], 'weight');
        if (w.dims.length !== 4 || x.shape.length !== 4) {
          throw new NodeError(`only 2-d convolution is supported (weight [${w.dims}], input [${x.shape}])`);
        }
        const [oc, icg, kh, kw] = w.dims as [number, number, number, number];
        const groups = attrInt(a, 'group', 1);
        const ks = attrInts(a, 'kernel_shape');
        if (ks && (ks[0] !== kh || ks[1] !== kw)) throw new NodeError(`kernel_shape [${ks}] does not match weight [${w.dims}]`);
        const kernel: [number, number] = [kh, kw];
        const stride = pair(attrInts(a, 'strides'), 1, 'strides');
        const dilation = pair(attrInts(a, 'dilations'), 1, 'dilations');
        const padding = this.padding(a, x.shape, kernel, stride, dilation);
        const node: Conv2dNode = {
          name: this.uniqueName(name),
          op: 'Conv2d',
          inputs: [x.name],
          outputs: [out],
          attrs: { inChannels: icg * groups, outChannels: oc, kernel, stride, padding, dilation, groups },
          params: {},
        };
        node.params.weight = this.param(w, w.floats, [...w.dims], node.name, 'weight');
        if (n.input[2]) {
          const b = this.floatConst(n.input[2], 'bias');
          if (b.floats.length !== oc) throw new NodeError(`bias '${b.name}' has shape [${b.dims}], expected [${oc}]`);
          node.params.bias = this.param(b, b.floats, [oc], node.name, 'bias');
        }
        this.emit(node);
        return;
      }
      case 'BatchNormalization': {
        this.noExtraOutputs(n, 1);
        if (attrInt(a, 'spatial', 1) !== 1) throw new NodeError('spatial=0 (per-activation BN) is not supported');
        const x = this.activation(n.input[0], 'data');
        const slots = ['weight', 'bias', 'runningMean', 'runningVar'] as const;
        const cs = slots.map((s, i) => this.floatConst(n.input[i + 1], s));
        const c = cs[0]!.floats.length;
        for (const k of cs) if (k.floats.length !== c) throw new NodeError(`'${k.name}' has shape [${k.dims}], expected [${c}]`);
        const node: BatchNormNode = {
          name: this.uniqueName(name),
          op: 'BatchNorm',
          inputs: [x.name],
          outputs: [out],
          // ONNX momentum weighs the running value, PyTorch's the batch value
          attrs: { numFeatures: c, eps: tidy(attrFloat(a, 'epsilon', 1e-5)), momentum: tidy(1 - attrFloat(a, 'momentum', 0.9)) },
          params: {},
        };
        const keys = ['weight', 'bias', 'running_mean', 'running_var'];
        slots.forEach((s, i) => (node.params[s] = this.param(cs[i], cs[i]!.floats, [c], node.name, keys[i]!)));
        this.emit(node);
        return;
      }
      case 'Relu': {
        const x = this.activation(n.input[0], 'data');
        this.emit({ name: this.uniqueName(name), op: 'Relu', inputs: [x.name], outputs: [out], attrs: {}, params: {} });
        return;
      }
      case 'MaxPool':
      case 'AveragePool': {
        this.noExtraOutputs(n, 1);
        const x = this.activation(n.input[0], 'data');
        if (x.shape.length !== 4) throw new NodeError(`only 2-d pooling is supported (input [${x.shape}])`);
        const ks = attrInts(a, 'kernel_shape');
        if (!ks) throw new NodeError('kernel_shape is required');
        const kernel = pair(ks, 1, 'kernel_shape');
        const stride = pair(attrInts(a, 'strides'), 1, 'strides');
        const dil = pair(attrInts(a, 'dilations'), 1, 'dilations');
        if (dil[0] !== 1 || dil[1] !== 1) throw new NodeError(`dilations [${dil}] are not supported for pooling`);
        const attrs: PoolAttrs = {
          kernel,
          stride,
          padding: this.padding(a, x.shape, kernel, stride, dil),
          ceilMode: attrInt(a, 'ceil_mode', 0) !== 0,
        };
        if (n.opType === 'AveragePool') attrs.countIncludePad = attrInt(a, 'count_include_pad', 0) !== 0;
        const op = n.opType === 'MaxPool' ? 'MaxPool' : 'AvgPool';
        this.emit({ name: this.uniqueName(name), op, inputs: [x.name], outputs: [out], attrs, params: {} } as Node);
        return;
      }
      case 'GlobalAveragePool': {
        const x = this.activation(n.input[0], 'data');
        this.emit({ name: this.uniqueName(name), op: 'GlobalAvgPool', inputs: [x.name], outputs: [out], attrs: {}, params: {} });
        return;
      }
      case 'Flatten': {
        const x = this.activation(n.input[0], 'data');
        let axis = attrInt(a, 'axis', 1);
        if (axis < 0) axis += x.shape.length;
        if (axis !== 1) throw new NodeError(`axis ${attrInt(a, 'axis', 1)} is not supported (only axis 1)`);
        this.flatten(x.name, out, name);
        return;
      }
      case 'Reshape': {
        const x = this.activation(n.input[0], 'data');
        if (a.has('shape')) throw new NodeError("the 'shape' attribute (opset < 5) is not supported");
        const t = this.intVals(n.input[1], 'shape').vals;
        const flat = numel(x.shape.slice(1));
        const allowZero = attrInt(a, 'allowzero', 0) !== 0;
        // the first entry is the batch: symbolic, copied (0), inferred (-1) or the export-time batch size
        const ok =
          x.shape.length >= 2 &&
          t.length === 2 &&
          (t[0] === -1 ? t[1] === flat : t[0] === 'N' || (t[0] === 0 && !allowZero) || (t[0] as number) > 0) &&
          (t[1] === -1 || t[1] === flat);
        if (!ok) throw new NodeError(`reshape of [${x.shape}] to [${t}] is not supported (only flattening to [N, -1])`);
        this.flatten(x.name, out, name);
        return;
      }
      case 'Squeeze': {
        const x = this.activation(n.input[0], 'data');
        const { axes, norm } = this.reduceAxes(n, a, x.shape.length);
        if (x.shape.length !== 4 || x.shape[2] !== 1 || x.shape[3] !== 1 || norm.join() !== '2,3') {
          throw new NodeError(`squeeze of [${x.shape}] over axes [${axes ?? 'all'}] is not supported (only [N,C,1,1] over axes [2,3])`);
        }
        this.flatten(x.name, out, name);
        return;
      }
      case 'ReduceMean': {
        const x = this.activation(n.input[0], 'data');
        const { axes, norm } = this.reduceAxes(n, a, x.shape.length);
        if (x.shape.length !== 4 || norm.join() !== '2,3') {
          throw new NodeError(`mean of [${x.shape}] over axes [${axes ?? 'all'}] is not supported (only global average pooling over axes [2,3])`);
        }
        if (attrInt(a, 'keepdims', 1) !== 0) {
          this.emit({ name: this.uniqueName(name), op: 'GlobalAvgPool', inputs: [x.name], outputs: [out], attrs: {}, params: {} });
        } else {
          const mid = `${out}__pooled`;
          this.emit({ name: this.uniqueName(name), op: 'GlobalAvgPool', inputs: [x.name], outputs: [mid], attrs: {}, params: {} });
          this.flatten(mid, out, `${name}/flatten`);
        }
        return;
      }
      case 'Gemm': {
        const x = this.activation(n.input[0], 'A');
        if (x.shape.length !== 2) throw new NodeError(`input A has shape [${x.shape}]; Gemm needs a 2-d input`);
        if (attrInt(a, 'transA', 0) !== 0) throw new NodeError('transA=1 is not supported');
        const transB = attrInt(a, 'transB', 0) !== 0;
        const alpha = attrFloat(a, 'alpha', 1);
        const beta = attrFloat(a, 'beta', 1);
        const w = this.floatConst(n.input[1], 'weight', 2);
        const [outF, inF] = transB ? (w.dims as [number, number]) : [w.dims[1]!, w.dims[0]!];
        let wd = transB ? w.floats : transpose2d(w.floats, inF, outF);
        if (alpha !== 1) wd = wd.map((v) => v * alpha);
        const node = this.linearNode(name, x.name, out, inF, outF);
        node.params.weight = this.param(w, wd, [outF, inF], node.name, 'weight');
        if (n.input[2] && beta !== 0) {
          const b = this.floatConst(n.input[2], 'bias');
          let bd: Float32Array;
          if (b.floats.length === outF && b.dims.filter((d) => d !== 1).length <= 1 && b.dims.at(-1) === outF) bd = b.floats;
          else if (b.floats.length === 1) bd = new Float32Array(outF).fill(b.floats[0]!);
          else throw new NodeError(`bias '${b.name}' has shape [${b.dims}], expected [${outF}]`);
          if (beta !== 1) bd = bd.map((v) => v * beta);
          node.params.bias = this.param(b, bd, [outF], node.name, 'bias');
        }
        this.emit(node);
        return;
      }
      case 'MatMul': {
        const x = this.activation(n.input[0], 'A');
        if (x.shape.length !== 2) throw new NodeError(`input A has shape [${x.shape}]; only 2-d MatMul (a linear layer) is supported`);
        const w = this.floatConst(n.input[1], 'weight', 2);
        const [inF, outF] = w.dims as [number, number];
        const node = this.linearNode(name, x.name, out, inF, outF);
        node.params.weight = this.param(undefined, transpose2d(w.floats, inF, outF), [outF, inF], node.name, 'weight');
        this.emit(node);
        return;
      }
      case 'Add': {
        if (a.has('broadcast') || a.has('axis')) throw new NodeError('legacy broadcast attributes (opset < 7) are not supported');
        const [i0, i1] = [n.input[0], n.input[1]];
        if (!i0 || !i1) throw new NodeError('needs two inputs');
        const c0 = this.consts.has(this.resolve(i0));
        const c1 = this.consts.has(this.resolve(i1));
        if (c0 && c1) throw new NodeError('adding two constants is not supported');
        if (!c0 && !c1) {
          const x = this.activation(i0, 'A');
          const y = this.activation(i1, 'B');
          this.emit({ name: this.uniqueName(name), op: 'Add', inputs: [x.name, y.name], outputs: [out], attrs: {}, params: {} });
          return;
        }
        this.foldBias(c0 ? i1 : i0, this.floatConst(c0 ? i0 : i1, 'bias'), out);
        return;
      }
      case 'Shape': {
        const x = this.activation(n.input[0], 'data');
        const r = x.shape.length;
        const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + r : v, 0), r);
        const vals = x.shape.map((d, i) => (i === 0 ? 'N' : d) as number | 'N');
        this.symInts.set(out, { vals: vals.slice(clamp(attrInt(a, 'start', 0)), clamp(attrInt(a, 'end', r))), scalar: false });
        return;
      }
      case 'Gather': {
        const data = this.intVals(n.input[0], 'data');
        if (data.scalar || attrInt(a, 'axis', 0) !== 0) throw new NodeError('only gathering from a 1-d shape vector along axis 0 is supported');
        const idx = this.intVals(n.input[1], 'indices');
        const vals = idx.vals.map((i) => {
          const k = typeof i === 'number' && i < 0 ? i + data.vals.length : i;
          if (typeof k !== 'number' || k < 0 || k >= data.vals.length) throw new NodeError(`index ${i} is out of range for [${data.vals}]`);
          return data.vals[k]!;
        });
        this.symInts.set(out, { vals, scalar: idx.scalar });
        return;
      }
      case 'Unsqueeze': {
        const data = this.intVals(n.input[0], 'data');
        const axes = n.input[1] ? this.intsConst(n.input[1], 'axes') : attrInts(a, 'axes');
        if (!data.scalar || !axes || axes.length !== 1 || (axes[0] !== 0 && axes[0] !== -1)) {
          throw new NodeError('only unsqueezing a scalar shape value to a 1-d vector is supported');
        }
        this.symInts.set(out, { vals: data.vals, scalar: false });
        return;
      }
      case 'Concat': {
        const axis = attrInt(a, 'axis', 0);
        if (axis !== 0 && axis !== -1) throw new NodeError(`axis ${axis} is not supported for shape values`);
        const parts = n.input.filter((i) => i).map((i) => this.intVals(i, 'data'));
        if (parts.some((p) => p.scalar)) throw new NodeError('cannot concatenate scalars');
        this.symInts.set(out, { vals: parts.flatMap((p) => p.vals), scalar: false });
        return;
      }
      case 'Slice': {
        if (this.shapes.has(this.resolve(n.input[0] ?? ''))) {
          this.sliceActivation(n, a, name, out);
          return;
        }
        const data = this.intVals(n.input[0], 'data');
        const get = (i: number, attr: string) => (n.input[i] ? this.intsConst(n.input[i], attr) : attrInts(a, attr));
        const [starts, ends, axes, steps] = [get(1, 'starts'), get(2, 'ends'), get(3, 'axes'), n.input[4] ? this.intsConst(n.input[4], 'steps') : undefined];
        if (data.scalar || !starts || !ends || starts.length !== 1 || ends.length !== 1 || (axes && axes.join() !== '0' && axes.join() !== '-1') || (steps && steps.join() !== '1')) {
          throw new NodeError('only a unit-step slice of a 1-d shape vector is supported');
        }
        const len = data.vals.length;
        const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + len : v, 0), len);
        this.symInts.set(out, { vals: data.vals.slice(clamp(starts[0]!), clamp(ends[0]!)), scalar: false });
        return;
      }
      case 'Size': {
        // Size(Shape(x)): the rank, whatever the batch size
        const data = this.intVals(n.input[0], 'data');
        this.symInts.set(out, { vals: [data.scalar ? 1 : data.vals.length], scalar: true });
        return;
      }
      case 'Pad':
        this.padActivation(n, a, name, out);
        return;
      case 'Cast': {
        const to = attrInt(a, 'to', 0);
        if (to !== DataType.INT64 && to !== DataType.INT32) throw new NodeError(`casting a shape value to ${DTYPE_NAMES[to] ?? to} is not supported`);
        this.symInts.set(out, this.intVals(n.input[0], 'data'));
        return;
      }
      default:
        throw new NodeError('is not supported');
    }
  }

  /** Slice of an activation: a strided spatial slice; no-op entries are dropped, everything else refused. */
  private sliceActivation(n: OnnxNode, a: Map<string, OnnxAttr>, name: string, out: string): void {
    const x = this.activation(n.input[0], 'data');
    const get = (k: number, attr: string) => (n.input[k] ? this.intsConst(n.input[k], attr) : attrInts(a, attr));
    const starts = get(1, 'starts');
    const ends = get(2, 'ends');
    if (!starts || !ends || starts.length !== ends.length) throw new NodeError('starts and ends are required and must have the same length');
    const rank = x.shape.length;
    const axes = (get(3, 'axes') ?? starts.map((_, i) => i)).map((ax) => normAxis(ax, rank, 'axis'));
    const steps = (n.input[4] ? this.intsConst(n.input[4], 'steps') : undefined) ?? starts.map(() => 1);
    if (axes.length !== starts.length || steps.length !== starts.length || new Set(axes).size !== axes.length) {
      throw new NodeError('axes and steps must match starts and name each axis once');
    }
    const kept: { axis: number; start: number; end: number; step: number }[] = [];
    axes.forEach((axis, i) => {
      const [start, end, step] = [starts[i]!, ends[i]!, steps[i]!];
      if (axis === 0) {
        // the batch size is unknown: only the whole-batch slice [0:INT_MAX] is accepted
        if (start === 0 && step === 1 && end >= 2 ** 31 - 1) return;
        throw new NodeError(`slicing the batch dimension [${start}:${end}:${step}] is not supported`);
      }
      if (step <= 0) throw new NodeError(`step ${step} on axis ${axis} is not supported (only positive steps)`);
      const dim = x.shape[axis]!;
      const b = sliceBounds(start, end, step, dim);
      if (b.count === 0) throw new NodeError(`slice [${start}:${end}:${step}] of axis ${axis} (size ${dim}) is empty`);
      if (b.start === 0 && step === 1 && b.count === dim) return; // the whole axis
      if (rank !== 4 || axis === 1) {
        throw new NodeError(`slicing axis ${axis} of [${x.shape}] is not supported (only the spatial axes 2, 3 of [N,C,H,W])`);
      }
      kept.push({ axis, start: b.start, end: b.end, step });
    });
    if (kept.length === 0) {
      this.alias.set(out, x.name);
      return;
    }
    kept.sort((p, q) => p.axis - q.axis);
    this.emit({
      name: this.uniqueName(name),
      op: 'Slice',
      inputs: [x.name],
      outputs: [out],
      attrs: { axes: kept.map((k) => k.axis), starts: kept.map((k) => k.start), ends: kept.map((k) => k.end), steps: kept.map((k) => k.step) },
      params: {},
    });
  }

  /** Pad of an activation: constant mode, pads folded to constants; all-zero pads are dropped. */
  private padActivation(n: OnnxNode, a: Map<string, OnnxAttr>, name: string, out: string): void {
    const x = this.activation(n.input[0], 'data');
    const mode = attrString(a, 'mode', 'constant');
    if (mode !== 'constant') throw new NodeError(`mode '${mode}' is not supported (only 'constant')`);
    const rank = x.shape.length;
    let pads = n.input[1] ? this.intsConst(n.input[1], 'pads') : attrInts(a, 'pads');
    if (!pads) throw new NodeError('pads are required');
    let value = attrFloat(a, 'value', 0);
    if (n.input[2]) {
      const c = this.constant(n.input[2], 'constant_value');
      const vs = c.floats ?? c.ints ?? [];
      if (vs.length !== 1) throw new NodeError(`constant_value '${c.name}' must hold one value, got shape [${c.dims}]`);
      value = vs[0]!;
    }
    if (n.input[3]) {
      // opset 18: pads for the listed axes only
      const axes = this.intsConst(n.input[3], 'axes').map((ax) => normAxis(ax, rank, 'axis'));
      if (pads.length !== 2 * axes.length || new Set(axes).size !== axes.length) {
        throw new NodeError(`pads [${pads}] do not match axes [${axes}]`);
      }
      const full = new Array<number>(2 * rank).fill(0);
      axes.forEach((ax, i) => {
        full[ax] = pads![i]!;
        full[ax + rank] = pads![i + axes.length]!;
      });
      pads = full;
    }
    if (pads.length !== 2 * rank) throw new NodeError(`pads [${pads}] must have ${2 * rank} values for input [${x.shape}]`);
    if (pads.some((p) => p < 0)) throw new NodeError(`negative pads [${pads}] (cropping) are not supported`);
    if (pads[0] !== 0 || pads[rank] !== 0) throw new NodeError(`pads [${pads}] pad the batch dimension, which is not supported`);
    if (pads.every((p) => p === 0)) {
      this.alias.set(out, x.name);
      return;
    }
    if (rank !== 4) throw new NodeError(`padding a ${rank}-d input [${x.shape}] is not supported (only [N,C,H,W])`);
    if (!Number.isFinite(value)) throw new NodeError(`constant value ${value} is not finite`);
    this.emit({
      name: this.uniqueName(name),
      op: 'Pad',
      inputs: [x.name],
      outputs: [out],
      attrs: { pads: pads as [number, number, number, number, number, number, number, number], mode: 'constant', value },
      params: {},
    });
  }

  private flatten(input: string, out: string, name: string): void {
    if (this.shapes.get(input)!.length === 2) {
      this.alias.set(out, input); // already [N, F]
      return;
    }
    this.emit({ name: this.uniqueName(name), op: 'Flatten', inputs: [input], outputs: [out], attrs: { axis: 1 }, params: {} });
  }

  /** Add(activation, constant): a bias of the producing MatMul/Gemm/Conv, folded into it. */
  private foldBias(actName: string, b: Const & { floats: Float32Array }, out: string): void {
    const x = this.activation(actName, 'data');
    const p = this.producer.get(x.name);
    // renaming the producer's output to the Add's is only sound if the Add was its sole consumer
    const single = this.resolve(actName) === actName && (this.uses.get(x.name) ?? 0) === 1 && !this.graphOutputs.has(x.name);
    let channels = -1;
    let shapeOk = false;
    if (p?.op === 'Linear') {
      channels = p.attrs.outFeatures;
      shapeOk = b.dims.at(-1) === channels && b.dims.length <= 2 && b.floats.length === channels;
    } else if (p?.op === 'Conv2d') {
      channels = p.attrs.outChannels;
      const d = b.dims.length === 4 ? b.dims.slice(1) : b.dims;
      shapeOk = d.length === 3 && d[0] === channels && d[1] === 1 && d[2] === 1 && numel(b.dims) === channels;
    }
    if (!p || !single || !shapeOk) {
      throw new NodeError(
        `adding constant '${b.name}' [${b.dims}] is only supported as the bias of the single preceding MatMul, Gemm or Conv`,
      );
    }
    const params = (p as Conv2dNode | LinearNode).params;
    const old = params.bias;
    const data = old ? this.tensors[old]!.data.map((v, i) => v + b.floats[i]!) : b.floats;
    const key = this.param(b.dims.length === 1 ? b : undefined, data, [channels], p.name, 'bias');
    if (old) delete this.tensors[old];
    params.bias = key;
    this.rename(x.name, out);
  }
}

/** Parses an ONNX model into the IR. Throws OnnxImportError naming the file, node and op. */
export function importOnnx(bytes: Uint8Array, opts: { fileName?: string } = {}): Model {
  return new Importer(opts.fileName ?? 'ONNX model').run(bytes);
}

export async function loadOnnxFile(path: string): Promise<Model> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new OnnxImportError(`${path}: cannot read the ONNX file: ${(e as Error).message}`, { cause: e });
  }
  return importOnnx(bytes, { fileName: path });
}

/** The file's bytes, their SHA-256 (checkpoint keys, reports) and the imported model. */
export async function readOnnxModel(path: string): Promise<{ bytes: Uint8Array; sha256: string; model: Model }> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new UserError(`${path}: cannot read model file (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
  return { bytes, sha256: createHash('sha256').update(bytes).digest('hex'), model: importOnnx(bytes, { fileName: path }) };
}
