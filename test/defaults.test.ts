// The tool's method defaults are the ones the committed VGG16 result points choose: the report
// step (numbers from the store, no engine) reads them off and compares them with PRUNE_DEFAULTS.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { runExperiment } from '../experiments/vgg16.js';
import { PRUNE_DEFAULTS } from '../src/pipeline/prune.js';
import { VGG16_ONNX } from './support/shared.js';

test('PRUNE_DEFAULTS are what the committed VGG16 points read off (RESULTS.md, "The tool\'s defaults")', async () => {
  const out = await mkdtemp(join(tmpdir(), 'cmiprune-defaults-'));
  try {
    const r = await runExperiment({ model: VGG16_ONNX, steps: ['report'], out, log: () => {} });
    assert.equal(r.computed, 0);
    const md = await readFile(r.files!.section, 'utf8');
    const line = md.split('\n').find((l) => l.startsWith('Read off these points'));
    assert.ok(line, 'the defaults section is in the report');
    for (const [flag, v] of [
      ['--alpha', PRUNE_DEFAULTS.alpha],
      ['--sigma', PRUNE_DEFAULTS.sigma],
      ['--formulation', PRUNE_DEFAULTS.formulation],
      ['--order', PRUNE_DEFAULTS.order],
      ['--cutoff', PRUNE_DEFAULTS.cutoff],
    ] as const)
      assert.ok(line.split(". `cmiprune prune`'s defaults")[0]!.includes(`\`${flag} ${v}\``), `${flag} ${v} is not what the points read: ${line}`);
    assert.match(line, /\*\*they agree\*\*/);
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});
