import { readFileSync } from 'node:fs';

let cached: string | undefined;

/** This package's version from package.json ('' when it cannot be read), for producer fields. */
export function packageVersion(): string {
  if (cached !== undefined) return cached;
  try {
    // dist/src/util/version.js -> package root
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: string };
    cached = pkg.version ?? '';
  } catch {
    cached = '';
  }
  return cached;
}
