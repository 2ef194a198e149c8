// `cmiprune rank` end to end: .npy files written by our writer, the built CLI spawned as a user would.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

import { writeNpy } from '../src/data/npy.js';
import { addonSkip } from './support/addon.js';
import { goldenCases } from './support/golden.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'cmiprune-rank-'));
const g = goldenCases().find((c) => c.name.startsWith('compact'))!;
const f = (name: string) => join(dir, name);

function rank(args: string[]) {
  const r = spawnSync(process.execPath, [MAIN, 'rank', ...args], { encoding: 'utf8', env: { ...process.env, CMIPRUNE_NO_PROGRESS: '1' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('setup: write the golden case as .npy files', async () => {
  await writeNpy(f('maps64.npy'), [g.N, g.C, g.H, g.W], Float64Array.from(g.featureMaps));
  await writeNpy(f('maps32.npy'), [g.N, g.C, g.H, g.W], Float32Array.from(g.featureMaps));
  await writeNpy(f('labels.npy'), [g.N], BigInt64Array.from(g.labels.map(BigInt)));
  const onehot = new Float32Array(g.N * g.classes);
  g.labels.forEach((l, i) => (onehot[i * g.classes + l] = 1));
  await writeNpy(f('onehot.npy'), [g.N, g.classes], onehot);
  await writeNpy(f('before.npy'), g.beforeMapsShape!, Float64Array.from(g.beforeMaps!));
  await writeNpy(f('labels-short.npy'), [g.N - 1], Int32Array.from(g.labels.slice(1)));
  const nan = Float32Array.from(g.featureMaps);
  nan[5 * g.C * g.H * g.W + 3 * g.H * g.W + 1] = NaN;
  await writeNpy(f('nan.npy'), [g.N, g.C, g.H, g.W], nan);
  await writeNpy(f('dead.npy'), [g.N, 3, 2, 2], new Float32Array(g.N * 12).fill(0.25));
  await writeNpy(f('before-short.npy'), [g.N - 2, 1, 2, 2], new Float32Array((g.N - 2) * 4));
  writeFileSync(f('garbage.npy'), 'hello');
});

for (const backend of ['native', 'ts']) {
  test(`rank reproduces the reference order and CMI curve (${backend})`, { skip: backend === 'native' && addonSkip }, () => {
    const r = rank(['--activations', f('maps64.npy'), '--labels', f('labels.npy'), '--before', f('before.npy'), '--classes', '10', '--backend', backend]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(out.order, g.expected.order);
    out.cmi.forEach((v: number, i: number) => assert.ok(Math.abs(v - g.expected.cmi[i]) < 1e-10));
    assert.equal(out.backend, backend);
    assert.equal(out.n, g.N);
    assert.equal(out.c, g.C);
    assert.equal(out.logBase, 'e');
    assert.equal(out.noiseFloorStep, null);
    assert.ok(Math.abs(out.sigma.maps - g.expected.sigmaMaps) < 1e-12);
    assert.equal(out.sigma.before.length, 1);
    assert.ok(out.seconds > 0);
  });
}

test('one-hot float32 labels, float32 maps, --max-select and --log2', () => {
  const r = rank(['--activations', f('maps32.npy'), '--labels', f('onehot.npy'), '--max-select', '2', '--log2', '--alpha', '2']);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.order.length, 2);
  assert.equal(out.classes, 10);
  assert.equal(out.logBase, '2');
  assert.equal(out.alpha, 2);
  assert.equal(out.remaining.length, g.C - 2);
});

test('--sigma median and --ptest [P] reach the ordering and are recorded', () => {
  const r = rank(['--activations', f('maps64.npy'), '--labels', f('labels.npy'), '--before', f('before.npy'), '--classes', '10', '--backend', 'ts', '--sigma', 'median', '--ptest', '8', '--ptest-eta', '0.2']);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.sigma.rule, 'median');
  assert.notEqual(out.sigma.maps, g.expected.sigmaMaps);
  assert.equal(out.sigma.before.length, 1);
  assert.deepEqual({ ...out.permutationTest, stopIndex: 0, evaluated: 0 }, { permutations: 8, eta: 0.2, seed: 0, stopIndex: 0, evaluated: 0 });
  const stop = out.permutationTest.stopIndex;
  assert.equal(out.pValues.length, stop === null ? out.order.length : stop + 1);
  out.pValues.forEach((p: number, i: number) => assert.ok(p >= 0 && p <= 1 && (i === stop ? p >= 0.2 : p < 0.2), `p[${i}] = ${p}`));
  // --ptest alone: the reference's P = 100 and eta = 0.05; the default width is the reference rule
  const d = rank(['--activations', f('maps64.npy'), '--labels', f('labels.npy'), '--classes', '10', '--backend', 'ts', '--max-select', '2', '--ptest']);
  assert.equal(d.code, 0, d.stderr);
  const dout = JSON.parse(d.stdout);
  assert.equal(dout.permutationTest.permutations, 100);
  assert.equal(dout.permutationTest.eta, 0.05);
  assert.equal(dout.sigma.rule, 'reference');
});

test('a layer of dead (constant) filters ranks without crashing', () => {
  const r = rank(['--activations', f('dead.npy'), '--labels', f('labels.npy')]);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.order.length, 2);
  assert.ok(out.cmi.every((v: number) => Math.abs(v) < 1e-9), 'no information in constant maps');
});

test('errors name the file or option, exit non-zero and print nothing on stdout', () => {
  const cases: [string[], RegExp][] = [
    [['--activations', f('garbage.npy'), '--labels', f('labels.npy')], /garbage\.npy: not a valid \.npy file/],
    [['--activations', f('missing.npy'), '--labels', f('labels.npy')], /missing\.npy: cannot read/],
    [['--activations', f('maps32.npy'), '--labels', f('labels-short.npy')], /labels-short\.npy: 47 labels, but .*maps32\.npy has 48 samples/],
    [['--activations', f('maps32.npy'), '--labels', f('labels.npy'), '--before', f('before-short.npy')], /before-short\.npy: 46 samples/],
    [['--activations', f('nan.npy'), '--labels', f('labels.npy')], /nan\.npy: activations contain NaN \(sample 5, channel 3\)/],
    [['--activations', f('labels.npy'), '--labels', f('labels.npy')], /labels\.npy: activations must be float32 or float64/],
    [['--activations', f('maps32.npy'), '--labels', f('maps32.npy')], /maps32\.npy: labels must have shape/],
    [['--activations', f('maps32.npy'), '--labels', f('labels.npy'), '--alpha', '1'], /--alpha/],
    [['--activations', f('maps32.npy'), '--labels', f('labels.npy'), '--threads', '0'], /--threads/],
    [['--activations', f('maps32.npy'), '--labels', f('labels.npy'), '--classes', '3'], /out of range for --classes 3/],
    [['--labels', f('labels.npy')], /--activations/],
    [['--activations', f('maps32.npy'), '--labels', f('labels.npy'), '--sigma', 'widest'], /--sigma/],
    [['--activations', f('maps32.npy'), '--labels', f('labels.npy'), '--ptest', '0'], /--ptest/],
    [['--activations', f('maps32.npy'), '--labels', f('labels.npy'), '--ptest-eta', '0.1'], /--ptest-eta needs --ptest/],
  ];
  for (const [args, re] of cases) {
    const r = rank(args);
    assert.notEqual(r.code, 0, `${args.join(' ')} should fail`);
    assert.equal(r.stdout, '', `${args.join(' ')}: nothing on stdout`);
    assert.match(r.stderr, re);
    assert.ok(!/internal error/.test(r.stderr), r.stderr);
  }
});
