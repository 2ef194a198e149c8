// Test data made on the fly: image-classification folders (DIR/<split>/<class>/*.png), random image
// sets and a small exported CNN, all seeded.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import type { ImageDataset } from '../../src/data/dataset.js';
import { SequentialBuilder } from '../../src/ir/builder.js';
import { exportOnnx } from '../../src/onnx/export.js';
import { Rng } from './random.js';

export interface FolderSpec {
  classes: string[];
  perClass: { train: number; test: number };
  width: number;
  height: number;
  seed?: number;
}

/** Writes RGB PNGs whose mean colour depends on the class (so a model can learn them) plus noise. */
export function writeImageFolder(root: string, spec: FolderSpec): void {
  const rng = new Rng(spec.seed ?? 0);
  for (const split of ['train', 'test'] as const) {
    spec.classes.forEach((cls, k) => {
      const dir = join(root, split, cls);
      mkdirSync(dir, { recursive: true });
      for (let f = 0; f < spec.perClass[split]; f++) {
        const png = new PNG({ width: spec.width, height: spec.height });
        for (let i = 0; i < spec.width * spec.height; i++) {
          for (let c = 0; c < 3; c++) png.data[i * 4 + c] = Math.min(255, Math.max(0, Math.round(60 + 60 * ((k + c) % 3) + 40 * (rng.next() - 0.5))));
          png.data[i * 4 + 3] = 255;
        }
        writeFileSync(join(dir, `img${String(f).padStart(3, '0')}.png`), PNG.sync.write(png, { colorType: 6 }));
      }
    });
  }
}

/** n random planar uint8 images [n, channels, h, w], labels cycling through `classes`, as an ImageDataset. */
export function randomImages(rng: Rng, n: number, shape: [number, number, number], classes: number, name = 'random'): ImageDataset {
  const [channels, height, width] = shape;
  const images = new Uint8Array(n * channels * height * width).map(() => rng.int(256));
  const labels = Uint8Array.from({ length: n }, (_, i) => i % classes);
  return { images, labels, n, channels, height, width, classes, name };
}

/**
 * A small VGG-style CNN for 32x32 CIFAR images with odd widths (13, 21, 37), seeded, with the CIFAR-10
 * mean/std metadata, written as ONNX to `path`; untrained weights are enough for plumbing tests.
 */
export function writeSmallCnn(path: string, seed = 11): void {
  const rng = new Rng(seed);
  const b = new SequentialBuilder('small', [3, 32, 32], { random: () => rng.next() });
  b.conv(13, 3, { padding: 1, bias: false }).bn().relu().maxpool(2);
  b.conv(21, 3, { padding: 1, bias: false }).bn().relu().maxpool(2);
  b.conv(37, 3, { padding: 1 }).bn().relu().maxpool(2).flatten().linear(10);
  const m = b.build();
  m.metadata = { mean: JSON.stringify([0.4914, 0.4822, 0.4465]), std: JSON.stringify([0.247, 0.2435, 0.2616]) };
  writeFileSync(path, exportOnnx(m));
}
