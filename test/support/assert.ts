// Closeness checks shared by the tests: one rule, element by element, with an absolute and a
// relative tolerance.
import assert from 'node:assert/strict';

/**
 * An element passes when |actual - expected| <= abs or |actual - expected| <= rel * |expected|
 * (a missing bound is 0). A number t is { abs: t, rel: t }: the error measured relative to
 * max(1, |expected|). NaN never passes.
 */
export type Tolerance = number | { abs?: number; rel?: number };

/**
 * actual and expected have the same length and every element is within `tol` (see Tolerance);
 * otherwise fails naming `what`, the first element out of tolerance and how many are.
 */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, tol: Tolerance): void {
  const { abs = 0, rel = 0 } = typeof tol === 'number' ? { abs: tol, rel: tol } : tol;
  assert.equal(actual.length, expected.length, `${what}: length`);
  let first = -1;
  let bad = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    if (d <= abs || d <= rel * Math.abs(expected[i]!)) continue;
    if (first < 0) first = i;
    bad++;
  }
  if (first >= 0) {
    const a = actual[first]!, e = expected[first]!;
    assert.fail(`${what}[${first}]: ${a} vs ${e} (diff ${a - e}; tolerance abs ${abs}, rel ${rel}; ${bad} of ${expected.length} elements out of tolerance)`);
  }
}

/**
 * Tensors (anything with shape and data) of equal shape whose values are close: the rule of
 * assertClose with tolerance `tol` (default 1e-5, relative to max(1, |expected|)). Signature-compatible
 * with engine.test.ts's local assertClose(got, want, what, tol = 1e-5), so that file can adopt it.
 */
export function assertTensorClose(
  actual: { shape: readonly number[]; data: ArrayLike<number> },
  expected: { shape: readonly number[]; data: ArrayLike<number> },
  what: string,
  tol: Tolerance = 1e-5,
): void {
  assert.deepEqual([...actual.shape], [...expected.shape], `${what}: shape`);
  assertClose(actual.data, expected.data, what, tol);
}
