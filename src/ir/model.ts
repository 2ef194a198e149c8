// The model IR: a DAG of layers over named values, with weights as typed arrays owned by TypeScript.
// Every stage (engine, ONNX import/export, surgery, report) speaks this format and nothing else.

/** A dense float32 tensor, row-major. */
export interface Tensor {
  shape: number[];
  data: Float32Array;
}

/** Operator set. Attributes are fully explicit (importers fill defaults) so consumers never guess. */
export interface Conv2dAttrs {
  inChannels: number;
  outChannels: number;
  kernel: [number, number];
  stride: [number, number];
  /** symmetric zero padding [padH, padW] */
  padding: [number, number];
  dilation: [number, number];
  groups: number;
}
export interface BatchNormAttrs {
  numFeatures: number;
  eps: number;
  /** PyTorch convention: running = (1 - momentum) * running + momentum * batch */
  momentum: number;
}
export interface PoolAttrs {
  kernel: [number, number];
  stride: [number, number];
  padding: [number, number];
  ceilMode: boolean;
  /** AvgPool only */
  countIncludePad?: boolean;
}
export interface LinearAttrs {
  inFeatures: number;
  outFeatures: number;
}
export interface FlattenAttrs {
  /** dims [0, axis) are kept as the batch dim, the rest flattened; the IR supports axis = 1 */
  axis: number;
}
/**
 * Strided spatial slice of [N,C,H,W] (ResNet "option A" shortcuts: x[:, :, ::2, ::2]). Every entry
 * is explicit and in range: no negative indices, no clamping left to the consumer.
 */
export interface SliceAttrs {
  /** spatial axes only: 2 (H) and/or 3 (W), strictly increasing */
  axes: number[];
  /** per axis: first index taken, 0 <= start < end */
  starts: number[];
  /** per axis: exclusive end, end <= the input's size on that axis */
  ends: number[];
  /** per axis: step >= 1; output size ceil((end - start) / step) */
  steps: number[];
}
/** Constant padding of [N,C,H,W] on channels and/or spatial dims (ResNet "option A" zero channels). */
export interface PadAttrs {
  /** ONNX order [N_begin, C_begin, H_begin, W_begin, N_end, C_end, H_end, W_end]; all >= 0, N entries 0 */
  pads: [number, number, number, number, number, number, number, number];
  mode: 'constant';
  /** the value of every padded element (0 for zero padding) */
  value: number;
}

interface NodeBase<Op extends string, A, P extends string> {
  /** unique, stable name (ONNX node name or module path) */
  name: string;
  op: Op;
  inputs: string[];
  outputs: [string];
  attrs: A;
  /** parameter slot -> key in Model.tensors */
  params: Partial<Record<P, string>>;
}

export type Conv2dNode = NodeBase<'Conv2d', Conv2dAttrs, 'weight' | 'bias'>;
/** BatchNorm over dim 1 of [N,C] or [N,C,H,W]; params weight, bias, runningMean, runningVar are all required. */
export type BatchNormNode = NodeBase<'BatchNorm', BatchNormAttrs, 'weight' | 'bias' | 'runningMean' | 'runningVar'>;
export type ReluNode = NodeBase<'Relu', Record<string, never>, never>;
export type MaxPoolNode = NodeBase<'MaxPool', PoolAttrs, never>;
export type AvgPoolNode = NodeBase<'AvgPool', PoolAttrs, never>;
export type GlobalAvgPoolNode = NodeBase<'GlobalAvgPool', Record<string, never>, never>;
export type FlattenNode = NodeBase<'Flatten', FlattenAttrs, never>;
/** y = x W^T + b, weight [out, in] as in PyTorch */
export type LinearNode = NodeBase<'Linear', LinearAttrs, 'weight' | 'bias'>;
/** element-wise sum of two inputs of the same shape */
export type AddNode = NodeBase<'Add', Record<string, never>, never>;
export type SliceNode = NodeBase<'Slice', SliceAttrs, never>;
export type PadNode = NodeBase<'Pad', PadAttrs, never>;

export type Node =
  | Conv2dNode
  | BatchNormNode
  | ReluNode
  | MaxPoolNode
  | AvgPoolNode
  | GlobalAvgPoolNode
  | FlattenNode
  | LinearNode
  | AddNode
  | SliceNode
  | PadNode;
export type OpType = Node['op'];

/** Every op of the IR at runtime; the check below fails to compile if the Node union has one more. */
export const OP_TYPES = [
  'Conv2d',
  'BatchNorm',
  'Relu',
  'MaxPool',
  'AvgPool',
  'GlobalAvgPool',
  'Flatten',
  'Linear',
  'Add',
  'Slice',
  'Pad',
] as const satisfies readonly OpType[];
const everyOpListed: [Exclude<OpType, (typeof OP_TYPES)[number]>] extends [never] ? true : false = true;
void everyOpListed;

/** Which parameter slots are trained by gradient descent; the rest (BN running stats) are buffers. */
export const TRAINABLE_SLOTS: ReadonlySet<string> = new Set(['weight', 'bias']);

export interface ValueInfo {
  name: string;
  /** shape with the batch dimension as -1 */
  shape: number[];
}

export interface Model {
  name: string;
  inputs: ValueInfo[];
  outputs: string[];
  /** topologically ordered */
  nodes: Node[];
  tensors: Record<string, Tensor>;
  /** free-form string metadata (ONNX metadata_props), e.g. mean/std as JSON arrays */
  metadata: Record<string, string>;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function tensor(shape: number[], data?: Float32Array | number[]): Tensor {
  const n = numel(shape);
  const arr = data instanceof Float32Array ? data : data ? Float32Array.from(data) : new Float32Array(n);
  if (arr.length !== n) throw new Error(`tensor: data has ${arr.length} values, shape [${shape}] needs ${n}`);
  return { shape: [...shape], data: arr };
}

/** A deep copy (weights included), so surgery never aliases the source model. */
export function cloneModel(m: Model): Model {
  const tensors: Record<string, Tensor> = {};
  for (const [k, t] of Object.entries(m.tensors)) tensors[k] = { shape: [...t.shape], data: t.data.slice() };
  return {
    name: m.name,
    inputs: m.inputs.map((v) => ({ name: v.name, shape: [...v.shape] })),
    outputs: [...m.outputs],
    nodes: m.nodes.map((n) => structuredClone(n)),
    tensors,
    metadata: { ...m.metadata },
  };
}
