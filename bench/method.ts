// npm run bench:method — wall time of the paper's orderings on the shared VGG16-BN: per-layer vs
// compact vs full, forward vs bidirectional, at one alpha (ALPHA, default 2). Every layer keeps
// half its filters (a fixed cut-off, so each configuration does the same amount of work and only
// the conditioning differs); fresh checkpoints per configuration; N = 256 class-balanced training
// images, median kernel width. CONFIGS=per-layer,compact-forward,... selects some of them.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadCifar10 } from '../src/data/cifar10.js';
import { classBalancedSample } from '../src/data/dataset.js';
import { setThreads } from '../src/engine/index.js';
import { convUnits } from '../src/ir/graph.js';
import { loadOnnxFile } from '../src/onnx/index.js';
import { type Formulation, type PruneOrder, rankChains } from '../src/cmi/rank-chains.js';

const repoRoot = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const modelPath = process.env.CMIPRUNE_BENCH_MODEL ?? resolve(repoRoot, '../shared/models/vgg16_bn_cifar10.onnx');
const alpha = Number(process.env.ALPHA ?? 2);
const all: [string, Formulation, PruneOrder][] = [
  ['per-layer', 'per-layer', 'forward'],
  ['compact-forward', 'compact', 'forward'],
  ['compact-bidirectional', 'compact', 'bidirectional'],
  ['full-forward', 'full', 'forward'],
  ['full-bidirectional', 'full', 'bidirectional'],
];
const wanted = process.env.CONFIGS?.split(',');
setThreads(2);
const model = await loadOnnxFile(modelPath);
const units = convUnits(model);
const sample = classBalancedSample(await loadCifar10('train'), 256, 0);
for (const [name, formulation, order] of all.filter(([n]) => !wanted || wanted.includes(n))) {
  const dir = await mkdtemp(join(tmpdir(), 'cmiprune-method-'));
  try {
    const t0 = performance.now();
    const r = await rankChains(model, units, sample, {
      alpha,
      sigma: 'median',
      threads: 2,
      checkpointDir: dir,
      formulation,
      order,
      // the middle layer keeps a little less, so bidirectional starts there and both chains have work
      decide: async (u) => Math.round(u.channels * (u.index === Math.floor(units.length / 2) ? 0.4 : 0.5)),
    });
    process.stdout.write(
      `${JSON.stringify({
        bench: name,
        alpha,
        wallSeconds: (performance.now() - t0) / 1000,
        startLayer: r.startLayer,
        chains: r.chains.map((c) => ({ name: c.name, layers: c.layers.length, seconds: c.seconds, threads: c.threads, ...(c.threadsPerLayer ? { threadsPerLayer: c.threadsPerLayer } : {}) })),
        noiseFloorSteps: r.layers.map((l) => l.noiseFloorStep),
      })}\n`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
