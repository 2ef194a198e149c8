// The --cutoff option: a per-layer rule (scree, xmeans, ptest), a per-layer fraction (keep:F) or a
// global budget (filters:F, params:F, flops:F), parsed once with one clear error.
import { UserError } from '../util/errors.js';
import type { BudgetKind } from './allocate.js';

export type CutoffSpec =
  | { kind: 'scree' | 'xmeans' | 'ptest' }
  | { kind: 'keep'; fraction: number }
  | { kind: BudgetKind; fraction: number };

export const CUTOFF_FORMS = 'scree, xmeans, ptest, keep:F, filters:F, params:F, flops:F (F in (0,1))';

export function parseCutoff(text: string): CutoffSpec {
  const s = text.trim();
  if (s === 'scree' || s === 'xmeans' || s === 'ptest') return { kind: s };
  const m = /^(keep|filters|params|flops):(.+)$/.exec(s);
  if (!m) throw new UserError(`--cutoff '${text}' is not one of: ${CUTOFF_FORMS}`);
  const f = Number(m[2]);
  if (!Number.isFinite(f) || !(f > 0 && f < 1)) throw new UserError(`--cutoff '${text}': the fraction must be a number in (0, 1), got '${m[2]}'`);
  return { kind: m[1] as 'keep' | BudgetKind, fraction: f };
}

export function cutoffName(c: CutoffSpec): string {
  return 'fraction' in c ? `${c.kind}:${c.fraction}` : c.kind;
}
