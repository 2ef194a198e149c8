import type { Model } from '../ir/model.js';
import { UserError } from '../util/errors.js';

/** The mean/std used for the input, and where they came from. */
export interface Normalization {
  mean: number[];
  std: number[];
  /** 'options': --mean/--std; 'metadata': the model's metadata_props */
  source: 'metadata' | 'options';
  /** set when --mean/--std were given although the model has mean/std metadata (which they replaced) */
  overrode?: 'metadata';
}

/**
 * The model's metadata_props `key` (`mean` or `std`) as a JSON array of finite numbers, undefined
 * when absent; `where` (a file name or a function) prefixes the error for anything else.
 */
export function metadataArray(model: Model, key: 'mean' | 'std', where: string): number[] | undefined {
  const raw = model.metadata[key];
  if (raw === undefined) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    throw new UserError(`${where}: metadata '${key}' is not a JSON array: ${raw}`);
  }
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) {
    throw new UserError(`${where}: metadata '${key}' must be a JSON array of numbers, got ${raw}`);
  }
  return v as number[];
}

/**
 * Input normalisation, one value per input channel. The rules:
 * - --mean and --std come together: one without the other is an error;
 * - when given they win, also over the model's metadata_props (`mean`, `std` as JSON arrays):
 *   source 'options', and `overrode: 'metadata'` when the model has such metadata (the caller
 *   decides whether to say so; nothing is printed here);
 * - otherwise the metadata is used (source 'metadata'); a model without it is an error asking for
 *   --mean and --std;
 * - a wrong number of values is an error naming the option (or metadata key) and the channel
 *   count; std values must be > 0.
 */
export function resolveNormalization(
  model: Model,
  modelPath: string,
  opts: { mean?: readonly number[]; std?: readonly number[] },
  channels: number,
): Normalization {
  const hasMeta = model.metadata.mean !== undefined || model.metadata.std !== undefined;
  if ((opts.mean === undefined) !== (opts.std === undefined)) {
    const [given, missing] = opts.mean !== undefined ? ['--mean', '--std'] : ['--std', '--mean'];
    throw new UserError(`${given} needs ${missing} as well (one value per channel each)`);
  }
  if (opts.mean !== undefined && opts.std !== undefined) {
    for (const [name, v] of [['--mean', opts.mean], ['--std', opts.std]] as const) {
      if (v.length !== channels)
        throw new UserError(`${name} has ${v.length} value(s), the data has ${channels} channel(s): give one value per channel`);
      if (!v.every((x) => Number.isFinite(x))) throw new UserError(`${name} values must be finite numbers, got [${v}]`);
    }
    if (opts.std.some((s) => !(s > 0))) throw new UserError(`--std values must be > 0, got [${opts.std}]`);
    return { mean: [...opts.mean], std: [...opts.std], source: 'options', ...(hasMeta ? { overrode: 'metadata' as const } : {}) };
  }
  const parse = (key: 'mean' | 'std') => metadataArray(model, key, modelPath);
  const mean = parse('mean');
  const std = parse('std');
  if (!mean || !std) {
    const what = hasMeta ? `has metadata '${mean ? 'mean' : 'std'}' but not '${mean ? 'std' : 'mean'}'` : 'has no mean/std metadata';
    throw new UserError(`${modelPath}: the model ${what}; pass --mean and --std (one value per channel)`);
  }
  for (const [name, v] of [['mean', mean], ['std', std]] as const) {
    if (v.length !== channels)
      throw new UserError(
        `${modelPath}: metadata '${name}' has ${v.length} value(s), the data has ${channels} channel(s); pass --mean and --std to override it`,
      );
  }
  if (std.some((s) => !(s > 0))) throw new UserError(`${modelPath}: metadata 'std' values must be > 0, got [${std}]`);
  return { mean, std, source: 'metadata' };
}
