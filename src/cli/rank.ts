// `cmiprune rank`: order one layer's filters by CMI from activation/label .npy files and print
// one JSON object on stdout (progress on stderr).
import { InvalidArgumentError, type Command } from 'commander';

import { rankModel, type ModelRanking } from '../cmi/rank-model.js';
import { choiceOption, floatListOption, floatOption, intOption } from '../util/options.js';
import { rankLayer, type MapsTensor, type LayerRankResult, type PermutationTestOptions, type SigmaMode } from '../cmi/rank.js';
import { SIGMA_MODES } from '../cmi/joint.js';
import { readNpy, type NpyArray } from '../data/npy.js';
import { UserError } from '../util/errors.js';
import { progress } from '../util/progress.js';

export interface RankOptions {
  activations: string;
  labels: string;
  before?: string[];
  alpha?: number;
  maxSelect?: number;
  threads?: number;
  log2?: boolean;
  classes?: number;
  backend?: 'auto' | 'ts' | 'native';
  /** keep the greedy order below the noise floor instead of the own-MI tie-break */
  greedyTail?: boolean;
  /** kernel width of the maps: 'reference' (default), 'median' or 'mean' (RankLayerOptions.sigma) */
  sigma?: SigmaMode;
  /** --ptest [P]: permutation test with P permutations (true: the default 100) */
  ptest?: number | true;
  /** --ptest-eta: significance level of the permutation test (default 0.05) */
  ptestEta?: number;
}

/** The permutation-test options of --ptest [P] / --ptest-eta, or undefined without --ptest. */
function permutationTestOf(opts: RankOptions): PermutationTestOptions | undefined {
  if (opts.ptest === undefined) {
    if (opts.ptestEta !== undefined) throw new UserError('rank: --ptest-eta needs --ptest');
    return undefined;
  }
  return { permutations: opts.ptest === true ? 100 : opts.ptest, eta: opts.ptestEta ?? 0.05, seed: 0 };
}

export interface RankOutput extends Omit<LayerRankResult, 'sigma'> {
  activations: string;
  labelsFile: string;
  beforeFiles: string[];
  shape: number[];
  classes: number;
  threads: number;
  logBaseName: string;
  sigma: { rule: LayerRankResult['sigma']['rule']; labels: number; maps: number; before: number[] };
}

function asFloatMaps(a: NpyArray, file: string, what: string): MapsTensor & { shape: number[] } {
  if (a.dtype !== 'float32' && a.dtype !== 'float64') {
    throw new UserError(`${file}: ${what} must be float32 or float64, got ${a.dtype}`);
  }
  if (a.shape.length !== 4 && a.shape.length !== 3) {
    throw new UserError(`${file}: ${what} must have shape [N, C, H, W] (or [N, C, L]), got [${a.shape.join(', ')}]`);
  }
  const [n, c] = a.shape;
  const hw = a.shape.slice(2).reduce((x, y) => x * y, 1);
  if (n < 1 || c < 1 || hw < 1) throw new UserError(`${file}: ${what} has an empty dimension: [${a.shape.join(', ')}]`);
  const data = a.data as Float32Array | Float64Array;
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) {
      const sample = Math.floor(i / (c * hw));
      const channel = Math.floor(i / hw) % c;
      throw new UserError(`${file}: ${what} contain ${data[i]} (sample ${sample}, channel ${channel})`);
    }
  }
  return { data, n, c, hw, shape: a.shape };
}

function asLabels(a: NpyArray, file: string, classesOpt: number | undefined): { labels: Int32Array; classes: number } {
  const values = Array.from(a.data as ArrayLike<number | bigint>, Number);
  if (a.shape.length === 1) {
    const labels = new Int32Array(values.length);
    values.forEach((v, i) => {
      if (!Number.isInteger(v) || v < 0) throw new UserError(`${file}: label ${i} is ${v}, expected a class index >= 0`);
      labels[i] = v;
    });
    const max = labels.reduce((m, v) => Math.max(m, v), 0);
    const classes = classesOpt ?? max + 1;
    if (max >= classes) throw new UserError(`${file}: label ${max} is out of range for --classes ${classes}`);
    return { labels, classes };
  }
  if (a.shape.length === 2) {
    const [n, k] = a.shape;
    if (classesOpt !== undefined && classesOpt !== k) {
      throw new UserError(`${file}: one-hot labels have ${k} columns but --classes is ${classesOpt}`);
    }
    const labels = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const row = values.slice(i * k, (i + 1) * k);
      const hot = row.findIndex((v) => v === 1);
      if (hot < 0 || row.some((v, j) => j !== hot && v !== 0)) {
        throw new UserError(`${file}: row ${i} is not one-hot (${row.join(', ')})`);
      }
      labels[i] = hot;
    }
    return { labels, classes: k };
  }
  throw new UserError(`${file}: labels must have shape [N] (class indices) or [N, K] (one-hot), got [${a.shape.join(', ')}]`);
}

/** Loads the files, validates them against each other and orders the layer. */
export async function runRank(opts: RankOptions): Promise<RankOutput> {
  const maps = asFloatMaps(readNpy(opts.activations), opts.activations, 'activations');
  const { labels, classes } = asLabels(readNpy(opts.labels), opts.labels, opts.classes);
  if (labels.length !== maps.n) {
    throw new UserError(`${opts.labels}: ${labels.length} labels, but ${opts.activations} has ${maps.n} samples`);
  }
  const beforeFiles = opts.before ?? [];
  const before = beforeFiles.map((f) => {
    const b = asFloatMaps(readNpy(f), f, 'before maps');
    if (b.n !== maps.n) throw new UserError(`${f}: ${b.n} samples, but ${opts.activations} has ${maps.n}`);
    return b;
  });
  const alpha = opts.alpha ?? 1.01;
  if (alpha === 1) throw new UserError('--alpha must not be 1 (Renyi entropy of order 1 is the Shannon limit, not supported)');
  const threads = opts.threads ?? 2;
  const permutationTest = permutationTestOf(opts);
  const steps = Math.min(maps.c - 1, opts.maxSelect ?? maps.c - 1);
  const bar = progress(`rank ${maps.c} filters`, steps);
  let last = 0;
  let result: LayerRankResult;
  try {
    result = await rankLayer(
      { maps, labels, classes, before },
      {
        alpha,
        logBase: opts.log2 ? '2' : 'e',
        maxSelect: opts.maxSelect,
        backend: opts.backend ?? 'auto',
        threads,
        tail: opts.greedyTail ? 'greedy' : 'secondary',
        sigma: opts.sigma ?? 'reference',
        ...(permutationTest ? { permutationTest } : {}),
        onProgress: (p) => {
          bar.tick(p.step - last, { evals: `${p.evaluated}/${p.totalEvaluations}` });
          last = p.step;
        },
      },
    );
  } finally {
    bar.done();
  }
  return {
    activations: opts.activations,
    labelsFile: opts.labels,
    beforeFiles,
    shape: maps.shape,
    classes,
    threads,
    logBaseName: opts.log2 ? 'log2 (bits)' : 'natural log (nats)',
    ...result,
    sigma: { rule: result.sigma.rule, labels: result.sigma.labels, maps: result.sigma.maps, before: result.sigma.before },
  };
}

export function registerRank(program: Command): void {
  program
    .command('rank')
    .description(
      'Order the filters of one layer (or a model\'s conv layers) by greedy CMI selection (matrix Renyi entropy); prints one JSON object',
    )
    .option('--activations <file>', 'float32/float64 .npy of the layer maps [N, C, H, W] (after BN+ReLU)')
    .option('--labels <file>', '.npy of class indices [N] or one-hot labels [N, K]')
    .option('--model <file>', 'instead of .npy files: an ONNX model whose conv layers are ranked from engine activations')
    .option('--data <name>', 'with --model: data set the sample is drawn from (training split)', choiceOption(['cifar10'] as const), 'cifar10')
    .option('--samples <n>', 'with --model: size of the seeded class-balanced sample', intOption(2), 256)
    .option('--seed <s>', 'with --model: sample seed', intOption(0), 0)
    .option('--layer <name>', "with --model: 'all', a conv node name, or a 0-based conv index", 'all')
    .option('--checkpoint <dir>', 'with --model: per-layer checkpoint directory (default: under the cache, keyed by the inputs)')
    .option('--fresh', 'with --model: ignore existing checkpoints')
    .option('--mean <m>', 'with --model: per-channel mean when the model has no metadata', floatListOption)
    .option('--std <s>', 'with --model: per-channel std when the model has no metadata', floatListOption)
    .option('--before <file>', 'selected maps [N, C\', H\', W\'] of another layer to condition on (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--alpha <a>', 'Renyi order (> 0, != 1)', (v: string) => {
      const a = Number(v);
      if (v.trim() === '' || !Number.isFinite(a) || a <= 0 || a === 1) throw new InvalidArgumentError('alpha must be a number > 0 and != 1');
      return a;
    }, 1.01)
    .option('--max-select <k>', 'stop after k selections (default: until one filter remains)', intOption(1))
    .option('--threads <t>', 'worker threads', intOption(1, 1024), 2)
    .option('--classes <k>', 'number of classes for [N] labels (default: max label + 1)', intOption(1))
    .option('--log2', 'report information in bits (default: natural log, nats)')
    .option('--greedy-tail', 'below the noise floor keep the greedy (round-off decided) order instead of the own-MI tie-break')
    .option(
      '--sigma <rule>',
      "kernel width of the maps: 'reference' (5 N^(-1/(4+H*W)), the paper's), 'median' (median heuristic over the whole layer, " +
        "scale-invariant) or 'mean' (a set's kernel from its filters' mean distance, width = the median heuristic / C: scale-invariant, does not saturate as filters are added)",
      choiceOption(SIGMA_MODES),
      'reference' as SigmaMode,
    )
    .option('--ptest [P]', 'permutation test after each selection (SPEC section 4) with P permutations (default 100), until the first p >= --ptest-eta', intOption(1))
    .option('--ptest-eta <eta>', 'significance level of --ptest (default 0.05)', floatOption(0, true))
    .option('--backend <b>', 'auto | native | ts', (v: string) => {
      if (!['auto', 'native', 'ts'].includes(v)) throw new InvalidArgumentError('expected one of: auto, native, ts');
      return v as 'auto' | 'native' | 'ts';
    }, 'auto' as const)
    .action(async (opts: RankOptions & RankModelCliOptions) => {
      const out = opts.model ? await runRankModel(opts) : await runRank(requireFiles(opts));
      process.stdout.write(JSON.stringify(out) + '\n');
    });
}

interface RankModelCliOptions {
  model?: string;
  data: 'cifar10';
  samples: number;
  seed: number;
  layer: string;
  checkpoint?: string;
  fresh?: boolean;
  mean?: number[];
  std?: number[];
}

function requireFiles(opts: RankOptions): RankOptions {
  if (!opts.activations || !opts.labels) {
    throw new UserError('rank needs either --activations and --labels (.npy files) or --model (an ONNX file)');
  }
  return opts;
}

function runRankModel(opts: RankOptions & RankModelCliOptions): Promise<ModelRanking> {
  if (opts.activations || opts.labels || (opts.before && opts.before.length > 0)) {
    throw new UserError('rank: --model takes activations from the model; do not combine it with --activations/--labels/--before');
  }
  if (opts.backend && opts.backend !== 'auto') throw new UserError('rank: --backend applies to .npy input only');
  return rankModel({
    model: opts.model!,
    data: opts.data,
    samples: opts.samples,
    seed: opts.seed,
    layer: opts.layer,
    alpha: opts.alpha ?? 1.01,
    log2: opts.log2,
    maxSelect: opts.maxSelect,
    threads: opts.threads ?? 2,
    mean: opts.mean,
    std: opts.std,
    checkpointDir: opts.checkpoint,
    fresh: opts.fresh,
    greedyTail: opts.greedyTail,
    sigma: opts.sigma ?? 'reference',
    permutationTest: permutationTestOf(opts),
  });
}
