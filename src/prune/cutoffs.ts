// Automatic per-layer cut-offs (SPEC section 4): how many channels of one group to keep, as PURE
// functions of a criterion's result (`GroupRanking.curve` / `.pValues`). No I/O, no model, no
// randomness except X-Means' seeded k-means++ (same seed -> same decision).
//
// THE OFF-BY-ONE (settled here once, used by every rule below):
//   curve[i] is the importance left out AFTER the first i+1 channels of the order are kept, so
//   curve index i  <->  keep = i + 1.   A curve of length n belongs to channels C = n + 1 (the
//   greedy selection stops when one filter remains; keeping all C leaves nothing out).
//   pValues[i] is the permutation test of the (i+1)-th selection, i.e. of the filter that made
//   keep = i + 1.
// The reference code (cmiprune/cmiprune, utils/accuracy.py) prunes a candidate index i with
// `select[:i]`, i.e. keeps i filters - one fewer than the point i stands for. We keep i + 1: the
// filter whose arrival produced the point is part of the state the point measures.
//
// Every decision is clamped to [minKeep, C] and says so in `rule` when the clamp bit.
//
// NON-MONOTONE CURVES (settled here once, used by scree, X-Means and the curve allocation in
// ./allocate.ts): a curve is read through its running minimum (`runningMinimum`), the least
// importance left out by keeping AT MOST i+1 channels. CMI with `--sigma mean` can rise again and
// go below 0 (averaging a filter into the set can lower the MI); on a non-increasing curve (every
// other criterion and width rule) the running minimum is the curve itself, so nothing changes there.
//
// X-Means is written by hand: it is ~100 lines and no maintained npm package does Pelleg-Moore
// BIC-splitting X-Means.
import { UserError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import type { CutoffDecision } from './types.js';

// ---------------------------------------------------------------------------------------------
// validation shared by the rules

function checkCurve(fn: string, curve: readonly number[]): void {
  if (!Array.isArray(curve) || curve.length === 0) throw new UserError(`${fn}: the curve is empty (need at least one point)`);
  curve.forEach((v, i) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new UserError(`${fn}: curve[${i}] is ${v}, not a finite number`);
  });
}

function checkMinKeep(fn: string, minKeep: number): void {
  if (!Number.isInteger(minKeep) || minKeep < 1) throw new UserError(`${fn}: minKeep must be an integer >= 1, got ${minKeep}`);
}

/** clamp keep to [minKeep, channels]; minKeep > channels keeps everything (a layer never grows) */
function clampKeep(keep: number, minKeep: number, channels: number): number {
  return Math.min(channels, Math.max(minKeep, keep));
}

function clampNote(raw: number, keep: number, minKeep: number, channels: number): string {
  return raw === keep ? '' : ` (${raw} clamped to [minKeep=${minKeep}, channels=${channels}])`;
}

/**
 * The one reading of a curve every curve-based rule uses: m[i] = min(c[0..i]), the least importance
 * left out by keeping at most i+1 channels (keeping more never counts as leaving more out). A
 * non-increasing curve is returned unchanged (same values). Negative values stay negative.
 */
export function runningMinimum(curve: readonly number[]): number[] {
  const m: number[] = [];
  let lo = Infinity;
  for (const v of curve) m.push((lo = Math.min(lo, v)));
  return m;
}

/**
 * Evidence of the reading: null when the curve is non-increasing (read as it is); else where it
 * first rises (the running minimum is flat from there), its minimum and whether it goes below 0.
 */
export function curveReading(curve: readonly number[]): { read: 'running minimum'; risesAt: number; argmin: number; min: number; belowZero: boolean } | null {
  const rise = curve.findIndex((v, i) => i > 0 && v > curve[i - 1]!);
  if (rise < 0) return null;
  let argmin = 0;
  curve.forEach((v, i) => {
    if (v < curve[argmin]!) argmin = i;
  });
  return { read: 'running minimum', risesAt: rise, argmin, min: curve[argmin]!, belowZero: curve[argmin]! < 0 };
}

// ---------------------------------------------------------------------------------------------
// 1. scree test

/** A scree candidate: curve index, the keep it stands for (index + 1, clamped), its q. */
export interface ScreeCandidate {
  index: number;
  keep: number;
  q: number;
}

/**
 * Scree test (SPEC 4). For interior points of the curve c (length n, channels C = n + 1):
 *
 *     q[i] = (c[i-1] - c[i]) / (c[i] - c[i+1])      1 <= i <= n-2
 *     q[i] = 0   where c[i] - c[i+1] == 0;          q[0] = q[n-1] = -1
 *
 * q[i] is large where the drop INTO point i is big and the drop after it small: the elbow. Point i
 * is the state after keeping i+1 channels, so candidate index i -> keep = i + 1.
 * Candidates: the `candidates` interior indices with the largest q (ties: lower index first);
 * the endpoints' -1 marks them as never candidates. keep = the top candidate's keep.
 * Non-finite q (overflow of finite inputs) is mapped to +-Number.MAX_VALUE (NaN -> 0) so the
 * ordering holds and the evidence stays JSON-safe.
 * Note the SPEC's "0 where the denominator is 0": an exactly flat tail after a drop gives the
 * elbow q = 0; real CMI curves decrease strictly, so this is kept for parity with the reference.
 * Fewer than 3 points leave no interior q: keep all channels, no candidates.
 * A non-monotone curve: q is computed on its running minimum (see the header), so a rise after the
 * minimum is a flat tail (q = 0 there) rather than a ratio of two rises ranked as an elbow, and the
 * minimum itself is not scored negative; `evidence.reading` says so (null: the curve as it is).
 */
export function screeCutoff(curve: number[], opts: { candidates?: number; minKeep?: number } = {}): CutoffDecision {
  const fn = 'screeCutoff';
  checkCurve(fn, curve);
  const top = opts.candidates ?? 3;
  const minKeep = opts.minKeep ?? 1;
  if (!Number.isInteger(top) || top < 1) throw new UserError(`${fn}: candidates must be an integer >= 1, got ${top}`);
  checkMinKeep(fn, minKeep);
  const n = curve.length;
  const channels = n + 1;
  const reading = curveReading(curve);
  const c = runningMinimum(curve); // non-monotone curves: q on the running minimum (header)

  const q = new Array<number>(n).fill(-1);
  for (let i = 1; i < n - 1; i++) {
    const den = c[i] - c[i + 1];
    let v = den === 0 ? 0 : (c[i - 1] - c[i]) / den;
    if (Number.isNaN(v)) v = 0;
    else if (v === Infinity) v = Number.MAX_VALUE;
    else if (v === -Infinity) v = -Number.MAX_VALUE;
    q[i] = v;
  }

  const interior: number[] = [];
  for (let i = 1; i < n - 1; i++) interior.push(i);
  if (interior.length === 0) {
    return {
      keep: channels,
      rule: `scree: fewer than 3 curve points, no interior q; keep all ${channels}`,
      evidence: { q, candidates: [], chosen: null, minKeep, channels, reading },
    };
  }
  interior.sort((a, b) => q[b] - q[a] || a - b);
  const candidates: ScreeCandidate[] = interior
    .slice(0, top)
    .map((index) => ({ index, keep: clampKeep(index + 1, minKeep, channels), q: q[index] }));
  const chosen = candidates[0];
  return {
    keep: chosen.keep,
    rule: `scree: largest q${clampNote(chosen.index + 1, chosen.keep, minKeep, channels)}`,
    evidence: { q, candidates, chosen, minKeep, channels, reading },
  };
}

/**
 * The pipeline may replace an automatic decision's keep by another of its candidates (e.g. by
 * held-out accuracy). Returns a copy with `keep` replaced and the rule extended; refuses a keep
 * that is not one of `evidence.candidates[].keep` (works for scree and X-Means decisions).
 */
export function withCandidate(decision: CutoffDecision, keep: number, why: string): CutoffDecision {
  const candidates = decision.evidence?.candidates;
  if (!Array.isArray(candidates) || candidates.length === 0) {
    throw new UserError(`withCandidate: the decision (${decision.rule}) has no candidates to choose from`);
  }
  const keeps = candidates.map((c: { keep?: unknown }) => c?.keep).filter((k): k is number => typeof k === 'number');
  if (!keeps.includes(keep)) {
    throw new UserError(`withCandidate: keep=${keep} is not a candidate of '${decision.rule}' (candidates keep ${keeps.join(', ')})`);
  }
  if (!why) throw new UserError('withCandidate: say why the candidate replaces the automatic choice');
  return {
    keep,
    rule: `${decision.rule}; then candidate keep=${keep} by ${why}`,
    evidence: { ...structuredClone(decision.evidence), replaced: { from: decision.keep, to: keep, why } },
  };
}

/** The distinct channel counts a scree/X-Means decision offers as candidates, ascending. */
export function candidateKeeps(decision: CutoffDecision): number[] {
  const candidates = (decision.evidence?.candidates as { keep?: unknown }[] | undefined) ?? [];
  return [...new Set(candidates.map((c) => c?.keep).filter((k): k is number => typeof k === 'number'))].sort((a, b) => a - b);
}

/**
 * The tool's choice among a decision's candidates, given each candidate's held-out accuracy with
 * its layer pruned alone: the fewest channels whose accuracy stays within `tolerance` of the
 * unpruned `baseline`; when none does, the candidate keeping the most. Pure: the accuracies are
 * measured by the caller. The evidence records them and the baseline.
 */
export function chooseCandidate(decision: CutoffDecision, heldoutAccuracy: Readonly<Record<number, number>>, baseline: number, tolerance: number): CutoffDecision {
  const cands = candidateKeeps(decision);
  if (cands.length === 0) return decision;
  for (const k of cands) if (typeof heldoutAccuracy[k] !== 'number') throw new UserError(`chooseCandidate: no held-out accuracy for candidate keep=${k} of '${decision.rule}'`);
  const pick = cands.find((k) => baseline - heldoutAccuracy[k]! <= tolerance);
  const chosen = pick ?? cands[cands.length - 1]!;
  const why =
    pick !== undefined
      ? `fewest channels among the candidates whose held-out accuracy (layer pruned alone) is within ${tolerance} of the unpruned ${baseline.toFixed(4)}`
      : `no candidate within ${tolerance} of the unpruned held-out accuracy: the candidate keeping most channels`;
  const nd = chosen === decision.keep ? { ...decision, rule: `${decision.rule}; ${why}` } : withCandidate(decision, chosen, why);
  return { ...nd, evidence: { ...nd.evidence, heldoutAccuracy: { ...heldoutAccuracy }, heldoutBaseline: baseline } };
}

// ---------------------------------------------------------------------------------------------
// 2. X-Means

type Point = readonly [number, number];

function sqDist(a: Point, b: Point): number {
  const dx = a[0] - b[0];
  const dy = a[1] - b[1];
  return dx * dx + dy * dy;
}

/** k-means++ seeding over points[idx]: first centre uniform, then each with probability ~ D^2. */
function kmeansPlusPlus(points: readonly Point[], idx: readonly number[], k: number, rng: Rng): Point[] {
  const centres: Point[] = [points[idx[rng.int(idx.length)]]];
  const d2 = idx.map((i) => sqDist(points[i], centres[0]));
  while (centres.length < k) {
    const total = d2.reduce((s, v) => s + v, 0);
    if (!(total > 0)) break; // every point sits on a centre: fewer distinct centres than asked
    const r = rng.next() * total;
    let j = 0;
    for (let acc = 0; j < idx.length; j++) {
      acc += d2[j];
      if (d2[j] > 0 && acc > r) break;
    }
    if (j === idx.length) while (!(d2[--j] > 0)); // r rounded up to total: the last point off-centre
    const c = points[idx[j]];
    centres.push(c);
    for (let t = 0; t < idx.length; t++) d2[t] = Math.min(d2[t], sqDist(points[idx[t]], c));
  }
  return centres;
}

interface Partition {
  clusters: number[][];
  centres: Point[];
}

/** Lloyd's k-means over points[idx] from the given centres; empty clusters are dropped. */
function lloyd(points: readonly Point[], idx: readonly number[], start: readonly Point[]): Partition {
  let centres = start.slice();
  let clusters: number[][] = [];
  for (let iter = 0; iter < 300; iter++) {
    clusters = centres.map(() => []);
    for (const i of idx) {
      let best = 0;
      for (let c = 1; c < centres.length; c++) if (sqDist(points[i], centres[c]) < sqDist(points[i], centres[best])) best = c;
      clusters[best].push(i);
    }
    clusters = clusters.filter((c) => c.length > 0);
    const next: Point[] = clusters.map((c) => {
      let x = 0;
      let y = 0;
      for (const i of c) {
        x += points[i][0];
        y += points[i][1];
      }
      return [x / c.length, y / c.length] as const;
    });
    // same assignment -> bit-identical means (same summation order): exact compare is the fixpoint
    const same = next.length === centres.length && next.every((p, c) => p[0] === centres[c][0] && p[1] === centres[c][1]);
    centres = next;
    if (same) break;
  }
  return { clusters, centres };
}

/**
 * BIC of a partition, the spherical-Gaussian form of Pelleg & Moore (2000) as pyclustering's
 * xmeans computes it (the library the reference code calls), d = 2 dimensions, N points, K clusters:
 *
 *     sigma^2 = sum_k sum_{x in k} ||x - mu_k||^2 / (N - K)
 *     L_k     = n_k ln n_k - n_k ln N - n_k/2 ln(2 pi) - n_k d/2 ln sigma^2 - (n_k - K)/2
 *     p       = (K - 1) + d K + 1
 *     BIC     = sum_k (L_k - p/2 ln N)
 *
 * (pyclustering subtracts the penalty once per cluster; kept for parity.) sigma^2 = 0 (every point
 * on its centre: a perfect fit) gives +Inf as pyclustering's "-inf multiplier" does.
 * One deliberate deviation: N - K <= 0 (no variance estimate at all, e.g. a 2-point cluster split
 * into two singletons) gives -Inf, so such a split is never kept; pyclustering scores it +Inf,
 * which splits every 2-point cluster and litters short or flat curves with singleton cut-offs.
 */
function bic(points: readonly Point[], part: Partition): number {
  const d = 2;
  const K = part.clusters.length;
  let N = 0;
  let ss = 0;
  part.clusters.forEach((c, k) => {
    N += c.length;
    for (const i of c) ss += sqDist(points[i], part.centres[k]);
  });
  if (N - K <= 0) return -Infinity;
  const sigma2 = ss / (N - K);
  if (!(sigma2 > 0)) return Infinity;
  const p = K - 1 + d * K + 1;
  let score = 0;
  for (const c of part.clusters) {
    const n = c.length;
    const L = n * Math.log(n) - n * Math.log(N) - (n / 2) * Math.log(2 * Math.PI) - ((n * d) / 2) * Math.log(sigma2) - (n - K) / 2;
    score += L - (p / 2) * Math.log(N);
  }
  return score;
}

/** An X-Means cluster of curve points: first and last curve index, size, mean raw curve value. */
export interface XmeansCluster {
  start: number;
  end: number;
  /** points in the cluster (< end - start + 1 when a Voronoi cell catches a non-contiguous run) */
  size: number;
  meanCurve: number;
}

/**
 * X-Means (Pelleg & Moore 2000) on the points (i, c[i]), i = 0..n-1 (SPEC 4).
 * Both coordinates are scaled to [0, 1] first (x = i/(n-1), y = (c - min)/(max - min)): raw
 * indices run to hundreds while CMI values are 1e-2 or smaller, so unscaled distances would be
 * the index alone and the clustering would ignore the curve's shape.
 * Procedure (as pyclustering's xmeans): k-means++ with 2 centres (seeded Rng) -> Lloyd; then
 * repeatedly try to split every cluster in 2 (k-means++ with 2 centres inside the cluster, Lloyd
 * on its points) and keep a split when the cluster's BIC as two beats its BIC as one; re-run
 * Lloyd on all points with the new centres; stop when no split is kept or K reaches kmax.
 * Clusters are sorted by first index. A cluster starting at index s means the curve enters a new
 * regime at point s, the state after s+1 channels: candidate keep = s + 1 (the cluster at 0 is
 * not a cut). keep = the FIRST candidate, the earliest regime change (where the steep head ends);
 * later candidates split the flat tail and stay in the evidence for `withCandidate`. One cluster
 * only (no regime change found): keep all channels.
 * A non-monotone curve is clustered as its running minimum (see the header; `evidence.reading`);
 * `meanCurve` stays the mean of the raw curve's points.
 */
export function xmeansCutoff(curve: number[], opts: { kmax?: number; seed?: number; minKeep?: number } = {}): CutoffDecision {
  const fn = 'xmeansCutoff';
  checkCurve(fn, curve);
  const kmax = opts.kmax ?? 20;
  const seed = opts.seed ?? 0;
  const minKeep = opts.minKeep ?? 1;
  if (!Number.isInteger(kmax) || kmax < 1) throw new UserError(`${fn}: kmax must be an integer >= 1, got ${kmax}`);
  if (!Number.isInteger(seed)) throw new UserError(`${fn}: seed must be an integer, got ${seed}`);
  checkMinKeep(fn, minKeep);
  const n = curve.length;
  const channels = n + 1;
  const reading = curveReading(curve);
  const read = runningMinimum(curve); // non-monotone curves: clustered as the running minimum (header)

  const lo = Math.min(...read);
  const span = Math.max(...read) - lo;
  const points: Point[] = read.map((c, i) => [n > 1 ? i / (n - 1) : 0, span > 0 ? (c - lo) / span : 0] as const);
  const all = points.map((_, i) => i);
  const rng = new Rng(seed);

  let part = lloyd(points, all, kmeansPlusPlus(points, all, Math.min(2, kmax), rng));
  // Lloyd may drop an emptied cluster, so the count need not grow every round: bound the rounds
  for (let round = 0; round < 4 * kmax && part.centres.length < kmax; round++) {
    let free = kmax - part.centres.length;
    const next: Point[] = [];
    part.clusters.forEach((members, k) => {
      if (free > 0 && members.length >= 2) {
        const seeds = kmeansPlusPlus(points, members, 2, rng);
        if (seeds.length === 2) {
          const child = lloyd(points, members, seeds);
          if (child.clusters.length === 2 && bic(points, child) > bic(points, { clusters: [members], centres: [part.centres[k]] })) {
            next.push(...child.centres);
            free--;
            return;
          }
        }
      }
      next.push(part.centres[k]);
    });
    if (next.length === part.centres.length) break;
    part = lloyd(points, all, next);
  }

  const clusters: XmeansCluster[] = part.clusters
    .map((members) => {
      const sorted = [...members].sort((a, b) => a - b);
      return {
        start: sorted[0],
        end: sorted[sorted.length - 1],
        size: sorted.length,
        meanCurve: sorted.reduce((s, i) => s + curve[i], 0) / sorted.length,
      };
    })
    .sort((a, b) => a.start - b.start);
  const candidates = clusters
    .filter((c) => c.start > 0)
    .map((c) => ({ index: c.start, keep: clampKeep(c.start + 1, minKeep, channels) }));
  const score = bic(points, part);
  const evidence = { clusters, candidates, bic: Number.isFinite(score) ? score : null, kmax, seed, minKeep, channels, reading };
  if (candidates.length === 0) {
    return { keep: channels, rule: `xmeans: one cluster, no regime change; keep all ${channels}`, evidence };
  }
  const first = candidates[0];
  return {
    keep: first.keep,
    rule: `xmeans: first regime change (${clusters.length} clusters)${clampNote(first.index + 1, first.keep, minKeep, channels)}`,
    evidence,
  };
}

// ---------------------------------------------------------------------------------------------
// 3. permutation test

/**
 * Permutation-test stop (SPEC 4). pValues[i] tests the (i+1)-th selection (the filter that made
 * keep = i+1). The rule stops at the first i with p[i] >= eta (p == eta stops, as the reference's
 * `p_value >= eta`): that selection added no significant information, so keep = i, the filters
 * selected before it (then clamped to minKeep: p[0] >= eta would keep none).
 * Never stopped (every p < eta): keep all channels - `opts.channels` when given, else
 * pValues.length + 1 (a full run tests C-1 selections). When the run was cut short
 * (pValues.length < channels - 1) the untested filters are kept too: no test, no evidence
 * to prune them.
 */
export function ptestCutoff(pValues: number[], opts: { eta?: number; minKeep?: number; channels?: number } = {}): CutoffDecision {
  const fn = 'ptestCutoff';
  if (!Array.isArray(pValues) || pValues.length === 0) throw new UserError(`${fn}: no p-values (the criterion ran without the permutation test?)`);
  pValues.forEach((p, i) => {
    if (typeof p !== 'number' || !(p >= 0 && p <= 1)) throw new UserError(`${fn}: pValues[${i}] is ${p}, not a probability in [0, 1]`);
  });
  const eta = opts.eta ?? 0.05;
  const minKeep = opts.minKeep ?? 1;
  if (typeof eta !== 'number' || !(eta > 0 && eta <= 1)) throw new UserError(`${fn}: eta must be in (0, 1], got ${eta}`);
  checkMinKeep(fn, minKeep);
  const channels = opts.channels ?? pValues.length + 1;
  if (!Number.isInteger(channels) || channels < pValues.length + 1) {
    throw new UserError(`${fn}: channels=${opts.channels} cannot have ${pValues.length} tested selections (at most channels - 1)`);
  }

  const stop = pValues.findIndex((p) => p >= eta);
  const evidence = { pValues: [...pValues], eta, stopIndex: stop >= 0 ? stop : null, minKeep, channels };
  if (stop < 0) {
    return { keep: channels, rule: `ptest: never stopped (every p < ${eta}); keep all ${channels}`, evidence };
  }
  const keep = clampKeep(stop, minKeep, channels);
  return { keep, rule: `ptest: first p >= ${eta} at selection ${stop + 1}${clampNote(stop, keep, minKeep, channels)}`, evidence };
}

// ---------------------------------------------------------------------------------------------
// 4. fixed fraction

/** keep = max(minKeep, round(keepFraction * channels)), at most channels; rule 'keep:F'. */
export function fractionCutoff(channels: number, keepFraction: number, minKeep = 1): CutoffDecision {
  const fn = 'fractionCutoff';
  if (!Number.isInteger(channels) || channels < 1) throw new UserError(`${fn}: channels must be an integer >= 1, got ${channels}`);
  if (typeof keepFraction !== 'number' || !(keepFraction > 0 && keepFraction <= 1)) {
    throw new UserError(`${fn}: the keep fraction must be in (0, 1], got ${keepFraction}`);
  }
  checkMinKeep(fn, minKeep);
  const raw = Math.round(keepFraction * channels);
  const keep = clampKeep(raw, minKeep, channels);
  return { keep, rule: `keep:${keepFraction}`, evidence: { channels, keepFraction, minKeep, rounded: raw } };
}
