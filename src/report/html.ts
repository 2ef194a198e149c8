// `report.html`: one self-contained file (inline CSS and inline SVG; no script, font, stylesheet or
// image from anywhere) that reads the prune report: a summary table, each layer's importance curve
// with its cut-off candidates and chosen keep, layer widths before/after, accuracy at each stage,
// the per-layer decisions, and, given a sweep, accuracy against filters and multiply-adds removed
// per criterion. The plots are Vega-Lite specs rendered to SVG in Node (./charts.ts).
//
// The shapes below list only the fields read here; src/pipeline/prune.ts's report object (and its
// JSON.parse'd report.json) is assignable to PruneReportLike. Every value is checked at run time
// as well, so a report from an older version or a hand-edited file renders what it has.
import { basename } from 'node:path';
import { runningMinimum } from '../prune/cutoffs.js';
import { writeFileAtomic } from '../util/fs.js';
import { accuracySpec, type CurvePanel, curvesSpec, renderSvg, type SweepRow, sweepSpec, widthsSpec } from './charts.js';

/** One cut-off candidate as the scree / X-Means rules record it: curve index, keep = index + 1 (clamped), q (scree). */
export interface ReportCandidate {
  index?: number;
  keep?: number;
  q?: number;
}

/** One conv layer of report.layers. */
export interface ReportLayer {
  name: string;
  index?: number;
  channels: number;
  kept: number;
  prunable?: boolean;
  reason?: string;
  /** curve[i] is the importance left out after keeping i + 1 channels */
  curve?: number[] | null;
  /** the curve's value with nothing kept; curve / curveTotal is comparable across layers */
  curveTotal?: number | null;
  curveName?: string | null;
  /** a coupled group cut by its stratified order (every conv carrying it loses the same fraction), not by the curve's order */
  cutOrder?: number[] | null;
  /** evidence: candidates (ReportCandidate[]), heldoutAccuracy ({keep: accuracy}), heldoutBaseline */
  cutoff?: { keep: number; rule: string; evidence?: Record<string, unknown> };
}

export interface ReportCost {
  filters: number;
  params: number;
  macs: number;
}

export interface ReportLatency {
  batch: number;
  msPerImage: number;
  msPerBatchMedian?: number;
  repeats?: number;
}

/** The fields of `cmiprune prune`'s report.json that the HTML report reads. */
export interface PruneReportLike {
  model?: { path?: string; sha256?: string };
  data?: { name?: string; test?: number; calibration?: number; heldout?: number };
  settings?: {
    criterion?: string;
    criterionKey?: string;
    cutoff?: string;
    formulation?: string;
    order?: string;
    allocation?: string;
    tolerance?: number;
    finetuneEpochs?: number;
  };
  method?: { formulation?: string; order?: string; startLayer?: string | null };
  layers: ReportLayer[];
  cost: { before: ReportCost; after: ReportCost };
  accuracy: { before?: number | null; afterSurgery?: number | null; afterBnReestimation?: number | null; afterFinetune?: number | null };
  finetune?: { epochs: { epoch?: number; testAccuracy?: number | null }[] };
  latency?: { before: ReportLatency[]; after: ReportLatency[] };
  seconds?: Record<string, number>;
}

/** One pruning of a sweep: a criterion at a budget, what it removed and the accuracies it kept. */
export interface SweepPoint {
  criterion: string;
  /** the cut-off / budget as given, e.g. 'flops:0.3' */
  budget: string;
  /** fractions in [0, 1] of the unpruned model's filters, parameters and multiply-adds */
  removed: { filters: number; params: number; macs: number };
  accuracy: { afterSurgery: number | null; afterBnReestimation: number | null };
  /** which BatchNorm statistics afterBnReestimation is of (sweep --bn-stats) */
  bnStats?: 'anchored' | 'reestimated';
}

/** What a sweep command produces for the report: one point per (criterion, budget). */
export interface SweepResult {
  points: SweepPoint[];
  /** the unpruned model's test accuracy (drawn as a reference line when given) */
  accuracyBefore?: number | null;
}

export interface ReportHtmlOptions {
  sweep?: SweepResult;
  /** page title (default: 'cmiprune report: <model file name>') */
  title?: string;
}

// ---------------------------------------------------------------------------------------------
// formatting

/** Escape text for HTML element content and double- or single-quoted attribute values. */
export function escapeHtml(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const isNum = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);
const num = (x: unknown): number | null => (isNum(x) ? x : null);
const int = (n: number) => Math.round(n).toLocaleString('en-US');
const pct = (x: number | null, digits = 2) => (x === null ? '–' : `${(100 * x).toFixed(digits)}%`);
const signed = (x: number, digits = 1) => `${x > 0 ? '+' : x < 0 ? '−' : '±'}${Math.abs(x).toFixed(digits)}%`;
const ms = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

function beforeAfter(before: unknown, after: unknown): string {
  if (!isNum(before) || !isNum(after)) return '–';
  const removed = before > 0 ? (1 - after / before) * 100 : 0;
  return `${int(before)} → ${int(after)} <span class="dim">(${removed.toFixed(1)}% removed)</span>`;
}

function row(label: string, valueHtml: string): string {
  return `<tr><th scope="row">${escapeHtml(label)}</th><td>${valueHtml}</td></tr>`;
}

// ---------------------------------------------------------------------------------------------
// data for the plots

/** Layer labels for the plots: the node name, made unique if two layers share one. */
function layerLabels(layers: ReportLayer[]): string[] {
  const seen = new Map<string, number>();
  return layers.map((l, i) => {
    const base = String(l.name ?? `layer ${i}`);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    return n === 0 ? base : `${base} #${n + 1}`;
  });
}

function candidatesOf(l: ReportLayer): ReportCandidate[] {
  const c = l.cutoff?.evidence?.candidates;
  return Array.isArray(c) ? c.filter((x): x is ReportCandidate => !!x && typeof x === 'object') : [];
}

function heldoutOf(l: ReportLayer): Record<string, unknown> {
  const h = l.cutoff?.evidence?.heldoutAccuracy;
  return h && typeof h === 'object' ? (h as Record<string, unknown>) : {};
}

/**
 * Curves normalised by curveTotal (or, lacking a positive one, by the curve's largest absolute
 * value), with candidates and the chosen keep; a curve that rises again also gets its running
 * minimum (`reading`), and its candidates sit on that, where the cut-off read them.
 */
function curvePanels(layers: ReportLayer[], labels: string[]): { panels: CurvePanel[]; curveName: string | null; fallback: string[] } {
  const panels: CurvePanel[] = [];
  const fallback: string[] = [];
  let curveName: string | null = null;
  layers.forEach((l, li) => {
    const curve = Array.isArray(l.curve) ? l.curve : null;
    if (!curve || curve.length === 0 || !curve.every(isNum)) return;
    let total = num(l.curveTotal);
    if (total === null || total <= 0) {
      total = curve.reduce((m, v) => Math.max(m, Math.abs(v)), 0) || 1;
      fallback.push(labels[li]!);
    }
    curveName ??= typeof l.curveName === 'string' ? l.curveName : null;
    const values = curve.map((v) => v / total!);
    // non-monotone curves: the cut-offs and the curve allocation read the running minimum (src/prune/cutoffs.ts)
    const min = runningMinimum(values);
    const reading = min.some((v, i) => v !== values[i]) ? min : undefined;
    const held = heldoutOf(l);
    const candidates: CurvePanel['candidates'] = [];
    for (const c of candidatesOf(l)) {
      const index = isNum(c.index) ? c.index : isNum(c.keep) ? c.keep - 1 : null;
      if (index === null || index < 0 || index >= values.length) continue;
      const keep = isNum(c.keep) ? c.keep : index + 1;
      const h = num(held[String(keep)]);
      const bits = [`candidate keep ${keep} in ${labels[li]}`, ...(isNum(c.q) ? [`q ${c.q.toFixed(3)}`] : []), ...(h !== null ? [`held-out ${pct(h)}`] : [])];
      candidates.push({ keep: index + 1, value: (reading ?? values)[index]!, label: bits.join(', ') });
    }
    panels.push({ layer: labels[li]!, channels: l.channels, kept: l.kept, values, ...(reading ? { reading } : {}), candidates, chosen: isNum(l.cutoff?.keep) ? l.cutoff!.keep : null });
  });
  return { panels, curveName, fallback };
}

/** Accuracy at each stage, nulls skipped: before, after surgery, after BN re-estimation, after each fine-tuning epoch. */
export function accuracyStages(report: PruneReportLike): { stage: string; accuracy: number }[] {
  const a = report.accuracy ?? {};
  const out: { stage: string; accuracy: number }[] = [];
  const push = (stage: string, v: unknown) => {
    if (isNum(v)) out.push({ stage, accuracy: v });
  };
  push('before', a.before);
  push('after surgery', a.afterSurgery);
  push('after BN re-estimation', a.afterBnReestimation);
  const epochs = Array.isArray(report.finetune?.epochs) ? report.finetune!.epochs : [];
  let anyEpoch = false;
  epochs.forEach((e, i) => {
    if (!isNum(e?.testAccuracy)) return;
    anyEpoch = true;
    push(`fine-tune epoch ${isNum(e.epoch) ? e.epoch + 1 : i + 1}`, e.testAccuracy);
  });
  if (!anyEpoch) push('after fine-tuning', a.afterFinetune);
  return out;
}

const SWEEP_STAGES = [
  { key: 'afterBnReestimation', label: 'after BN re-estimation' },
  { key: 'afterSurgery', label: 'after surgery' },
] as const;

function sweepRows(sweep: SweepResult): { rows: SweepRow[]; criteria: string[]; stages: string[] } {
  const rows: SweepRow[] = [];
  const criteria: string[] = [];
  const stages = new Set<string>();
  for (const p of Array.isArray(sweep.points) ? sweep.points : []) {
    const criterion = String(p?.criterion ?? '?');
    const filters = num(p?.removed?.filters);
    const macs = num(p?.removed?.macs);
    if (filters === null || macs === null) continue;
    for (const s of SWEEP_STAGES) {
      const acc = num(p.accuracy?.[s.key]);
      if (acc === null) continue;
      if (!criteria.includes(criterion)) criteria.push(criterion);
      stages.add(s.label);
      rows.push({ criterion, budget: String(p.budget ?? ''), stage: s.label, filters, macs, accuracy: acc });
    }
  }
  return { rows, criteria, stages: SWEEP_STAGES.map((s) => s.label).filter((s) => stages.has(s)) };
}

// ---------------------------------------------------------------------------------------------
// page parts

function figure(id: string, svg: string | null, caption: string, empty: string): string {
  const body = svg ?? `<p class="empty">${escapeHtml(empty)}</p>`;
  return `<figure id="${id}">${body}<figcaption>${caption}</figcaption></figure>`;
}

function summaryTable(r: PruneReportLike): string {
  const s = r.settings ?? {};
  const rows: string[] = [];
  const modelPath = r.model?.path;
  rows.push(row('model', `<code>${escapeHtml(modelPath ?? '–')}</code>${r.model?.sha256 ? ` <span class="dim">sha256 ${escapeHtml(String(r.model.sha256).slice(0, 12))}…</span>` : ''}`));
  if (r.data?.name) {
    const bits = [`test images ${isNum(r.data.test) ? int(r.data.test) : '–'}`];
    if (isNum(r.data.calibration)) bits.push(`calibration ${int(r.data.calibration)}`);
    if (isNum(r.data.heldout)) bits.push(`held-out ${int(r.data.heldout)}`);
    rows.push(row('data', `${escapeHtml(r.data.name)} <span class="dim">(${escapeHtml(bits.join(', '))})</span>`));
  }
  rows.push(row('criterion', `${escapeHtml(s.criterion ?? '–')}${s.criterionKey ? ` <span class="dim"><code>${escapeHtml(s.criterionKey)}</code></span>` : ''}`));
  const cutoffBits: string[] = [];
  if (s.cutoff && /^(filters|params|flops):/.test(s.cutoff) && s.allocation) cutoffBits.push(`${s.allocation} allocation`);
  if (s.cutoff && /^(scree|xmeans)$/.test(s.cutoff) && isNum(s.tolerance)) cutoffBits.push(`held-out tolerance ${s.tolerance}`);
  rows.push(row('cut-off', `${escapeHtml(s.cutoff ?? '–')}${cutoffBits.length ? ` <span class="dim">(${escapeHtml(cutoffBits.join(', '))})</span>` : ''}`));
  const formulation = r.method?.formulation ?? s.formulation;
  const order = r.method?.order ?? s.order;
  const start = r.method?.startLayer;
  rows.push(row('formulation', `${escapeHtml(formulation ?? '–')}${order ? ` <span class="dim">(order: ${escapeHtml(order)}${start ? `, start ${escapeHtml(start)}` : ''})</span>` : ''}`));
  const b = r.cost?.before;
  const a = r.cost?.after;
  rows.push(row('filters', beforeAfter(b?.filters, a?.filters)));
  rows.push(row('parameters', beforeAfter(b?.params, a?.params)));
  rows.push(row('multiply-adds', beforeAfter(b?.macs, a?.macs)));
  const acc = r.accuracy ?? {};
  const accRow = (label: string, v: unknown) => {
    const x = num(v);
    if (x === null) return;
    const base = num(acc.before);
    const delta = base !== null && label !== 'accuracy before' ? ` <span class="dim">(${signed(100 * (x - base), 2).replace('%', ' pt')})</span>` : '';
    rows.push(row(label, `${pct(x)}${delta}`));
  };
  accRow('accuracy before', acc.before);
  accRow('accuracy after surgery', acc.afterSurgery);
  accRow('accuracy after BN re-estimation', acc.afterBnReestimation);
  accRow('accuracy after fine-tuning', acc.afterFinetune);
  const lb = Array.isArray(r.latency?.before) ? r.latency!.before : [];
  const la = Array.isArray(r.latency?.after) ? r.latency!.after : [];
  for (const before of lb) {
    if (!isNum(before?.batch) || !isNum(before.msPerImage)) continue;
    const after = la.find((x) => x?.batch === before.batch);
    let v = `${ms(before.msPerImage)} ms`;
    if (after && isNum(after.msPerImage)) {
      v += ` → ${ms(after.msPerImage)} ms per image <span class="dim">(${signed(100 * (after.msPerImage / before.msPerImage - 1))}`;
      if (before.batch > 1 && isNum(before.msPerBatchMedian) && isNum(after.msPerBatchMedian)) v += `; ${ms(before.msPerBatchMedian)} → ${ms(after.msPerBatchMedian)} ms per batch`;
      v += ')</span>';
    } else v += ' per image';
    rows.push(row(`ONNX Runtime latency, batch ${before.batch}`, v));
  }
  const sec = r.seconds ?? {};
  if (isNum(sec.total)) {
    const parts = Object.entries(sec)
      .filter(([k, v]) => k !== 'total' && isNum(v) && v >= 0.05)
      .map(([k, v]) => `${k} ${v.toFixed(1)}`);
    rows.push(row('total time', `${sec.total.toFixed(1)} s${parts.length ? ` <span class="dim">(${escapeHtml(parts.join(', '))})</span>` : ''}`));
  }
  return `<table class="summary" id="summary-table"><tbody>${rows.join('')}</tbody></table>`;
}

function layersTable(layers: ReportLayer[]): string {
  const head = '<thead><tr><th>#</th><th>layer</th><th class="num">kept / total</th><th class="num">removed</th><th>candidates (keep: q, held-out accuracy)</th><th>rule</th></tr></thead>';
  const body = layers
    .map((l, i) => {
      const channels = isNum(l.channels) ? l.channels : null;
      const kept = isNum(l.kept) ? l.kept : null;
      const removed = channels && kept !== null ? `${(100 * (1 - kept / channels)).toFixed(1)}%` : '–';
      const held = heldoutOf(l);
      const cands = candidatesOf(l)
        .map((c) => {
          const keep = isNum(c.keep) ? c.keep : isNum(c.index) ? c.index + 1 : null;
          if (keep === null) return null;
          const h = num(held[String(keep)]);
          const bits = [isNum(c.q) ? `q ${c.q.toFixed(2)}` : null, h !== null ? pct(h, 1) : null].filter((x) => x !== null);
          const chosen = keep === l.cutoff?.keep ? ' class="chosen"' : '';
          return `<span${chosen}>${keep}${bits.length ? `: ${escapeHtml(bits.join(', '))}` : ''}</span>`;
        })
        .filter((x) => x !== null)
        .join('<br>');
      const rule = l.cutoff?.rule ?? (l.prunable === false ? `not prunable${l.reason ? `: ${l.reason}` : ''}` : '');
      const cls = l.prunable === false ? ' class="fixed"' : '';
      return (
        `<tr${cls}><td class="num">${isNum(l.index) ? l.index : i}</td><td><code>${escapeHtml(l.name)}</code></td>` +
        `<td class="num">${kept ?? '–'} / ${channels ?? '–'}</td><td class="num">${removed}</td><td class="cands">${cands}</td><td class="rule">${escapeHtml(rule)}</td></tr>`
      );
    })
    .join('');
  return `<table class="layers" id="layers-table">${head}<tbody>${body}</tbody></table>`;
}

function sweepTable(rows: SweepPoint[]): string {
  const head = '<thead><tr><th>criterion</th><th>budget</th><th class="num">filters removed</th><th class="num">params removed</th><th class="num">multiply-adds removed</th><th class="num">after surgery</th><th class="num">after BN re-estimation</th></tr></thead>';
  const body = rows
    .map(
      (p) =>
        `<tr><td>${escapeHtml(p?.criterion ?? '?')}</td><td><code>${escapeHtml(p?.budget ?? '')}</code></td>` +
        `<td class="num">${pct(num(p?.removed?.filters), 1)}</td><td class="num">${pct(num(p?.removed?.params), 1)}</td><td class="num">${pct(num(p?.removed?.macs), 1)}</td>` +
        `<td class="num">${pct(num(p?.accuracy?.afterSurgery))}</td><td class="num">${pct(num(p?.accuracy?.afterBnReestimation))}</td></tr>`,
    )
    .join('');
  return `<table class="layers" id="sweep-table">${head}<tbody>${body}</tbody></table>`;
}

const CSS = `
:root{color-scheme:light}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#222;margin:0;background:#fafafa}
main{max-width:1240px;margin:0 auto;padding:24px 28px 48px;background:#fff}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:32px 0 8px;border-bottom:1px solid #e4e4e4;padding-bottom:4px}
p.lead{margin:0 0 16px;color:#555}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.dim{color:#777}
table{border-collapse:collapse}
table.summary th{text-align:left;font-weight:600;padding:3px 18px 3px 0;vertical-align:top;white-space:nowrap}
table.summary td{padding:3px 0}
table.layers{font-size:13px;width:100%}
table.layers th,table.layers td{border-bottom:1px solid #eee;padding:4px 8px;text-align:left;vertical-align:top}
table.layers th{background:#f4f4f4;font-weight:600}
table.layers td.num,table.layers th.num{text-align:right;white-space:nowrap}
table.layers td.rule{color:#555;font-size:12px}
table.layers td.cands{white-space:nowrap;font-size:12px}
table.layers .chosen{font-weight:700}
tr.fixed td{color:#999}
figure{margin:8px 0 16px;overflow-x:auto}
figure svg{max-width:100%;height:auto;display:block}
figcaption{color:#555;font-size:13px;margin-top:6px;max-width:980px}
p.empty{color:#777;font-style:italic}
footer{margin-top:36px;color:#888;font-size:12px}
`;

/**
 * The report as one self-contained HTML page. Plots: `#plot-curves` (per-layer importance curves,
 * cut-off candidates, chosen keep), `#plot-widths` (channels before/after per layer),
 * `#plot-accuracy` (test accuracy per stage) and, with `opts.sweep`, `#plot-sweep` (accuracy
 * against filters and multiply-adds removed, per criterion). Series names: charts.ts SERIES.
 */
export async function renderReportHtml(report: PruneReportLike, opts: ReportHtmlOptions = {}): Promise<string> {
  const layers = Array.isArray(report.layers) ? report.layers : [];
  const labels = layerLabels(layers);
  const modelName = report.model?.path ? basename(String(report.model.path)) : 'model';
  const title = opts.title ?? `cmiprune report: ${modelName}`;

  // 1. curves
  const { panels, curveName, fallback } = curvePanels(layers, labels);
  const curvesSvg = panels.length
    ? await renderSvg(curvesSpec(panels, { yTitle: fallback.length === panels.length ? 'curve / max abs(curve)' : 'curve / curveTotal', columns: panels.length <= 3 ? panels.length : 4 }), { idPrefix: 'plot-curves' })
    : null;
  const nCands = panels.reduce((s, p) => s + p.candidates.length, 0);
  const rising = panels.filter((p) => p.reading).map((p) => p.layer);
  const stratified = layers.flatMap((l, i) => (Array.isArray(l.cutOrder) && Array.isArray(l.curve) ? [labels[i]!] : []));
  const curvesCaption =
    `Each prunable layer's importance curve${curveName ? ` (<code>${escapeHtml(curveName)}</code>)` : ''}, divided by its value with nothing kept ` +
    `(<code>curveTotal</code>) so layers compare, against the number of channels kept: point <i>i</i> of the curve belongs to keep = <i>i</i> + 1. ` +
    `Orange points: the cut-off rule's candidates (${nCands} in all); dashed red line: the chosen keep. Each panel has its own x scale.` +
    (rising.length
      ? ` Dashed green: the running minimum of a curve that rises again (${escapeHtml(rising.join(', '))}): the cut-offs and the curve allocation read that, and the candidates sit on it.`
      : '') +
    (fallback.length && fallback.length < panels.length ? ` Without a positive curveTotal, normalised by the curve's largest absolute value: ${escapeHtml(fallback.join(', '))}.` : '') +
    (stratified.length
      ? ` Cut by a stratified order (${escapeHtml(stratified.join(', '))}): a coupled group whose convs each lose the same fraction, so its kept channels are not the first ones of the order its curve follows, and the curve at the chosen keep only approximates what was removed.`
      : '');

  // 2. widths
  const widthsSvg = layers.length
    ? await renderSvg(widthsSpec(layers.map((l, i) => ({ layer: labels[i]!, before: isNum(l.channels) ? l.channels : 0, after: isNum(l.kept) ? l.kept : 0 }))), { idPrefix: 'plot-widths' })
    : null;

  // 3. accuracy
  const stages = accuracyStages(report);
  const accuracySvg = stages.length ? await renderSvg(accuracySpec(stages), { idPrefix: 'plot-accuracy' }) : null;

  // 4. sweep
  let sweepHtml = '';
  if (opts.sweep) {
    const { rows, criteria, stages: sweepStages } = sweepRows(opts.sweep);
    const svg = rows.length ? await renderSvg(sweepSpec(rows, { criteria, stages: sweepStages, baseline: num(opts.sweep.accuracyBefore) }), { idPrefix: 'plot-sweep' }) : null;
    sweepHtml =
      `<section id="sweep"><h2>Sweep</h2>` +
      figure(
        'plot-sweep',
        svg,
        `Test accuracy of each criterion's pruned model against the share of filters (left) and of multiply-adds (right) it removed; one colour per criterion, ` +
          `solid: after BatchNorm re-estimation, dashed: right after surgery${num(opts.sweep.accuracyBefore) !== null ? '; grey: the unpruned model' : ''}.`,
        'The sweep has no point with an accuracy.',
      ) +
      sweepTable(Array.isArray(opts.sweep.points) ? opts.sweep.points : []) +
      `</section>`;
  }

  const s = report.settings ?? {};
  const lead = [s.criterion && `criterion ${s.criterion}`, s.cutoff && `cut-off ${s.cutoff}`, (report.method?.formulation ?? s.formulation) && `formulation ${report.method?.formulation ?? s.formulation}`]
    .filter(Boolean)
    .join(' · ');
  return [
    '<!DOCTYPE html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${escapeHtml(title)}</title>`,
    `<style>${CSS}</style>`,
    '</head>',
    '<body>',
    '<main>',
    `<h1>${escapeHtml(title)}</h1>`,
    lead ? `<p class="lead">${escapeHtml(lead)}</p>` : '',
    `<section id="summary"><h2>Summary</h2>${summaryTable(report)}</section>`,
    `<section id="curves"><h2>Importance curves and cut-offs</h2>${figure('plot-curves', curvesSvg, curvesCaption, 'No layer has an importance curve (the criterion gives none).')}</section>`,
    `<section id="widths"><h2>Layer widths</h2>${figure('plot-widths', widthsSvg, 'Output channels (filters) of every conv layer before and after pruning, in network order.', 'The report lists no layers.')}</section>`,
    `<section id="accuracy"><h2>Accuracy</h2>${figure(
      'plot-accuracy',
      accuracySvg,
      'Test accuracy before pruning, right after surgery, after BatchNorm re-estimation and after each fine-tuning epoch (stages that did not run are left out).',
      'The report has no accuracies.',
    )}</section>`,
    sweepHtml,
    `<section id="layers"><h2>Layers</h2>${layersTable(layers)}</section>`,
    `<footer>Generated by cmiprune from report.json. This page is self-contained: no scripts, no external resources.</footer>`,
    '</main>',
    '</body>',
    '</html>',
    '',
  ].join('\n');
}

/** Write the page atomically (temp file + rename). */
export async function writeReportHtml(path: string, html: string): Promise<void> {
  await writeFileAtomic(path, html);
}
