// A deliberately straightforward implementation of the reference greedy selection, for tests and
// the benchmark baseline: every candidate's joint Gram matrix is rebuilt from the per-filter Gram
// matrices and both entropies come from a full eigenvalue computation. No shortcuts.
import { labelGram, meanSigma, medianSigma, referenceSigma, squaredDistances, gaussianGram } from './estimators.js';
import type { SigmaMode } from './joint.js';
import type { LayerInput, MapsTensor } from './rank.js';

/** Eigenvalues of a symmetric n x n matrix (e.g. symmetricEigenvalues or the addon's cmiEigvalsh). */
export type Eigvalsh = (a_NxN: Float64Array, n: number) => Float64Array;

function entropy(k: Float64Array, n: number, alpha: number, eig: Eigvalsh): number {
  const a = new Float64Array(k.length);
  for (let i = 0; i < a.length; i++) a[i] = k[i] / n;
  let s = 0;
  for (const l of eig(a, n)) s += Math.pow(Math.abs(l), alpha);
  return Math.log(s) / (1 - alpha);
}

/**
 * One layer's variable: the kernel of a set of its filters, written out from the definitions.
 * 'reference' / 'median': the Hadamard product of the per-filter Gram matrices with one sigma;
 * 'mean': the Gaussian kernel of the set's mean distance matrix, exp(-(mean_{c in S} D_c) / (2 sigma^2)),
 * with 2 sigma^2 = median over pairs of (1/C) sum_c D_c (src/cmi/joint.ts, meanRule).
 */
function layerVariable(m: MapsTensor, rule: SigmaMode): (set: number[]) => Float64Array {
  const { n, c, hw, data } = m;
  const dist = Array.from({ length: c }, (_, f) => squaredDistances(data, n, hw, f * hw, c * hw));
  if (rule === 'mean') {
    const sigma = meanSigma(data, n, c, hw).sigma;
    return (set) => {
      const mean = new Float64Array(n * n);
      for (const f of set) for (let i = 0; i < mean.length; i++) mean[i] += dist[f][i];
      for (let i = 0; i < mean.length; i++) mean[i] /= Math.max(1, set.length);
      return gaussianGram(mean, sigma);
    };
  }
  const sigma = rule === 'median' ? medianSigma(data, n, c * hw).sigma : referenceSigma(n, hw);
  const grams = dist.map((d) => gaussianGram(d, sigma));
  return (set) => {
    const k = new Float64Array(n * n).fill(1);
    for (const f of set) for (let i = 0; i < k.length; i++) k[i] *= grams[f][i];
    return k;
  };
}

/**
 * Greedy order (C-1 selections, or maxSelect) and winning scores I(Y; B u selected), natural log,
 * with I(Y; all u B) (the CMI curve is miAll - scores). `sigma` is RankLayerOptions.sigma (labels: the
 * reference rule); each before-layer is one variable holding all its filters.
 */
export function naiveOrder(
  input: LayerInput,
  alpha: number,
  eig: Eigvalsh,
  maxSelect?: number,
  sigma: SigmaMode = 'reference',
): { order: number[]; scores: number[]; miAll: number } {
  const { n, c } = input.maps;
  const layer = layerVariable(input.maps, sigma);
  const before = (input.before ?? []).map((b) => layerVariable(b, sigma)(Array.from({ length: b.c }, (_, f) => f)));
  const kY = labelGram(input.labels, referenceSigma(n, input.classes));
  const sY = entropy(kY, n, alpha, eig);
  const mi = (set: number[]) => {
    const joint = new Float64Array(n * n).fill(1);
    for (const g of [...before, layer(set)]) {
      for (let i = 0; i < joint.length; i++) joint[i] *= g[i];
    }
    const sX = entropy(joint, n, alpha, eig);
    for (let i = 0; i < joint.length; i++) joint[i] *= kY[i];
    return sY + sX - entropy(joint, n, alpha, eig);
  };
  const order: number[] = [];
  const scores: number[] = [];
  const remaining = Array.from({ length: c }, (_, i) => i);
  const steps = Math.min(c - 1, maxSelect ?? c - 1);
  for (let step = 0; step < steps; step++) {
    let best = -1;
    let bestScore = -Infinity;
    for (const f of remaining) {
      const score = mi([...order, f]);
      if (score > bestScore) {
        bestScore = score;
        best = f;
      }
    }
    order.push(best);
    scores.push(bestScore);
    remaining.splice(remaining.indexOf(best), 1);
  }
  return { order, scores, miAll: mi(Array.from({ length: c }, (_, f) => f)) };
}
