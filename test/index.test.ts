// The library's front door (src/index.ts): a user's pruning composed from its exports alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import * as cmiprune from '../src/index.js';
import { randomSource } from './support/random.js';

test('front door: build a CNN, find its groups, cut by a pure cut-off, apply the plan, count, export and re-import, all from src/index.ts', () => {
  const b = new cmiprune.SequentialBuilder('front', [3, 8, 8], { random: randomSource(2) });
  b.conv(13, 3, { padding: 1 }).bn().relu().conv(37, 3, { padding: 1 }).bn().relu().maxpool(2);
  const model = b.flatten().linear(5).build();
  const groups = cmiprune.channelGroups(model).filter((g) => g.prunable);
  assert.deepEqual(groups.map((g) => g.channels), [13, 37]);
  // keep the first half of each layer (by a fraction cut-off, the identity order)
  const plan: cmiprune.PruningPlan = { keep: {} };
  for (const g of groups) {
    const d = cmiprune.fractionCutoff(g.channels, 0.5, 1);
    plan.keep[g.name] = cmiprune.keptChannels(Array.from({ length: g.channels }, (_, i) => i), d.keep, g);
  }
  const pruned = cmiprune.applyPlan(model, plan);
  const widths = pruned.nodes.flatMap((n) => (n.op === 'Conv2d' ? [n.attrs.outChannels] : []));
  assert.deepEqual(widths, [Math.round(13 / 2), Math.round(37 / 2)]);
  assert.ok(cmiprune.modelCost(pruned).params < cmiprune.modelCost(model).params);
  const again = cmiprune.importOnnx(cmiprune.exportOnnx(pruned));
  assert.deepEqual(again.nodes.flatMap((n) => (n.op === 'Conv2d' ? [n.attrs.outChannels] : [])), widths);
  // the registries a user picks from
  assert.deepEqual([...cmiprune.CRITERIA].sort(), Object.keys(cmiprune.CRITERION_TRAITS).sort());
  assert.equal(cmiprune.PRUNE_DEFAULTS.bnStats, 'auto');
  assert.ok(cmiprune.BN_STATS.includes(cmiprune.PRUNE_DEFAULTS.bnStats));
});
