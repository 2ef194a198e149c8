// Builds sequential IR models in code (tests, benchmarks, users without an ONNX file), with
// PyTorch's default initialisation so a freshly built model trains like a fresh torch.nn model.
import { type Model, type Node, type Tensor, tensor } from './model.js';
import { inferShapes } from './shapes.js';

export interface BuilderOptions {
  /** uniform [0, 1) source; pass a seeded generator for reproducible weights */
  random: () => number;
}

export interface ConvOptions {
  stride?: number;
  padding?: number;
  groups?: number;
  bias?: boolean;
  dilation?: number;
  /** 'pytorch' (default): U(+-1/sqrt(fanIn)); 'he-uniform': U(+-sqrt(6/fanIn)), for ReLU nets trained from scratch */
  init?: 'pytorch' | 'he-uniform';
}

export class SequentialBuilder {
  private readonly nodes: Node[] = [];
  private readonly tensors: Record<string, Tensor> = {};
  private current = 'input';
  /** current per-sample shape */
  private shape: number[];
  private counter = 0;

  constructor(
    private readonly name: string,
    private readonly inputShape: number[],
    private readonly opts: BuilderOptions,
  ) {
    this.shape = [...inputShape];
  }

  /** PyTorch's default for Conv/Linear: U(-1/sqrt(fanIn), 1/sqrt(fanIn)) for weights and biases. */
  private uniform(shape: number[], fanIn: number, gain = 1): Tensor {
    const t = tensor(shape);
    const bound = gain / Math.sqrt(fanIn);
    for (let i = 0; i < t.data.length; i++) t.data[i] = (this.opts.random() * 2 - 1) * bound;
    return t;
  }

  private add(node: Omit<Node, 'name' | 'inputs' | 'outputs'> & { params?: Record<string, string> }, label: string): string {
    const name = `${label}${this.counter++}`;
    const out = `${name}.out`;
    const full = { ...node, name, inputs: [this.current], outputs: [out], params: node.params ?? {} } as Node;
    this.nodes.push(full);
    this.current = out;
    return name;
  }

  private refreshShape(): void {
    const shapes = inferShapes(this.build(), 1);
    this.shape = shapes.get(this.current)!.slice(1);
  }

  conv(outChannels: number, kernel: number, o: ConvOptions = {}): this {
    const inChannels = this.shape[0]!;
    const groups = o.groups ?? 1;
    const name = `conv${this.counter}`;
    const wShape = [outChannels, inChannels / groups, kernel, kernel];
    const fanIn = (inChannels / groups) * kernel * kernel;
    this.tensors[`${name}.weight`] = this.uniform(wShape, fanIn, o.init === 'he-uniform' ? Math.sqrt(6) : 1);
    const params: Record<string, string> = { weight: `${name}.weight` };
    if (o.bias ?? true) {
      this.tensors[`${name}.bias`] = this.uniform([outChannels], fanIn);
      params.bias = `${name}.bias`;
    }
    this.add(
      {
        op: 'Conv2d',
        attrs: {
          inChannels,
          outChannels,
          kernel: [kernel, kernel],
          stride: [o.stride ?? 1, o.stride ?? 1],
          padding: [o.padding ?? 0, o.padding ?? 0],
          dilation: [o.dilation ?? 1, o.dilation ?? 1],
          groups,
        },
        params,
      } as Omit<Node, 'name' | 'inputs' | 'outputs'>,
      'conv',
    );
    this.refreshShape();
    return this;
  }

  bn(eps = 1e-5, momentum = 0.1): this {
    const c = this.shape[0]!;
    const name = `bn${this.counter}`;
    const fill = (v: number) => tensor([c], new Float32Array(c).fill(v));
    this.tensors[`${name}.weight`] = fill(1);
    this.tensors[`${name}.bias`] = fill(0);
    this.tensors[`${name}.running_mean`] = fill(0);
    this.tensors[`${name}.running_var`] = fill(1);
    this.add(
      {
        op: 'BatchNorm',
        attrs: { numFeatures: c, eps, momentum },
        params: {
          weight: `${name}.weight`,
          bias: `${name}.bias`,
          runningMean: `${name}.running_mean`,
          runningVar: `${name}.running_var`,
        },
      } as Omit<Node, 'name' | 'inputs' | 'outputs'>,
      'bn',
    );
    return this;
  }

  relu(): this {
    this.add({ op: 'Relu', attrs: {} } as Omit<Node, 'name' | 'inputs' | 'outputs'>, 'relu');
    return this;
  }

  private pool(op: 'MaxPool' | 'AvgPool', kernel: number, stride = kernel, padding = 0): this {
    const attrs = {
      kernel: [kernel, kernel],
      stride: [stride, stride],
      padding: [padding, padding],
      ceilMode: false,
      ...(op === 'AvgPool' ? { countIncludePad: true } : {}),
    };
    this.add({ op, attrs } as Omit<Node, 'name' | 'inputs' | 'outputs'>, op === 'MaxPool' ? 'maxpool' : 'avgpool');
    this.refreshShape();
    return this;
  }

  maxpool(kernel: number, stride = kernel, padding = 0): this {
    return this.pool('MaxPool', kernel, stride, padding);
  }

  avgpool(kernel: number, stride = kernel, padding = 0): this {
    return this.pool('AvgPool', kernel, stride, padding);
  }

  globalAvgPool(): this {
    this.add({ op: 'GlobalAvgPool', attrs: {} } as Omit<Node, 'name' | 'inputs' | 'outputs'>, 'gap');
    this.refreshShape();
    return this;
  }

  flatten(): this {
    this.add({ op: 'Flatten', attrs: { axis: 1 } } as Omit<Node, 'name' | 'inputs' | 'outputs'>, 'flatten');
    this.refreshShape();
    return this;
  }

  linear(outFeatures: number, bias = true): this {
    const inFeatures = this.shape[0]!;
    const name = `fc${this.counter}`;
    this.tensors[`${name}.weight`] = this.uniform([outFeatures, inFeatures], inFeatures);
    const params: Record<string, string> = { weight: `${name}.weight` };
    if (bias) {
      this.tensors[`${name}.bias`] = this.uniform([outFeatures], inFeatures);
      params.bias = `${name}.bias`;
    }
    this.add(
      { op: 'Linear', attrs: { inFeatures, outFeatures }, params } as Omit<Node, 'name' | 'inputs' | 'outputs'>,
      'fc',
    );
    this.refreshShape();
    return this;
  }

  build(): Model {
    return {
      name: this.name,
      inputs: [{ name: 'input', shape: [-1, ...this.inputShape] }],
      outputs: [this.current],
      nodes: this.nodes.map((n) => structuredClone(n)),
      tensors: { ...this.tensors },
      metadata: {},
    };
  }
}

/** VGG16 with BatchNorm for 32x32 inputs (SPEC section 7), as in ../shared/models. */
export function vgg16bn(opts: BuilderOptions, classes = 10): Model {
  const b = new SequentialBuilder('vgg16_bn', [3, 32, 32], opts);
  const cfg: (number | 'M')[] = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512];
  for (const c of cfg) {
    if (c === 'M') b.maxpool(2);
    else b.conv(c, 3, { padding: 1, bias: false }).bn().relu();
  }
  return b.avgpool(2).flatten().linear(512).bn().relu().linear(classes).build();
}

export interface ResNetCifarOptions {
  /** 6n + 2: 20, 32, 44, 56, 110 (He et al.'s CIFAR variant); default 20 */
  depth?: number;
  classes?: number;
  /**
   * downsampling shortcuts: 'A' (default) subsamples x[:, :, ::2, ::2] and pads zero channels on
   * both sides, as akamaster/pytorch_resnet_cifar10; 'B' is a 1x1 conv (stride 2) + BatchNorm
   */
  shortcut?: 'A' | 'B';
  /** kernel of the blocks' convs: 3 (default, padding 1) or 1 (no padding: removed channels' constants fold exactly) */
  kernel?: 1 | 3;
}

/**
 * He et al.'s CIFAR ResNet (conv 3x3 (16) -> 3 stages of n basic blocks at 16, 32, 64 channels ->
 * global average pool -> linear) on [3, 32, 32] inputs, with the node, value and tensor names that
 * PyTorch's TorchScript exporter gives akamaster's model (so ../shared/models/resnet20_cifar10.onnx
 * imports to the same graph and its weights load by name). Convs have no bias; weights are
 * He-initialised (variance 2 / fanIn, as the reference code's kaiming_normal_), BN is (1, 0, 0, 1).
 */
export function resnetCifar(opts: BuilderOptions, o: ResNetCifarOptions = {}): Model {
  const depth = o.depth ?? 20;
  const classes = o.classes ?? 10;
  if (!Number.isInteger(depth) || depth < 8 || (depth - 2) % 6 !== 0) throw new Error(`resnetCifar: depth ${depth} is not 6n + 2 (n >= 1)`);
  const blocks = (depth - 2) / 6;
  const nodes: Node[] = [];
  const tensors: Record<string, Tensor> = {};
  const uniform = (shape: number[], bound: number): Tensor => {
    const t = tensor(shape);
    for (let i = 0; i < t.data.length; i++) t.data[i] = (opts.random() * 2 - 1) * bound;
    return t;
  };
  const push = (n: Omit<Node, 'outputs'>): string => {
    const out = `${n.name}_output_0`;
    nodes.push({ ...n, outputs: [out] } as Node);
    return out;
  };
  const conv = (scope: string, module: string, x: string, cin: number, cout: number, k: number, stride: number): string => {
    const fanIn = cin * k * k;
    tensors[`${module}.weight`] = uniform([cout, cin, k, k], Math.sqrt(6 / fanIn));
    const p = (k - 1) / 2;
    return push({
      name: `${scope}/Conv`,
      op: 'Conv2d',
      inputs: [x],
      attrs: { inChannels: cin, outChannels: cout, kernel: [k, k], stride: [stride, stride], padding: [p, p], dilation: [1, 1], groups: 1 },
      params: { weight: `${module}.weight` },
    } as Omit<Node, 'outputs'>);
  };
  const bn = (scope: string, module: string, x: string, c: number): string => {
    const fill = (v: number) => tensor([c], new Float32Array(c).fill(v));
    tensors[`${module}.weight`] = fill(1);
    tensors[`${module}.bias`] = fill(0);
    tensors[`${module}.running_mean`] = fill(0);
    tensors[`${module}.running_var`] = fill(1);
    return push({
      name: `${scope}/BatchNormalization`,
      op: 'BatchNorm',
      inputs: [x],
      attrs: { numFeatures: c, eps: 1e-5, momentum: 0.1 },
      params: { weight: `${module}.weight`, bias: `${module}.bias`, runningMean: `${module}.running_mean`, runningVar: `${module}.running_var` },
    } as Omit<Node, 'outputs'>);
  };
  const relu = (name: string, x: string) => push({ name, op: 'Relu', inputs: [x], attrs: {}, params: {} } as Omit<Node, 'outputs'>);

  let x = relu('/Relu', bn('/bn1', 'bn1', conv('/conv1', 'conv1', 'input', 3, 16, 3, 1), 16));
  let cin = 16;
  let size = 32;
  [16, 32, 64].forEach((planes, stage) => {
    for (let b = 0; b < blocks; b++) {
      const stride = stage > 0 && b === 0 ? 2 : 1;
      const scope = `/layer${stage + 1}/layer${stage + 1}.${b}`;
      const module = `layer${stage + 1}.${b}`;
      const k = o.kernel ?? 3;
      let y = relu(`${scope}/Relu`, bn(`${scope}/bn1`, `${module}.bn1`, conv(`${scope}/conv1`, `${module}.conv1`, x, cin, planes, k, stride), planes));
      y = bn(`${scope}/bn2`, `${module}.bn2`, conv(`${scope}/conv2`, `${module}.conv2`, y, planes, planes, k, 1), planes);
      let short = x;
      if (stride !== 1 || cin !== planes) {
        if ((o.shortcut ?? 'A') === 'A') {
          const side = (planes - cin) / 2;
          const sub = (suffix: string, input: string, axis: number) =>
            push({ name: `${scope}/Slice${suffix}`, op: 'Slice', inputs: [input], attrs: { axes: [axis], starts: [0], ends: [size], steps: [2] }, params: {} } as Omit<Node, 'outputs'>);
          short = sub('_1', sub('', x, 2), 3);
          short = push({
            name: `${scope}/Pad`,
            op: 'Pad',
            inputs: [short],
            attrs: { pads: [0, side, 0, 0, 0, side, 0, 0], mode: 'constant', value: 0 },
            params: {},
          } as Omit<Node, 'outputs'>);
        } else {
          short = bn(`${scope}/shortcut/shortcut.1`, `${module}.shortcut.1`, conv(`${scope}/shortcut/shortcut.0`, `${module}.shortcut.0`, x, cin, planes, 1, stride), planes);
        }
        size /= stride;
      }
      const sum = push({ name: `${scope}/Add`, op: 'Add', inputs: [y, short], attrs: {}, params: {} } as Omit<Node, 'outputs'>);
      x = relu(`${scope}/Relu_1`, sum);
      cin = planes;
    }
  });
  const pooled = push({ name: '/GlobalAveragePool', op: 'GlobalAvgPool', inputs: [x], attrs: {}, params: {} } as Omit<Node, 'outputs'>);
  const flat = push({ name: '/Flatten', op: 'Flatten', inputs: [pooled], attrs: { axis: 1 }, params: {} } as Omit<Node, 'outputs'>);
  tensors['linear.weight'] = uniform([classes, 64], Math.sqrt(6 / 64));
  tensors['linear.bias'] = uniform([classes], 1 / 8);
  nodes.push({ name: '/linear/Gemm', op: 'Linear', inputs: [flat], outputs: ['logits'], attrs: { inFeatures: 64, outFeatures: classes }, params: { weight: 'linear.weight', bias: 'linear.bias' } });
  const model: Model = {
    name: `resnet${depth}_cifar`,
    inputs: [{ name: 'input', shape: [-1, 3, 32, 32] }],
    outputs: ['logits'],
    nodes,
    tensors,
    metadata: { mean: '[0.485, 0.456, 0.406]', std: '[0.229, 0.224, 0.225]' },
  };
  inferShapes(model, 1);
  return model;
}
