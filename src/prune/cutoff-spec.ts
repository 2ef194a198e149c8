// The --cutoff option: a per-layer rule (scree, xmeans, ptest), a per-layer fraction (keep:F) or a
// global budget (filters:F, params:F, flops:F, or several joined by + that must all be reached),
// parsed once with one clear error.
import { UserError } from '../util/errors.js';
import { type Budget, type BudgetKind, budgetName } from './allocate.js';

export type CutoffSpec = { kind: 'scree' | 'xmeans' | 'ptest' } | { kind: 'keep'; fraction: number } | Budget;

export const CUTOFF_FORMS = 'scree, xmeans, ptest, keep:F, filters:F, params:F, flops:F (F in (0,1)), or budgets joined by + that must all be reached (params:0.8+flops:0.58)';

function fractionOf(text: string, f: string): number {
  const x = Number(f);
  if (!Number.isFinite(x) || !(x > 0 && x < 1)) throw new UserError(`--cutoff '${text}': the fraction must be a number in (0, 1), got '${f}'`);
  return x;
}

export function parseCutoff(text: string): CutoffSpec {
  const s = text.trim();
  if (s === 'scree' || s === 'xmeans' || s === 'ptest') return { kind: s };
  // '+' before a letter joins budgets ('1e+0' stays a number)
  if (/\+\s*[a-z]/i.test(s)) {
    // a compound budget: every part a global budget, each kind once, in one order (filters, params,
    // flops) so that a budget has one name whichever order it was written in
    const parts = s.split(/\+(?=\s*[a-z])/i).map((t) => {
      const m = /^(filters|params|flops):(.+)$/.exec(t.trim());
      if (!m) throw new UserError(`--cutoff '${text}': '${t.trim()}' is not a global budget (filters:F, params:F, flops:F); only those combine with +`);
      return { kind: m[1] as BudgetKind, fraction: fractionOf(text, m[2]!) };
    });
    const kinds = parts.map((p) => p.kind);
    const twice = kinds.find((k, i) => kinds.indexOf(k) !== i);
    if (twice) throw new UserError(`--cutoff '${text}': ${twice} is named twice`);
    const order: BudgetKind[] = ['filters', 'params', 'flops'];
    parts.sort((a, b) => order.indexOf(a.kind) - order.indexOf(b.kind));
    return { ...parts[0]!, also: parts.slice(1) };
  }
  const m = /^(keep|filters|params|flops):(.+)$/.exec(s);
  if (!m) throw new UserError(`--cutoff '${text}' is not one of: ${CUTOFF_FORMS}`);
  return { kind: m[1] as 'keep' | BudgetKind, fraction: fractionOf(text, m[2]!) };
}

export function cutoffName(c: CutoffSpec): string {
  if (c.kind === 'keep') return `keep:${c.fraction}`;
  return 'fraction' in c ? budgetName(c as Budget) : c.kind;
}
