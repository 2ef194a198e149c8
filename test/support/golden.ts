// The golden vectors of the authors' reference code (shared test data, in GOLDEN_DIR): one JSON
// file per case, its inputs and the reference's order, CMI curve, widths and entropies.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

import type { LayerInput } from '../../src/cmi/rank.js';
import { GOLDEN_DIR } from './shared.js';

export interface GoldenCase {
  name: string;
  N: number;
  C: number;
  H: number;
  W: number;
  classes: number;
  alpha: number;
  labels: number[];
  featureMaps: number[];
  input: number[];
  inputShape: number[];
  beforeMaps?: number[];
  beforeMapsShape?: number[];
  expected: {
    order: number[];
    cmi: number[];
    miSelectedLabels: number[];
    miInputSelected: number[];
    sigmaLabels: number;
    sigmaMaps: number;
    entropyLabels: number;
    referenceSeconds: number;
  };
}

/** Every case in GOLDEN_DIR, by file name; `name` is the file name. */
export function goldenCases(): GoldenCase[] {
  return readdirSync(GOLDEN_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => ({ name: f, ...JSON.parse(readFileSync(join(GOLDEN_DIR, f), 'utf8')) }));
}

/** The case as rankLayer's input: maps, labels, the before-layer if any and (withInput) the network input. */
export function goldenInput(g: GoldenCase, withInput = true): LayerInput {
  const [ni, ci, hi, wi] = g.inputShape;
  return {
    maps: { data: Float64Array.from(g.featureMaps), n: g.N, c: g.C, hw: g.H * g.W },
    labels: g.labels,
    classes: g.classes,
    ...(g.beforeMaps && g.beforeMapsShape
      ? {
          before: [
            {
              data: Float64Array.from(g.beforeMaps),
              n: g.beforeMapsShape[0],
              c: g.beforeMapsShape[1],
              hw: g.beforeMapsShape[2] * g.beforeMapsShape[3],
            },
          ],
        }
      : {}),
    ...(withInput ? { input: { data: Float64Array.from(g.input), dim: ci * hi * wi, sigmaDim: hi * wi } } : {}),
  };
  void ni;
}
