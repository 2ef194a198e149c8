export { OnnxImportError, SHAPE_ONLY_ONNX_OPS, SUPPORTED_ONNX_OPS, importOnnx, loadOnnxFile, readOnnxModel } from './import.js';
export { DEFAULT_OPSET, type ExportOptions, exportOnnx, saveOnnxFile } from './export.js';
