// Option parsers that fail with one clear message naming the option (commander prefixes it).
import { InvalidArgumentError } from 'commander';

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
  const raw = v.split(',').map((s) => s.trim());
  const parts = raw.map((s) => Number(s));
  // Number('') is 0: an empty entry ('1,,2', '') must not become a silent zero
  if (raw.some((s) => s === '') || parts.some((n) => !Number.isFinite(n))) {
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
