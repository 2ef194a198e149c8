// A small CIFAR-sized CNN built directly in the IR, for tests, benchmarks and smoke runs of training.
import type { Model, Node, Tensor } from '../ir/model.js';
import { Rng } from '../util/rng.js';

/**
 * Default widths: conv 3->16 BN ReLU maxpool, conv 16->32 BN ReLU maxpool, conv 32->64 BN ReLU,
 * global avgpool, flatten, linear 64->classes. Every conv but the last is followed by a 2x2 max pool.
 * Conv weights: seeded Kaiming (He) uniform U(-sqrt(6/fanIn), +sqrt(6/fanIn)), no bias (BN follows);
 * the linear layer uses PyTorch's default U(-1/sqrt(fanIn), +1/sqrt(fanIn)).
 */
export function smallCnn(seed: number, widths: readonly number[] = [16, 32, 64], classes = 10): Model {
  const rng = new Rng(seed);
  const nodes: Node[] = [];
  const tensors: Record<string, Tensor> = {};
  let cur = 'input';
  const t = (name: string, shape: number[], f: (i: number) => number) => {
    const n = shape.reduce((a, b) => a * b, 1);
    tensors[name] = { shape, data: Float32Array.from({ length: n }, (_, i) => f(i)) };
    return name;
  };
  const push = (n: Omit<Node, 'inputs' | 'outputs'>) => {
    const out = `${n.name}.out`;
    nodes.push({ ...n, inputs: [cur], outputs: [out] } as Node);
    cur = out;
  };
  let cin = 3;
  widths.forEach((cout, l) => {
    const fanIn = cin * 9;
    const bound = Math.sqrt(6 / fanIn);
    push({
      name: `conv${l}`,
      op: 'Conv2d',
      attrs: { inChannels: cin, outChannels: cout, kernel: [3, 3], stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 },
      params: { weight: t(`conv${l}.weight`, [cout, cin, 3, 3], () => rng.uniform(-bound, bound)) },
    });
    push({
      name: `bn${l}`,
      op: 'BatchNorm',
      attrs: { numFeatures: cout, eps: 1e-5, momentum: 0.1 },
      params: {
        weight: t(`bn${l}.weight`, [cout], () => 1),
        bias: t(`bn${l}.bias`, [cout], () => 0),
        runningMean: t(`bn${l}.running_mean`, [cout], () => 0),
        runningVar: t(`bn${l}.running_var`, [cout], () => 1),
      },
    });
    push({ name: `relu${l}`, op: 'Relu', attrs: {}, params: {} });
    if (l < widths.length - 1)
      push({ name: `pool${l}`, op: 'MaxPool', attrs: { kernel: [2, 2], stride: [2, 2], padding: [0, 0], ceilMode: false }, params: {} });
    cin = cout;
  });
  push({ name: 'gap', op: 'GlobalAvgPool', attrs: {}, params: {} });
  push({ name: 'flatten', op: 'Flatten', attrs: { axis: 1 }, params: {} });
  const lb = 1 / Math.sqrt(cin);
  push({
    name: 'fc',
    op: 'Linear',
    attrs: { inFeatures: cin, outFeatures: classes },
    params: { weight: t('fc.weight', [classes, cin], () => rng.uniform(-lb, lb)), bias: t('fc.bias', [classes], () => rng.uniform(-lb, lb)) },
  });
  return { name: 'small_cnn', inputs: [{ name: 'input', shape: [-1, 3, 32, 32] }], outputs: [cur], nodes, tensors, metadata: {} };
}

