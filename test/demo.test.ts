// The demo end to end on a shortened schedule (the full one is `npm start`): every output file is
// written, the ONNX was checked against onnxruntime, and the printed table's numbers are report.json's.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'node:test';
import { demoTable, runDemo } from '../src/demo/demo.js';
import { addonSkip } from './support/addon.js';

test('demo (short schedule, no fine-tuning): trains, prunes, exports ONNX + TF.js + report.json + report.html; the table is report.json\'s', { skip: addonSkip }, async () => {
  const out = join(await mkdtemp(join(tmpdir(), 'cmiprune-demo-')), 'out');
  try {
    const s = await runDemo({ out, epochs: 1, finetuneEpochs: 0, trainLimit: 3000, fresh: true, prune: { testLimit: 500, samples: 100, heldout: 100, bnImages: 256 } });
    for (const f of ['pruned.onnx', 'unpruned.onnx', 'report.json', 'report.html', 'pruned_tfjs/model.json']) assert.ok(existsSync(join(out, f)), f);
    const report = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
    assert.equal(report.verification.onnxruntime.ok, true);
    assert.equal(report.settings.criterion, 'cmi');
    assert.equal(s.table, demoTable(report));
    // the table shows report.json's numbers, formatted
    assert.ok(s.table.includes(report.cost.after.params.toLocaleString('en-US')));
    assert.ok(s.table.includes(`${(100 * report.accuracy.before).toFixed(2)}%`));
    assert.ok(s.table.includes(`${(100 * report.accuracy.afterBnReestimation).toFixed(2)}%`));
    assert.ok(s.table.includes(report.latency.after[1].msPerImage.toFixed(3)));
    assert.ok(report.cost.after.filters < report.cost.before.filters);
  } finally {
    await rm(join(out, '..'), { recursive: true, force: true });
  }
});
