// Learning-rate schedules as pure functions of the optimizer step (0-based), so a run can be
// resumed or plotted without replaying state.

/**
 * Cosine annealing from `base` to 0 over `total` steps (PyTorch CosineAnnealingLR with T_max = total,
 * eta_min = 0), after an optional linear warm-up: steps 0..warmup-1 ramp base/warmup .. base.
 */
export function cosine(step: number, total: number, base: number, warmup = 0): number {
  checkStep('cosine', step, total);
  if (!(warmup >= 0 && warmup < total)) throw new Error(`cosine: warmup must be in [0, ${total}), got ${warmup}`);
  if (step < warmup) return (base * (step + 1)) / warmup;
  const t = (step - warmup) / (total - warmup);
  return 0.5 * base * (1 + Math.cos(Math.PI * t));
}

/**
 * PyTorch's OneCycleLR (two phases, cosine annealing, three_phase = False), learning rate:
 * starts at max/divFactor, rises to max at step pctStart*total - 1, then falls to
 * max/(divFactor*finalDivFactor) at step total - 1. Its momentum is `oneCycleMomentum`.
 */
export function oneCycle(
  step: number,
  total: number,
  max: number,
  pctStart = 0.3,
  divFactor = 25,
  finalDivFactor = 1e4,
): number {
  const { rising, pct } = oneCyclePhase('oneCycle', step, total, pctStart);
  const initial = max / divFactor;
  const min = initial / finalDivFactor;
  return rising ? annealCos(initial, max, pct) : annealCos(max, min, pct);
}

/**
 * OneCycleLR's momentum (cycle_momentum = True): the mirror image of its learning rate, from
 * `maxMomentum` down to `baseMomentum` at the learning-rate peak and back to `maxMomentum`.
 */
export function oneCycleMomentum(step: number, total: number, baseMomentum = 0.85, maxMomentum = 0.95, pctStart = 0.3): number {
  const { rising, pct } = oneCyclePhase('oneCycleMomentum', step, total, pctStart);
  return rising ? annealCos(maxMomentum, baseMomentum, pct) : annealCos(baseMomentum, maxMomentum, pct);
}

/** Where `step` is in OneCycleLR's two phases (same arithmetic as its get_lr): rising or falling, and how far. */
function oneCyclePhase(name: string, step: number, total: number, pctStart: number): { rising: boolean; pct: number } {
  checkStep(name, step, total);
  if (!(pctStart > 0 && pctStart < 1)) throw new Error(`${name}: pctStart must be in (0, 1), got ${pctStart}`);
  const end1 = pctStart * total - 1;
  const end2 = total - 1;
  // (end1 = 0 happens when pctStart * total = 1: the peak is step 0; PyTorch divides by zero there)
  if (step <= end1) return { rising: true, pct: end1 > 0 ? step / end1 : 1 };
  return { rising: false, pct: (step - end1) / (end2 - end1) };
}

function annealCos(start: number, end: number, pct: number): number {
  return end + ((start - end) / 2) * (Math.cos(Math.PI * pct) + 1);
}

function checkStep(name: string, step: number, total: number): void {
  if (!Number.isInteger(total) || total < 1) throw new Error(`${name}: total steps must be a positive integer, got ${total}`);
  if (!Number.isInteger(step) || step < 0 || step >= total) throw new Error(`${name}: step ${step} is outside [0, ${total})`);
}

export type ScheduleName = 'cosine' | 'onecycle' | 'constant';

/** The learning rate of `step` for a named schedule peaking at (or fixed to) `lr`. */
export function scheduleLr(name: ScheduleName, step: number, total: number, lr: number): number {
  switch (name) {
    case 'cosine':
      return cosine(step, total, lr);
    case 'onecycle':
      return oneCycle(step, total, lr);
    case 'constant':
      return lr;
    default:
      throw new Error(`unknown schedule ${JSON.stringify(name)} (cosine, onecycle or constant)`);
  }
}

/** The momentum of `step`: OneCycleLR's cycle for 'onecycle' when `cycle` is on, else `momentum`. */
export function scheduleMomentum(name: ScheduleName, step: number, total: number, momentum: number, cycle: boolean): number {
  return name === 'onecycle' && cycle ? oneCycleMomentum(step, total) : momentum;
}
