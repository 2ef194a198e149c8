// The HTML report: a fake prune report (three layers, one not prunable, scree-like candidates, a
// chosen keep, stage accuracies, two fine-tuning epochs) and a sweep (2 criteria x 3 budgets)
// rendered to one page, then read back with linkedom: structure, one figure with an inline SVG per
// plot, the marks each plot must have (counted in the SVG Vega wrote), the off-by-one (candidate
// at curve index i sits on the curve's vertex i, at keep = i + 1), nothing fetched from anywhere,
// text from the report escaped. Then, when a Chromium is on PATH, the page opened headless.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { parseHTML } from 'linkedom';
import { type PruneReportLike, type SweepResult, SERIES, accuracyStages, renderReportHtml, renderSvg, writeReportHtml } from '../src/report/index.js';

const EVIL = 'blk<script>alert(1)</script>&"q\'';
const MODEL = '/models/<net>&"v".onnx';

/** curve of a layer with `channels` channels: channels - 1 points, non-increasing from below `total` */
function curveOf(channels: number, total: number): number[] {
  return Array.from({ length: channels - 1 }, (_, i) => total * (1 - (i + 1) / channels) ** 2);
}

function fakeReport(): PruneReportLike {
  return {
    model: { path: MODEL, sha256: 'ab'.repeat(32) },
    data: { name: 'cifar10', test: 1000, calibration: 64, heldout: 100 },
    settings: { criterion: 'cmi', criterionKey: 'cmi/per-layer/alpha=2', cutoff: 'scree', formulation: 'per-layer', tolerance: 0.005 },
    method: { formulation: 'per-layer', order: 'independent', startLayer: null },
    layers: [
      {
        name: EVIL,
        index: 0,
        channels: 8,
        kept: 5,
        prunable: true,
        curve: curveOf(8, 2),
        curveTotal: 2,
        curveName: 'I(Y; rest | kept) (nats)',
        cutoff: {
          keep: 5,
          rule: 'scree: largest q; then candidate keep=5 by <fewest> channels',
          evidence: {
            candidates: [
              { index: 5, keep: 6, q: 3.5 },
              { index: 4, keep: 5, q: 2.25 },
              { index: 2, keep: 3, q: 1.5 },
            ],
            heldoutAccuracy: { 3: 0.9, 5: 0.97, 6: 0.98 },
            heldoutBaseline: 0.98,
          },
        },
      },
      {
        name: 'conv1',
        index: 1,
        channels: 6,
        kept: 4,
        prunable: true,
        curve: curveOf(6, 1),
        curveTotal: 1,
        curveName: 'I(Y; rest | kept) (nats)',
        cutoff: { keep: 4, rule: 'scree: largest q', evidence: { candidates: [{ index: 3, keep: 4, q: 2 }, { index: 1, keep: 2, q: 1.1 }] } },
      },
      { name: 'conv2', index: 2, channels: 4, kept: 4, prunable: false, reason: 'output feeds Add' },
    ],
    cost: { before: { filters: 18, params: 12000, macs: 3_000_000 }, after: { filters: 13, params: 8000, macs: 2_000_000 } },
    accuracy: { before: 0.9, afterSurgery: 0.5, afterBnReestimation: 0.8, afterFinetune: 0.88 },
    finetune: { epochs: [{ epoch: 0, testAccuracy: 0.86 }, { epoch: 1, testAccuracy: 0.88 }] },
    latency: {
      before: [{ batch: 1, msPerImage: 2, msPerBatchMedian: 2, repeats: 20 }, { batch: 64, msPerImage: 1, msPerBatchMedian: 64, repeats: 5 }],
      after: [{ batch: 1, msPerImage: 1.5, msPerBatchMedian: 1.5, repeats: 20 }, { batch: 64, msPerImage: 0.75, msPerBatchMedian: 48, repeats: 5 }],
    },
    seconds: { load: 1, rank: 2, total: 3.5 },
  };
}

/** 2 criteria x 3 budgets; one after-surgery accuracy missing (skipped, not drawn at 0) */
function fakeSweep(): SweepResult {
  const points: SweepResult['points'] = [];
  for (const criterion of ['cmi', 'l1 <norm>']) {
    for (const f of [0.2, 0.4, 0.6]) {
      points.push({
        criterion,
        budget: `flops:${f}`,
        removed: { filters: f * 0.8, params: f * 0.9, macs: f },
        accuracy: { afterSurgery: criterion === 'cmi' && f === 0.6 ? null : 0.9 - f / 2, afterBnReestimation: 0.92 - f / 4 },
      });
    }
  }
  return { points, accuracyBefore: 0.93 };
}

// stage points: before, after surgery, after BN re-estimation, epoch 1, epoch 2
const STAGES = 5;
const SWEEP_LINES = 2 * 2; // criteria x stages with data
const SWEEP_POINTS = 2 * 3 * 2 - 1;

type El = { querySelectorAll(s: string): ArrayLike<El>; getAttribute(n: string): string | null; textContent: string | null; attributes: ArrayLike<{ name: string; value: string }> };
const all = (root: El, sel: string): El[] => Array.from(root.querySelectorAll(sel));
/** the elements of a named Vega mark (class `${name}_marks`) */
const marks = (root: El, name: string, el = 'path'): El[] => all(root, `g[class~="${name}_marks"] > ${el}`);

/** vertices of an SVG path written as M x,y L x,y ... (Vega's line marks) */
function vertices(d: string): [number, number][] {
  return [...d.matchAll(/[ML]\s*(-?[\d.e+-]+)[ ,](-?[\d.e+-]+)/g)].map((m) => [Number(m[1]), Number(m[2])]);
}
function translate(t: string | null): [number, number] {
  const m = /translate\((-?[\d.e+-]+)[ ,](-?[\d.e+-]+)\)/.exec(t ?? '');
  assert.ok(m, `no translate in '${t}'`);
  return [Number(m[1]), Number(m[2])];
}

let rendered: Promise<string> | undefined;
const page = () => (rendered ??= renderReportHtml(fakeReport(), { sweep: fakeSweep() }));

test('report html: one self-contained document with a title, the tables and the four figures', async () => {
  const html = await page();
  assert.match(html, /^<!DOCTYPE html>\n/);
  const { document } = parseHTML(html);
  assert.equal(document.querySelectorAll('html').length, 1);
  assert.equal(document.querySelectorAll('head').length, 1);
  assert.equal(document.querySelectorAll('body').length, 1);
  assert.equal(document.title, `cmiprune report: <net>&"v".onnx`);
  for (const id of ['plot-curves', 'plot-widths', 'plot-accuracy', 'plot-sweep']) {
    const fig = document.getElementById(id);
    assert.ok(fig, `#${id} missing`);
    assert.equal(fig.tagName.toLowerCase(), 'figure');
    assert.equal(fig.querySelectorAll('svg').length, 1, `#${id} has no inline <svg>`);
    assert.ok(fig.querySelector('figcaption')?.textContent, `#${id} has no caption`);
  }
  const summary = document.getElementById('summary-table')!.textContent!;
  for (const s of ['18 → 13', '12,000 → 8,000', '3,000,000 → 2,000,000', '33.3% removed', '90.00%', '88.00%', 'batch 64', '64.0 → 48.0 ms per batch', '3.5 s'])
    assert.ok(summary.includes(s), `summary lacks '${s}': ${summary}`);
  const rows = all(document as unknown as El, '#layers-table tbody tr');
  assert.equal(rows.length, 3);
  assert.match(rows[0]!.textContent!, /5 \/ 8/);
  assert.match(rows[2]!.textContent!, /not prunable: output feeds Add/);
  assert.equal(all(document as unknown as El, '#sweep-table tbody tr').length, 6);
});

test('report html: curves plot has one line per prunable layer, the candidates on the curve at keep = index + 1, a rule at each chosen keep', async () => {
  const { document } = parseHTML(await page());
  const fig = document.getElementById('plot-curves') as unknown as El;
  const lines = marks(fig, SERIES.curvesLine);
  assert.equal(lines.length, 2, 'one line per layer with a curve (conv2 has none)');
  assert.equal(marks(fig, SERIES.curvesCandidates).length, 3 + 2);
  assert.equal(marks(fig, SERIES.curvesChosen, 'line').length, 2);
  // per panel (Vega's facet cells): the line's vertices are the curve, candidates sit on vertex `index`, the rule at vertex keep-1
  const cells = all(fig, 'g[class~="cell"] > g');
  assert.equal(cells.length, 2);
  const expected = [
    { points: 7, candidates: [5, 4, 2], keep: 5 },
    { points: 5, candidates: [3, 1], keep: 4 },
  ];
  cells.forEach((cell, c) => {
    const [line] = marks(cell, SERIES.curvesLine);
    const v = vertices(line!.getAttribute('d')!);
    assert.equal(v.length, expected[c]!.points, `panel ${c}: ${v.length} vertices`);
    const at = (x: number, y: number) => v.findIndex(([vx, vy]) => Math.abs(vx - x) < 0.01 && Math.abs(vy - y) < 0.01);
    const cands = marks(cell, SERIES.curvesCandidates).map((p) => translate(p.getAttribute('transform')));
    assert.deepEqual(
      cands.map(([x, y]) => at(x, y)),
      expected[c]!.candidates,
      `panel ${c}: candidates off the curve's vertices`,
    );
    const [rule] = marks(cell, SERIES.curvesChosen, 'line');
    const [rx] = translate(rule!.getAttribute('transform'));
    assert.ok(Math.abs(rx - v[expected[c]!.keep - 1]![0]) < 0.01, `panel ${c}: rule at x=${rx}, keep ${expected[c]!.keep} at ${v[expected[c]!.keep - 1]![0]}`);
  });
  // aria labels name the layer (escaped in the markup, intact in the DOM)
  assert.ok(lines.some((l) => l.getAttribute('aria-label') === `curve of ${EVIL}`));
  assert.ok(marks(fig, SERIES.curvesCandidates).some((p) => /candidate keep 5 in .*q 2\.250, held-out 97\.00%/.test(p.getAttribute('aria-label') ?? '')));
});

test('report html: widths plot has two bars per layer, accuracy plot a point per non-null stage, sweep a line per criterion and stage', async () => {
  const { document } = parseHTML(await page());
  const widths = document.getElementById('plot-widths') as unknown as El;
  const bars = marks(widths, SERIES.widthsBars);
  assert.equal(bars.length, 3 * 2);
  assert.ok(bars.some((b) => b.getAttribute('aria-label') === 'conv1: 4 of 6 channels kept'));

  const acc = document.getElementById('plot-accuracy') as unknown as El;
  assert.equal(marks(acc, SERIES.accuracyPoints).length, STAGES);
  assert.equal(marks(acc, SERIES.accuracyLine).length, 1);
  assert.deepEqual(
    marks(acc, SERIES.accuracyLabels, 'text').map((t) => t.textContent),
    ['90.00%', '50.00%', '80.00%', '86.00%', '88.00%'],
  );

  const sweep = document.getElementById('plot-sweep') as unknown as El;
  for (const [line, points, base] of [
    [SERIES.sweepFiltersLine, SERIES.sweepFiltersPoints, SERIES.sweepFiltersBaseline],
    [SERIES.sweepMacsLine, SERIES.sweepMacsPoints, SERIES.sweepMacsBaseline],
  ] as const) {
    const ls = marks(sweep, line);
    assert.equal(ls.length, SWEEP_LINES, `${line}: ${ls.length} series`);
    assert.deepEqual(ls.map((l) => l.getAttribute('aria-label')).sort(), [
      'cmi, after BN re-estimation',
      'cmi, after surgery',
      'l1 <norm>, after BN re-estimation',
      'l1 <norm>, after surgery',
    ]);
    assert.equal(marks(sweep, points).length, SWEEP_POINTS);
    assert.equal(marks(sweep, base, 'line').length, 1);
  }
  const sweepText = (sweep as unknown as { textContent: string }).textContent;
  assert.match(sweepText, /filters removed/);
  assert.match(sweepText, /multiply-adds removed/);
});

test('report html: nothing is fetched (no script, link, image, url(); http only in SVG namespaces) and report text is escaped', async () => {
  const html = await page();
  assert.doesNotMatch(html, /<script/i);
  assert.doesNotMatch(html, /<(link|img|iframe|object|embed|base)\b/i);
  assert.doesNotMatch(html, /@import/i);
  for (const m of html.matchAll(/url\(([^)]*)\)/gi)) assert.match(m[1]!, /^#plot-[\w-]+$/, `url(${m[1]}) is not a reference into the page`);
  // ids are unique across the SVGs (Vega numbers clip paths from 1 in each one)
  const ids = [...html.matchAll(/\sid="([^"]+)"/g)].map((m) => m[1]);
  assert.equal(new Set(ids).size, ids.length, `duplicate ids: ${ids}`);
  const { document } = parseHTML(html);
  const namespaces = new Set(['http://www.w3.org/2000/svg', 'http://www.w3.org/1999/xlink']);
  for (const el of all(document as unknown as El, '*'))
    for (const a of Array.from(el.attributes))
      if (/(https?:|\/\/|data:|javascript:)/i.test(a.value)) assert.ok(a.name.startsWith('xmlns') && namespaces.has(a.value), `attribute ${a.name}="${a.value}"`);
  // the evil layer name round-trips as text: in the layers table, the plot's panel title
  assert.equal(all(document as unknown as El, '#layers-table tbody tr td code')[0]!.textContent, EVIL);
  // (panel titles are truncated to their label limit)
  assert.ok(all(document as unknown as El, '#plot-curves text').some((t) => t.textContent!.startsWith('blk<script>alert(1)</script')));
  assert.ok(html.includes('blk&lt;script&gt;alert(1)&lt;/script&gt;&amp;'));
  assert.ok(document.getElementById('layers-table')!.textContent!.includes('by <fewest> channels'));
});

test('accuracyStages: skips stages that did not run; fine-tuning without per-epoch accuracies is one point', () => {
  const r = fakeReport();
  assert.deepEqual(
    accuracyStages(r).map((s) => s.stage),
    ['before', 'after surgery', 'after BN re-estimation', 'fine-tune epoch 1', 'fine-tune epoch 2'],
  );
  r.accuracy = { before: 0.9, afterSurgery: 0.5, afterBnReestimation: null, afterFinetune: 0.7 };
  r.finetune = { epochs: [{ epoch: 0, testAccuracy: null }] };
  assert.deepEqual(accuracyStages(r), [
    { stage: 'before', accuracy: 0.9 },
    { stage: 'after surgery', accuracy: 0.5 },
    { stage: 'after fine-tuning', accuracy: 0.7 },
  ]);
});

test('report html: a report without curves, fine-tuning or sweep still renders every figure id', async () => {
  const r = fakeReport();
  for (const l of r.layers) delete l.curve;
  r.finetune = { epochs: [] };
  r.accuracy.afterFinetune = null;
  const { document } = parseHTML(await renderReportHtml(r));
  assert.equal(document.getElementById('plot-curves')!.querySelectorAll('svg').length, 0);
  assert.match(document.getElementById('plot-curves')!.textContent!, /No layer has an importance curve/);
  assert.equal(marks(document.getElementById('plot-accuracy') as unknown as El, SERIES.accuracyPoints).length, 3);
  assert.equal(document.getElementById('plot-sweep'), null);
});

test('report html: the curves caption names a coupled group cut by its stratified order, and only then', async () => {
  const caption = (html: string) => parseHTML(html).document.querySelector('#plot-curves figcaption')!.textContent!;
  assert.doesNotMatch(caption(await page()), /stratified order/);
  const r = fakeReport();
  r.layers[1]!.cutOrder = [3, 0, 5, 1, 2, 4];
  assert.match(caption(await renderReportHtml(r)), /Cut by a stratified order \(conv1\)/);
});

test('renderSvg: idPrefix makes clip-path ids and their url(#...) references page-unique', async () => {
  const spec = { data: { values: [{ x: 0, y: 0 }, { x: 2, y: 3 }] }, mark: { type: 'line', clip: true }, encoding: { x: { field: 'x', type: 'quantitative', scale: { domain: [0, 1] } }, y: { field: 'y', type: 'quantitative' } } } as const;
  const [a, b] = [await renderSvg(spec as never, { idPrefix: 'fig-a' }), await renderSvg(spec as never, { idPrefix: 'fig-b' })];
  for (const [svg, p] of [[a, 'fig-a'], [b, 'fig-b']] as const) {
    const ids = [...svg.matchAll(/\sid="([^"]+)"/g)].map((m) => m[1]!);
    assert.ok(ids.length > 0 && ids.every((id) => id.startsWith(`${p}-`)), `ids ${ids}`);
    const refs = [...svg.matchAll(/url\(#([^)]+)\)/g)].map((m) => m[1]!);
    assert.ok(refs.length > 0 && refs.every((r) => ids.includes(r)), `refs ${refs} vs ids ${ids}`);
  }
});

test('writeReportHtml: writes the page, creating its directory, and leaves no temp file beside it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'cmiprune-report-'));
  try {
    const html = await page();
    const path = join(dir, 'sub', 'report.html');
    await writeReportHtml(path, html);
    assert.equal(await readFile(path, 'utf8'), html);
    assert.deepEqual(await readdir(join(dir, 'sub')), ['report.html']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

function findChromium(): string | null {
  for (const name of ['chromium', 'chromium-browser']) {
    const r = spawnSync('which', [name], { encoding: 'utf8' });
    if (r.status === 0 && r.stdout.trim()) return r.stdout.trim();
  }
  return null;
}
const chromium = findChromium();

test(
  'report html in headless Chromium: the dumped DOM keeps every figure and its SVG marks',
  { skip: chromium ? false : 'no chromium or chromium-browser on PATH (Debian: apt-get install chromium)', timeout: 120_000 },
  async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cmiprune-report-'));
    try {
      const path = join(dir, 'report.html');
      await writeReportHtml(path, await page());
      const r = spawnSync(
        chromium!,
        ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', `--user-data-dir=${join(dir, 'profile')}`, '--dump-dom', pathToFileURL(path).href],
        { encoding: 'utf8', timeout: 90_000, maxBuffer: 64 << 20 },
      );
      assert.equal(r.error, undefined, `chromium failed to run: ${r.error}`);
      assert.equal(r.status, 0, `chromium exit ${r.status}: ${r.stderr.slice(-2000)}`);
      const { document } = parseHTML(r.stdout);
      for (const id of ['plot-curves', 'plot-widths', 'plot-accuracy', 'plot-sweep']) {
        const fig = document.getElementById(id);
        assert.ok(fig, `#${id} missing from the browser's DOM`);
        assert.equal(fig.querySelectorAll('svg').length, 1, `#${id}: no <svg> in the browser's DOM`);
      }
      // the browser parsed the inline SVG into the same marks
      assert.equal(marks(document.getElementById('plot-curves') as unknown as El, SERIES.curvesLine).length, 2);
      assert.equal(marks(document.getElementById('plot-widths') as unknown as El, SERIES.widthsBars).length, 6);
      assert.equal(marks(document.getElementById('plot-accuracy') as unknown as El, SERIES.accuracyPoints).length, STAGES);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
);

test('report html: a curve below 0 that rises again (CMI --sigma mean) is drawn with its running minimum, candidates on that, no NaN, the axis below 0', async () => {
  const r = fakeReport();
  // conv1 under --sigma mean: every point below 0 (shares down to -6.8), minimum at keep 2, then rising
  const curve = [-0.0566, -0.0759, -0.0549, -0.0382, -0.0275];
  r.layers[1] = {
    ...r.layers[1]!,
    channels: 6,
    kept: 2,
    curve,
    curveTotal: 0.0112,
    cutoff: { keep: 2, rule: 'scree: largest q', evidence: { candidates: [{ index: 1, keep: 2, q: 0 }, { index: 2, keep: 3, q: 0 }, { index: 3, keep: 4, q: 0 }] } },
  };
  const html = await renderReportHtml(r);
  const { document } = parseHTML(html);
  const fig = document.getElementById('plot-curves') as unknown as El;
  assert.ok(!/NaN|Infinity/.test(html.slice(html.indexOf('id="plot-curves"'), html.indexOf('id="widths"'))), 'no NaN/Infinity in the curves figure');
  const readings = marks(fig, SERIES.curvesReading);
  assert.equal(readings.length, 1, 'one running-minimum line: only conv1 rises again');
  assert.equal(readings[0]!.getAttribute('aria-label'), 'running minimum of conv1');
  assert.match(fig.textContent ?? '', /running minimum of a curve that rises again \(conv1\)/);
  const cells = all(fig, 'g[class~="cell"] > g');
  const cell = cells[1]!;
  const v = vertices(marks(cell, SERIES.curvesLine)[0]!.getAttribute('d')!);
  const w = vertices(readings[0]!.getAttribute('d')!);
  assert.equal(v.length, 5);
  assert.equal(w.length, 5);
  // same x; the reading is the curve up to its minimum (vertex 1), flat at it after; SVG y grows downwards
  v.forEach(([x], i) => assert.ok(Math.abs(x - w[i]![0]) < 0.01));
  assert.ok(Math.abs(v[0]![1] - w[0]![1]) < 0.01 && Math.abs(v[1]![1] - w[1]![1]) < 0.01);
  for (let i = 2; i < 5; i++) assert.ok(Math.abs(w[i]![1] - w[1]![1]) < 0.01 && v[i]![1] < w[i]![1] - 1, `vertex ${i}`);
  // candidates sit on the reading (where scree read them), at keep = index + 1
  const cands = marks(cell, SERIES.curvesCandidates).map((p) => translate(p.getAttribute('transform')));
  assert.deepEqual(
    cands.map(([x, y]) => w.findIndex(([wx, wy]) => Math.abs(wx - x) < 0.01 && Math.abs(wy - y) < 0.01)),
    [1, 2, 3],
  );
  // the monotone layer has no reading line and its candidates stay on its curve (first test)
  assert.equal(marks(cells[0]!, SERIES.curvesReading).length, 0);
  // the y axis reaches below 0: a tick labelled with a negative value
  assert.ok(all(fig, 'text').some((t) => /^[−-]\d/.test(t.textContent ?? '')), 'a negative y tick');
});
