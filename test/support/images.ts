// Image-classification folders written on the fly (DIR/<split>/<class>/*.png), seeded.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PNG } from 'pngjs';
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
