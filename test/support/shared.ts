// Where ../shared (models, golden vectors) is: beside the checkout, as on developer machines and in
// CI; CMIPRUNE_SHARED overrides. This file runs from dist/test/support, three directories below the
// repo root.
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
