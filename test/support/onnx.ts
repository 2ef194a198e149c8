// ONNX for the tests: import assertions and builders of hand-written graphs.
import assert from 'node:assert/strict';
import { importOnnx, OnnxImportError } from '../../src/onnx/index.js';
import { AttrType, DataType, onnx, type pb } from '../../src/onnx/proto.js';

/** Importing `bytes` (as 'bad.onnx') fails with one OnnxImportError whose message matches `re`. */
export function expectImportError(bytes: Uint8Array, re: RegExp): void {
  assert.throws(() => importOnnx(bytes, { fileName: 'bad.onnx' }), (e: Error) => {
    assert.ok(e instanceof OnnxImportError, String(e));
    assert.match(e.message, re);
    return true;
  });
}

// ---------- ONNX protobuf builders: hand-written graphs without binary fixtures ----------

export const aInt = (name: string, i: number): pb.IAttributeProto => ({ name, type: AttrType.INT, i });
export const aInts = (name: string, ints: number[]): pb.IAttributeProto => ({ name, type: AttrType.INTS, ints });
export const aFloat = (name: string, f: number): pb.IAttributeProto => ({ name, type: AttrType.FLOAT, f });
export const aStr = (name: string, s: string): pb.IAttributeProto => ({ name, type: AttrType.STRING, s: new TextEncoder().encode(s) });
export const aTensor = (name: string, t: pb.ITensorProto): pb.IAttributeProto => ({ name, type: AttrType.TENSOR, t });

/** A node; `output` lists its outputs. */
export const nd = (opType: string, name: string, input: string[], output: string[], attribute: pb.IAttributeProto[] = []): pb.INodeProto => ({
  opType,
  name,
  input,
  output,
  attribute,
});

/** A Constant node whose one output is named `name`. */
export const constant = (name: string, t: pb.ITensorProto): pb.INodeProto => nd('Constant', name, [], [name], [aTensor('value', t)]);

/** A float input or output; a string dim is symbolic (dimParam). */
export const vi = (name: string, dims: (number | string)[]): pb.IValueInfoProto => ({
  name,
  type: {
    tensorType: {
      elemType: DataType.FLOAT,
      shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
    },
  },
});

/** A named float initializer, in raw_data (little-endian bytes, the default) or in float_data. */
export function fInit(name: string, dims: number[], data: Float32Array, style: 'raw' | 'float_data' = 'raw'): pb.ITensorProto {
  return style === 'raw'
    ? { name, dims, dataType: DataType.FLOAT, rawData: new Uint8Array(data.buffer.slice(0)) }
    : { name, dims, dataType: DataType.FLOAT, floatData: [...data] };
}

/**
 * A named float initializer in float_data with fixed, non-trivial values 0.3 sin(i + rank), so a
 * hand-written graph computes something without a random source.
 */
export const sinInit = (name: string, dims: number[]): pb.ITensorProto => ({
  name,
  dims,
  dataType: DataType.FLOAT,
  floatData: Array.from({ length: dims.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i + dims.length) * 0.3),
});

/** An unnamed float tensor in raw_data (for Constant values, or spread under a name). */
export const f32 = (vals: number[], dims: number[] = [vals.length]): pb.ITensorProto => ({
  dims,
  dataType: DataType.FLOAT,
  rawData: new Uint8Array(Float32Array.from(vals).buffer),
});

/** An unnamed int64 tensor as raw little-endian bytes (exact for INT64_MIN/MAX, as exporters write them). */
export const i64 = (vals: (number | bigint)[], dims: number[] = [vals.length]): pb.ITensorProto => ({
  dims,
  dataType: DataType.INT64,
  rawData: new Uint8Array(BigInt64Array.from(vals.map((v) => BigInt(v))).buffer),
});

/** A named 1-d int64 tensor in int64_data (the repeated field rather than raw bytes). */
export const i64Data = (name: string, ints: number[]): pb.ITensorProto => ({ name, dims: [ints.length], dataType: DataType.INT64, int64Data: ints });

export interface OnnxGraphSpec {
  nodes: pb.INodeProto[];
  inits?: pb.ITensorProto[];
  input: pb.IValueInfoProto;
  /** graph output names */
  outputs: string[];
  /** default opset 13 (IR version 7; 8 from opset 15) */
  opset?: number;
  /** default 'test' */
  producer?: string;
  /** the graph's name, default 'g' */
  graphName?: string;
}

/** An encoded ModelProto of one graph with one input. */
export function onnxBytes(g: OnnxGraphSpec): Uint8Array {
  const opset = g.opset ?? 13;
  return onnx.ModelProto.encode({
    irVersion: opset >= 15 ? 8 : 7,
    opsetImport: [{ domain: '', version: opset }],
    producerName: g.producer ?? 'test',
    graph: { name: g.graphName ?? 'g', node: g.nodes, initializer: g.inits ?? [], input: [g.input], output: g.outputs.map((o) => ({ name: o })) },
  }).finish();
}
