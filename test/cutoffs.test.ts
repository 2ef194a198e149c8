// Cut-off rules on constructed curves whose right answer is known by hand. The off-by-one
// (curve index i <-> keep = i + 1) is pinned by exact keeps in every rule's test.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { candidateKeeps, chooseCandidate, curveReading, fractionCutoff, ptestCutoff, runningMinimum, screeCutoff, withCandidate, xmeansCutoff } from '../src/prune/cutoffs.js';
import { UserError } from '../src/util/errors.js';

const userError = (re: RegExp) => (e: unknown) => e instanceof UserError && re.test(e.message);

// ------------------------------------------------------------------------------------ scree

// Steep for the first 5 points (halving), then a gentle linear tail; all values exact in binary.
//   i:    0   1   2   3   4    5    6    7    8    9
//   c:   64  32  16   8   4  3.5    3  2.5    2  1.5
//   q[1] = (64-32)/(32-16) = 2     q[2] = 16/8 = 2     q[3] = 8/4 = 2
//   q[4] = (8-4)/(4-3.5)   = 8     <- the elbow: big drop into point 4, small drop after it
//   q[5..8] = 0.5/0.5      = 1     q[0] = q[9] = -1 (endpoints)
// Point 4 is the state after keeping 5 filters: keep = 5 (channels = 11).
const screeCurve = [64, 32, 16, 8, 4, 3.5, 3, 2.5, 2, 1.5];

test('scree: picks the elbow, keep = index + 1, candidates by q desc with ties by lower index', () => {
  const d = screeCutoff(screeCurve);
  assert.equal(d.keep, 5);
  assert.equal(d.rule, 'scree: largest q');
  assert.deepEqual(d.evidence.q, [-1, 2, 2, 2, 8, 1, 1, 1, 1, -1]);
  assert.deepEqual(d.evidence.candidates, [
    { index: 4, keep: 5, q: 8 },
    { index: 1, keep: 2, q: 2 },
    { index: 2, keep: 3, q: 2 },
  ]);
  assert.deepEqual(d.evidence.chosen, { index: 4, keep: 5, q: 8 });
  assert.equal(d.evidence.channels, 11);
});

test('scree: candidates option, minKeep clamp, zero denominator, endpoints never candidates', () => {
  assert.equal((screeCutoff(screeCurve, { candidates: 1 }).evidence.candidates as unknown[]).length, 1);
  assert.equal((screeCutoff(screeCurve, { candidates: 50 }).evidence.candidates as unknown[]).length, 8); // interior only

  const clamped = screeCutoff(screeCurve, { minKeep: 7 });
  assert.equal(clamped.keep, 7);
  assert.match(clamped.rule, /5 clamped to \[minKeep=7, channels=11\]/);
  assert.equal(screeCutoff(screeCurve, { minKeep: 99 }).keep, 11);

  // SPEC: q = 0 where c[i] - c[i+1] == 0, so an exactly flat tail hides its own elbow:
  // q[1] = (16-10)/(10-4) = 1, q[2] = (10-4)/(4-1) = 2, q[3] = 3/0 -> 0, q[4] = 0/0 -> 0 -> keep 3
  const flat = screeCutoff([16, 10, 4, 1, 1, 1]);
  assert.deepEqual(flat.evidence.q, [-1, 1, 2, 0, 0, -1]);
  assert.equal(flat.keep, 3);

  // a rising curve is read as its running minimum [1, 1, 1]: flat, q = 0 (not the ratio of two
  // rises, 1); still interior, and candidates never include the -1 endpoints
  const neg = screeCutoff([1, 2, 3]);
  assert.deepEqual(neg.evidence.q, [-1, 0, -1]);
  assert.deepEqual(neg.evidence.candidates, [{ index: 1, keep: 2, q: 0 }]);

  // overflowing ratios stay finite (JSON-safe) and still rank first: q[1] = 2e308 / 4e292 -> +Inf
  const huge = screeCutoff([1e308, -1e308, -1e308 - 4e292, -1e308 - 8e292]);
  assert.ok((huge.evidence.q as number[]).every(Number.isFinite));
  assert.equal((huge.evidence.q as number[])[1], Number.MAX_VALUE);
  assert.equal(huge.keep, 2);
});

test('scree: fewer than 3 points has no interior q -> keep all', () => {
  for (const c of [[5], [5, 1]]) {
    const d = screeCutoff(c);
    assert.equal(d.keep, c.length + 1);
    assert.deepEqual(d.evidence.candidates, []);
  }
});

test('withCandidate replaces keep by another candidate and refuses a non-candidate', () => {
  const d = screeCutoff(screeCurve);
  const r = withCandidate(d, 3, 'held-out accuracy 93.1%');
  assert.equal(r.keep, 3);
  assert.equal(r.rule, 'scree: largest q; then candidate keep=3 by held-out accuracy 93.1%');
  assert.deepEqual(r.evidence.replaced, { from: 5, to: 3, why: 'held-out accuracy 93.1%' });
  assert.equal(d.keep, 5, 'original untouched');
  assert.equal(d.evidence.replaced, undefined);
  assert.notEqual(r.evidence.candidates, d.evidence.candidates, 'a copy, not shared');

  assert.throws(() => withCandidate(d, 4, 'x'), userError(/keep=4 is not a candidate/));
  assert.throws(() => withCandidate(d, 6, 'x'), userError(/not a candidate/));
  assert.throws(() => withCandidate(screeCutoff([1, 2]), 3, 'x'), userError(/no candidates/));
  assert.throws(() => withCandidate(fractionCutoff(8, 0.5), 4, 'x'), userError(/no candidates/));

  const x = xmeansCutoff(threePlateaus);
  assert.equal(withCandidate(x, 21, 'accuracy').keep, 21);
  assert.throws(() => withCandidate(x, 20, 'accuracy'), userError(/not a candidate/));
});

test('scree: input errors name the function', () => {
  assert.throws(() => screeCutoff([]), userError(/^screeCutoff: the curve is empty/));
  assert.throws(() => screeCutoff([1, NaN, 0]), userError(/^screeCutoff: curve\[1\] is NaN/));
  assert.throws(() => screeCutoff([1, Infinity]), userError(/^screeCutoff: curve\[1\]/));
  assert.throws(() => screeCutoff([3, 2, 1], { candidates: 0 }), userError(/candidates/));
  assert.throws(() => screeCutoff([3, 2, 1], { minKeep: 0 }), userError(/minKeep/));
});

// ----------------------------------------------------------------------------------- X-Means

// three plateaus of 10 points: indices 0-9 at 1.0, 10-19 at 0.5, 20-29 at 0.0 (channels 31).
// Regime changes at points 10 and 20 -> keeps 11 and 21; the first (11) is the decision.
const threePlateaus = [...Array(10).fill(1), ...Array(10).fill(0.5), ...Array(10).fill(0)];
// a real-scale two-regime curve: 8 points at 2e-2, then 8 at 1e-3 (channels 17). Unscaled, the
// index (0..15) would swamp CMI differences of 1e-2; scaled, the break is obvious.
const twoPlateaus = [...Array(8).fill(0.02), ...Array(8).fill(0.001)];

test('xmeans: candidates are the plateau starts (+1), keep = the first', () => {
  const d = xmeansCutoff(threePlateaus);
  assert.deepEqual(
    (d.evidence.clusters as { start: number; end: number; size: number }[]).map((c) => [c.start, c.end, c.size]),
    [[0, 9, 10], [10, 19, 10], [20, 29, 10]],
  );
  assert.deepEqual(d.evidence.candidates, [{ index: 10, keep: 11 }, { index: 20, keep: 21 }]);
  assert.equal(d.keep, 11);
  assert.match(d.rule, /^xmeans: first regime change \(3 clusters\)$/);
  assert.deepEqual((d.evidence.clusters as { meanCurve: number }[]).map((c) => c.meanCurve), [1, 0.5, 0]);
  assert.equal(typeof d.evidence.bic, 'number');

  const two = xmeansCutoff(twoPlateaus);
  assert.deepEqual(two.evidence.candidates, [{ index: 8, keep: 9 }]);
  assert.equal(two.keep, 9);

  // CMI-scale values over a 64-channel index: only the [0,1] scaling of both axes lets the
  // 2e-4 -> 1e-5 break count against the index spread (the long tail still splits, later)
  const real = xmeansCutoff([...Array(8).fill(2e-4), ...Array(56).fill(1e-5)]);
  assert.deepEqual((real.evidence.candidates as { index: number }[])[0], { index: 8, keep: 9 });
  assert.equal(real.keep, 9);

  // other seeds may land in another local optimum of Lloyd (a plateau cut in two) but every
  // seed must find both plateau starts and the same first regime change
  for (let seed = 0; seed < 50; seed++) {
    const s = xmeansCutoff(threePlateaus, { seed });
    const keeps = (s.evidence.candidates as { keep: number }[]).map((c) => c.keep);
    assert.ok(keeps.includes(11) && keeps.includes(21), `seed ${seed}: ${keeps}`);
    assert.equal(s.keep, 11, `seed ${seed}`);
  }
});

test('xmeans: steep head then long flat tail: the first cut ends the head', () => {
  // 4 points falling 1 -> 0.7 then 40 points near 0 (slight slope): point 4 opens the tail -> keep 5
  const c = [1, 0.9, 0.8, 0.7, ...Array.from({ length: 40 }, (_, i) => 0.02 - i * 1e-4)];
  const d = xmeansCutoff(c);
  assert.equal((d.evidence.candidates as { index: number }[])[0].index, 4);
  assert.equal(d.keep, 5);
});

test('xmeans: deterministic given the seed; kmax bounds the clusters; minKeep clamps', () => {
  const c = Array.from({ length: 63 }, (_, i) => 0.0138 * Math.pow(1 / 36, i / 8) + (i % 5) * 1e-6);
  assert.deepEqual(xmeansCutoff(c, { seed: 7 }), xmeansCutoff(c, { seed: 7 }));
  assert.deepEqual(xmeansCutoff(threePlateaus), xmeansCutoff(threePlateaus, { seed: 0 }));

  const k1 = xmeansCutoff(threePlateaus, { kmax: 1 });
  assert.equal((k1.evidence.clusters as unknown[]).length, 1);
  assert.equal(k1.keep, 31, 'one cluster: no regime change, keep all');
  assert.match(k1.rule, /one cluster/);
  const k2 = xmeansCutoff(threePlateaus, { kmax: 2 });
  assert.equal((k2.evidence.clusters as unknown[]).length, 2);
  for (const kmax of [3, 5, 20]) assert.ok((xmeansCutoff(c, { kmax }).evidence.clusters as unknown[]).length <= kmax);

  const m = xmeansCutoff(threePlateaus, { minKeep: 15 });
  assert.equal(m.keep, 15);
  assert.deepEqual(m.evidence.candidates, [{ index: 10, keep: 15 }, { index: 20, keep: 21 }]);
  assert.match(m.rule, /11 clamped/);

  assert.equal(xmeansCutoff([0.3]).keep, 2); // one point, one cluster: keep all

  // a 2-point cluster split into singletons has no variance estimate (N - K = 0): never kept
  // (pyclustering scores it +Inf and would cut this flat curve after its first point)
  const flat = xmeansCutoff([1, 1, 1, 1, 1]);
  assert.ok((flat.evidence.clusters as { size: number }[]).every((c) => c.size >= 2), JSON.stringify(flat.evidence.clusters));
});

test('xmeans: input errors name the function', () => {
  assert.throws(() => xmeansCutoff([]), userError(/^xmeansCutoff: the curve is empty/));
  assert.throws(() => xmeansCutoff([1, NaN]), userError(/^xmeansCutoff: curve\[1\] is NaN/));
  assert.throws(() => xmeansCutoff([1, 0], { kmax: 0 }), userError(/kmax/));
  assert.throws(() => xmeansCutoff([1, 0], { seed: 0.5 }), userError(/seed/));
  assert.throws(() => xmeansCutoff([1, 0], { minKeep: -1 }), userError(/minKeep/));
});

// ------------------------------------------------------------- non-monotone curves (--sigma mean)
// CMI with --sigma mean: averaging a filter into the set can lower the MI, so a curve may go below 0
// and rise again. Every curve-based rule reads the running minimum (cutoffs.ts header).

// conv0 of the small CNN (test/support/images.ts writeSmallCnn) under --sigma mean, 4 decimals:
// below 0 throughout, minimum at index 1 (keep 2), then rising back toward 0
const meanCurve = [-0.0566, -0.0759, -0.0549, -0.0382, -0.0275, -0.0205, -0.0147, -0.0105, -0.0073, -0.0048, -0.0029, -0.0013];

test('runningMinimum / curveReading: identity (null) on non-increasing curves; where a curve rises, its minimum and sign', () => {
  assert.deepEqual(runningMinimum(screeCurve), screeCurve);
  assert.deepEqual(runningMinimum(threePlateaus), threePlateaus);
  assert.equal(curveReading(screeCurve), null);
  assert.equal(curveReading([1, 1, 0.5]), null, 'flat is not a rise');
  assert.deepEqual(runningMinimum([32, 16, 4, -4, -2, 0, 2, 3]), [32, 16, 4, -4, -4, -4, -4, -4]);
  assert.deepEqual(curveReading([32, 16, 4, -4, -2, 0, 2, 3]), { read: 'running minimum', risesAt: 4, argmin: 3, min: -4, belowZero: true });
  assert.deepEqual(curveReading([3, 1, 2]), { read: 'running minimum', risesAt: 2, argmin: 1, min: 1, belowZero: false });
  assert.equal(screeCutoff(screeCurve).evidence.reading, null);
  assert.equal(xmeansCutoff(threePlateaus).evidence.reading, null);
});

test('scree on curves that dip below 0 and rise again: q on the running minimum, the minimum is a candidate, no elbow on the rise', () => {
  // running minimum [32, 16, 4, -4, -4, -4, -4, -4]: q[1] = 16/12, q[2] = 12/8 = 1.5, q[3] = 8/0 -> 0,
  // flat after. On the raw curve q[3] = 8/-2 = -4 (the minimum never a candidate) and q[6] =
  // (0-2)/(2-3) = 2, an 'elbow' of the rise, would win: keep 7.
  const d = screeCutoff([32, 16, 4, -4, -2, 0, 2, 3]);
  assert.deepEqual(d.evidence.q, [-1, 16 / 12, 1.5, 0, 0, 0, 0, -1]);
  assert.deepEqual(d.evidence.candidates, [
    { index: 2, keep: 3, q: 1.5 },
    { index: 1, keep: 2, q: 16 / 12 },
    { index: 3, keep: 4, q: 0 },
  ]);
  assert.equal(d.keep, 3);
  assert.deepEqual(d.evidence.reading, { read: 'running minimum', risesAt: 4, argmin: 3, min: -4, belowZero: true });

  // falls, crosses 0, minimum at index 3 (keep 4), rises to 0.5: raw candidates were keeps 3, 5, 6
  // (two of them on the rise); read as the running minimum none lies past the minimum
  const e = screeCutoff([0.5, 0.25, -0.25, -0.5, -0.375, -0.25, -0.125, 0, 0.125, 0.25, 0.375, 0.5]);
  assert.deepEqual((e.evidence.candidates as { keep: number }[]).map((c) => c.keep), [3, 2, 4]);
  assert.equal(e.keep, 3);

  // the real --sigma mean curve: every point below 0, the rise after the minimum is flat when read;
  // the minimum (keep 2) is the decision (raw: keep 4, candidates 4, 5, 7 all on the rise)
  const m = screeCutoff(meanCurve);
  assert.deepEqual((m.evidence.candidates as { keep: number }[]).map((c) => c.keep), [2, 3, 4]);
  assert.equal(m.keep, 2);
  assert.ok((m.evidence.q as number[]).every((q) => Number.isFinite(q) && q >= -1));
  assert.doesNotThrow(() => JSON.stringify(m)); // JSON-safe: no NaN, no Infinity
  assert.ok(!/null/.test(JSON.stringify(m.evidence.q)));
  // withCandidate still works on the recorded candidates
  assert.equal(withCandidate(m, 4, 'held-out accuracy').keep, 4);
  assert.throws(() => withCandidate(m, 5, 'x'), userError(/not a candidate/));
});

test('xmeans on curves that dip below 0 and rise again: clustered as the running minimum, the first cut at the minimum, meanCurve raw', () => {
  // raw: clusters [0..3], [4..11] -> keep 5, a cut on the rise; read: [0], [1..11] -> keep 2
  const m = xmeansCutoff(meanCurve);
  assert.deepEqual((m.evidence.clusters as { start: number; end: number }[]).map((c) => [c.start, c.end]), [[0, 0], [1, 11]]);
  assert.deepEqual(m.evidence.candidates, [{ index: 1, keep: 2 }]);
  assert.equal(m.keep, 2);
  assert.equal((m.evidence.clusters as { meanCurve: number }[])[0]!.meanCurve, meanCurve[0]);
  assert.ok(Math.abs((m.evidence.clusters as { meanCurve: number }[])[1]!.meanCurve - meanCurve.slice(1).reduce((a, b) => a + b, 0) / 11) < 1e-15);
  assert.equal((m.evidence.reading as { argmin: number }).argmin, 1);

  // falls through 0 to its minimum at index 3, then rises: raw keep 4, read keep 3
  const e = xmeansCutoff([0.5, 0.25, -0.25, -0.5, -0.375, -0.25, -0.125, 0, 0.125, 0.25, 0.375, 0.5]);
  assert.equal(e.keep, 3);
  // the same curve shifted below 0 throughout: the scaling to [0, 1] makes the sign irrelevant
  const shifted = xmeansCutoff([0.5, 0.25, -0.25, -0.5, -0.375, -0.25, -0.125, 0, 0.125, 0.25, 0.375, 0.5].map((v) => v - 10));
  assert.deepEqual(shifted.evidence.candidates, e.evidence.candidates);
  assert.equal(typeof shifted.evidence.bic === 'number' || shifted.evidence.bic === null, true);
  assert.doesNotThrow(() => JSON.stringify(shifted));
  // deterministic for every seed's first regime change
  for (let seed = 0; seed < 20; seed++) assert.equal(xmeansCutoff(meanCurve, { seed }).keep, 2, `seed ${seed}`);
});

test('ptest and keep:F read no curve: a curve below 0 cannot change them (p-values and channels only)', () => {
  // the permutation test's p-values are probabilities whatever the curve's sign; keep:F counts channels
  assert.equal(ptestCutoff([0, 0.01, 0.2], { channels: 13 }).keep, 2);
  assert.equal(ptestCutoff([0.3], { channels: 13, minKeep: 2 }).keep, 2);
  assert.equal(fractionCutoff(13, 0.5).keep, 7);
});

// -------------------------------------------------------------------------- permutation test

test('ptest: stops at the first p >= eta and keeps the selections before it', () => {
  // p[3] = 0.3: the 4th selection added nothing significant -> keep the 3 before it; the later
  // p[4] = 0 is never reached (the reference breaks there too)
  const d = ptestCutoff([0.0, 0.01, 0.02, 0.3, 0.0]);
  assert.equal(d.keep, 3);
  assert.equal(d.evidence.stopIndex, 3);
  assert.equal(d.evidence.eta, 0.05);
  assert.match(d.rule, /^ptest: first p >= 0.05 at selection 4$/);

  // eta edge: p == eta stops (reference: p_value >= eta), just below does not
  assert.equal(ptestCutoff([0, 0.01, 0.05, 0], { eta: 0.05 }).keep, 2);
  assert.equal(ptestCutoff([0, 0.01, 0.0499, 0]).keep, 5);
  assert.equal(ptestCutoff([0, 0.2, 0.3], { eta: 0.25 }).keep, 2);
});

test('ptest: never stopping keeps all channels', () => {
  const d = ptestCutoff([0, 0.01, 0.04]);
  assert.equal(d.keep, 4); // 3 tested selections of a 4-channel layer
  assert.equal(d.evidence.stopIndex, null);
  assert.match(d.rule, /never stopped/);
  // a run cut short: the untested filters are kept too
  assert.equal(ptestCutoff([0, 0.01, 0.04], { channels: 64 }).keep, 64);
  // but a stop inside the tested part is unaffected by channels
  assert.equal(ptestCutoff([0, 0.5], { channels: 64 }).keep, 1);
});

test('ptest: minKeep clamps a stop at the first selection', () => {
  assert.equal(ptestCutoff([0.5, 0, 0]).keep, 1); // keep 0 -> minKeep 1
  const d = ptestCutoff([0, 0.5, 0], { minKeep: 3 });
  assert.equal(d.keep, 3);
  assert.match(d.rule, /1 clamped/);
  assert.equal(ptestCutoff([0.9], { minKeep: 5 }).keep, 2); // never above channels
});

test('ptest: input errors name the function', () => {
  assert.throws(() => ptestCutoff([]), userError(/^ptestCutoff: no p-values/));
  assert.throws(() => ptestCutoff([0, NaN]), userError(/^ptestCutoff: pValues\[1\] is NaN/));
  assert.throws(() => ptestCutoff([-1]), userError(/pValues\[0\] is -1/)); // the reference's "not computed"
  assert.throws(() => ptestCutoff([0, 1.5]), userError(/pValues\[1\]/));
  assert.throws(() => ptestCutoff([0], { eta: 0 }), userError(/eta/));
  assert.throws(() => ptestCutoff([0], { eta: NaN }), userError(/eta/));
  assert.throws(() => ptestCutoff([0, 0, 0], { channels: 3 }), userError(/channels=3/));
});

// --------------------------------------------------------------------------------- fraction

test('fraction: round(F * channels), at least minKeep, at most channels', () => {
  assert.deepEqual(fractionCutoff(64, 0.5), { keep: 32, rule: 'keep:0.5', evidence: { channels: 64, keepFraction: 0.5, minKeep: 1, rounded: 32 } });
  assert.equal(fractionCutoff(10, 0.25).keep, 3); // 2.5 rounds up
  assert.equal(fractionCutoff(10, 0.01).keep, 1); // 0 -> minKeep
  assert.equal(fractionCutoff(10, 0.01, 4).keep, 4);
  assert.equal(fractionCutoff(5, 1).keep, 5);
  assert.equal(fractionCutoff(5, 0.5, 8).keep, 5);
  assert.equal(fractionCutoff(3, 0.34).rule, 'keep:0.34');
});

test('fraction: input errors name the function', () => {
  for (const f of [0, -0.1, 1.5, NaN]) assert.throws(() => fractionCutoff(10, f), userError(/^fractionCutoff: the keep fraction must be in \(0, 1\]/));
  assert.throws(() => fractionCutoff(0, 0.5), userError(/^fractionCutoff: channels/));
  assert.throws(() => fractionCutoff(2.5, 0.5), userError(/channels/));
  assert.throws(() => fractionCutoff(10, 0.5, 0), userError(/minKeep/));
});

test('chooseCandidate: the fewest channels within the tolerance of the held-out baseline, else the most; the evidence records the accuracies', () => {
  const d = { keep: 20, rule: 'scree', evidence: { candidates: [{ keep: 30 }, { keep: 10 }, { keep: 20 }, { keep: 20 }] } };
  assert.deepEqual(candidateKeeps(d), [10, 20, 30]);
  // 10 loses 0.02, 20 loses 0.004: the fewest within 0.005 is 20 (the automatic choice itself)
  const same = chooseCandidate(d, { 10: 0.88, 20: 0.896, 30: 0.9 }, 0.9, 0.005);
  assert.equal(same.keep, 20);
  assert.match(same.rule, /^scree; fewest channels among the candidates/);
  assert.deepEqual(same.evidence.heldoutAccuracy, { 10: 0.88, 20: 0.896, 30: 0.9 });
  assert.equal(same.evidence.heldoutBaseline, 0.9);
  // a looser tolerance takes 10, recorded as a replacement of the automatic choice
  const fewer = chooseCandidate(d, { 10: 0.88, 20: 0.896, 30: 0.9 }, 0.9, 0.03);
  assert.equal(fewer.keep, 10);
  const replaced = fewer.evidence.replaced as { from: number; to: number };
  assert.deepEqual([replaced.from, replaced.to], [20, 10]);
  // none within: the candidate keeping the most
  const most = chooseCandidate(d, { 10: 0.5, 20: 0.6, 30: 0.7 }, 0.9, 0.005);
  assert.equal(most.keep, 30);
  assert.match(most.rule, /no candidate within 0\.005/);
  // no candidates: the decision as it was; a missing accuracy is an error naming the candidate
  const bare = { keep: 5, rule: 'keep:0.5', evidence: {} };
  assert.equal(chooseCandidate(bare, {}, 0.9, 0.005), bare);
  assert.throws(() => chooseCandidate(d, { 10: 0.9, 20: 0.9 }, 0.9, 0.005), /no held-out accuracy for candidate keep=30/);
});
