// Data sources: image folders (PNG/JPEG written on the fly with pngjs / jpeg-js), .npy pairs, the
// data spec, the model-input check, and the normalisation rules (options override metadata).
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { floatListOption } from '../src/util/options.js';
import { imageFolderClasses, loadImageFolder } from '../src/data/folder.js';
import { resolveNormalization } from '../src/data/normalization.js';
import { encodeNpy } from '../src/data/npy.js';
import { checkModelInput, describeDataSpec, loadDataset } from '../src/data/source.js';
import { SequentialBuilder } from '../src/ir/builder.js';
import type { Model } from '../src/ir/model.js';
import { UserError } from '../src/util/errors.js';
import { randomSource } from './support/random.js';

const tmp = mkdtempSync(join(tmpdir(), 'cmiprune-data-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let dirCount = 0;
const freshDir = (): string => {
  const d = join(tmp, `d${dirCount++}`);
  mkdirSync(d);
  return d;
};

/** a smooth pixel value (JPEG keeps it within a few levels) for class k, file f, pixel (x, y), channel c */
const pix = (k: number, f: number, x: number, y: number, c: number): number => 30 + 6 * x + 5 * y + 50 * c + 10 * k + 4 * f;

/** planar [3, h, w] bytes of image (k, f) */
function planar(k: number, f: number, w = 8, h = 8): Uint8Array {
  const out = new Uint8Array(3 * h * w);
  for (let c = 0; c < 3; c++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) out[c * h * w + y * w + x] = pix(k, f, x, y, c);
  return out;
}

function rgba(k: number, f: number, w: number, h: number, alpha = 255): Buffer {
  const data = Buffer.alloc(w * h * 4);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const o = (y * w + x) * 4;
      for (let c = 0; c < 3; c++) data[o + c] = pix(k, f, x, y, c);
      data[o + 3] = alpha;
    }
  return data;
}

function writePng(path: string, k: number, f: number, w = 8, h = 8, alpha = 255): void {
  const png = new PNG({ width: w, height: h });
  png.data = rgba(k, f, w, h, alpha);
  writeFileSync(path, PNG.sync.write(png, { colorType: 6 }));
}

/** a single-channel (colour type 0) PNG whose value at (x, y) is pix(k, f, x, y, 0) */
function writeGreyPng(path: string, k: number, f: number, w = 8, h = 8): void {
  const png = new PNG({ width: w, height: h });
  const data = Buffer.alloc(w * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) data[y * w + x] = pix(k, f, x, y, 0);
  png.data = data;
  writeFileSync(path, PNG.sync.write(png, { colorType: 0, inputColorType: 0 }));
}

/** jpeg-js builds its encoder tables on every call (~0.25 s), so each image is encoded once */
const jpegCache = new Map<string, Buffer>();
function jpegBytes(k: number, f: number, quality = 100): Buffer {
  const key = `${k}/${f}/${quality}`;
  if (!jpegCache.has(key)) jpegCache.set(key, jpeg.encode({ width: 8, height: 8, data: rgba(k, f, 8, 8) }, quality).data);
  return jpegCache.get(key)!;
}

function writeJpeg(path: string, k: number, f: number): void {
  writeFileSync(path, jpegBytes(k, f));
}

const CLASSES = ['cat', 'ant', 'bee']; // created unsorted; labels follow the sorted names

/**
 * DIR/train/<class>/img0.png, img1.jpg, img2.PNG (+ ignored notes.txt and .hidden.png) and
 * DIR/test/<class>/img0.jpeg, img1.png; file f of class k holds image (k, 10 * split + f).
 */
function makeFolder(): string {
  const root = freshDir();
  for (const cls of CLASSES) {
    const k = [...CLASSES].sort().indexOf(cls);
    const tr = join(root, 'train', cls);
    mkdirSync(tr, { recursive: true });
    writeJpeg(join(tr, 'img1.jpg'), k, 1);
    writePng(join(tr, 'img0.png'), k, 0, 8, 8, 128); // alpha is dropped
    writePng(join(tr, 'img2.PNG'), k, 2);
    writeFileSync(join(tr, 'notes.txt'), 'not an image');
    writeFileSync(join(tr, '.hidden.png'), 'ignored');
    const te = join(root, 'test', cls);
    mkdirSync(te, { recursive: true });
    writeJpeg(join(te, 'img0.jpeg'), k, 10);
    writePng(join(te, 'img1.png'), k, 11);
  }
  return root;
}

/** asserts fn rejects with a UserError whose message matches every pattern */
async function rejectsWith(fn: () => Promise<unknown> | unknown, ...patterns: RegExp[]): Promise<void> {
  await assert.rejects(
    async () => fn(),
    (e: unknown) => {
      assert.ok(e instanceof UserError, `expected a UserError, got ${(e as Error)?.stack ?? e}`);
      for (const p of patterns) assert.match(e.message, p);
      return true;
    },
  );
}

function maxDiff(a: Uint8Array, b: Uint8Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

const JPEG_TOLERANCE = 6;

test('image folder: sorted classes, labels, sizes, PNG pixels exact and JPEG within tolerance', async () => {
  const root = makeFolder();
  assert.deepEqual(await imageFolderClasses(root), ['ant', 'bee', 'cat']);
  const train = await loadImageFolder(root, 'train');
  assert.deepEqual(train.classNames, ['ant', 'bee', 'cat']);
  assert.equal(train.classes, 3);
  assert.equal(train.n, 9);
  assert.deepEqual([train.channels, train.height, train.width], [3, 8, 8]);
  assert.deepEqual([...train.labels], [0, 0, 0, 1, 1, 1, 2, 2, 2]);
  assert.equal(train.images.length, 9 * 3 * 64);
  const size = 3 * 64;
  for (let k = 0; k < 3; k++) {
    // files by name: img0.png, img1.jpg, img2.PNG
    for (let f = 0; f < 3; f++) {
      const got = train.images.subarray((k * 3 + f) * size, (k * 3 + f + 1) * size);
      const want = planar(k, f);
      if (f === 1) assert.ok(maxDiff(got, want) <= JPEG_TOLERANCE, `JPEG class ${k}: max diff ${maxDiff(got, want)}`);
      else assert.deepEqual(got, want, `PNG class ${k} file ${f}`);
    }
  }
  const test_ = await loadImageFolder(root, 'test');
  assert.equal(test_.n, 6);
  assert.equal(test_.classes, 3);
  assert.deepEqual([...test_.labels], [0, 0, 1, 1, 2, 2]);
  for (let k = 0; k < 3; k++) {
    assert.ok(maxDiff(test_.images.subarray(2 * k * size, (2 * k + 1) * size), planar(k, 10)) <= JPEG_TOLERANCE);
    assert.deepEqual(test_.images.subarray((2 * k + 1) * size, (2 * k + 2) * size), planar(k, 11));
  }
  // deterministic: a second load is byte-identical
  assert.deepEqual((await loadImageFolder(root, 'train')).images, train.images);
  // loadDataset on the directory is the same thing
  const viaSpec = await loadDataset(root, 'test');
  assert.deepEqual(viaSpec.images, test_.images);
  assert.deepEqual(viaSpec.labels, test_.labels);
  assert.deepEqual(describeDataSpec(root), { kind: 'folder', spec: root, summary: `image folder ${root}`, dir: root });
});

test('image folder: a test split may lack a train class; labels still index the train classes', async () => {
  const root = makeFolder();
  rmSync(join(root, 'test', 'ant'), { recursive: true });
  const t = await loadImageFolder(root, 'test');
  assert.equal(t.classes, 3);
  assert.deepEqual([...t.labels], [1, 1, 2, 2]);
});

test('image folder: all-greyscale images give one channel; a grey/colour mix is an error naming the file', async () => {
  const root = freshDir();
  for (const [k, cls] of ['a', 'b'].entries()) {
    mkdirSync(join(root, 'train', cls), { recursive: true });
    writeGreyPng(join(root, 'train', cls, 'x.png'), k, 0);
  }
  const ds = await loadImageFolder(root, 'train');
  assert.equal(ds.channels, 1);
  assert.deepEqual(ds.images.subarray(0, 64), planar(0, 0).subarray(0, 64));
  assert.deepEqual(ds.images.subarray(64, 128), planar(1, 0).subarray(0, 64));
  writePng(join(root, 'train', 'b', 'y.png'), 1, 1);
  await rejectsWith(() => loadImageFolder(root, 'train'), /b[/\\]y\.png: image is colour/, /a[/\\]x\.png/, /greyscale/);
});

test('image folder errors: one UserError naming the directory or file', async () => {
  // missing directory
  await rejectsWith(() => loadImageFolder(join(tmp, 'nope'), 'train'), /nope: no such directory/);
  // no train/ sub-folder
  const empty = freshDir();
  await rejectsWith(() => loadImageFolder(empty, 'train'), /no train\/ sub-folder/);
  // no classes (and the hint when images lie directly in train/)
  mkdirSync(join(empty, 'train'));
  await rejectsWith(() => loadImageFolder(empty, 'train'), /train\/ has no class folders/);
  writePng(join(empty, 'train', 'loose.png'), 0, 0);
  await rejectsWith(() => loadImageFolder(empty, 'train'), /no class folders.*1 image file\(s\) directly/);

  // an empty class (only ignored files), in train and when loading test
  let root = makeFolder();
  mkdirSync(join(root, 'train', 'dog'));
  writeFileSync(join(root, 'train', 'dog', 'readme.txt'), 'x');
  await rejectsWith(() => loadImageFolder(root, 'train'), /class folder train[/\\]dog\/ holds no \.png\/\.jpg\/\.jpeg images/);
  await rejectsWith(() => loadImageFolder(root, 'test'), /train[/\\]dog\//);
  mkdirSync(join(root, 'test', 'ant', 'sub')); // sub-folders of a class are not descended into
  rmSync(join(root, 'train', 'dog'), { recursive: true });
  await loadImageFolder(root, 'test');
  rmSync(join(root, 'test', 'bee'), { recursive: true });
  mkdirSync(join(root, 'test', 'bee'));
  await rejectsWith(() => loadImageFolder(root, 'test'), /test[/\\]bee\/ holds no/);

  // missing test/ directory
  root = makeFolder();
  rmSync(join(root, 'test'), { recursive: true });
  await loadImageFolder(root, 'train');
  await rejectsWith(() => loadImageFolder(root, 'test'), /no test\/ sub-folder/);
  await rejectsWith(() => loadDataset(root, 'test'), /no test\/ sub-folder/);

  // a test class unknown to train
  root = makeFolder();
  mkdirSync(join(root, 'test', 'zebra'));
  writePng(join(root, 'test', 'zebra', 'z.png'), 0, 0);
  await rejectsWith(() => loadImageFolder(root, 'test'), /test\/zebra\/ is not a class of train\/ \(train classes: ant, bee, cat\)/);

  // wrong image size: the first differing file is named, with both sizes
  root = makeFolder();
  writePng(join(root, 'train', 'bee', 'img3.png'), 1, 3, 10, 8);
  writePng(join(root, 'train', 'cat', 'img3.png'), 2, 3, 6, 6);
  await rejectsWith(
    () => loadImageFolder(root, 'train'),
    /bee[/\\]img3\.png: image is 10x8, but .*ant[/\\]img0\.png \(the first of train\/\) is 8x8/,
  );

  // undecodable files: garbage with an image name, a PNG with a broken body, a truncated JPEG
  for (const [name, bytes] of [
    ['img5.png', Buffer.from('definitely not an image')],
    ['img5.jpg', Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(40, 7)])],
    ['img5.jpeg', jpegBytes(0, 0).subarray(0, 200)],
  ] as const) {
    root = makeFolder();
    writeFileSync(join(root, 'train', 'bee', name), bytes);
    await rejectsWith(() => loadImageFolder(root, 'train'), new RegExp(`bee[/\\\\]${name.replace('.', '\\.')}: cannot (decode|read)`));
  }
});

function npyDir(): { dir: string; x: Uint8Array; y: BigInt64Array; xt: Uint8Array; yt: Int32Array } {
  const dir = freshDir();
  const x = Uint8Array.from({ length: 5 * 3 * 4 * 4 }, (_, i) => (i * 7) % 256);
  const y = BigInt64Array.from([0n, 1n, 2n, 1n, 0n]);
  const xt = Uint8Array.from({ length: 2 * 3 * 4 * 4 }, (_, i) => (i * 3) % 256);
  const yt = Int32Array.from([4, 0]); // class 4 appears only in the test labels
  writeFileSync(join(dir, 'x.npy'), encodeNpy([5, 3, 4, 4], x));
  writeFileSync(join(dir, 'y.npy'), encodeNpy([5], y));
  writeFileSync(join(dir, 'xt.npy'), encodeNpy([2, 3, 4, 4], xt));
  writeFileSync(join(dir, 'yt.npy'), encodeNpy([2, 1], yt));
  return { dir, x, y, xt, yt };
}

test('npy pairs: train only, train and test, float pixels, class count over every label file', async () => {
  const { dir, x, xt } = npyDir();
  const p = (f: string) => join(dir, f);
  const two = `${p('x.npy')},${p('y.npy')}`;
  const train = await loadDataset(two, 'train');
  assert.deepEqual([train.n, train.channels, train.height, train.width, train.classes], [5, 3, 4, 4, 3]);
  assert.deepEqual(train.images, x);
  assert.deepEqual([...train.labels], [0, 1, 2, 1, 0]);
  await rejectsWith(() => loadDataset(two, 'test'), /no test arrays/, /x\.npy,y\.npy,xtest\.npy,ytest\.npy/);

  const four = `${two}, ${p('xt.npy')} ,${p('yt.npy')}`;
  const d = describeDataSpec(four);
  assert.equal(d.kind, 'npy');
  assert.deepEqual(d.kind === 'npy' && d.test, { x: p('xt.npy'), y: p('yt.npy') });
  const tr4 = await loadDataset(four, 'train');
  const te4 = await loadDataset(four, 'test');
  assert.equal(tr4.classes, 5, 'classes from train and test labels');
  assert.equal(te4.classes, 5);
  assert.deepEqual(te4.images, xt);
  assert.deepEqual([...te4.labels], [4, 0]);

  // float32 pixel values 0..255 are taken exactly; fractions, [0, 1] data and out-of-range values are refused
  writeFileSync(p('xf.npy'), encodeNpy([5, 3, 4, 4], Float32Array.from(x)));
  assert.deepEqual((await loadDataset(`${p('xf.npy')},${p('y.npy')}`, 'train')).images, x);
  const xf = Float32Array.from(x, (v) => v / 255);
  writeFileSync(p('x01.npy'), encodeNpy([5, 3, 4, 4], xf));
  await rejectsWith(() => loadDataset(`${p('x01.npy')},${p('y.npy')}`, 'train'), /x01\.npy: float32 images must hold whole pixel values 0\.\.255/, /np\.round\(x \* 255\)/);
  writeFileSync(p('xbig.npy'), encodeNpy([5, 3, 4, 4], Int32Array.from(x, (v, i) => (i === 9 ? 256 : v))));
  await rejectsWith(() => loadDataset(`${p('xbig.npy')},${p('y.npy')}`, 'train'), /found 256 at flat index 9/);

  // shapes: NHWC gets the transpose hint; 3-D gets the channel-axis hint; N must match
  writeFileSync(p('xhwc.npy'), encodeNpy([1, 8, 8, 3], new Uint8Array(192)));
  await rejectsWith(() => loadDataset(`${p('xhwc.npy')},${p('y.npy')}`, 'train'), /looks like \[N, H, W, C\]/, /transpose\(0, 3, 1, 2\)/);
  writeFileSync(p('x3.npy'), encodeNpy([5, 12, 4], x));
  await rejectsWith(() => loadDataset(`${p('x3.npy')},${p('y.npy')}`, 'train'), /\[N, C, H, W\], got \[5, 12, 4\]/, /x\[:, None\]/);
  await rejectsWith(() => loadDataset(`${p('xt.npy')},${p('y.npy')}`, 'train'), /y\.npy: 5 labels, but .*xt\.npy holds 2 images/);
  writeFileSync(p('yf.npy'), encodeNpy([5], Float32Array.from([0, 1, 2, 1, 0])));
  await rejectsWith(() => loadDataset(`${p('x.npy')},${p('yf.npy')}`, 'train'), /yf\.npy: labels must be integers/);
  writeFileSync(p('yneg.npy'), encodeNpy([5], Int32Array.from([0, 1, -1, 1, 0])));
  await rejectsWith(() => loadDataset(`${p('x.npy')},${p('yneg.npy')}`, 'train'), /label -1 at index 2/);
  await rejectsWith(() => loadDataset(`${p('x.npy')},${p('missing.npy')}`, 'train'), /missing\.npy: cannot read/);
});

test('data spec: cifar10 keyword, wrong file counts, missing paths, files that are not directories', async () => {
  assert.equal(describeDataSpec('cifar10').kind, 'cifar10');
  await rejectsWith(() => describeDataSpec(''), /empty data spec/);
  await rejectsWith(() => describeDataSpec('a.npy,b.npy,c.npy'), /got 3 file\(s\)/);
  await rejectsWith(() => describeDataSpec('x.npy'), /x\.npy,y\.npy/);
  await rejectsWith(() => describeDataSpec('a.npy,,b.npy'), /x\.npy,y\.npy/);
  await rejectsWith(() => loadDataset(join(tmp, 'no-such-dir'), 'train'), /no such directory .*no-such-dir; expected 'cifar10', an image folder DIR/);
  const { dir } = npyDir();
  await rejectsWith(() => loadDataset(join(dir, 'x.npy,'), 'train'), /got 1 file/);
  writeFileSync(join(dir, 'plain.txt'), 'x');
  await rejectsWith(() => loadDataset(join(dir, 'plain.txt'), 'train'), /plain\.txt is not a directory/);
  await rejectsWith(() => loadDataset(dir, 'validation' as 'test'), /unknown split "validation"/);
});

function tinyModel(shape: number[], metadata: Record<string, string> = {}): Model {
  const m = new SequentialBuilder('tiny', shape, { random: randomSource(1) }).conv(4, 3, { padding: 1 }).relu().globalAvgPool().flatten().linear(3).build();
  return { ...m, metadata };
}

test('checkModelInput: matching images pass; size and channel mismatches name the model and what differs', async () => {
  const ds = await loadImageFolder(makeFolder(), 'train');
  checkModelInput(tinyModel([3, 8, 8]), ds, 'm.onnx');
  await rejectsWith(() => checkModelInput(tinyModel([3, 16, 16]), ds, 'm.onnx'), /^m\.onnx: input 'input' has shape \[-1,3,16,16\], d\d+-train images are \[N, 3, 8, 8\]: resize the images to 16x16/);
  await rejectsWith(() => checkModelInput(tinyModel([1, 8, 8]), ds, 'm.onnx'), /the model takes 1 channel\(s\), the data has 3/);
  const flat: Model = { ...tinyModel([3, 8, 8]), inputs: [{ name: 'v', shape: [-1, 192] }] };
  await rejectsWith(() => checkModelInput(flat, ds, 'm.onnx'), /input 'v' has shape \[-1,192\], not \[N, C, H, W\]/);
});

test('normalisation: --mean/--std override metadata (and say so), come together, and have one value per channel', async () => {
  const meta = { mean: '[0.1,0.2,0.3]', std: '[0.5,0.5,0.5]' };
  const withMeta = tinyModel([3, 8, 8], meta);
  const bare = tinyModel([3, 8, 8]);
  assert.deepEqual(resolveNormalization(withMeta, 'm.onnx', {}, 3), { mean: [0.1, 0.2, 0.3], std: [0.5, 0.5, 0.5], source: 'metadata' });
  assert.deepEqual(resolveNormalization(withMeta, 'm.onnx', { mean: [1, 2, 3], std: [4, 5, 6] }, 3), {
    mean: [1, 2, 3],
    std: [4, 5, 6],
    source: 'options',
    overrode: 'metadata',
  });
  assert.deepEqual(resolveNormalization(bare, 'm.onnx', { mean: [1, 2, 3], std: [4, 5, 6] }, 3), { mean: [1, 2, 3], std: [4, 5, 6], source: 'options' });
  // never silently ignored: a wrong count is an error even when the metadata would fit
  await rejectsWith(() => resolveNormalization(withMeta, 'm.onnx', { mean: [1, 2], std: [1, 1] }, 3), /--mean has 2 value\(s\), the data has 3 channel\(s\)/);
  await rejectsWith(() => resolveNormalization(withMeta, 'm.onnx', { mean: [1, 2, 3], std: [1, 1, 1, 1] }, 3), /--std has 4 value\(s\)/);
  await rejectsWith(() => resolveNormalization(withMeta, 'm.onnx', { mean: [1, 2] }, 3), /--mean needs --std/);
  await rejectsWith(() => resolveNormalization(bare, 'm.onnx', { std: [1, 2, 3] }, 3), /--std needs --mean/);
  await rejectsWith(() => resolveNormalization(bare, 'm.onnx', { mean: [0, 0, 0], std: [1, 0, 1] }, 3), /--std values must be > 0/);
  await rejectsWith(() => resolveNormalization(bare, 'm.onnx', {}, 3), /m\.onnx: the model has no mean\/std metadata; pass --mean and --std/);
  await rejectsWith(() => resolveNormalization(tinyModel([3, 8, 8], { mean: meta.mean }), 'm.onnx', {}, 3), /has metadata 'mean' but not 'std'/);
  await rejectsWith(() => resolveNormalization(withMeta, 'm.onnx', {}, 1), /metadata 'mean' has 3 value\(s\), the data has 1 channel\(s\); pass --mean and --std to override it/);
  // an override replaces even malformed metadata
  assert.equal(resolveNormalization(tinyModel([1, 8, 8], { mean: 'junk', std: '[1]' }), 'm.onnx', { mean: [0], std: [1] }, 1).overrode, 'metadata');
});

test('floatListOption: an empty entry is an error, not a zero', () => {
  assert.deepEqual(floatListOption('0.5, 1,2e-1'), [0.5, 1, 0.2]);
  for (const bad of ['', '1,,2', '1,', 'a,1']) assert.throws(() => floatListOption(bad), /comma-separated numbers/);
});
