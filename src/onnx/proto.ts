// Thin typed access to the static protobufjs code of onnx.proto (package onnx-proto, CommonJS).
import onnxProto from 'onnx-proto';

export const { onnx } = onnxProto;
/** the generated message types, e.g. pb.NodeProto, pb.IModelProto */
export type { onnx as pb } from 'onnx-proto';

export const DataType = onnx.TensorProto.DataType;
export const AttrType = onnx.AttributeProto.AttributeType;

/** protobufjs decodes int64 as Long when the `long` package is present, else as number. */
export type Int64 = number | { toNumber(): number; toString(): string };

export function toNum(v: Int64 | null | undefined): number {
  if (v === null || v === undefined) return 0;
  if (typeof v === 'number') return v;
  const n = v.toNumber();
  if (!Number.isSafeInteger(n)) throw new RangeError(`int64 value ${v.toString()} is out of range`);
  return n;
}

const LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Copies little-endian raw bytes into an aligned typed array (protobufjs hands out unaligned views). */
export function rawToFloat32(raw: Uint8Array): Float32Array {
  const n = raw.length >> 2;
  // new Uint8Array(view) copies; Buffer#slice would not (it aliases the whole file's pool)
  if (LE) return new Float32Array(new Uint8Array(raw.subarray(0, n * 4)).buffer);
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
  return out;
}

export function float32ToRaw(data: Float32Array): Uint8Array {
  if (LE) return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
  const out = new Uint8Array(data.length * 4);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < data.length; i++) dv.setFloat32(i * 4, data[i]!, true);
  return out;
}

/** IEEE 754 half -> float. */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/** bfloat16 -> float: the upper 16 bits of a float32. */
export function bfloat16ToFloat(h: number): number {
  const dv = new DataView(new ArrayBuffer(4));
  dv.setUint32(0, (h & 0xffff) << 16, true);
  return dv.getFloat32(0, true);
}

export const DTYPE_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(DataType).map(([k, v]) => [v as number, k]),
);

/** Opset -> the lowest IR version that declares it (onnx/helper.py VERSION_TABLE). */
export function irVersionForOpset(opset: number): number {
  if (opset <= 8) return 3;
  if (opset === 9) return 4;
  if (opset === 10) return 5;
  if (opset === 11) return 6;
  if (opset <= 14) return 7;
  if (opset <= 18) return 8;
  if (opset <= 20) return 9;
  if (opset <= 22) return 10;
  return 11;
}
