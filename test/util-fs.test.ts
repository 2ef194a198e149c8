// Output sets written as a whole (util/fs.ts writeDirAtomic): what prune and sweep put in --out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { writeDirAtomic } from '../src/util/fs.js';

async function withDir(f: (root: string) => Promise<void>): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'cmiprune-fs-'));
  try {
    await f(root);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/** an existing --out: a report, a model, a TF.js directory and a file of the user's own */
async function oldOut(out: string): Promise<void> {
  await mkdir(join(out, 'tfjs'), { recursive: true });
  await writeFile(join(out, 'report.json'), 'old report');
  await writeFile(join(out, 'model.onnx'), 'old model');
  await writeFile(join(out, 'tfjs', 'old-shard.bin'), 'old shard');
  await writeFile(join(out, 'notes.txt'), 'mine');
}

test('writeDirAtomic: every entry the build writes replaces its old one (a directory as a whole); other files stay; nothing left beside', async () => {
  await withDir(async (root) => {
    const out = join(root, 'out');
    await oldOut(out);
    await writeDirAtomic(out, async (dir) => {
      await writeFile(join(dir, 'report.json'), 'new report');
      await writeFile(join(dir, 'model.onnx'), 'new model');
      await mkdir(join(dir, 'tfjs'));
      await writeFile(join(dir, 'tfjs', 'model.json'), '{}');
    });
    assert.equal(await readFile(join(out, 'report.json'), 'utf8'), 'new report');
    assert.equal(await readFile(join(out, 'model.onnx'), 'utf8'), 'new model');
    assert.deepEqual(await readdir(join(out, 'tfjs')), ['model.json']);
    assert.equal(await readFile(join(out, 'notes.txt'), 'utf8'), 'mine');
    assert.deepEqual(await readdir(root), ['out']);
  });
});

test('writeDirAtomic: a build that fails half-way leaves an existing --out exactly as it was, and creates no new one', async () => {
  await withDir(async (root) => {
    const out = join(root, 'out');
    await oldOut(out);
    const failing = async (dir: string) => {
      await writeFile(join(dir, 'model.onnx'), 'new model');
      throw new Error('export failed');
    };
    await assert.rejects(writeDirAtomic(out, failing), /export failed/);
    assert.equal(await readFile(join(out, 'model.onnx'), 'utf8'), 'old model');
    assert.equal(await readFile(join(out, 'report.json'), 'utf8'), 'old report');
    assert.deepEqual(await readdir(join(out, 'tfjs')), ['old-shard.bin']);
    assert.deepEqual(await readdir(root), ['out']);

    const fresh = join(root, 'fresh');
    await assert.rejects(writeDirAtomic(fresh, failing), /export failed/);
    assert.equal(existsSync(fresh), false);
    assert.deepEqual(await readdir(root), ['out']);
  });
});

test('writeDirAtomic: entries named in `remove` that the build does not write go too; staging lives inside out (a relative out works)', async () => {
  await withDir(async (root) => {
    const out = join(root, 'out');
    await oldOut(out);
    await writeDirAtomic(out, async (dir) => {
      await writeFile(join(dir, 'report.json'), 'new report');
    }, ['report.json', 'model.onnx', 'tfjs']);
    assert.deepEqual((await readdir(out)).sort(), ['notes.txt', 'report.json']);
    // a relative path, resolved against the working directory; no staging entries left
    const cwd = process.cwd();
    process.chdir(root);
    try {
      await writeDirAtomic('rel', async (dir) => writeFile(join(dir, 'a.txt'), 'a'));
    } finally {
      process.chdir(cwd);
    }
    assert.deepEqual(await readdir(join(root, 'rel')), ['a.txt']);
    assert.deepEqual((await readdir(root)).sort(), ['out', 'rel']);
  });
});

test('writeDirAtomic: a staging directory left by a killed run is removed; one of a live process is not', async () => {
  await withDir(async (root) => {
    const out = join(root, 'out');
    await oldOut(out);
    // pid 2^30 is above any Linux pid_max: that process is gone
    const dead = join(out, `.cmiprune-staging-${2 ** 30}-1`);
    const live = join(out, `.cmiprune-staging-${process.pid}-1`);
    await mkdir(dead);
    await writeFile(join(dead, 'model.onnx'), 'partial');
    await mkdir(live);
    await writeDirAtomic(out, async (dir) => writeFile(join(dir, 'report.json'), 'new report'));
    assert.equal(existsSync(dead), false);
    assert.equal(existsSync(live), true);
  });
});
