#!/usr/bin/env node
// The cmiprune command line: one sub-command per pipeline stage; results as JSON on stdout,
// progress and errors on stderr.
import { Command, CommanderError } from 'commander';
import { UserError } from '../util/errors.js';
import { registerCommands } from './commands.js';
import { packageVersion } from '../util/version.js';

const program = new Command();
program
  .name('cmiprune')
  .description('Prune whole conv filters of trained CNNs by conditional mutual information')
  .version(packageVersion())
  .exitOverride();
registerCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    process.exit(e.exitCode);
  } else if (e instanceof UserError) {
    process.stderr.write(`cmiprune: ${e.message}\n`);
    process.exit(1);
  } else {
    process.stderr.write(`cmiprune: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(2);
  }
}
