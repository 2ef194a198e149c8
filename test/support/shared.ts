// Where ../shared (models, golden vectors) is: beside the checkout, as on developer machines and in
// CI; CMIPRUNE_SHARED overrides. This file runs from dist/test/support, three directories below the
// repo root.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
export const SHARED_DIR = process.env.CMIPRUNE_SHARED ?? resolve(REPO_ROOT, '../shared');
if (!existsSync(SHARED_DIR)) throw new Error(`tests need ../shared beside the checkout (or CMIPRUNE_SHARED): ${SHARED_DIR} not found`);
export const MODELS_DIR = join(SHARED_DIR, 'models');
export const GOLDEN_DIR = join(SHARED_DIR, 'testdata/reference');
export const VGG16_ONNX = join(MODELS_DIR, 'vgg16_bn_cifar10.onnx');
/** the compiled CLI */
export const CLI = join(REPO_ROOT, 'dist/src/cli/main.js');

/** Runs the compiled CLI with `args` (progress bars off) and returns its exit status and output. */
export function runCli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, CMIPRUNE_NO_PROGRESS: '1' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
