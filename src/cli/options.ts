// Option parsers that fail with one clear message naming the option (commander prefixes it).
import { InvalidArgumentError } from 'commander';
import type { Model } from '../ir/model.js';
import { UserError } from '../util/errors.js';

export function intOption(min: number, max = Number.MAX_SAFE_INTEGER): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!/^-?\d+$/.test(v.trim()) || n < min || n > max) {
      throw new InvalidArgumentError(`expected an integer${max < Number.MAX_SAFE_INTEGER ? ` in [${min}, ${max}]` : ` >= ${min}`}`);
    }
    return n;
  };
}

export function floatOption(min = -Infinity, exclusiveMin = false): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < min || (exclusiveMin && n === min)) {
      throw new InvalidArgumentError(`expected a number ${exclusiveMin ? '>' : '>='} ${min}`);
    }
    return n;
  };
}

export function floatListOption(v: string): number[] {
  const parts = v.split(',').map((s) => Number(s.trim()));
  if (parts.length === 0 || parts.some((n) => !Number.isFinite(n))) {
    throw new InvalidArgumentError('expected comma-separated numbers, e.g. 0.49,0.48,0.45');
  }
  return parts;
}

export function choiceOption<T extends string>(choices: readonly T[]): (v: string) => T {
  return (v: string) => {
    if (!(choices as readonly string[]).includes(v)) throw new InvalidArgumentError(`expected one of: ${choices.join(', ')}`);
    return v as T;
  };
}

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
