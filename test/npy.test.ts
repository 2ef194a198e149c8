import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { encodeNpy, parseNpy, readNpy, writeNpy } from '../src/data/npy.js';
import { UserError } from '../src/util/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'cmiprune-npy-'));

test('write then read round-trips every supported dtype and shape', async () => {
  const cases = [
    { shape: [2, 3, 4], data: Float32Array.from({ length: 24 }, (_, i) => i / 7 - 1) },
    { shape: [5], data: Float64Array.from([Math.PI, -0, 1e-300, -1e300, 2]) },
    { shape: [3, 1], data: Int32Array.from([-5, 0, 2147483647]) },
    { shape: [4], data: BigInt64Array.from([0n, -1n, 9007199254740993n, 7n]) },
    { shape: [2, 2], data: Uint8Array.from([0, 1, 254, 255]) },
    { shape: [0, 3], data: new Float32Array(0) },
  ];
  for (const c of cases) {
    const path = join(dir, `rt-${c.data.constructor.name}.npy`);
    await writeNpy(path, c.shape, c.data);
    const bytes = readFileSync(path);
    assert.equal((10 + bytes.readUInt16LE(8)) % 64, 0, 'data starts 64-byte aligned');
    const back = readNpy(path);
    assert.deepEqual(back.shape, c.shape);
    assert.deepEqual(back.data, c.data);
  }
});

function header(dict: string, major = 1): Buffer {
  const h = Buffer.from(dict + '\n', 'latin1');
  const pre = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, major, 0]);
  const len = Buffer.alloc(major === 1 ? 2 : 4);
  if (major === 1) len.writeUInt16LE(h.length);
  else len.writeUInt32LE(h.length);
  return Buffer.concat([pre, len, h]);
}

test('reads format versions 2 and 3 and NumPy-style headers', () => {
  const data = Buffer.from(Float64Array.from([1.5, -2.5]).buffer);
  for (const major of [2, 3]) {
    const a = parseNpy(Buffer.concat([header("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", major), data]), 'v.npy');
    assert.equal(a.dtype, 'float64');
    assert.deepEqual([...(a.data as Float64Array)], [1.5, -2.5]);
  }
  const scalar = parseNpy(Buffer.concat([header("{'descr': '<f8', 'fortran_order': False, 'shape': (), }"), data.subarray(0, 8)]), 's.npy');
  assert.deepEqual(scalar.shape, []);
  assert.equal(scalar.data.length, 1);
});

test('malformed, truncated, Fortran-order and unsupported files give one clear error naming the file', () => {
  const good = encodeNpy([4], Float32Array.from([1, 2, 3, 4]));
  const expectError = (buf: Buffer, re: RegExp) =>
    assert.throws(() => parseNpy(buf, 'bad.npy'), (e: unknown) => e instanceof UserError && /^bad\.npy: /.test(e.message) && re.test(e.message));
  expectError(Buffer.from('not a numpy file at all'), /magic/);
  expectError(good.subarray(0, good.length - 3), /truncated/);
  expectError(good.subarray(0, 20), /truncated header/);
  expectError(Buffer.concat([header("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }"), Buffer.alloc(16)]), /Fortran/);
  expectError(Buffer.concat([header("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }"), Buffer.alloc(4)]), /unsupported dtype '>f4'/);
  expectError(Buffer.concat([header("{'descr': '<c16', 'fortran_order': False, 'shape': (1,), }"), Buffer.alloc(16)]), /unsupported dtype/);
  expectError(Buffer.concat([header("{'descr': '<f4', 'shape': (1,), }"), Buffer.alloc(4)]), /header lacks/);
  expectError(Buffer.concat([header("{'descr': '<f4', 'fortran_order': False, 'shape': (a, 2), }"), Buffer.alloc(4)]), /bad shape/);
  const v9 = Buffer.from(good);
  v9[6] = 9;
  expectError(v9, /version 9/);
  const missing = join(dir, 'nope.npy');
  assert.throws(() => readNpy(missing), (e: unknown) => e instanceof UserError && e.message.startsWith(missing));
  writeFileSync(join(dir, 'empty.npy'), '');
  assert.throws(() => readNpy(join(dir, 'empty.npy')), /empty\.npy: not a valid \.npy file/);
});
