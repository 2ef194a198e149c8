// npm run bench:prune — wall time of `cmiprune prune` on the shared VGG16-BN, stage by stage:
// (a) --criterion cmi --alpha 2 --formulation per-layer --cutoff scree --bn-stats reestimated --finetune-epochs 0 (issue target: <= 5 min);
// (b) --criterion l1 --cutoff flops:0.6 --allocation uniform --bn-stats reestimated --finetune-epochs 1: one fine-tuning
//     epoch of a VGG16 with ~60% of its multiply-adds removed (target: <= 5 min per epoch).
// Fresh runs (no checkpoints); outputs in a temp dir. BENCH=a or BENCH=b runs one of them.
// --bn-stats reestimated (one re-estimation) is what the README's figures measured; the default
// auto adds the unpruned model's re-estimation and two held-out evaluations (bench:bn-stats).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readFile } from 'node:fs/promises';
import { prune, type PruneOptions } from '../src/pipeline/prune.js';

const repoRoot = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const modelPath = process.env.CMIPRUNE_BENCH_MODEL ?? resolve(repoRoot, '../shared/models/vgg16_bn_cifar10.onnx');
const which = process.env.BENCH ?? 'ab';

async function run(label: string, o: Omit<PruneOptions, 'out' | 'model' | 'data'>) {
  const dir = await mkdtemp(join(tmpdir(), 'cmiprune-bench-'));
  const t0 = performance.now();
  try {
    const summary = await prune({ ...o, model: modelPath, data: 'cifar10', out: dir, fresh: true, checkpointDir: join(dir, '.ckpt') });
    const report = JSON.parse(await readFile(join(dir, 'report.json'), 'utf8'));
    const wall = (performance.now() - t0) / 1000;
    const epochs = (report.finetune.epochs as { seconds: number }[]).map((e) => e.seconds);
    process.stdout.write(
      `${JSON.stringify({
        bench: label,
        wallSeconds: wall,
        stages: report.seconds,
        fineTuneEpochSeconds: epochs,
        removed: report.cost.removed,
        accuracy: summary.accuracy,
      })}\n`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (which.includes('a')) await run('cmi alpha 2, scree, no fine-tuning', { criterion: 'cmi', alpha: 2, cutoff: 'scree', formulation: 'per-layer', bnStats: 'reestimated', finetuneEpochs: 0 });
if (which.includes('b')) await run('l1, flops:0.6 uniform, 1 fine-tuning epoch', { criterion: 'l1', cutoff: 'flops:0.6', allocation: 'uniform', bnStats: 'reestimated', finetuneEpochs: 1 });
