// ONNX import assertions shared by the import tests.
import assert from 'node:assert/strict';
import { importOnnx, OnnxImportError } from '../../src/onnx/index.js';

/** Importing `bytes` (as 'bad.onnx') fails with one OnnxImportError whose message matches `re`. */
export function expectImportError(bytes: Uint8Array, re: RegExp): void {
  assert.throws(() => importOnnx(bytes, { fileName: 'bad.onnx' }), (e: Error) => {
    assert.ok(e instanceof OnnxImportError, String(e));
    assert.match(e.message, re);
    return true;
  });
}
