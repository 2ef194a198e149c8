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
