// The HTML report's plots: Vega-Lite specs built from plain rows, compiled to Vega and rendered to
// SVG strings in Node (a headless View with renderer 'none'; no canvas, no browser, no network).
// Every mark layer carries a stable `name`; Vega writes it into the SVG as the class
// `<name>_marks` of the mark's <g> (e.g. <g class="mark-line role-mark curves_line_marks">), so
// tests and readers can find one series without knowing the layout. Each line/point/rule also
// gets a `description` (the SVG's aria-label) naming its layer, stage or criterion.
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

/** Mark names (SVG class `${name}_marks`) of every plot's series. */
export const SERIES = {
  /** one line per prunable layer: curve / curveTotal against channels kept */
  curvesLine: 'curves_line',
  /** a dashed line per layer whose curve rises again: its running minimum, what the cut-offs read */
  curvesReading: 'curves_reading',
  /** one symbol per cut-off candidate */
  curvesCandidates: 'curves_candidates',
  /** one vertical rule per layer at the chosen keep */
  curvesChosen: 'curves_chosen',
  /** two bars per layer: channels before and after */
  widthsBars: 'widths_bars',
  accuracyLine: 'accuracy_line',
  /** one symbol per non-null stage */
  accuracyPoints: 'accuracy_points',
  accuracyLabels: 'accuracy_labels',
  /** one line per (criterion, stage) in each sweep panel; one symbol per point */
  sweepFiltersLine: 'sweep_filters_line',
  sweepFiltersPoints: 'sweep_filters_points',
  sweepMacsLine: 'sweep_macs_line',
  sweepMacsPoints: 'sweep_macs_points',
  /** the unpruned model's accuracy (a horizontal rule) when the sweep gives it */
  sweepFiltersBaseline: 'sweep_filters_baseline',
  sweepMacsBaseline: 'sweep_macs_baseline',
} as const;

const COLORS = { curve: '#4c78a8', reading: '#54a24b', candidate: '#f58518', chosen: '#e45756', before: '#9ecae9', after: '#4c78a8', accuracy: '#4c78a8' };

const CONFIG = {
  font: 'sans-serif',
  view: { stroke: '#ccc' },
  axis: { labelFontSize: 10, titleFontSize: 11, titleFontWeight: 'normal' as const, gridColor: '#eee' },
  legend: { labelFontSize: 11, titleFontSize: 11, titleFontWeight: 'normal' as const },
  header: { labelFontSize: 11 },
  title: { fontSize: 13, fontWeight: 'normal' as const, anchor: 'start' as const },
};

/**
 * Make an SVG's ids (Vega numbers clip paths and gradients from 1 in every SVG it writes) unique
 * within a page holding several SVGs: `id="x"` -> `id="<prefix>-x"`, and every `url(#x)` and
 * `href="#x"` that points at them.
 */
export function prefixSvgIds(svg: string, prefix: string): string {
  const ids = new Set([...svg.matchAll(/\sid="([^"]+)"/g)].map((m) => m[1]!));
  if (ids.size === 0) return svg;
  const ref = (id: string) => (ids.has(id) ? `${prefix}-${id}` : id);
  return svg
    .replace(/(\sid=")([^"]+)(")/g, (_, a: string, id: string, b: string) => a + ref(id) + b)
    .replace(/url\(#([^)]+)\)/g, (_, id: string) => `url(#${ref(id)})`)
    .replace(/(href=")#([^"]+)(")/g, (_, a: string, id: string, b: string) => `${a}#${ref(id)}${b}`);
}

/** Compile a Vega-Lite spec and render it to an SVG string in Node; `idPrefix` makes its ids page-unique. */
export async function renderSvg(spec: TopLevelSpec, opts: { idPrefix?: string } = {}): Promise<string> {
  // Vega-Lite's warnings (dropped encodings and the like) go to stderr only when asked for
  const debug = !!process.env.CMIPRUNE_DEBUG_CHARTS;
  const logger = {
    level: (..._: unknown[]) => logger,
    error: (...a: unknown[]) => {
      throw new Error(`vega-lite: ${a.join(' ')}`);
    },
    warn: (...a: unknown[]) => {
      if (debug) process.stderr.write(`vega-lite: ${a.join(' ')}\n`);
      return logger;
    },
    info: () => logger,
    debug: () => logger,
  };
  const vg = compile({ config: CONFIG, ...spec } as TopLevelSpec, { logger: logger as never }).spec;
  const view = new vega.View(vega.parse(vg), { renderer: 'none', logLevel: debug ? vega.Warn : vega.Error });
  try {
    const svg = await view.toSVG();
    return opts.idPrefix ? prefixSvgIds(svg, opts.idPrefix) : svg;
  } finally {
    view.finalize();
  }
}

// ---------------------------------------------------------------------------------------------
// 1. importance curves with cut-off candidates and the chosen keep (small multiples)

export interface CurvePanel {
  /** facet label (unique) */
  layer: string;
  channels: number;
  kept: number;
  /** normalised curve; values[i] belongs to keep = i + 1 */
  values: number[];
  /**
   * where the curve rises again (CMI with --sigma mean): its normalised running minimum, the curve
   * the cut-offs and the curve allocation read (src/prune/cutoffs.ts runningMinimum); else absent
   */
  reading?: number[];
  /** candidates as points of the read curve (`reading` where present): keep = curve index + 1 */
  candidates: { keep: number; value: number; label: string }[];
  /** the chosen keep, null when the layer has no decision */
  chosen: number | null;
}

export function curvesSpec(panels: CurvePanel[], opts: { yTitle: string; columns?: number }): TopLevelSpec {
  const rows: Record<string, unknown>[] = [];
  for (const p of panels) {
    p.values.forEach((v, i) => rows.push({ layer: p.layer, series: 'curve', keep: i + 1, value: v, description: `curve of ${p.layer}` }));
    p.reading?.forEach((v, i) => rows.push({ layer: p.layer, series: 'reading', keep: i + 1, value: v, description: `running minimum of ${p.layer}` }));
    for (const c of p.candidates) rows.push({ layer: p.layer, series: 'candidate', keep: c.keep, value: c.value, description: c.label });
    if (p.chosen !== null) rows.push({ layer: p.layer, series: 'chosen', keep: p.chosen, description: `chosen keep ${p.chosen} of ${p.channels} in ${p.layer}` });
    // each panel's x axis runs 0..channels: an invisible mark at keep = channels
    rows.push({ layer: p.layer, series: 'extent', keep: p.channels });
  }
  const withReading = panels.some((p) => p.reading);
  const domain = ['normalised curve', 'cut-off candidate', 'chosen keep', ...(withReading ? ['running minimum (read by the cut-offs)'] : [])];
  const color = (d: string) => ({
    datum: d,
    type: 'nominal' as const,
    scale: { domain, range: [COLORS.curve, COLORS.candidate, COLORS.chosen, COLORS.reading].slice(0, domain.length) },
    legend: { title: null, orient: 'top' as const, symbolType: 'stroke', symbolStrokeWidth: 3 },
  });
  const x = { field: 'keep', type: 'quantitative' as const, title: 'channels kept', scale: { domainMin: 0, nice: false } };
  // a curve falling from curveTotal sits in [0, 1]; one that goes below 0 (CMI with --sigma mean)
  // or above 1 widens the shared linear axis rather than being clipped (no log axis: values may be <= 0)
  let lo = 0;
  let hi = 1;
  for (const p of panels) for (const v of p.values) if (Number.isFinite(v)) (lo = Math.min(lo, v)), (hi = Math.max(hi, v));
  const y = { field: 'value', type: 'quantitative' as const, title: opts.yTitle, scale: { domain: [lo, hi] } };
  const desc = { field: 'description', type: 'nominal' as const };
  return {
    data: { values: rows },
    facet: { field: 'layer', type: 'nominal', sort: panels.map((p) => p.layer), header: { title: null, labelLimit: 250, labelFontSize: 11 } },
    columns: opts.columns ?? 4,
    spacing: { row: 18, column: 22 },
    spec: {
      width: 230,
      height: 130,
      layer: [
        {
          name: SERIES.curvesLine,
          transform: [{ filter: "datum.series === 'curve'" }],
          mark: { type: 'line', strokeWidth: 1.5 },
          encoding: { x, y, color: color(domain[0]!), description: desc },
        },
        ...(withReading
          ? [
              {
                name: SERIES.curvesReading,
                transform: [{ filter: "datum.series === 'reading'" }],
                mark: { type: 'line', strokeWidth: 1.5, strokeDash: [4, 3] },
                encoding: { x, y, color: color(domain[3]!), description: desc },
              },
            ]
          : []),
        {
          name: 'curves_extent',
          transform: [{ filter: "datum.series === 'extent'" }],
          mark: { type: 'rule', opacity: 0, aria: false },
          encoding: { x },
        },
        {
          name: SERIES.curvesChosen,
          transform: [{ filter: "datum.series === 'chosen'" }],
          mark: { type: 'rule', strokeWidth: 1.5, strokeDash: [5, 3] },
          encoding: { x, color: color(domain[2]!), description: desc },
        },
        {
          name: SERIES.curvesCandidates,
          transform: [{ filter: "datum.series === 'candidate'" }],
          mark: { type: 'point', filled: true, size: 45, opacity: 1, stroke: 'white', strokeWidth: 0.8 },
          encoding: { x, y, color: color(domain[1]!), description: desc },
        },
      ],
    },
    resolve: { scale: { x: 'independent' } },
  } as TopLevelSpec;
}

// ---------------------------------------------------------------------------------------------
// 2. layer widths before / after

export function widthsSpec(layers: { layer: string; before: number; after: number }[]): TopLevelSpec {
  const rows = layers.flatMap((l) => [
    { layer: l.layer, stage: 'before', channels: l.before, description: `${l.layer}: ${l.before} channels before` },
    { layer: l.layer, stage: 'after', channels: l.after, description: `${l.layer}: ${l.after} of ${l.before} channels kept` },
  ]);
  const encoding = {
    y: { field: 'layer', type: 'nominal', sort: layers.map((l) => l.layer), title: null, axis: { labelLimit: 280, labelFontSize: 10 } },
    yOffset: { field: 'stage', type: 'nominal', sort: ['before', 'after'] },
    x: { field: 'channels', type: 'quantitative', title: 'output channels (filters)' },
    color: {
      field: 'stage',
      type: 'nominal',
      sort: ['before', 'after'],
      scale: { domain: ['before', 'after'], range: [COLORS.before, COLORS.after] },
      legend: { title: null, orient: 'top' },
    },
    description: { field: 'description', type: 'nominal' },
  };
  return {
    data: { values: rows },
    width: 560,
    height: { step: 11 },
    layer: [{ name: SERIES.widthsBars, mark: { type: 'bar' }, encoding }],
  } as TopLevelSpec;
}

// ---------------------------------------------------------------------------------------------
// 3. accuracy at each stage

export function accuracySpec(stages: { stage: string; accuracy: number }[], opts: { title?: string } = {}): TopLevelSpec {
  const rows = stages.map((s) => ({ ...s, description: `${s.stage}: ${(100 * s.accuracy).toFixed(2)}%` }));
  const x = {
    field: 'stage',
    type: 'ordinal' as const,
    sort: stages.map((s) => s.stage),
    title: null,
    axis: { labelAngle: stages.length > 7 ? -35 : 0, labelLimit: 220 },
  };
  const lo = Math.min(...stages.map((s) => s.accuracy));
  const hi = Math.max(...stages.map((s) => s.accuracy));
  const pad = Math.max(0.005, (hi - lo) * 0.15);
  const y = {
    field: 'accuracy',
    type: 'quantitative' as const,
    title: opts.title ?? 'test accuracy',
    axis: { format: '.1%' },
    scale: { domain: [Math.max(0, lo - pad), Math.min(1, hi + pad)], zero: false },
  };
  return {
    data: { values: rows },
    width: { step: stages.length > 7 ? Math.max(60, Math.min(110, 800 / stages.length)) : 140 },
    height: 220,
    layer: [
      { name: SERIES.accuracyLine, mark: { type: 'line', color: COLORS.accuracy, strokeWidth: 1.5 }, encoding: { x, y } },
      {
        name: SERIES.accuracyPoints,
        mark: { type: 'point', filled: true, size: 60, color: COLORS.accuracy, opacity: 1 },
        encoding: { x, y, description: { field: 'description', type: 'nominal' } },
      },
      {
        name: SERIES.accuracyLabels,
        mark: { type: 'text', dy: -11, fontSize: 10 },
        encoding: { x, y, text: { field: 'accuracy', type: 'quantitative', format: '.2%' } },
      },
    ],
  } as TopLevelSpec;
}

// ---------------------------------------------------------------------------------------------
// 4. a sweep: accuracy against filters removed and against multiply-adds removed

export interface SweepRow {
  criterion: string;
  budget: string;
  /** 'after surgery' | 'after BN re-estimation' */
  stage: string;
  filters: number;
  macs: number;
  accuracy: number;
}

export function sweepSpec(rows: SweepRow[], opts: { criteria: string[]; stages: string[]; baseline?: number | null }): TopLevelSpec {
  const data = rows.map((r) => ({
    ...r,
    description: `${r.criterion}, ${r.budget}, ${r.stage}: ${(100 * r.accuracy).toFixed(2)}%`,
    series: `${r.criterion}, ${r.stage}`,
  }));
  const accs = rows.map((r) => r.accuracy).concat(opts.baseline != null ? [opts.baseline] : []);
  const lo = Math.min(...accs);
  const hi = Math.max(...accs);
  const pad = Math.max(0.01, (hi - lo) * 0.08);
  const y = {
    field: 'accuracy',
    type: 'quantitative' as const,
    title: 'test accuracy',
    axis: { format: '.0%' },
    scale: { domain: [Math.max(0, lo - pad), Math.min(1, hi + pad)], zero: false },
  };
  const color = {
    field: 'criterion',
    type: 'nominal' as const,
    sort: opts.criteria,
    scale: { domain: opts.criteria, scheme: 'category10' },
    legend: { title: 'criterion', orient: 'right' as const, labelLimit: 260 },
  };
  const dashes = [[1, 0], [5, 3], [2, 2]];
  const strokeDash = {
    field: 'stage',
    type: 'nominal' as const,
    sort: opts.stages,
    scale: { domain: opts.stages, range: opts.stages.map((_, i) => dashes[i % dashes.length]) },
    legend: { title: 'accuracy', orient: 'right' as const, symbolStrokeWidth: 2, symbolSize: 250, labelLimit: 260 },
  };
  const panel = (axis: 'filters' | 'macs', what: string, names: { line: string; points: string; base: string }) => {
    // from 0 (= the unpruned model, where the baseline rule belongs)
    const x = { field: axis, type: 'quantitative' as const, title: `${what} removed (fraction of the unpruned model)`, axis: { format: '.0%' }, scale: { domainMin: 0 } };
    return {
      width: 360,
      height: 250,
      title: `accuracy against ${what} removed`,
      layer: [
        {
          name: names.line,
          mark: { type: 'line', strokeWidth: 1.8 },
          encoding: {
            x,
            y,
            color,
            strokeDash,
            detail: { field: 'series', type: 'nominal' },
            description: { field: 'series', type: 'nominal' },
          },
        },
        {
          name: names.points,
          mark: { type: 'point', filled: true, size: 45, opacity: 1 },
          encoding: {
            x,
            y,
            color,
            description: { field: 'description', type: 'nominal' },
          },
        },
        ...(opts.baseline != null
          ? [
              {
                name: names.base,
                data: { values: [{ accuracy: opts.baseline, description: `unpruned: ${(100 * opts.baseline).toFixed(2)}%` }] },
                mark: { type: 'rule', color: '#888', strokeDash: [3, 3] },
                encoding: { y, description: { field: 'description', type: 'nominal' } },
              },
            ]
          : []),
      ],
    };
  };
  return {
    data: { values: data },
    hconcat: [
      panel('filters', 'filters', { line: SERIES.sweepFiltersLine, points: SERIES.sweepFiltersPoints, base: SERIES.sweepFiltersBaseline }),
      panel('macs', 'multiply-adds', { line: SERIES.sweepMacsLine, points: SERIES.sweepMacsPoints, base: SERIES.sweepMacsBaseline }),
    ],
    spacing: 40,
    resolve: { scale: { color: 'shared', strokeDash: 'shared', y: 'shared' } },
  } as TopLevelSpec;
}
