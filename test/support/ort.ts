// onnxruntime as the tests' outside judge of exported models.
import ort from 'onnxruntime-node';

/** Runs ONNX bytes on one float32 input with one thread; returns the graph's first output. */
export async function runOrt(bytes: Uint8Array, inputName: string, x: Float32Array, shape: number[]): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  try {
    const out = await s.run({ [inputName]: new ort.Tensor('float32', x, shape) });
    return out[s.outputNames[0]!]!.data as Float32Array;
  } finally {
    await s.release();
  }
}
