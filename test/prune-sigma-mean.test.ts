// `cmiprune prune --criterion cmi --sigma mean` end to end on the small CNN of prune-cli.test.ts:
// under the mean width its CMI curves go below 0 and rise again (averaging a filter into the set
// can lower the MI). The scree cut-off and the curve allocation must decide on the curves' running
// minimum (src/prune/cutoffs.ts) and the run must still write a verified ONNX. Each decision is
// recomputed here from the curves report.json records, and the written model's conv widths are
// read back from the ONNX.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { countOnnx } from '../src/export/count.js';
import { readOnnxModel } from '../src/onnx/index.js';
import { allocateByCurve } from '../src/prune/allocate.js';
import { costModel } from '../src/prune/cost.js';
import { screeCutoff } from '../src/prune/cutoffs.js';
import { channelGroups } from '../src/prune/groups.js';
import type { GroupRanking } from '../src/prune/types.js';
import { addonSkip } from './support/addon.js';
import { writeSmallCnn } from './support/images.js';
import { runCli } from './support/shared.js';

const cli = runCli;

let dir = '';
let small = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cmiprune-sigma-mean-'));
  small = join(dir, 'small.onnx');
  writeSmallCnn(small);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Layer {
  name: string;
  channels: number;
  kept: number;
  prunable: boolean;
  order: number[];
  curve: number[];
  curveTotal: number;
  keepIndices: number[];
  cutoff: { keep: number; rule: string; evidence: Record<string, unknown> };
}

const common = ['--criterion', 'cmi', '--formulation', 'per-layer', '--sigma', 'mean', '--samples', '60', '--heldout', '100', '--bn-images', '128', '--test-limit', '200'];

/** run prune; the report, with the written ONNX checked: verified by onnxruntime, conv widths = kept */
async function run(out: string, extra: string[]) {
  const r = cli(['prune', '--model', small, ...common, ...extra, '--out', out, '--checkpoint', join(dir, 'ckpt')]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim().split('\n').length, 1);
  const report = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
  assert.equal(report.settings.sigma, 'mean');
  assert.match(report.settings.criterionKey, /\/sigma=mean\//);
  // the run fails unless onnxruntime reproduces the engine's logits; the report says it did
  assert.equal(report.verification.onnxruntime.ok, true);
  assert.ok(report.verification.onnxruntime.maxAbsDiff <= 1e-4);
  const counted = countOnnx(new Uint8Array(await readFile(join(out, 'pruned.onnx'))));
  const layers = report.layers as Layer[];
  assert.deepEqual(counted.convs.map((c) => c.outChannels), layers.map((l) => l.kept));
  assert.equal(report.cost.after.params, counted.params);
  for (const l of layers) {
    assert.equal(l.curve.length, l.channels - 1);
    assert.ok(l.curve.every(Number.isFinite) && Number.isFinite(l.curveTotal), `${l.name}: finite curve`);
    assert.deepEqual([...l.keepIndices].sort((a, b) => a - b), [...l.order.slice(0, l.kept)].sort((a, b) => a - b));
  }
  // the premise: under the mean width this model's curves go below 0 and rise again
  assert.ok(
    layers.some((l) => Math.min(...l.curve) < 0 && l.curve.some((v, i) => i > 0 && v > l.curve[i - 1]!)),
    `no curve dips below 0 and rises: ${JSON.stringify(layers.map((l) => l.curve))}`,
  );
  return { report, layers, html: await readFile(join(out, 'report.html'), 'utf8') };
}

test('prune --sigma mean --cutoff scree: candidates from the running minimum, the held-out choice among them, report.json and a verified ONNX agree', { skip: addonSkip }, async () => {
  const { report, layers, html } = await run(join(dir, 'scree'), ['--cutoff', 'scree', '--fresh']);
  const tolerance = report.settings.tolerance as number;
  for (const l of layers) {
    assert.equal(l.prunable, true);
    // the cut-off's decision recomputed from the recorded curve
    const d = screeCutoff(l.curve, { minKeep: 1 });
    assert.deepEqual(l.cutoff.evidence.candidates, d.evidence.candidates, `${l.name}: candidates`);
    assert.deepEqual(l.cutoff.evidence.q, d.evidence.q);
    assert.deepEqual(l.cutoff.evidence.reading, d.evidence.reading);
    // and the rule stated independently: SPEC's q on the running minimum m of the curve
    const m = l.curve.map((_, i) => Math.min(...l.curve.slice(0, i + 1)));
    const q = m.map((_, i) => (i === 0 || i === m.length - 1 ? -1 : m[i]! - m[i + 1]! === 0 ? 0 : (m[i - 1]! - m[i]!) / (m[i]! - m[i + 1]!)));
    assert.deepEqual(l.cutoff.evidence.q, q, `${l.name}: q on the running minimum`);
    // the pipeline's rule: the fewest candidate channels within the tolerance of the held-out baseline, else the most
    const keeps = [...new Set((d.evidence.candidates as { keep: number }[]).map((c) => c.keep))].sort((a, b) => a - b);
    const acc = l.cutoff.evidence.heldoutAccuracy as Record<string, number>;
    const base = l.cutoff.evidence.heldoutBaseline as number;
    const expected = keeps.find((k) => base - acc[k]! <= tolerance) ?? keeps[keeps.length - 1]!;
    assert.equal(l.kept, expected, `${l.name}: kept ${l.kept}, scree + held-out says ${expected}`);
    assert.equal(l.cutoff.keep, l.kept);
  }
  assert.ok(layers.some((l) => l.cutoff.evidence.reading !== null), 'some layer was read as its running minimum');
  // report.html draws the running minimum of the curves that rise again
  assert.match(html, /curves_reading_marks/);
  assert.doesNotMatch(html.slice(html.indexOf('id="plot-curves"'), html.indexOf('id="widths"')), /NaN/);
});

test('prune --sigma mean --cutoff filters:0.3 --allocation curve: the budget is met (not every layer cut to 1), kept = the allocation recomputed from report.json, verified ONNX', { skip: addonSkip }, async () => {
  const { report, layers } = await run(join(dir, 'curve'), ['--cutoff', 'filters:0.3', '--allocation', 'curve']);
  assert.equal(report.allocation.rule, 'curve');
  // the allocation recomputed from the recorded curves on the same model
  const { model } = await readOnnxModel(small);
  const groups = channelGroups(model).filter((g) => g.prunable);
  const rankings = new Map<string, GroupRanking>(layers.map((l) => [l.name, { group: l.name, channels: l.channels, order: l.order, curve: l.curve, curveTotal: l.curveTotal }]));
  const a = allocateByCurve({ kind: 'filters', fraction: 0.3 }, groups, rankings, costModel(model, groups, rankings), 1);
  assert.deepEqual(report.allocation.keep, a.keep);
  assert.equal(report.allocation.reached, a.reached);
  for (const l of layers) {
    assert.equal(l.kept, a.keep[l.name], `${l.name}`);
    assert.equal(l.cutoff.keep, l.kept);
    assert.match(l.cutoff.rule, /^filters:0\.3 by curve allocation$/);
  }
  // 30% of the filters and not much more: one layer's flat stretch is kept back to the budget
  // (before the running-minimum reading every layer kept 1 channel: 96% removed)
  const total = layers.reduce((s, l) => s + l.channels, 0);
  assert.ok(report.cost.removed.filters >= 0.3 && report.cost.removed.filters < 0.3 + 2 / total, `removed ${report.cost.removed.filters}`);
  assert.ok(layers.some((l) => l.kept > 1), JSON.stringify(layers.map((l) => l.kept)));
  assert.ok((report.allocation.evidence.thresholdRange as number[])[0]! < 0, 'the threshold range goes below 0');
  assert.match(report.allocation.evidence.reading, /running minimum/);
});
