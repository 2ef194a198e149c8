import type { Model } from '../ir/model.js';
import { UserError } from '../util/errors.js';

/**
 * Input normalisation: the model's metadata_props (`mean`, `std` as JSON arrays) win when present,
 * else the --mean/--std options; one value per input channel.
 */
export function resolveNormalization(
  model: Model,
  modelPath: string,
  opts: { mean?: number[]; std?: number[] },
  channels: number,
): { mean: number[]; std: number[]; source: 'metadata' | 'options' } {
  const parse = (key: 'mean' | 'std'): number[] | undefined => {
    const raw = model.metadata[key];
    if (raw === undefined) return undefined;
    let v: unknown;
    try {
      v = JSON.parse(raw);
    } catch {
      throw new UserError(`${modelPath}: metadata '${key}' is not a JSON array: ${raw}`);
    }
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) {
      throw new UserError(`${modelPath}: metadata '${key}' must be a JSON array of numbers, got ${raw}`);
    }
    return v as number[];
  };
  let mean = parse('mean');
  let std = parse('std');
  let source: 'metadata' | 'options' = 'metadata';
  if (!mean || !std) {
    if (!opts.mean || !opts.std) {
      throw new UserError(`${modelPath}: the model has no mean/std metadata; pass --mean and --std (one value per channel)`);
    }
    mean = opts.mean;
    std = opts.std;
    source = 'options';
  }
  for (const [name, v] of [['mean', mean], ['std', std]] as const) {
    if (v.length !== channels) throw new UserError(`${name} has ${v.length} values, the data has ${channels} channels`);
  }
  if (std.some((s) => s <= 0)) throw new UserError('std values must be > 0');
  return { mean, std, source };
}
