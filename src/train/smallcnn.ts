// A small CIFAR-sized CNN for tests, benchmarks and smoke runs of training.
import { SequentialBuilder } from '../ir/builder.js';
import type { Model } from '../ir/model.js';
import { Rng } from '../util/rng.js';

/**
 * Default widths: conv 3->16 BN ReLU maxpool, conv 16->32 BN ReLU maxpool, conv 32->64 BN ReLU,
 * global avgpool, flatten, linear 64->classes. Every conv but the last is followed by a 2x2 max pool.
 * Conv weights: seeded He uniform, no bias (BN follows); the linear layer uses PyTorch's default.
 */
export function smallCnn(seed: number, widths: readonly number[] = [16, 32, 64], classes = 10): Model {
  const rng = new Rng(seed);
  const b = new SequentialBuilder('small_cnn', [3, 32, 32], { random: () => rng.next() });
  widths.forEach((w, l) => {
    b.conv(w, 3, { padding: 1, bias: false, init: 'he-uniform' }).bn().relu();
    if (l < widths.length - 1) b.maxpool(2);
  });
  return b.globalAvgPool().flatten().linear(classes).build();
}
