// The paper's cross-layer method (SPEC sections 3 and 5): each conv layer's filters are ordered by
// greedy CMI conditioned on the kept maps of layers pruned before it, and a caller's cut-off fixes
// each layer's keep before the next layer of its chain starts.
//
//   formulation  'per-layer': B empty for every layer (layers independent)
//                'compact':   B = the kept maps of the previous layer of the layer's chain
//                'full':      B = the kept maps of every layer already pruned in the chain
//   order        'forward':       one chain, layers in network order; the first has B empty
//                'bidirectional': a per-layer pass with a cut-off on every layer picks the start
//                                 layer (highest pruning fraction); then a forward chain
//                                 start+1..end and a backward chain start-1..0, both seeded by it
//
// All maps (each layer's own and the kept maps conditioned on) come from ONE pass of the unpruned
// network over `sample` (SPEC 3), taken lazily the first time a layer has to be computed.
// Checkpoints: one file per (layer, conditioning set), keyed by rankConvUnits's key (model, sample,
// settings, RANK_ALGORITHM_VERSION) plus the conditioning (which layers, in order, and which of
// their channels are kept); an unconditioned ordering uses rankConvUnits's own file and key, so a
// per-layer `rank` run and these chains share those layers.
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { LayerActivations } from '../activations/collect.js';
import { collectActivations } from '../activations/collect.js';
import { RANK_ALGORITHM_VERSION, type MapsTensor } from './rank.js';
import type { ImageDataset } from '../data/dataset.js';
import { TorchModel } from '../engine/index.js';
import type { ConvUnit } from '../ir/graph.js';
import type { Model } from '../ir/model.js';
import { writeFileAtomic } from '../util/fs.js';
import { progress } from '../util/progress.js';
import {
  checkpointKey,
  checkpointPath,
  keyParts,
  rankUnit,
  rankNormalization,
  readCheckpoint,
  type Checkpoint,
  type CheckpointKeyParts,
  type LayerRanking,
  type RankUnitsOptions,
  type UnitsRanking,
} from './rank-model.js';

export type Formulation = 'per-layer' | 'compact' | 'full';
export type PruneOrder = 'forward' | 'bidirectional';

/** One layer conditioned on: its name, conv index, width and the channels it keeps (sorted). */
export interface Conditioning {
  layer: string;
  index: number;
  channels: number;
  keepIndices: number[];
}

export interface ChainLayer extends LayerRanking {
  /**
   * 'start': ordered with B empty, the seed of the chain(s) (forward: the first layer; bidirectional:
   * the layer with the highest per-layer pruning fraction); 'forward' / 'backward': ordered in that
   * chain, conditioned on earlier layers of it; 'independent': the per-layer formulation
   */
  chain: 'forward' | 'backward' | 'start' | 'independent';
  /** names of the layers whose kept maps this layer's ordering was conditioned on, in order */
  conditionedOn: string[];
  /** those layers with their kept channels (the `before` maps were exactly these channels) */
  conditioning: Conditioning[];
  /** channels kept: the first `keep` of [...order, ...remaining] */
  keep: number;
  /** sorted */
  keepIndices: number[];
  /** pruning fraction 1 - keep / channels */
  fraction: number;
  /** bidirectional: the keep the cut-off chose on this layer's per-layer ordering (the start-layer pass) */
  perLayerKeep?: number;
  /** checkpoint key of this ordering (rankConvUnits's key when unconditioned) */
  checkpointKey: string;
}

export interface ChainRun {
  /** 'per-layer' (the independent pass), 'forward' or 'backward' */
  name: string;
  /** layers ordered by this run, in the order they were pruned (the start layer only in 'per-layer' / forward-order runs) */
  layers: string[];
  /** wall time of the run */
  seconds: number;
  /** CMI worker threads the run started with */
  threads: number;
  /**
   * bidirectional chains: the threads each of its layers was ordered with (a chain takes every
   * thread once the other chain has finished)
   */
  threadsPerLayer?: number[];
}

/** rankConvUnits's result fields (key = the unconditioned layers' checkpoint key), plus the chains. */
export interface ChainsResult extends Omit<UnitsRanking, 'layers'> {
  /** one per unit, in network order */
  layers: ChainLayer[];
  chains: ChainRun[];
  /** the chains' seed layer (null for the per-layer formulation) */
  startLayer: string | null;
  formulation: Formulation;
  order: PruneOrder;
}

export interface ChainsOptions extends RankUnitsOptions {
  formulation: Formulation;
  order: PruneOrder;
  /**
   * The cut-off: called once per ordering when it is reached (resumed orderings included, so it must
   * be deterministic for a resumed run to reproduce the uninterrupted one), with that ordering;
   * returns how many channels to keep, an integer in [1, channels]. With order 'bidirectional' it is
   * called on every layer's per-layer ordering first (start-layer choice), then again on each
   * non-start layer's conditioned ordering (that keep is the one applied). In the bidirectional
   * compact and full runs the forward and backward chains run concurrently, so calls from the two
   * chains may overlap (never two calls from the same chain).
   */
  decide: (unit: ConvUnit, layer: LayerRanking) => Promise<number>;
}

/** A checkpoint of a conditioned ordering: rankConvUnits's format plus the conditioning. */
export interface ChainCheckpoint extends Checkpoint {
  /** rankConvUnits's key of the unconditioned inputs (= checkpointKey(parts)) */
  baseKey: string;
  conditioning: Conditioning[];
}

/**
 * Checkpoint key of an ordering conditioned on `conditioning` (in order): the base key itself when
 * empty (the per-layer ordering, shared with rankConvUnits), else 16 hex digits of sha256 over the
 * base key and each conditioning layer's name, index, width and kept channels. The base key holds
 * the model, the sample, the normalisation, every ordering setting and RANK_ALGORITHM_VERSION.
 */
export function chainCheckpointKey(baseKey: string, conditioning: readonly Conditioning[]): string {
  if (conditioning.length === 0) return baseKey;
  const fields = [baseKey, conditioning.map((c) => [c.layer, c.index, c.channels, [...c.keepIndices]])];
  return createHash('sha256').update(JSON.stringify(fields)).digest('hex').slice(0, 16);
}

/** File of an ordering's checkpoint: rankConvUnits's layer-NNN.json when unconditioned, else layer-NNN-<key>.json. */
export function chainCheckpointPath(dir: string, u: ConvUnit, conditioning: readonly Conditioning[], key: string): string {
  if (conditioning.length === 0) return checkpointPath(dir, u);
  return join(dir, `layer-${String(u.index).padStart(3, '0')}-${key}.json`);
}

/** The maps of channels `keep` (sorted) of one layer, [N, |keep|, HW]. */
export function keptMaps(a: LayerActivations, keep: readonly number[]): MapsTensor {
  const { n, channels: c, spatial: hw } = a;
  const data = new Float32Array(n * keep.length * hw);
  for (let i = 0; i < n; i++) {
    keep.forEach((ch, k) => {
      const src = (i * c + ch) * hw;
      data.set(a.maps.subarray(src, src + hw), (i * keep.length + k) * hw);
    });
  }
  return { data, n, c: keep.length, hw };
}

/** Sorted indices of the first `keep` channels of a layer's full order. */
export function keptIndices(l: LayerRanking, keep: number): number[] {
  return [...l.order, ...l.remaining].slice(0, keep).sort((a, b) => a - b);
}

class ChainAborted extends Error {}

/**
 * Orders `units` (taken in network order; a chain's "previous layer" is the previous one of
 * `units`, so layers left out are skipped) by the cross-layer method; see the file comment and
 * ChainsOptions.decide. With formulation 'per-layer' the order only labels the run: every layer is
 * ordered with B empty and decided once, whatever `order` says. RankUnitsOptions.onLayer is called
 * after each ordering (resumed or computed), before its cut-off; `total` counts orderings.
 */
export async function rankChains(model: Model, units: ConvUnit[], sample: ImageDataset, opts: ChainsOptions): Promise<ChainsResult> {
  const t0 = performance.now();
  const { formulation, order } = opts;
  if (!['per-layer', 'compact', 'full'].includes(formulation)) throw new RangeError(`formulation must be 'per-layer', 'compact' or 'full' (got ${String(formulation)})`);
  if (!['forward', 'bidirectional'].includes(order)) throw new RangeError(`order must be 'forward' or 'bidirectional' (got ${String(order)})`);
  if (typeof opts.decide !== 'function') throw new TypeError('decide must be a function');
  const sorted = [...units].sort((a, b) => a.index - b.index);
  if (new Set(sorted.map((u) => u.name)).size !== sorted.length) throw new RangeError('units: duplicate layer names');
  const L = sorted.length;
  const norm = rankNormalization(model, sample, opts);
  const parts: CheckpointKeyParts = keyParts(model, sample, opts, norm);
  const baseKey = checkpointKey(parts);
  const dir = opts.checkpointDir ?? null;
  const threads = opts.threads ?? 2;
  if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`threads must be an integer >= 1 (got ${threads})`);

  // the unpruned network's maps of every unit, taken once, on first need (shared by both chains)
  let acts: Promise<Map<string, LayerActivations>> | null = null;
  const activations = (): Promise<Map<string, LayerActivations>> =>
    (acts ??= (async () => {
      const engine = TorchModel.create(model);
      try {
        const list = await collectActivations(engine, sample, sorted, { mean: norm.mean, std: norm.std, batch: 64 });
        return new Map(list.map((a) => [a.unit.name, a]));
      } finally {
        engine.dispose();
      }
    })());

  const chained = formulation !== 'per-layer';
  const total = order === 'bidirectional' && chained ? 2 * L - 1 : L;
  let doneCount = 0;
  const stepsOf = (c: number) => Math.min(c - 1, opts.maxSelect ?? c - 1);
  const cost = (c: number) => {
    let s = 0;
    for (let k = c; k > c - stepsOf(c); k--) s += k;
    return s;
  };
  const bar = progress(opts.progressLabel ?? `rank ${formulation}/${order}`, sorted.reduce((s, u) => s + cost(u.channels), 0) * (total / Math.max(1, L)));

  /** One ordering of u conditioned on `cond` (in order): from its checkpoint or computed. */
  const rankOne = async (u: ConvUnit, cond: readonly ChainLayer[], nThreads: number): Promise<{ r: LayerRanking; key: string; conditioning: Conditioning[] }> => {
    const conditioning = cond.map((l) => ({ layer: l.layer, index: l.index, channels: l.channels, keepIndices: [...l.keepIndices] }));
    const key = chainCheckpointKey(baseKey, conditioning);
    const path = dir ? chainCheckpointPath(dir, u, conditioning, key) : null;
    let r = path && !opts.fresh ? await readCheckpoint(path, key, u) : null;
    if (r) {
      bar.tick(cost(u.channels));
    } else {
      const maps = await activations();
      const before = cond.map((l) => keptMaps(maps.get(l.layer)!, l.keepIndices));
      let last = 0;
      r = await rankUnit(maps.get(u.name)!, sample, parts, {
        maxSelect: opts.maxSelect,
        threads: nThreads,
        backend: opts.backend,
        before,
        onProgress: (p) => {
          bar.tick(p.evaluated - last, { layer: `${u.index + 1} ${u.name}`, step: `${p.step}/${p.steps}`, B: cond.length });
          last = p.evaluated;
        },
      });
      bar.tick(cost(u.channels) - last);
      if (path) {
        const file: Checkpoint | ChainCheckpoint = conditioning.length === 0 ? { key, parts, result: r } : { key, parts, baseKey, conditioning, result: r };
        await writeFileAtomic(path, JSON.stringify(file));
      }
    }
    opts.onLayer?.({ layer: r, done: ++doneCount, total });
    return { r, key, conditioning };
  };

  const decideKeep = async (u: ConvUnit, r: LayerRanking): Promise<number> => {
    const keep = await opts.decide(u, r);
    if (!Number.isInteger(keep) || keep < 1 || keep > u.channels) {
      throw new RangeError(`decide(${u.name}): keep must be an integer in [1, ${u.channels}] (got ${keep})`);
    }
    return keep;
  };

  const toChain = (o: { r: LayerRanking; key: string; conditioning: Conditioning[] }, chain: ChainLayer['chain'], keep: number): ChainLayer => ({
    ...o.r,
    chain,
    conditionedOn: o.conditioning.map((c) => c.layer),
    conditioning: o.conditioning,
    keep,
    keepIndices: keptIndices(o.r, keep),
    fraction: 1 - keep / o.r.channels,
    checkpointKey: o.key,
  });

  /** The unconditioned pass over every layer in network order, each with its cut-off. */
  const perLayerPass = async (chain: ChainLayer['chain']): Promise<ChainLayer[]> => {
    const out: ChainLayer[] = [];
    for (const u of sorted) {
      const o = await rankOne(u, [], threads);
      out.push(toChain(o, chain, await decideKeep(u, o.r)));
    }
    return out;
  };

  /** One chain: `seq` in pruning order, conditioned on `seed` (if any) and its own earlier layers. */
  const runChain = async (
    seq: ConvUnit[],
    seed: ChainLayer | null,
    chain: 'forward' | 'backward',
    nThreads: () => number,
    stop: () => boolean,
    used: number[] = [],
  ): Promise<ChainLayer[]> => {
    const pruned: ChainLayer[] = seed ? [seed] : [];
    const out: ChainLayer[] = [];
    for (const u of seq) {
      if (stop()) throw new ChainAborted('the other chain failed');
      const cond = formulation === 'compact' ? pruned.slice(-1) : [...pruned];
      used.push(nThreads());
      const o = await rankOne(u, cond, used[used.length - 1]!);
      const keep = await decideKeep(u, o.r);
      const l = toChain(o, cond.length === 0 ? 'start' : chain, keep);
      pruned.push(l);
      out.push(l);
    }
    return out;
  };

  const timed = async <T>(f: () => Promise<T>): Promise<{ value: T; seconds: number }> => {
    const s = performance.now();
    const value = await f();
    return { value, seconds: (performance.now() - s) / 1000 };
  };

  let layers: ChainLayer[];
  const chains: ChainRun[] = [];
  let startLayer: string | null = null;
  try {
    if (!chained) {
      const { value, seconds } = await timed(() => perLayerPass('independent'));
      layers = value;
      chains.push({ name: 'per-layer', layers: value.map((l) => l.layer), seconds, threads });
    } else if (order === 'forward') {
      const { value, seconds } = await timed(() => runChain(sorted, null, 'forward', () => threads, () => false));
      layers = value;
      startLayer = L > 0 ? sorted[0]!.name : null;
      chains.push({ name: 'forward', layers: value.map((l) => l.layer), seconds, threads });
    } else {
      const pre = await timed(() => perLayerPass('independent'));
      chains.push({ name: 'per-layer', layers: pre.value.map((l) => l.layer), seconds: pre.seconds, threads });
      if (L === 0) {
        layers = [];
      } else {
        // the highest pruning fraction; ties: the lower index (strict >)
        let s = 0;
        pre.value.forEach((l, i) => {
          if (l.fraction > pre.value[s]!.fraction) s = i;
        });
        const start: ChainLayer = { ...pre.value[s]!, chain: 'start', perLayerKeep: pre.value[s]!.keep };
        startLayer = start.layer;
        const fwd = sorted.slice(s + 1);
        const bwd = sorted.slice(0, s).reverse();
        // both chains condition only on the start layer and their own layers: independent, run
        // concurrently with half the threads each; a chain still running when the other has
        // finished orders its next layers with all of them (the chains are rarely balanced: at
        // alpha 1.01 on VGG16 the forward chain holds the six 512-filter layers)
        let running = (fwd.length > 0 ? 1 : 0) + (bwd.length > 0 ? 1 : 0);
        const tF = () => (running > 1 ? Math.max(1, Math.ceil(threads / 2)) : threads);
        const tB = () => (running > 1 ? Math.max(1, Math.floor(threads / 2)) : threads);
        const used = { forward: [] as number[], backward: [] as number[] };
        let failure: { error: unknown } | null = null;
        const stop = () => failure !== null;
        const guarded = (name: 'forward' | 'backward', seq: ConvUnit[], t: () => number) =>
          timed(() => runChain(seq, start, name, t, stop, used[name]))
            .catch((e: unknown) => {
              if (!failure && !(e instanceof ChainAborted)) failure = { error: e };
              throw e;
            })
            .finally(() => {
              if (seq.length > 0) running--;
            });
        // allSettled: a failing chain stops the other at its next layer, and nothing keeps running
        // (or writing checkpoints) after this call has returned
        const [f, b] = await Promise.allSettled([guarded('forward', fwd, tF), guarded('backward', bwd, tB)]);
        if (f.status === 'rejected' || b.status === 'rejected') {
          throw failure ? (failure as { error: unknown }).error : f.status === 'rejected' ? f.reason : (b as PromiseRejectedResult).reason;
        }
        chains.push({ name: 'forward', layers: fwd.map((u) => u.name), seconds: f.value.seconds, threads: used.forward[0] ?? threads, threadsPerLayer: used.forward });
        chains.push({ name: 'backward', layers: bwd.map((u) => u.name), seconds: b.value.seconds, threads: used.backward[0] ?? threads, threadsPerLayer: used.backward });
        const perLayerKeep = new Map(pre.value.map((l) => [l.layer, l.keep]));
        const byName = new Map<string, ChainLayer>([[start.layer, start], ...[...f.value.value, ...b.value.value].map((l) => [l.layer, l] as const)]);
        layers = sorted.map((u) => ({ ...byName.get(u.name)!, perLayerKeep: perLayerKeep.get(u.name)! }));
      }
    }
  } finally {
    bar.done();
  }

  return {
    layers,
    chains,
    startLayer,
    formulation,
    order,
    key: baseKey,
    checkpointDir: dir,
    mean: [...norm.mean],
    std: [...norm.std],
    orderAlgorithmVersion: RANK_ALGORITHM_VERSION,
    seconds: (performance.now() - t0) / 1000,
  };
}
