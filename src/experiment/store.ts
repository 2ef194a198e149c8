// A resumable store of experiment results: one JSON file per finished point, written atomically,
// so a killed run leaves only whole points behind and a rerun skips every point already there.
//
// A point is identified by its key (plain JSON: step, kind, criterion, settings, budget,
// allocation, stage, ...), the experiment's version and the model's SHA-256. The id hashes the
// canonical JSON of the three (object keys sorted), so the same point always gets the same file
// and any change of a setting, of the model bytes or of EXPERIMENT_VERSION gives a new one.
//
// Layout under the store's directory:
//   points/<step>/<readable slug>--<hash16>.json    one StoredPoint each
// Files of another version or model stay on disk but are not listed; files that do not parse
// (none should: every write is atomic) are reported by `skipped` and otherwise ignored.
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { engineKeyTag } from '../engine/switches.js';
import { writeFileAtomic } from '../util/fs.js';

/** Bump when what a point means changes for the same key (part of every id). */
export const EXPERIMENT_VERSION = 'experiment/1';

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** What identifies a point: `step` names its folder, the rest is free-form plain JSON. */
export interface PointKey {
  step: string;
  kind: string;
  [field: string]: Json;
}

export interface PointTimes {
  /** wall-clock seconds of computing the point */
  wall: number;
  /** CPU seconds of this process (all its threads: the engine's and the estimators' too) */
  cpu: number;
}

export interface StoredPoint<V = unknown> {
  format: typeof FORMAT;
  id: string;
  experimentVersion: string;
  modelSha256: string;
  key: PointKey;
  /** ISO time the point was written */
  createdAt: string;
  seconds: PointTimes;
  value: V;
  /** engineKeyTag() when it was written, only when not empty (CMIPRUNE_FAST_PATHS=0) */
  engine?: string[];
}

const FORMAT = 'cmiprune-experiment-point';

/** JSON with every object's keys sorted (arrays keep their order): equal values, equal text. */
export function canonicalJson(x: unknown): string {
  return JSON.stringify(sortKeys(x));
}

function sortKeys(x: unknown): unknown {
  if (Array.isArray(x)) return x.map(sortKeys);
  if (x !== null && typeof x === 'object') {
    const o = x as Record<string, unknown>;
    return Object.fromEntries(
      Object.keys(o)
        .filter((k) => o[k] !== undefined)
        .sort()
        .map((k) => [k, sortKeys(o[k])]),
    );
  }
  return x;
}

const safe = (s: string) => s.replace(/[^A-Za-z0-9._=+-]+/g, '_').replace(/^_+|_+$/g, '');

/** fields that name a point best, in this order in the slug; the others follow sorted by name */
const SLUG_FIRST = ['kind', 'criterion', 'formulation', 'order', 'cutoff', 'allocation', 'budget', 'stage', 'distill', 'epoch'];

/**
 * The point's stable id: `<step>/<slug>--<hash16>`. The hash (of the canonical key, model and
 * version) decides; the slug is the key's scalar values for people, in an order independent of
 * how the key object was written.
 */
export function pointId(key: PointKey, modelSha256: string, version = EXPERIMENT_VERSION): string {
  // with CMIPRUNE_FAST_PATHS=0 a point is another point (engineKeyTag; default ids unchanged)
  const tag = engineKeyTag();
  const hash = createHash('sha256').update(canonicalJson(tag.length ? { key, modelSha256, version, engine: tag } : { key, modelSha256, version })).digest('hex').slice(0, 16);
  const rank = (k: string) => (SLUG_FIRST.includes(k) ? SLUG_FIRST.indexOf(k) : SLUG_FIRST.length);
  const slug = Object.entries(key)
    .sort(([a], [b]) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0))
    .filter(([k, v]) => k !== 'step' && v !== null && typeof v !== 'object')
    .map(([, v]) => safe(String(v)))
    .filter((s) => s.length > 0)
    .join('_')
    .slice(0, 120);
  return `${safe(key.step)}/${slug || 'point'}--${hash}`;
}

/** Process CPU seconds so far (user + system, every thread). */
export function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

export class ResultStore {
  private readonly points = new Map<string, StoredPoint>();
  /** files under points/ that could not be read as a point (never written by this class) */
  readonly skipped: string[] = [];

  private constructor(
    readonly dir: string,
    readonly modelSha256: string,
    readonly version: string,
  ) {}

  /** Opens (and creates) the store in `dir`, reading every point of this model and version. */
  static async open(dir: string, modelSha256: string, version = EXPERIMENT_VERSION): Promise<ResultStore> {
    const s = new ResultStore(dir, modelSha256, version);
    await s.reload();
    return s;
  }

  /** Re-reads the points from disk (another process may have added some). */
  async reload(): Promise<void> {
    this.points.clear();
    this.skipped.length = 0;
    const root = join(this.dir, 'points');
    let steps: string[];
    try {
      steps = await readdir(root);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw e;
    }
    for (const step of steps.sort()) {
      let files: string[];
      try {
        files = await readdir(join(root, step));
      } catch {
        continue;
      }
      for (const f of files.sort()) {
        if (!f.endsWith('.json')) continue; // e.g. an atomic write's temp file left by a kill
        const path = join(root, step, f);
        try {
          const p = JSON.parse(await readFile(path, 'utf8')) as StoredPoint;
          if (p.format !== FORMAT || typeof p.id !== 'string' || !p.key) throw new Error('not a point');
          if (p.experimentVersion !== this.version || p.modelSha256 !== this.modelSha256) continue;
          // points made with the fast paths off belong to runs with them off, and the other way round
          if (canonicalJson(p.engine ?? []) !== canonicalJson(engineKeyTag())) continue;
          // the file must be where its key says (a renamed or hand-edited file does not count)
          if (pointId(p.key, this.modelSha256, this.version) !== p.id || `${p.id}.json` !== `${step}/${f}`) throw new Error('id does not match its key');
          this.points.set(p.id, p);
        } catch {
          this.skipped.push(path);
        }
      }
    }
  }

  id(key: PointKey): string {
    return pointId(key, this.modelSha256, this.version);
  }

  path(key: PointKey): string {
    return join(this.dir, 'points', `${this.id(key)}.json`);
  }

  has(key: PointKey): boolean {
    return this.points.has(this.id(key));
  }

  get<V>(key: PointKey): StoredPoint<V> | undefined {
    return this.points.get(this.id(key)) as StoredPoint<V> | undefined;
  }

  /** Writes one point atomically (replacing a point of the same key) and returns it. */
  async put<V>(key: PointKey, value: V, seconds: PointTimes): Promise<StoredPoint<V>> {
    const p: StoredPoint<V> = {
      format: FORMAT,
      id: this.id(key),
      experimentVersion: this.version,
      modelSha256: this.modelSha256,
      key: JSON.parse(JSON.stringify(key)) as PointKey,
      createdAt: new Date().toISOString(),
      seconds,
      value,
      ...(engineKeyTag().length ? { engine: engineKeyTag() } : {}),
    };
    await writeFileAtomic(this.path(key), JSON.stringify(p));
    this.points.set(p.id, p as StoredPoint);
    return p;
  }

  /** Every point of this model and version whose key has all the given field values, in id order. */
  list<V = unknown>(match: Partial<Record<string, Json>> = {}): StoredPoint<V>[] {
    const want = Object.entries(match).filter(([, v]) => v !== undefined);
    return [...this.points.values()]
      .filter((p) => want.every(([k, v]) => canonicalJson(p.key[k] ?? null) === canonicalJson(v)))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)) as StoredPoint<V>[];
  }

  get size(): number {
    return this.points.size;
  }
}
