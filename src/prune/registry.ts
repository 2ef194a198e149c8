// The criteria by name: what each ranking carries and how each is made. The prune stage's one
// list of criteria (CLI choices, experiment settings and validation read it).
import { chipCriterion, hrankCriterion } from './activation-criteria.js';
import { cmiCriterion, type CmiSettings } from './cmi-criterion.js';
import { l1Criterion, randomCriterion } from './criteria.js';
import type { Criterion } from './types.js';

export const CRITERIA = ['cmi', 'l1', 'random', 'hrank', 'chip'] as const;
export type CriterionName = (typeof CRITERIA)[number];

/**
 * What each criterion's ranking carries, declared once (a new criterion cannot compile without its
 * row): a curve (scree, X-Means and the curve allocation read it), p-values (ptest), a conditional
 * form (the compact and full formulations condition it on other layers' kept maps).
 */
export const CRITERION_TRAITS: Readonly<Record<CriterionName, { curve: boolean; pValues: boolean; conditional: boolean }>> = {
  cmi: { curve: true, pValues: true, conditional: true },
  l1: { curve: true, pValues: false, conditional: false },
  random: { curve: false, pValues: false, conditional: false },
  hrank: { curve: true, pValues: false, conditional: false },
  chip: { curve: true, pValues: false, conditional: false },
};

/** Every criterion by name, with the settings the data-driven ones read. */
export function makeCriterion(name: CriterionName, settings: CmiSettings): Criterion {
  switch (name) {
    case 'l1':
      return l1Criterion;
    case 'random':
      return randomCriterion(settings.seed);
    case 'hrank':
      return hrankCriterion();
    case 'chip':
      return chipCriterion({ samples: settings.samples });
    case 'cmi':
      return cmiCriterion(settings);
  }
}
