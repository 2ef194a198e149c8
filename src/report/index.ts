// The HTML report of a prune run (and, optionally, a sweep over criteria and budgets).
export {
  type PruneReportLike,
  type ReportCandidate,
  type ReportCost,
  type ReportHtmlOptions,
  type ReportLatency,
  type ReportLayer,
  type SweepPoint,
  type SweepResult,
  accuracyStages,
  escapeHtml,
  renderReportHtml,
  writeReportHtml,
} from './html.js';
export { type CurvePanel, type SweepRow, SERIES, accuracySpec, curvesSpec, prefixSvgIds, renderSvg, sweepSpec, widthsSpec } from './charts.js';
