// Image folders in the usual classification layout, decoded with pure-JS codecs (pngjs, jpeg-js):
//
//   DIR/train/<class>/*.png|*.jpg|*.jpeg
//   DIR/test/<class>/...
//
// Rules:
// - classes are the class folders of DIR/train, sorted by name (code-unit order, as Python's
//   sorted() for ASCII names); label k is the k-th name. Both splits use train's class list, so
//   a test folder may lack classes but may not add one (an error naming it).
// - images are the files directly in a class folder whose extension is .png, .jpg or .jpeg (any
//   case), sorted by name; hidden entries (".*") and other files are ignored, sub-folders are not
//   descended into. The decoder is chosen by the file's signature, not its extension.
// - pixels are 8-bit: alpha is dropped, 16-bit PNGs are scaled to 8 bits. Colour images give 3
//   channels (RGB), greyscale images 1; one split must be all colour or all greyscale (an error
//   naming the first file of the other kind), and all its images must have one size (an error
//   naming the first file whose size differs from the first image's).
// - every problem is a UserError naming the directory or file: a missing DIR, DIR/train or
//   DIR/<split>, no class folders, a class folder without images, an undecodable file.
import type { Dirent } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { UserError } from '../util/errors.js';
import { progress } from '../util/progress.js';
import type { ImageDataset } from './dataset.js';

export type FolderSplit = 'train' | 'test';

/** An image-folder data set: an ImageDataset plus the class names its labels index. */
export interface ImageFolderDataset extends ImageDataset {
  /** class folder names of DIR/train, sorted; label k means classNames[k] */
  classNames: string[];
}

export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg'] as const;

/** The largest class count a uint8 label can hold. */
const MAX_CLASSES = 256;

const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

function isImageName(name: string): boolean {
  const lower = name.toLowerCase();
  return !name.startsWith('.') && IMAGE_EXTENSIONS.some((e) => lower.endsWith(e));
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

async function listDir(path: string): Promise<Dirent[]> {
  try {
    return await readdir(path, { withFileTypes: true });
  } catch (e) {
    throw new UserError(`${path}: cannot read the directory: ${(e as Error).message}`, { cause: e });
  }
}

/** Entries that are directories, following symbolic links. */
async function subdirs(path: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await listDir(path)) {
    if (e.name.startsWith('.')) continue;
    if (e.isDirectory() || (e.isSymbolicLink() && (await isDir(join(path, e.name))))) out.push(e.name);
  }
  return out.sort(byName);
}

/** Image file names directly in a class folder, sorted. */
async function imageFiles(path: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await listDir(path)) {
    if (!isImageName(e.name)) continue;
    if (e.isFile() || (e.isSymbolicLink() && !(await isDir(join(path, e.name))))) out.push(e.name);
  }
  return out.sort(byName);
}

async function splitDir(root: string, split: FolderSplit): Promise<string> {
  if (!(await isDir(root))) throw new UserError(`image folder ${root}: no such directory`);
  const dir = join(root, split);
  if (!(await isDir(dir)))
    throw new UserError(`image folder ${root}: no ${split}/ sub-folder (expected ${join(root, split, '<class>', '*.png|jpg')})`);
  return dir;
}

/** The class folders of a split with their sorted image files; every folder must hold at least one image. */
async function scanSplit(root: string, split: FolderSplit): Promise<{ dir: string; classes: { name: string; files: string[] }[] }> {
  const dir = await splitDir(root, split);
  const names = await subdirs(dir);
  if (names.length === 0) {
    const loose = (await listDir(dir)).filter((e) => isImageName(e.name)).length;
    throw new UserError(
      `image folder ${root}: ${split}/ has no class folders` +
        (loose > 0 ? ` (it holds ${loose} image file(s) directly: put each class's images in ${join(split, '<class>')}/)` : ` (expected ${join(split, '<class>')}/ folders of images)`),
    );
  }
  const classes = [];
  for (const name of names) {
    const files = await imageFiles(join(dir, name));
    if (files.length === 0) throw new UserError(`image folder ${root}: class folder ${join(split, name)}/ holds no .png/.jpg/.jpeg images`);
    classes.push({ name, files });
  }
  return { dir, classes };
}

/** A decoded image: interleaved 8-bit samples, 3 (RGB) or 1 (grey) per pixel. */
interface Decoded {
  width: number;
  height: number;
  channels: 1 | 3;
  /** interleaved samples, `stride` per pixel; the first `channels` are used */
  data: Uint8Array;
  stride: number;
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** Number of colour components in a JPEG's frame header (SOFn), or undefined if none is found. */
function jpegComponents(buf: Uint8Array): number | undefined {
  let i = 2;
  while (i + 3 < buf.length) {
    if (buf[i] !== 0xff) return undefined;
    const m = buf[i + 1]!;
    if (m === 0xff) {
      i++; // fill byte
      continue;
    }
    if (m === 0x01 || (m >= 0xd0 && m <= 0xd8)) {
      i += 2; // markers without a length
      continue;
    }
    if (m === 0xd9 || m === 0xda) return undefined; // end of image / start of scan before any frame
    const len = (buf[i + 2]! << 8) | buf[i + 3]!;
    const isSof = m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc;
    if (isSof) return i + 9 < buf.length ? buf[i + 9] : undefined;
    i += 2 + len;
  }
  return undefined;
}

/** Decodes a PNG or JPEG (chosen by signature); `file` names it in every error. */
export function decodeImage(buf: Uint8Array, file: string): Decoded {
  const isPng = buf.length >= 8 && PNG_SIGNATURE.every((b, k) => buf[k] === b);
  const isJpeg = buf.length >= 3 && buf[0] === 0xff && buf[1] === 0xd8 && buf[2] === 0xff;
  if (!isPng && !isJpeg) throw new UserError(`${file}: cannot decode: not a PNG or JPEG file`);
  try {
    if (isPng) {
      const png = PNG.sync.read(Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength));
      // pngjs yields RGBA; greyscale images have R = G = B
      return { width: png.width, height: png.height, channels: png.color ? 3 : 1, data: png.data, stride: 4 };
    }
    const components = jpegComponents(buf);
    const img = jpeg.decode(buf, { useTArray: true, formatAsRGBA: false, tolerantDecoding: false });
    // jpeg-js yields RGB; a one-component (greyscale) JPEG has R = G = B
    return { width: img.width, height: img.height, channels: components === 1 ? 1 : 3, data: img.data, stride: 3 };
  } catch (e) {
    throw new UserError(`${file}: cannot decode ${isPng ? 'PNG' : 'JPEG'}: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * The class names of an image folder: the sorted class folders of DIR/train (each must hold at
 * least one image). Errors on a missing DIR or DIR/train, no class folders, or an empty class.
 */
export async function imageFolderClasses(dir: string): Promise<string[]> {
  return (await scanSplit(resolve(dir), 'train')).classes.map((c) => c.name);
}

/**
 * Loads DIR/<split> as planar uint8 images [n, c, h, w] with labels indexing the sorted class
 * folders of DIR/train (see the rules at the top of this file). Order: classes by name, then files
 * by name within a class.
 */
export async function loadImageFolder(dir: string, split: FolderSplit): Promise<ImageFolderDataset> {
  if (split !== 'train' && split !== 'test') throw new UserError(`image folder: unknown split ${JSON.stringify(split)} (train or test)`);
  const root = resolve(dir);
  const train = await scanSplit(root, 'train');
  const classNames = train.classes.map((c) => c.name);
  if (classNames.length > MAX_CLASSES)
    throw new UserError(`image folder ${root}: ${classNames.length} classes in train/, at most ${MAX_CLASSES} are supported`);
  const scanned = split === 'train' ? train : await scanSplit(root, split);
  const labelOf = new Map(classNames.map((n, k) => [n, k]));
  for (const c of scanned.classes)
    if (!labelOf.has(c.name))
      throw new UserError(`image folder ${root}: ${split}/${c.name}/ is not a class of train/ (train classes: ${classNames.join(', ')})`);

  const entries: { path: string; label: number }[] = [];
  for (const c of scanned.classes) for (const f of c.files) entries.push({ path: join(scanned.dir, c.name, f), label: labelOf.get(c.name)! });
  const n = entries.length;
  const name = `${basename(root)}-${split}`;
  const labels = new Uint8Array(n);
  let images = new Uint8Array(0);
  let first: { path: string; width: number; height: number; channels: 1 | 3 } | undefined;
  const bar = progress(`loading ${name}`, n);
  try {
    for (let i = 0; i < n; i++) {
      const { path, label } = entries[i]!;
      let buf: Buffer;
      try {
        buf = await readFile(path);
      } catch (e) {
        throw new UserError(`${path}: cannot read: ${(e as Error).message}`, { cause: e });
      }
      const img = decodeImage(buf, path);
      if (!first) {
        first = { path, width: img.width, height: img.height, channels: img.channels };
        images = new Uint8Array(n * img.channels * img.height * img.width);
      } else if (img.width !== first.width || img.height !== first.height) {
        throw new UserError(
          `${path}: image is ${img.width}x${img.height}, but ${first.path} (the first of ${split}/) is ${first.width}x${first.height}; all images must have one size`,
        );
      } else if (img.channels !== first.channels) {
        const kind = (c: number) => (c === 1 ? 'greyscale' : 'colour');
        throw new UserError(
          `${path}: image is ${kind(img.channels)}, but ${first.path} (the first of ${split}/) is ${kind(first.channels)}; all images must be colour or all greyscale`,
        );
      }
      const C = first.channels;
      const plane = first.width * first.height;
      const base = i * C * plane;
      const { data, stride } = img;
      for (let c = 0; c < C; c++) {
        const o = base + c * plane;
        for (let p = 0; p < plane; p++) images[o + p] = data[p * stride + c]!;
      }
      labels[i] = label;
      bar.tick();
    }
  } finally {
    bar.done();
  }
  return {
    images,
    labels,
    n,
    channels: first!.channels,
    height: first!.height,
    width: first!.width,
    classes: classNames.length,
    name,
    classNames,
  };
}
