// npm run bench:bn-stats — which BatchNorm statistics a pruned model should get (prune --bn-stats):
// the pruned model's re-estimate alone, or anchored (the trained statistics moved by the difference
// of the pruned and the unpruned model's re-estimates on the same images), and what 'auto' (the
// more accurate of the two on the 500 held-out training images) picks. For each criterion (default
// l1 and hrank) and allocation (uniform, curve) at each budget (filters:F), test accuracy of both on
// the 10,000 CIFAR-10 test images; one JSON line per point on stdout, then a summary line.
// Settings are prune's: 256 calibration images, BN on 2,000 training images, seed 0.
// MODEL (default ../shared/models/vgg16_bn_cifar10.onnx), CRITERIA, BUDGETS (comma lists),
// RESIDUAL (inner), THREADS (2).
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { allocateByCurve, allocateUniform } from '../src/prune/allocate.js';
import { costModel } from '../src/prune/cost.js';
import { uniformRankings } from '../src/prune/groups.js';
import { type CriterionName, evalAcc, loadInputs, makeCriterion, PRUNE_DEFAULTS } from '../src/pipeline/prune.js';
import { applyPlan } from '../src/prune/surgery.js';
import { planOf } from '../src/pipeline/sweep.js';
import { anchorBatchNorm, chooseBnStats, reestimateBatchNorm } from '../src/recover/bn.js';

const repoRoot = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const modelPath = process.env.MODEL ?? resolve(repoRoot, '../shared/models/vgg16_bn_cifar10.onnx');
const criteria = (process.env.CRITERIA ?? 'l1,hrank').split(',') as CriterionName[];
const budgets = (process.env.BUDGETS ?? '0.1,0.3,0.5').split(',').map(Number);
const residual = (process.env.RESIDUAL ?? 'inner') as 'inner' | 'all';
const threads = Number(process.env.THREADS ?? 2);

async function main(): Promise<void> {
  if (!existsSync(modelPath)) throw new Error(`bench: model not found: ${modelPath} (set MODEL)`);
  const { seed, samples, alpha, sigma, bnImages, heldout: heldoutImages } = PRUNE_DEFAULTS;
  const i = await loadInputs({ model: modelPath, data: 'cifar10', criterion: criteria.join('+'), samples, heldout: heldoutImages, seed, alpha, sigma, permutations: 0, eta: 0.05, threads, residual });
  const { model, groups, prunable, test, norm, rest, calibration, heldout } = i;
  const bnOpts = { mean: norm.mean, std: norm.std, images: Math.min(bnImages, rest.n), seed, threads };
  const line = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
  const reOriginal = (await reestimateBatchNorm(model, rest, bnOpts)).model;
  line({
    model: modelPath,
    trained: await evalAcc(model, test, norm, 'trained'),
    reestimated: await evalAcc(reOriginal, test, norm, 're-estimated'),
    anchoredEmptyPlan: await evalAcc(anchorBatchNorm(model, reOriginal, { keep: {} }, reOriginal), test, norm, 'anchored, empty plan'),
  });
  const diffs: number[] = [];
  let autoBest = 0;
  for (const name of criteria) {
    const criterion = makeCriterion(name, { alpha, sigma, samples, seed, threads, checkpointDir: resolve(i.ckptDir, 'rank') });
    const ranked = new Map((await criterion.rank(model, prunable, { data: calibration, mean: norm.mean, std: norm.std, seed, threads })).map((r) => [r.group, r]));
    for (const allocation of ['uniform', 'curve'] as const) {
      const rankings = allocation === 'uniform' ? uniformRankings(ranked, prunable) : ranked;
      const cost = costModel(model, groups, rankings);
      for (const fraction of budgets) {
        const budget = { kind: 'filters' as const, fraction };
        const keep = allocation === 'curve' ? allocateByCurve(budget, prunable, rankings, cost).keep : allocateUniform(budget, prunable, cost).keep;
        const plan = planOf(rankings, keep, groups);
        const rePruned = (await reestimateBatchNorm(applyPlan(model, plan), rest, bnOpts)).model;
        const anchored = anchorBatchNorm(model, reOriginal, plan, rePruned);
        const held = { anchored: await evalAcc(anchored, heldout, norm, 'held-out'), reestimated: await evalAcc(rePruned, heldout, norm, 'held-out') };
        const acc = { anchored: await evalAcc(anchored, test, norm, 'test'), reestimated: await evalAcc(rePruned, test, norm, 'test') };
        const auto = chooseBnStats(held);
        diffs.push(acc.anchored - acc.reestimated);
        if (acc[auto] === Math.max(acc.anchored, acc.reestimated)) autoBest++;
        line({ criterion: name, allocation, budget: `filters:${fraction}`, test: acc, heldout: held, auto });
      }
    }
  }
  line({
    summary: true,
    points: diffs.length,
    anchoredAhead: diffs.filter((d) => d > 0).length,
    meanPointsAnchoredMinusReestimated: (100 * diffs.reduce((a, b) => a + b, 0)) / diffs.length,
    autoPickedTheBetter: autoBest,
  });
}

main().catch((e) => {
  process.stderr.write(`bench:bn-stats: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
