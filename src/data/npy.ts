// NumPy .npy files (format versions 1, 2, 3): little-endian float32/float64/int32/int64/uint8 in
// C order. Anything else is refused with one error naming the file.
import { readFileSync } from 'node:fs';

import { writeFileAtomic } from '../util/fs.js';
import { UserError } from '../util/errors.js';

export type NpyDtype = 'float32' | 'float64' | 'int32' | 'int64' | 'uint8';

export type NpyData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;

export interface NpyArray {
  dtype: NpyDtype;
  shape: number[];
  data: NpyData;
}

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY

const DESCR: Record<string, NpyDtype> = {
  '<f4': 'float32',
  '<f8': 'float64',
  '<i4': 'int32',
  '<i8': 'int64',
  '|u1': 'uint8',
  '<u1': 'uint8',
};
const DESCR_OUT: Record<NpyDtype, string> = { float32: '<f4', float64: '<f8', int32: '<i4', int64: '<i8', uint8: '|u1' };
const ITEMSIZE: Record<NpyDtype, number> = { float32: 4, float64: 8, int32: 4, int64: 8, uint8: 1 };

export function numelOf(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Parses the bytes of a .npy file; `name` (the file) appears in every error. */
export function parseNpy(buf: Uint8Array, name: string): NpyArray {
  const bad = (why: string): never => {
    throw new UserError(`${name}: not a valid .npy file: ${why}`);
  };
  if (buf.length < 10 || !MAGIC.equals(Buffer.from(buf.subarray(0, 6)))) bad('missing the \\x93NUMPY magic');
  const major = buf[6];
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let headerLen: number;
  let headerStart: number;
  if (major === 1) {
    headerLen = view.getUint16(8, true);
    headerStart = 10;
  } else if (major === 2 || major === 3) {
    if (buf.length < 12) bad('truncated header');
    headerLen = view.getUint32(8, true);
    headerStart = 12;
  } else {
    return bad(`unsupported format version ${major}.${buf[7]}`);
  }
  if (headerStart + headerLen > buf.length) bad('truncated header');
  const header = Buffer.from(buf.subarray(headerStart, headerStart + headerLen)).toString(major === 3 ? 'utf8' : 'latin1');
  const descr = /['"]descr['"]\s*:\s*['"]([^'"]+)['"]/.exec(header)?.[1];
  const fortran = /['"]fortran_order['"]\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /['"]shape['"]\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    bad(`header lacks descr/fortran_order/shape: ${header.trim()}`);
  }
  if (fortran === 'True') {
    throw new UserError(`${name}: Fortran-order (column-major) arrays are not supported; save with np.ascontiguousarray`);
  }
  const dtype = DESCR[descr!];
  if (!dtype) {
    throw new UserError(
      `${name}: unsupported dtype '${descr}' (supported: little-endian float32, float64, int32, int64, uint8)`,
    );
  }
  const parts = shapeText!.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (!parts.every((s) => /^\d+L?$/.test(s))) bad(`bad shape (${shapeText})`);
  const shape = parts.map((s) => parseInt(s, 10));
  const count = numelOf(shape);
  const start = headerStart + headerLen;
  const bytes = count * ITEMSIZE[dtype];
  if (buf.length - start < bytes) {
    throw new UserError(`${name}: truncated .npy data: shape [${shape.join(', ')}] needs ${bytes} bytes, file has ${buf.length - start}`);
  }
  // copy into a fresh, aligned buffer
  const raw = buf.buffer.slice(buf.byteOffset + start, buf.byteOffset + start + bytes);
  const data: NpyData =
    dtype === 'float32'
      ? new Float32Array(raw)
      : dtype === 'float64'
        ? new Float64Array(raw)
        : dtype === 'int32'
          ? new Int32Array(raw)
          : dtype === 'int64'
            ? new BigInt64Array(raw)
            : new Uint8Array(raw);
  return { dtype, shape, data };
}

export function readNpy(path: string): NpyArray {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (e) {
    throw new UserError(`${path}: cannot read: ${(e as Error).message}`);
  }
  return parseNpy(buf, path);
}

function dtypeOf(data: NpyData): NpyDtype {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof BigInt64Array) return 'int64';
  return 'uint8';
}

/** Encodes a C-order array as a version 1.0 .npy file (header padded to 64 bytes). */
export function encodeNpy(shape: number[], data: NpyData): Buffer {
  if (numelOf(shape) !== data.length) {
    throw new RangeError(`encodeNpy: shape [${shape.join(', ')}] needs ${numelOf(shape)} values, got ${data.length}`);
  }
  const dtype = dtypeOf(data);
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${DESCR_OUT[dtype]}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  const pad = 64 - ((10 + header.length + 1) % 64);
  header += ' '.repeat(pad % 64) + '\n';
  const head = Buffer.alloc(10);
  MAGIC.copy(head, 0);
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  return Buffer.concat([head, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

export async function writeNpy(path: string, shape: number[], data: NpyData): Promise<void> {
  await writeFileAtomic(path, encodeNpy(shape, data));
}

/** Element i as a JS number (int64 goes through Number(): exact up to 2^53). */
export function npyNumberAt(data: NpyData, i: number): number {
  const v = data[i]!;
  return typeof v === 'bigint' ? Number(v) : v;
}
