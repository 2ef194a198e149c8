export { COUNTABLE_ONNX_OPS, type OnnxConvInfo, type OnnxCount, countOnnx } from './count.js';
export {
  DEFAULT_VERIFY_TOLERANCE,
  type LatencyResult,
  type VerifyResult,
  assertVerified,
  ortLatency,
  ortSessionOptions,
  verifyWithOnnxRuntime,
} from './verify.js';
export { DEFAULT_TFJS_SHARD_BYTES, type TfjsExportOptions, type TfjsExportResult, type TfjsNormalization, type TfjsOutputInfo, exportTfjs } from './tfjs.js';
