// CMI ordering benchmark.
//   node dist/bench/cmi.js                       seeded synthetic layer N=256, C=64, 8x8: the project's
//                                                ordering vs a straightforward exact implementation
//   node dist/bench/cmi.js --vgg16 [--alpha A] [--steps K] [--tail greedy|secondary]
//                                                all 13 VGG16-BN layers (synthetic maps of the real
//                                                shapes and activation scales); --steps K times only
//                                                the first K selections per layer and extrapolates
//   node dist/bench/cmi.js --vgg16 --real [--model m.onnx] [--alpha A] [--steps K]
//                                                the same on real activations of the shared
//                                                VGG16-BN (256 class-balanced CIFAR-10 train images;
//                                                the --steps estimate scales setup time too: use K >= 4)
//   node dist/bench/cmi.js --ptest P [--eta E] [--sigma reference|median] [--steps K]
//                                                the synthetic layer ordered plainly and with the
//                                                permutation test (P permutations, stop at the first
//                                                p >= E; E > 1 tests every selection): the test's cost
//                                                relative to plain ordering, in total and per step
// Prints one JSON object on stdout.
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { rankLayer, type LayerInput } from '../src/cmi/rank.js';
import { loadLinalg } from '../src/cmi/native.js';
import { naiveOrder } from '../src/cmi/naive.js';
import { referenceSigma } from '../src/cmi/estimators.js';
import { Rng } from '../src/util/rng.js';

const { values } = parseArgs({
  options: {
    vgg16: { type: 'boolean', default: false },
    alpha: { type: 'string', default: '1.01' },
    steps: { type: 'string' },
    threads: { type: 'string', default: '2' },
    tail: { type: 'string', default: 'greedy' },
    n: { type: 'string', default: '256' },
    c: { type: 'string', default: '64' },
    side: { type: 'string', default: '8' },
    seed: { type: 'string', default: '1' },
    real: { type: 'boolean', default: false },
    ptest: { type: 'string' },
    eta: { type: 'string', default: '0.05' },
    sigma: { type: 'string', default: 'reference' },
    // ../shared beside the checkout (dist/bench/cmi.js is two levels below the repo root)
    model: {
      type: 'string',
      default: join(process.env.CMIPRUNE_SHARED ?? fileURLToPath(new URL('../../../shared', import.meta.url)), 'models/vgg16_bn_cifar10.onnx'),
    },
  },
});
const alpha = Number(values.alpha);
const threads = Number(values.threads);
const tail = values.tail === 'secondary' ? 'secondary' : 'greedy';

function gaussian(rng: Rng): number {
  const u = 1 - rng.next();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
}

/**
 * Synthetic post-ReLU maps [N, C, HW] whose median per-filter kernel exponent D / (2 sigma^2)
 * is `exponent` (SPEC section 8 measures 0.25-0.5 in VGG16 layers 1-2 ... < 0.001 in 8-13).
 */
function syntheticLayer(rng: Rng, n: number, c: number, hw: number, classes: number, exponent: number): LayerInput {
  const sigma = referenceSigma(n, hw);
  // E||x - y||^2 = 2 Var(relu(z)) s^2 hw, Var(relu(z)) = 1/2 - 1/(2 pi)
  const s = Math.sqrt((exponent * 2 * sigma * sigma) / (2 * (0.5 - 1 / (2 * Math.PI)) * hw));
  const labels = Array.from({ length: n }, () => rng.int(classes));
  const data = new Float32Array(n * c * hw);
  for (let i = 0; i < n; i++) {
    for (let f = 0; f < c; f++) {
      const shift = 0.3 * ((labels[i] * 7 + f) % classes) / classes; // some label signal
      for (let k = 0; k < hw; k++) data[(i * c + f) * hw + k] = Math.max(0, gaussian(rng) + shift) * s;
    }
  }
  return { maps: { data, n, c, hw }, labels, classes };
}

async function compareWithBaseline(): Promise<void> {
  const n = Number(values.n);
  const c = Number(values.c);
  const side = Number(values.side);
  const layer = syntheticLayer(new Rng(Number(values.seed)), n, c, side * side, 10, 0.1);
  const t0 = performance.now();
  const ours = await rankLayer(layer, { alpha, threads, backend: 'native', tail: 'greedy' });
  const oursSeconds = (performance.now() - t0) / 1000;
  const lin = loadLinalg();
  const t1 = performance.now();
  const base = naiveOrder(layer, alpha, (a, nn) => lin.cmiEigvalsh(a, nn));
  const baseSeconds = (performance.now() - t1) / 1000;
  const sameOrder = JSON.stringify(ours.order) === JSON.stringify(base.order);
  const maxScoreDiff = Math.max(...ours.scores.map((s, i) => Math.abs(s - base.scores[i])));
  const out = {
    case: { n, c, hw: side * side, alpha, threads, seed: Number(values.seed) },
    projectSeconds: oursSeconds,
    baselineSeconds: baseSeconds,
    speedup: baseSeconds / oursSeconds,
    sameOrder,
    maxScoreDiff,
    noiseFloorStep: ours.noiseFloorStep,
    baseline: 'per candidate: joint Gram rebuilt from the per-filter Grams, two LAPACK eigvalsh, one thread',
  };
  process.stdout.write(JSON.stringify(out) + '\n');
  if (!sameOrder) {
    process.stderr.write('bench: orders differ\n');
    process.exitCode = 1;
  }
}

// VGG16-BN for CIFAR-10: (filters, map side, median per-filter exponent from SPEC section 8)
const VGG16: [number, number, number][] = [
  [64, 32, 0.35], [64, 32, 0.35],
  [128, 16, 0.06], [128, 16, 0.06],
  [256, 8, 0.01], [256, 8, 0.01], [256, 8, 0.01],
  [512, 4, 0.0008], [512, 4, 0.0008], [512, 4, 0.0008],
  [512, 2, 0.0008], [512, 2, 0.0008], [512, 2, 0.0008],
];

async function vgg16(): Promise<void> {
  const n = Number(values.n);
  const steps = values.steps === undefined ? undefined : Number(values.steps);
  const rng = new Rng(Number(values.seed));
  const layers = [];
  let total = 0;
  for (let l = 0; l < VGG16.length; l++) {
    const [c, side, exponent] = VGG16[l];
    const layer = syntheticLayer(rng, n, c, side * side, 10, exponent);
    const t0 = performance.now();
    let first = { seconds: 0, evaluated: 0 };
    const r = await rankLayer(layer, {
      alpha,
      threads,
      backend: 'native',
      tail,
      maxSelect: steps,
      onProgress: (p) => {
        if (p.step === 1) first = { seconds: p.seconds, evaluated: p.evaluated };
      },
    });
    const seconds = (performance.now() - t0) / 1000;
    // extrapolate a partial run: setup + first step as measured, then the measured time per
    // candidate evaluation of steps 2..K for all remaining evaluations of a full run
    const fullEvals = (c * (c + 1)) / 2 - 1;
    const rate = (r.seconds - first.seconds) / Math.max(1, r.evaluated - first.evaluated);
    const estimate = steps === undefined ? seconds : first.seconds + rate * (fullEvals - first.evaluated);
    total += estimate;
    const row = { layer: l + 1, c, hw: side * side, seconds, evaluated: r.evaluated, estimatedFullSeconds: estimate, noiseFloorStep: r.noiseFloorStep };
    layers.push(row);
    process.stderr.write(JSON.stringify(row) + '\n');
  }
  process.stdout.write(
    JSON.stringify({
      vgg16: true,
      n,
      alpha,
      threads,
      tail,
      stepsPerLayer: steps ?? 'all',
      totalSeconds: total,
      estimated: steps !== undefined,
      peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
      layers,
    }) + '\n',
  );
}

async function vgg16Real(): Promise<void> {
  const { rankModel } = await import('../src/cmi/rank-model.js');
  const steps = values.steps === undefined ? undefined : Number(values.steps);
  const { mkdtempSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const r = await rankModel({
    model: values.model!,
    data: 'cifar10',
    samples: Number(values.n),
    seed: 0,
    layer: 'all',
    alpha,
    maxSelect: steps,
    threads,
    fresh: true,
    checkpointDir: mkdtempSync(join(tmpdir(), 'cmiprune-bench-')),
    greedyTail: tail === 'greedy',
  });
  let total = 0;
  const layers = r.layers.map((l) => {
    // a partial run is extrapolated by candidate evaluations
    const full = (l.channels * (l.channels + 1)) / 2 - 1;
    const estimate = steps === undefined ? l.seconds : (l.seconds * full) / Math.max(1, l.evaluated);
    total += estimate;
    return { layer: l.layer, c: l.channels, seconds: l.seconds, evaluated: l.evaluated, estimatedFullSeconds: estimate, noiseFloorStep: l.noiseFloorStep };
  });
  process.stdout.write(
    JSON.stringify({
      vgg16: 'real',
      model: values.model,
      n: r.samples,
      alpha,
      threads,
      tail,
      stepsPerLayer: steps ?? 'all',
      orderingSeconds: total,
      estimated: steps !== undefined,
      wallSeconds: r.seconds,
      peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
      layers,
    }) + '\n',
  );
}

/** The permutation test's cost on the synthetic bench layer, against the same ordering without it. */
async function permutationTestCost(): Promise<void> {
  const n = Number(values.n);
  const c = Number(values.c);
  const side = Number(values.side);
  const permutations = Number(values.ptest);
  const eta = Number(values.eta);
  const sigma = values.sigma === 'median' ? 'median' : 'reference';
  const maxSelect = values.steps === undefined ? undefined : Number(values.steps);
  const layer = syntheticLayer(new Rng(Number(values.seed)), n, c, side * side, 10, 0.1);
  const common = { alpha, threads, backend: 'native' as const, tail: 'greedy' as const, sigma, maxSelect } as const;
  // per-step times from the progress callback
  const timed = async (extra: object) => {
    const at: number[] = [];
    const r = await rankLayer(layer, { ...common, ...extra, onProgress: (p) => at.push(p.seconds) });
    return { r, at };
  };
  const plain = await timed({});
  const tested = await timed({ permutationTest: { permutations, eta, seed: 0 } });
  if (JSON.stringify(plain.r.order) !== JSON.stringify(tested.r.order)) {
    process.stderr.write('bench: the permutation test changed the order\n');
    process.exitCode = 1;
  }
  const pt = tested.r.permutationTest!;
  const testedSteps = tested.r.pValues!.length;
  const stepTime = (at: number[], i: number) => at[i] - (i === 0 ? 0 : at[i - 1]);
  let plainTested = 0;
  let withTest = 0;
  for (let i = 0; i < testedSteps; i++) {
    plainTested += stepTime(plain.at, i);
    withTest += stepTime(tested.at, i);
  }
  process.stdout.write(
    JSON.stringify({
      case: { n, c, hw: side * side, alpha, threads, seed: Number(values.seed), sigma, steps: plain.r.order.length },
      permutations,
      eta,
      stopIndex: pt.stopIndex,
      pValues: tested.r.pValues,
      testedSteps,
      plainSeconds: plain.r.seconds,
      withTestSeconds: tested.r.seconds,
      totalRatio: tested.r.seconds / plain.r.seconds,
      // over the selections that were tested: ordering + test vs ordering alone
      testedStepsPlainSeconds: plainTested,
      testedStepsWithTestSeconds: withTest,
      testSecondsPerTestedStep: (withTest - plainTested) / Math.max(1, testedSteps),
      plainSecondsPerStep: plain.r.seconds / Math.max(1, plain.r.order.length),
      entropyPairs: { ordering: plain.r.evaluated, test: pt.evaluated },
    }) + '\n',
  );
}

await (values.ptest !== undefined ? permutationTestCost() : values.vgg16 ? (values.real ? vgg16Real() : vgg16()) : compareWithBaseline());
