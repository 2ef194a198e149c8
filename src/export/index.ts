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
