// A deliberately straightforward implementation of the reference greedy selection, for tests and
// the benchmark baseline: every candidate's joint Gram matrix is rebuilt from the per-filter Gram
// matrices and both entropies come from a full eigenvalue computation. No shortcuts.
import { labelGram, referenceSigma, squaredDistances, gaussianGram } from './estimators.js';
import type { LayerInput } from './order.js';

/** Eigenvalues of a symmetric n x n matrix (e.g. symmetricEigenvalues or the addon's cmiEigvalsh). */
export type Eigvalsh = (a_NxN: Float64Array, n: number) => Float64Array;

function entropy(k: Float64Array, n: number, alpha: number, eig: Eigvalsh): number {
  const a = new Float64Array(k.length);
  for (let i = 0; i < a.length; i++) a[i] = k[i] / n;
  let s = 0;
  for (const l of eig(a, n)) s += Math.pow(Math.abs(l), alpha);
  return Math.log(s) / (1 - alpha);
}

/** Greedy order (C-1 selections, or maxSelect) and winning scores I(Y; B u selected), natural log. */
export function naiveOrder(
  input: LayerInput,
  alpha: number,
  eig: Eigvalsh,
  maxSelect?: number,
): { order: number[]; scores: number[] } {
  const { n, c, hw, data } = input.maps;
  const perFilter = (d: Float32Array | Float64Array, cc: number, h: number, sigma: number) =>
    Array.from({ length: cc }, (_, f) => gaussianGram(squaredDistances(d, n, h, f * h, cc * h), sigma));
  const grams = perFilter(data, c, hw, referenceSigma(n, hw));
  const before = (input.before ?? []).flatMap((b) => perFilter(b.data, b.c, b.hw, referenceSigma(n, b.hw)));
  const kY = labelGram(input.labels, referenceSigma(n, input.classes));
  const sY = entropy(kY, n, alpha, eig);
  const order: number[] = [];
  const scores: number[] = [];
  const remaining = Array.from({ length: c }, (_, i) => i);
  const steps = Math.min(c - 1, maxSelect ?? c - 1);
  for (let step = 0; step < steps; step++) {
    let best = -1;
    let bestScore = -Infinity;
    for (const f of remaining) {
      const joint = new Float64Array(n * n).fill(1);
      for (const g of [...before, ...order.map((s) => grams[s]), grams[f]]) {
        for (let i = 0; i < joint.length; i++) joint[i] *= g[i];
      }
      const sX = entropy(joint, n, alpha, eig);
      for (let i = 0; i < joint.length; i++) joint[i] *= kY[i];
      const score = sY + sX - entropy(joint, n, alpha, eig);
      if (score > bestScore) {
        bestScore = score;
        best = f;
      }
    }
    order.push(best);
    scores.push(bestScore);
    remaining.splice(remaining.indexOf(best), 1);
  }
  return { order, scores };
}
