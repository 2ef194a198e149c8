// The engine against an independent float64 reference interpreter written here in plain TS.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

import { engineCacheStats, getThreads, releaseCachedMemory, setThreads, TorchModel } from '../src/engine/index.js';
import { numel, type Model, type Node, type Tensor } from '../src/ir/model.js';
import { UserError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';

// ---------- deterministic data ----------
function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}
function randTensor(r: () => number, shape: number[], lo = -1, hi = 1): Tensor {
  const d = new Float32Array(numel(shape));
  for (let i = 0; i < d.length; i++) d[i] = lo + (hi - lo) * r();
  return { shape, data: d };
}

// ---------- reference ops (float64, NCHW) ----------
interface T64 {
  shape: number[];
  data: Float64Array;
}
const f64 = (t: Tensor): T64 => ({ shape: [...t.shape], data: Float64Array.from(t.data) });

function poolOut(h: number, k: number, s: number, p: number, d: number, ceil: boolean): number {
  let o = Math.floor((h + 2 * p - d * (k - 1) - 1 + (ceil ? s - 1 : 0)) / s) + 1;
  if (ceil && (o - 1) * s >= h + p) o--;
  return o;
}

function conv2d(x: T64, w: T64, b: T64 | undefined, a: Extract<Node, { op: 'Conv2d' }>['attrs']): T64 {
  const [N, C, H, W] = x.shape;
  const [O, Cg, KH, KW] = w.shape;
  const [sh, sw] = a.stride, [ph, pw] = a.padding, [dh, dw] = a.dilation, G = a.groups;
  const OH = poolOut(H, KH, sh, ph, dh, false), OW = poolOut(W, KW, sw, pw, dw, false);
  const y = new Float64Array(N * O * OH * OW);
  const Og = O / G;
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++) {
      const g = Math.floor(o / Og);
      for (let oh = 0; oh < OH; oh++)
        for (let ow = 0; ow < OW; ow++) {
          let s = b ? b.data[o] : 0;
          for (let c = 0; c < Cg; c++)
            for (let kh = 0; kh < KH; kh++) {
              const ih = oh * sh - ph + kh * dh;
              if (ih < 0 || ih >= H) continue;
              for (let kw = 0; kw < KW; kw++) {
                const iw = ow * sw - pw + kw * dw;
                if (iw < 0 || iw >= W) continue;
                s += x.data[((n * C + g * Cg + c) * H + ih) * W + iw] * w.data[((o * Cg + c) * KH + kh) * KW + kw];
              }
            }
          y[((n * O + o) * OH + oh) * OW + ow] = s;
        }
    }
  assert.equal(C, Cg * G);
  return { shape: [N, O, OH, OW], data: y };
}

/** eval mode uses running stats; train mode returns the batch stats used (biased var) */
function batchNorm(x: T64, p: Record<string, T64>, eps: number, train: boolean): { y: T64; mean: number[]; varU: number[] } {
  const [N, C] = x.shape;
  const S = x.shape.length === 4 ? x.shape[2] * x.shape[3] : 1;
  const y = new Float64Array(x.data.length);
  const means: number[] = [], varsU: number[] = [];
  for (let c = 0; c < C; c++) {
    let mean = p.runningMean.data[c], v = p.runningVar.data[c];
    if (train) {
      let s = 0, s2 = 0;
      for (let n = 0; n < N; n++) for (let i = 0; i < S; i++) s += x.data[(n * C + c) * S + i];
      mean = s / (N * S);
      for (let n = 0; n < N; n++) for (let i = 0; i < S; i++) s2 += (x.data[(n * C + c) * S + i] - mean) ** 2;
      v = s2 / (N * S);
      means.push(mean);
      varsU.push(s2 / (N * S - 1));
    }
    const inv = 1 / Math.sqrt(v + eps);
    for (let n = 0; n < N; n++)
      for (let i = 0; i < S; i++) {
        const k = (n * C + c) * S + i;
        y[k] = (x.data[k] - mean) * inv * p.weight.data[c] + p.bias.data[c];
      }
  }
  return { y: { shape: [...x.shape], data: y }, mean: means, varU: varsU };
}

function pool(x: T64, a: Extract<Node, { op: 'MaxPool' }>['attrs'], max: boolean): T64 {
  const [N, C, H, W] = x.shape;
  const [kh, kw] = a.kernel, [sh, sw] = a.stride, [ph, pw] = a.padding;
  const OH = poolOut(H, kh, sh, ph, 1, a.ceilMode), OW = poolOut(W, kw, sw, pw, 1, a.ceilMode);
  const y = new Float64Array(N * C * OH * OW);
  for (let nc = 0; nc < N * C; nc++)
    for (let oh = 0; oh < OH; oh++)
      for (let ow = 0; ow < OW; ow++) {
        const h0 = oh * sh - ph, w0 = ow * sw - pw;
        // PyTorch: the include-pad divisor counts padding but not positions past it
        const h1 = Math.min(h0 + kh, H + ph), w1 = Math.min(w0 + kw, W + pw);
        const padCount = (h1 - h0) * (w1 - w0);
        let m = -Infinity, s = 0, cnt = 0;
        for (let ih = Math.max(h0, 0); ih < Math.min(h1, H); ih++)
          for (let iw = Math.max(w0, 0); iw < Math.min(w1, W); iw++) {
            const v = x.data[(nc * H + ih) * W + iw];
            m = Math.max(m, v);
            s += v;
            cnt++;
          }
        y[(nc * OH + oh) * OW + ow] = max ? m : s / (a.countIncludePad ? padCount : cnt);
      }
  return { shape: [N, C, OH, OW], data: y };
}

/** Runs the whole IR; returns every value by name plus batch stats of BN nodes (train mode). */
function reference(model: Model, x: Tensor, train = false) {
  const vals = new Map<string, T64>([[model.inputs[0].name, f64(x)]]);
  const stats = new Map<string, { mean: number[]; varU: number[] }>();
  const P = (n: Node, slot: string): T64 | undefined => {
    const k = (n.params as Record<string, string | undefined>)[slot];
    return k === undefined ? undefined : f64(model.tensors[k]);
  };
  for (const n of model.nodes) {
    const a = vals.get(n.inputs[0])!;
    let y: T64;
    switch (n.op) {
      case 'Conv2d':
        y = conv2d(a, P(n, 'weight')!, P(n, 'bias'), n.attrs);
        break;
      case 'BatchNorm': {
        const p = { weight: P(n, 'weight')!, bias: P(n, 'bias')!, runningMean: P(n, 'runningMean')!, runningVar: P(n, 'runningVar')! };
        const r = batchNorm(a, p, n.attrs.eps, train);
        y = r.y;
        stats.set(n.name, r);
        break;
      }
      case 'Relu':
        y = { shape: a.shape, data: a.data.map((v) => Math.max(v, 0)) };
        break;
      case 'MaxPool':
      case 'AvgPool':
        y = pool(a, n.attrs, n.op === 'MaxPool');
        break;
      case 'GlobalAvgPool': {
        const [N, C, H, W] = a.shape;
        const d = new Float64Array(N * C);
        for (let i = 0; i < N * C; i++) for (let j = 0; j < H * W; j++) d[i] += a.data[i * H * W + j] / (H * W);
        y = { shape: [N, C, 1, 1], data: d };
        break;
      }
      case 'Flatten':
        y = { shape: [a.shape[0], numel(a.shape.slice(1))], data: a.data };
        break;
      case 'Linear': {
        const w = P(n, 'weight')!, b = P(n, 'bias');
        const [N, I] = a.shape, O = w.shape[0];
        const d = new Float64Array(N * O);
        for (let i = 0; i < N; i++)
          for (let o = 0; o < O; o++) {
            let s = b ? b.data[o] : 0;
            for (let k = 0; k < I; k++) s += a.data[i * I + k] * w.data[o * I + k];
            d[i * O + o] = s;
          }
        y = { shape: [N, O], data: d };
        break;
      }
      case 'Add': {
        const b = vals.get(n.inputs[1])!;
        y = { shape: a.shape, data: a.data.map((v, i) => v + b.data[i]) };
        break;
      }
    }
    vals.set(n.outputs[0], y);
  }
  return { vals, stats };
}

function assertClose(got: Tensor, want: T64, what: string, tol = 1e-5): void {
  assert.deepEqual(got.shape, want.shape, `${what}: shape`);
  let worst = 0;
  for (let i = 0; i < want.data.length; i++)
    worst = Math.max(worst, Math.abs(got.data[i] - want.data[i]) / Math.max(1, Math.abs(want.data[i])));
  assert.ok(worst <= tol, `${what}: max error ${worst} > ${tol}`);
}

// ---------- model builders ----------
class Builder {
  nodes: Node[] = [];
  tensors: Record<string, Tensor> = {};
  constructor(private r: () => number) {}
  private t(name: string, shape: number[], lo = -0.5, hi = 0.5): string {
    this.tensors[name] = randTensor(this.r, shape, lo, hi);
    return name;
  }
  conv(name: string, x: string, inC: number, outC: number, k: number, o: Partial<{ stride: number; pad: number; dil: number; groups: number; bias: boolean }> = {}): string {
    const groups = o.groups ?? 1;
    const params: Record<string, string> = { weight: this.t(`${name}.weight`, [outC, inC / groups, k, k]) };
    if (o.bias ?? true) params.bias = this.t(`${name}.bias`, [outC]);
    this.nodes.push({
      name, op: 'Conv2d', inputs: [x], outputs: [name],
      attrs: { inChannels: inC, outChannels: outC, kernel: [k, k], stride: [o.stride ?? 1, o.stride ?? 1], padding: [o.pad ?? 0, o.pad ?? 0], dilation: [o.dil ?? 1, o.dil ?? 1], groups },
      params,
    });
    return name;
  }
  bn(name: string, x: string, c: number): string {
    this.nodes.push({
      name, op: 'BatchNorm', inputs: [x], outputs: [name], attrs: { numFeatures: c, eps: 1e-5, momentum: 0.1 },
      params: { weight: this.t(`${name}.weight`, [c], 0.5, 1.5), bias: this.t(`${name}.bias`, [c]), runningMean: this.t(`${name}.running_mean`, [c], -0.2, 0.2), runningVar: this.t(`${name}.running_var`, [c], 0.5, 2) },
    });
    return name;
  }
  simple(op: 'Relu' | 'GlobalAvgPool', name: string, x: string): string {
    this.nodes.push({ name, op, inputs: [x], outputs: [name], attrs: {}, params: {} } as Node);
    return name;
  }
  pool(op: 'MaxPool' | 'AvgPool', name: string, x: string, k: number, s: number, pad = 0, ceilMode = false, countIncludePad = true): string {
    this.nodes.push({ name, op, inputs: [x], outputs: [name], attrs: { kernel: [k, k], stride: [s, s], padding: [pad, pad], ceilMode, countIncludePad }, params: {} });
    return name;
  }
  flatten(name: string, x: string): string {
    this.nodes.push({ name, op: 'Flatten', inputs: [x], outputs: [name], attrs: { axis: 1 }, params: {} });
    return name;
  }
  linear(name: string, x: string, i: number, o: number): string {
    this.nodes.push({ name, op: 'Linear', inputs: [x], outputs: [name], attrs: { inFeatures: i, outFeatures: o }, params: { weight: this.t(`${name}.weight`, [o, i]), bias: this.t(`${name}.bias`, [o]) } });
    return name;
  }
  add(name: string, a: string, b: string): string {
    this.nodes.push({ name, op: 'Add', inputs: [a, b], outputs: [name], attrs: {}, params: {} });
    return name;
  }
  model(name: string, inShape: number[], out: string): Model {
    return { name, inputs: [{ name: 'input', shape: [-1, ...inShape] }], outputs: [out], nodes: this.nodes, tensors: this.tensors, metadata: {} };
  }
}

/** Conv -> BN -> Relu -> MaxPool -> Flatten -> Linear on 3x8x8 */
function plainNet(seed = 1): Model {
  const b = new Builder(rng(seed));
  let x = b.conv('conv1', 'input', 3, 4, 3, { pad: 1 });
  x = b.bn('bn1', x, 4);
  x = b.simple('Relu', 'relu1', x);
  x = b.pool('MaxPool', 'pool1', x, 2, 2);
  x = b.flatten('flat', x);
  x = b.linear('fc', x, 4 * 4 * 4, 5);
  return b.model('plain', [3, 8, 8], x);
}

/** Residual block, strided/grouped/dilated convs, both AvgPool modes, GlobalAvgPool, BN1d. */
function residualNet(seed = 2): Model {
  const b = new Builder(rng(seed));
  const stem = b.simple('Relu', 'stem_relu', b.bn('stem_bn', b.conv('stem', 'input', 3, 4, 3, { pad: 1, bias: false }), 4));
  let y = b.simple('Relu', 'b1_relu', b.bn('b1_bn', b.conv('b1_conv', stem, 4, 4, 3, { pad: 2, dil: 2, groups: 2 }), 4));
  y = b.conv('b1_conv2', y, 4, 4, 3, { pad: 1, groups: 4, bias: false });
  const sum = b.simple('Relu', 'b1_out', b.add('b1_add', y, stem));
  let z = b.conv('down', sum, 4, 6, 3, { stride: 2, pad: 1 }); // 9x9 -> 5x5
  z = b.pool('AvgPool', 'avg_ceil', z, 2, 2, 1, true, false); // 5x5 -> 3x3 (ceil, excl. pad)
  z = b.pool('AvgPool', 'avg_incl', z, 2, 1, 1, false, true); // 3x3 -> 4x4 (incl. pad)
  z = b.pool('MaxPool', 'max_ceil', z, 3, 2, 1, true); // 4x4 -> 3x3 (ceil)
  z = b.simple('GlobalAvgPool', 'gap', z);
  z = b.flatten('flat', z);
  z = b.linear('fc1', z, 6, 8);
  z = b.simple('Relu', 'fc1_relu', b.bn('bn1d', z, 8));
  z = b.linear('fc2', z, 8, 3);
  return b.model('residual', [3, 9, 9], z);
}

setThreads(2);

test('forward matches the reference: Conv-BN-Relu-MaxPool-Flatten-Linear', async () => {
  const m = plainNet();
  const tm = TorchModel.create(m);
  const x = randTensor(rng(10), [3, 3, 8, 8]);
  const { outputs, taps } = await tm.forward(x.data, x.shape);
  assert.deepEqual(Object.keys(taps), []);
  assertClose(outputs.fc, reference(m, x).vals.get('fc')!, 'fc');
  tm.dispose();
});

test('forward matches the reference: residual Add, grouped/strided/dilated conv, pools, BN1d', async () => {
  const m = residualNet();
  const tm = TorchModel.create(m);
  const x = randTensor(rng(11), [2, 3, 9, 9]);
  const ref = reference(m, x).vals;
  const names = m.nodes.map((n) => n.outputs[0]);
  const { outputs, taps } = await tm.forward(x.data, x.shape, { taps: names });
  assertClose(outputs.fc2, ref.get('fc2')!, 'fc2');
  // every intermediate value, incl. those consumed by in-place Relu and the Flatten view
  for (const n of names) assertClose(taps[n], ref.get(n)!, `tap ${n}`);
  assert.deepEqual(taps.gap.shape, [2, 6, 1, 1]);
  // without taps on conv outputs, BN is folded into the preceding conv on the blocked path
  const folded = await tm.forward(x.data, x.shape, { taps: ['stem_bn', 'b1_relu'] });
  assertClose(folded.outputs.fc2, ref.get('fc2')!, 'fc2 (folded)');
  assertClose(folded.taps.stem_bn, ref.get('stem_bn')!, 'stem_bn (folded)');
  assertClose(folded.taps.b1_relu, ref.get('b1_relu')!, 'b1_relu (folded)');
  // the plain NCHW and NHWC paths give the same answers as the default (oneDNN-blocked) one
  for (const opts of [{ blockedInference: false }, { blockedInference: false, channelsLast: true }]) {
    const other = TorchModel.create(m, opts);
    const r = await other.forward(x.data, x.shape, { taps: names });
    assertClose(r.outputs.fc2, ref.get('fc2')!, `fc2 ${JSON.stringify(opts)}`);
    for (const n of names) assertClose(r.taps[n], ref.get(n)!, `tap ${n} ${JSON.stringify(opts)}`);
    other.dispose();
  }
  tm.dispose();
});

test('taps are independent copies and the input buffer is not modified', async () => {
  const m = plainNet();
  const tm = TorchModel.create(m);
  const x = randTensor(rng(12), [2, 3, 8, 8]);
  const before = x.data.slice();
  const { taps } = await tm.forward(x.data, x.shape, { taps: ['input', 'pool1', 'flat', 'flat'] });
  assert.deepEqual(x.data, before);
  assert.deepEqual(taps.input.data, before);
  taps.pool1.data.fill(7);
  assert.notEqual(taps.flat.data[0], 7);
  await assert.rejects(tm.forward(x.data, x.shape, { taps: ['nope'] }), /no value named 'nope'/);
  await assert.rejects(tm.forward(x.data, [2, 3, 8, 9]), UserError);
  tm.dispose();
});

test('readTensors/writeTensors round-trip; shape mismatch names the tensor', async () => {
  const m = plainNet();
  const tm = TorchModel.create(m);
  const read = tm.readTensors();
  assert.deepEqual(Object.keys(read).sort(), Object.keys(m.tensors).sort());
  for (const [k, t] of Object.entries(m.tensors)) assert.deepEqual(read[k], t, k);

  // write new conv weights + BN stats; forward must follow them (also after an earlier forward
  // packed the old weights)
  const x0 = randTensor(rng(22), [2, 3, 8, 8]);
  assertClose((await tm.forward(x0.data, x0.shape)).outputs.fc, reference(m, x0).vals.get('fc')!, 'fc before write');
  const r = rng(20);
  const m2 = { ...m, tensors: { ...m.tensors } };
  for (const k of ['conv1.weight', 'bn1.running_mean', 'bn1.running_var']) {
    m2.tensors[k] = randTensor(r, m.tensors[k].shape, k.endsWith('var') ? 0.5 : -1, 1);
    tm.writeTensors({ [k]: m2.tensors[k] });
  }
  assert.deepEqual(tm.readTensors()['conv1.weight'], m2.tensors['conv1.weight']);
  const x = randTensor(rng(21), [2, 3, 8, 8]);
  assertClose((await tm.forward(x.data, x.shape)).outputs.fc, reference(m2, x).vals.get('fc')!, 'fc after write');
  assert.deepEqual(tm.toModel().tensors['bn1.running_var'], m2.tensors['bn1.running_var']);

  assert.throws(() => tm.writeTensors({ 'fc.weight': randTensor(r, [5, 63]) }), (e: Error) => e instanceof UserError && /'fc\.weight'.*\[5,63\].*\[5,64\]/.test(e.message));
  assert.throws(() => tm.writeTensors({ nope: randTensor(r, [1]) }), /no tensor 'nope'/);
  tm.dispose();
  assert.throws(() => tm.readTensors(), /disposed/);
});

test('train step: loss and BN statistics match the reference, loss falls, forward leaves stats alone', async () => {
  const m = plainNet(3);
  const tm = TorchModel.create(m);
  const x = randTensor(rng(30), [8, 3, 8, 8]);
  const labels = Int32Array.from({ length: 8 }, (_, i) => i % 5);

  // eval-mode forward must not move the running stats
  await tm.forward(x.data, x.shape);
  assert.deepEqual(tm.readTensors()['bn1.running_mean'], m.tensors['bn1.running_mean']);

  // one plain SGD step at lr 0: reported loss = train-mode cross-entropy, stats follow momentum 0.1
  tm.configureOptimizer({ momentum: 0, nesterov: false, weightDecay: 0 });
  const ref = reference(m, x, true);
  const logits = ref.vals.get('fc')!;
  let ce = 0, correct = 0;
  for (let i = 0; i < 8; i++) {
    const row = Array.from(logits.data.slice(i * 5, i * 5 + 5));
    const mx = Math.max(...row);
    ce += mx + Math.log(row.reduce((s, v) => s + Math.exp(v - mx), 0)) - row[labels[i]];
    if (row.indexOf(mx) === labels[i]) correct++;
  }
  const s0 = await tm.trainStep(x.data, x.shape, labels, 0);
  assert.ok(Math.abs(s0.loss - ce / 8) < 1e-5, `loss ${s0.loss} vs ${ce / 8}`);
  assert.equal(s0.correct, correct);
  const after = tm.readTensors();
  const st = ref.stats.get('bn1')!;
  const rm = m.tensors['bn1.running_mean'].data, rv = m.tensors['bn1.running_var'].data;
  assertClose(after['bn1.running_mean'], { shape: [4], data: Float64Array.from(st.mean, (v, c) => 0.9 * rm[c] + 0.1 * v) }, 'running mean');
  assertClose(after['bn1.running_var'], { shape: [4], data: Float64Array.from(st.varU, (v, c) => 0.9 * rv[c] + 0.1 * v) }, 'running var');
  assert.deepEqual(after['conv1.weight'], m.tensors['conv1.weight'], 'lr 0 leaves weights alone');
  const cl = TorchModel.create(m, { channelsLast: true });
  cl.configureOptimizer({ momentum: 0, nesterov: false, weightDecay: 0 });
  const s1 = await cl.trainStep(x.data, x.shape, labels, 0);
  assert.ok(Math.abs(s1.loss - ce / 8) < 1e-5, `NHWC loss ${s1.loss} vs ${ce / 8}`);
  assertClose(cl.readTensors()['bn1.running_var'], f64(after['bn1.running_var']), 'NHWC running var');
  cl.dispose();

  // a few Nesterov steps with weight decay on the same batch must reduce the loss
  tm.configureOptimizer({ momentum: 0.9, nesterov: true, weightDecay: 5e-4 });
  const losses: number[] = [];
  for (let i = 0; i < 6; i++) losses.push((await tm.trainStep(x.data, x.shape, labels, 0.05)).loss);
  assert.ok(losses[5] < 0.7 * losses[0], `losses ${losses.map((l) => l.toFixed(4))}`);
  assert.notDeepEqual(tm.readTensors()['conv1.weight'], m.tensors['conv1.weight']);
  // eval after training uses the trained weights
  const trained = tm.toModel();
  assertClose((await tm.forward(x.data, x.shape)).outputs.fc, reference(trained, x).vals.get('fc')!, 'fc after training');
  await assert.rejects(tm.trainStep(x.data, x.shape, Int32Array.from(labels, () => 5), 0.1), /label 5 .*outside \[0, 5\)/);
  tm.dispose();
});

test('trainStep momentum replaces the optimizer momentum from that step on', async () => {
  const m = plainNet(3);
  const x = randTensor(rng(31), [8, 3, 8, 8]);
  const labels = Int32Array.from({ length: 8 }, (_, i) => i % 5);
  const run = async (configured: number, passed: (number | undefined)[]) => {
    const tm = TorchModel.create(m);
    tm.configureOptimizer({ momentum: configured, nesterov: true, weightDecay: 5e-4 });
    for (const mo of passed) await tm.trainStep(x.data, x.shape, labels, 0.05, mo);
    const w = tm.readTensors()['conv1.weight'];
    tm.dispose();
    return w;
  };
  const fixed = await run(0.5, [undefined, undefined, undefined]);
  // configured 0.9 but 0.5 passed on every step = configured 0.5; passed once, it stays in force
  assert.deepEqual(await run(0.9, [0.5, 0.5, 0.5]), fixed);
  assert.deepEqual(await run(0.9, [0.5, undefined, undefined]), fixed);
  assert.notDeepEqual(await run(0.9, [undefined, undefined, undefined]), fixed);
  assert.notDeepEqual(await run(0.9, [0.5, 0.9, 0.5]), fixed);
  const tm = TorchModel.create(m);
  tm.configureOptimizer({ momentum: 0.9, nesterov: true, weightDecay: 0 });
  await assert.rejects(tm.trainStep(x.data, x.shape, labels, 0.05, 1), /momentum must be in \[0, 1\), got 1/);
  await assert.rejects(tm.trainStep(x.data, x.shape, labels, 0.05, 0), /nesterov needs momentum > 0/);
  tm.dispose();
});

test('fused SGD updates match libtorch torch::optim::SGD (momentum, Nesterov, weight decay, momentum changes)', async () => {
  const m = plainNet(3);
  const x = randTensor(rng(32), [8, 3, 8, 8]);
  const labels = Int32Array.from({ length: 8 }, (_, i) => (i * 3) % 5);
  const cases: { cfg: { momentum: number; nesterov: boolean; weightDecay: number }; moms: (number | undefined)[]; channelsLast?: boolean }[] = [
    { cfg: { momentum: 0.9, nesterov: true, weightDecay: 5e-4 }, moms: [undefined, undefined, 0.85, 0.95] },
    { cfg: { momentum: 0.9, nesterov: false, weightDecay: 1e-3 }, moms: [undefined, undefined, undefined] },
    // momentum 0 first (no buffer), then on: the buffer starts at the first step that uses it
    { cfg: { momentum: 0, nesterov: false, weightDecay: 0 }, moms: [undefined, 0.9, 0.9, 0] },
    { cfg: { momentum: 0.9, nesterov: true, weightDecay: 5e-4 }, moms: [undefined, undefined], channelsLast: true },
  ];
  for (const [ci, c] of cases.entries()) {
    const weights = [];
    for (const fusedSgd of [true, false]) {
      const tm = TorchModel.create(m, { fusedSgd, channelsLast: c.channelsLast });
      tm.configureOptimizer(c.cfg);
      for (const mo of c.moms) await tm.trainStep(x.data, x.shape, labels, 0.1, mo);
      weights.push(tm.readTensors());
      tm.dispose();
    }
    const [fused, lib] = weights;
    for (const name of Object.keys(lib!)) {
      assertClose(fused![name]!, f64(lib![name]!), `case ${ci} ${name}`, 1e-5);
    }
    assert.notDeepEqual(fused!['conv1.weight'], m.tensors['conv1.weight'], `case ${ci}: weights moved`);
  }
});

test('concurrent calls are serialised; sync calls during a pending call are refused', async () => {
  const m = plainNet();
  const tm = TorchModel.create(m);
  const x1 = randTensor(rng(40), [2, 3, 8, 8]), x2 = randTensor(rng(41), [2, 3, 8, 8]);
  const buf1 = x1.data.slice(), buf2 = x1.data.slice();
  const p1 = tm.forward(buf1, x1.shape);
  const p2 = tm.forward(buf2, x1.shape);
  // both inputs were captured at call time: refilling the buffers must not matter
  buf1.set(x2.data);
  buf2.set(x2.data);
  assert.throws(() => tm.readTensors(), /in progress/);
  const [r1, r2] = await Promise.all([p1, p2]);
  assertClose(r1.outputs.fc, reference(m, x1).vals.get('fc')!, 'first call');
  assert.deepEqual(r1.outputs.fc, r2.outputs.fc);
  tm.dispose();
});

test('forward and trainStep run off the event loop', async () => {
  const b = new Builder(rng(50));
  const y = b.linear('fc', b.flatten('flat', b.simple('GlobalAvgPool', 'gap', b.conv('conv', 'input', 3, 64, 5, { pad: 2 }))), 64, 4);
  const tm = TorchModel.create(b.model('slow', [3, 48, 48], y));
  const x = randTensor(rng(51), [16, 3, 48, 48]);
  let ticks = 0;
  let done = false;
  const spin = () => {
    ticks++;
    if (!done) setImmediate(spin);
  };
  setImmediate(spin);
  await tm.forward(x.data, x.shape);
  tm.configureOptimizer({ momentum: 0.9, nesterov: false, weightDecay: 0 });
  await tm.trainStep(x.data, x.shape, new Int32Array(16), 0.01);
  done = true;
  assert.ok(ticks > 2, `event loop ran ${ticks} times during the calls`);
  tm.dispose();
});

test('missing or mis-shaped params give one clear error naming the node', () => {
  const m = plainNet();
  const missing = { ...m, tensors: { ...m.tensors } };
  delete missing.tensors['bn1.running_var'];
  assert.throws(() => TorchModel.create(missing), (e: Error) => e instanceof UserError && /node 'bn1' \(BatchNorm\).*runningVar.*bn1\.running_var/.test(e.message));
  const noSlot = structuredClone(m);
  delete (noSlot.nodes[0].params as Record<string, string>).weight;
  assert.throws(() => TorchModel.create(noSlot), /node 'conv1' \(Conv2d\): missing param 'weight'/);
  const bad = { ...m, tensors: { ...m.tensors, 'fc.bias': randTensor(rng(1), [6]) } };
  assert.throws(() => TorchModel.create(bad), /node 'fc' \(Linear\): param 'bias'.*\[6\], expected \[5\]/);
});

test('thread count set/get', () => {
  setThreads(1);
  assert.equal(getThreads(), 1);
  setThreads(2);
  assert.equal(getThreads(), 2);
  assert.throws(() => setThreads(0), UserError);
});

/** 3x3 convs for the Winograd path (>= 32 input channels, whole 4x4 tiles) and for the tiny-image path, with and without bias */
function winogradNet(seed = 5): Model {
  const b = new Builder(rng(seed));
  let x = b.simple('Relu', 'relu1', b.bn('bn1', b.conv('conv1', 'input', 3, 32, 3, { pad: 1 }), 32));
  x = b.simple('Relu', 'relu2', b.bn('bn2', b.conv('conv2', x, 32, 40, 3, { pad: 1 }), 40)); // 16x16
  x = b.conv('conv3', x, 40, 32, 3, { pad: 1, bias: false });
  x = b.pool('MaxPool', 'pool', b.simple('Relu', 'relu3', x), 2, 2); // 16x16 -> 8x8
  x = b.simple('Relu', 'relu4', b.conv('conv4', x, 32, 8, 3, { pad: 1 }));
  x = b.pool('MaxPool', 'pool2', b.pool('MaxPool', 'pool1', x, 2, 2), 2, 2); // 8x8 -> 2x2
  // tiny images: convolutions as one matrix (padding, then stride 2 down to 1x1, no bias)
  x = b.simple('Relu', 'relu5', b.conv('conv5', x, 8, 16, 3, { pad: 1 }));
  x = b.conv('conv6', x, 16, 8, 3, { pad: 1, stride: 2, bias: false });
  x = b.flatten('flat', x);
  x = b.linear('fc', x, 8, 5);
  // small weights keep activations O(1) through the stack
  for (const [k, t] of Object.entries(b.tensors)) if (k.startsWith('conv') && k.endsWith('weight')) t.data.forEach((v, i, a) => (a[i] = v * 0.3));
  return b.model('winograd', [3, 16, 16], x);
}

test('Winograd and tiny-image convolutions: forward (folded, blocked, plain) matches the reference; gradients match libtorch', async () => {
  const m = winogradNet();
  const x = randTensor(rng(50), [4, 3, 16, 16]);
  const ref = reference(m, x);
  const outs: Record<string, Float32Array> = {};
  const direct = { winograd: false, smallConv: false };
  for (const opts of [{}, { blockedInference: false }, direct]) {
    const tm = TorchModel.create(m, opts);
    const label = JSON.stringify(opts);
    // without taps BN folds into conv2; tapping conv2 keeps it unfolded
    const { outputs } = await tm.forward(x.data, x.shape);
    assertClose(outputs.fc, ref.vals.get('fc')!, `fc ${label}`, 1e-4);
    const { taps } = await tm.forward(x.data, x.shape, { taps: ['conv2', 'conv4', 'conv5'] });
    assertClose(taps.conv2, ref.vals.get('conv2')!, `conv2 tap ${label}`, 1e-4);
    assertClose(taps.conv4, ref.vals.get('conv4')!, `conv4 tap ${label}`, 1e-4);
    assertClose(taps.conv5, ref.vals.get('conv5')!, `conv5 tap ${label}`, 1e-4);
    outs[label] = outputs.fc.data;
    tm.dispose();
  }
  // the fast path really ran: same values up to rounding, not bit for bit
  assert.notDeepEqual(outs['{}'], outs[JSON.stringify(direct)]);

  // one plain SGD step: the weight change is -lr * gradient, so it compares the gradients of every
  // conv (input gradients flow through conv2..conv4, bias and no-bias cases; a bias before BN gets
  // none) with libtorch's own
  const labels = Int32Array.from({ length: 4 }, (_, i) => i % 5);
  const deltas: Record<string, Record<string, Float32Array>>[] = [];
  for (const opts of [{}, direct]) {
    const tm = TorchModel.create(m, opts);
    tm.configureOptimizer({ momentum: 0, nesterov: false, weightDecay: 0 });
    await tm.trainStep(x.data, x.shape, labels, 1);
    const after = tm.readTensors();
    const d: Record<string, Float32Array> = {};
    for (const k of ['conv2.weight', 'conv4.bias', 'conv3.weight', 'conv4.weight', 'conv1.weight', 'conv5.weight', 'conv5.bias', 'conv6.weight'])
      d[k] = after[k]!.data.map((v, i) => v - m.tensors[k]!.data[i]!);
    deltas.push({ d });
    tm.dispose();
  }
  for (const k of Object.keys(deltas[0]!.d!)) {
    const a = deltas[0]!.d![k]!, b = deltas[1]!.d![k]!;
    const scale = Math.max(...b.map(Math.abs));
    assert.ok(scale > 1e-4, `${k}: gradient is not trivially zero`);
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    assert.ok(worst <= 1e-3 * scale, `${k}: fast vs direct gradient differ by ${worst} (scale ${scale})`);
  }
});

test('fused BatchNorm+ReLU training matches libtorch batch_norm + relu (BN2d, BN1d, large offsets, shared outputs)', async () => {
  // fused: BN nodes that take the fused path; still: conv/linear biases right before a BN (no gradient)
  const cases: { model: Model; shape: number[]; fused: string[]; still: string[] }[] = [];
  // residualNet fuses stem_bn, b1_bn (2-d) and bn1d (1-d); here a BN output with a second consumer
  // (relu and the residual add) must run unfused, and a conv bias of ~40 puts the batch mean far
  // above the spread (the variance must not cancel)
  const b = new Builder(rng(7));
  const c1 = b.conv('c1', 'input', 3, 6, 3, { pad: 1 });
  b.tensors['c1.bias']!.data.forEach((_, i, a) => (a[i] = 40 + i));
  const r1 = b.simple('Relu', 'r1', b.bn('bn1', c1, 6));
  const bn2 = b.bn('bn2', b.conv('c2', r1, 6, 6, 3, { pad: 1 }), 6);
  const sum = b.add('sum', b.simple('Relu', 'r2', bn2), bn2);
  let y = b.flatten('flat', b.simple('GlobalAvgPool', 'gap', sum));
  y = b.linear('fc', y, 6, 4);
  cases.push({ model: b.model('shared', [3, 6, 6], y), shape: [6, 3, 6, 6], fused: ['bn1'], still: ['c1.bias', 'c2.bias'] });
  cases.push({ model: residualNet(4), shape: [6, 3, 9, 9], fused: ['stem_bn', 'b1_bn', 'bn1d'], still: ['b1_conv.bias', 'fc1.bias'] });
  for (const c of cases) {
    const x = randTensor(rng(60), c.shape);
    const labels = Int32Array.from({ length: c.shape[0]! }, (_, i) => i % 3);
    const runs: Record<string, Float32Array>[] = [];
    const losses: number[][] = [];
    for (const fuseBnRelu of [true, false]) {
      const tm = TorchModel.create(c.model, { fuseBnRelu });
      tm.configureOptimizer({ momentum: 0.9, nesterov: false, weightDecay: 0 });
      const l: number[] = [];
      for (let i = 0; i < 3; i++) l.push((await tm.trainStep(x.data, x.shape, labels, 0.2)).loss);
      losses.push(l);
      const t = tm.readTensors();
      runs.push(Object.fromEntries(Object.entries(t).map(([k, v]) => [k, v.data])));
      tm.dispose();
    }
    const [fused, lib] = runs as [Record<string, Float32Array>, Record<string, Float32Array>];
    for (let i = 0; i < 3; i++) assert.ok(Math.abs(losses[0]![i]! - losses[1]![i]!) < 1e-4 * Math.max(1, losses[1]![i]!), `${c.model.name} loss ${losses[0]} vs ${losses[1]}`);
    // after three steps every tensor (weights, BN affine params, running stats) agrees; the
    // change of each from its start is compared, relative to the largest change
    for (const k of Object.keys(lib)) {
      const start = c.model.tensors[k]!.data;
      const dl = lib[k]!.map((v, i) => v - start[i]!), df = fused[k]!.map((v, i) => v - start[i]!);
      const scale = Math.max(...dl.map(Math.abs));
      if (c.still.includes(k)) {
        assert.ok(df.every((v) => Math.abs(v) < 1e-6), `${c.model.name} ${k}: gets no gradient`);
        continue;
      }
      assert.ok(scale > 1e-5, `${c.model.name} ${k}: moved`);
      let worst = 0;
      for (let i = 0; i < dl.length; i++) worst = Math.max(worst, Math.abs(df[i]! - dl[i]!));
      assert.ok(worst <= 2e-3 * scale, `${c.model.name} ${k}: fused vs libtorch change differ by ${worst} (scale ${scale})`);
    }
    // the fused op really ran: same values up to rounding, not bit for bit
    assert.ok(c.fused.some((n) => fused[`${n}.weight`]!.some((v, i) => v !== lib[`${n}.weight`]![i])), `${c.model.name}: fused path ran`);
  }
});

test('engine max pooling equals libtorch: values, taps, tie-breaking gradients, floor remainders, ceil mode', async () => {
  // integer inputs and weights make exact ties inside pooling windows: which element of a tie gets
  // the gradient then shows in the conv weights' gradients
  const b = new Builder(rng(9));
  let x = b.conv('c1', 'input', 3, 4, 3, { pad: 1, bias: false });
  x = b.pool('MaxPool', 'p1', x, 2, 2, 0, true); // 8x8 -> 4x4, ceil mode with exact windows
  x = b.simple('Relu', 'r1', b.bn('bn', b.conv('c2', x, 4, 5, 3, { pad: 1 }), 5));
  x = b.pool('MaxPool', 'p2', x, 3, 3); // 4x4 -> 1x1, the last row and column dropped
  x = b.linear('fc', b.flatten('flat', x), 5, 3);
  for (const k of ['c1.weight', 'c2.weight']) b.tensors[k]!.data.forEach((v, i, a) => (a[i] = Math.round(v * 4)));
  const m = b.model('pools', [3, 8, 8], x);
  const r = rng(61);
  const input: Tensor = { shape: [4, 3, 8, 8], data: Float32Array.from({ length: 4 * 3 * 64 }, () => Math.floor(r() * 3)) };
  const ref = reference(m, input);
  for (const blockedInference of [true, false]) {
    const tm = TorchModel.create(m, { blockedInference });
    const { outputs, taps } = await tm.forward(input.data, input.shape, { taps: ['p1', 'p2'] });
    assertClose(outputs.fc, ref.vals.get('fc')!, `fc blocked=${blockedInference}`, 1e-5);
    assertClose(taps.p1, ref.vals.get('p1')!, `p1 blocked=${blockedInference}`, 0);
    assertClose(taps.p2, ref.vals.get('p2')!, `p2 blocked=${blockedInference}`, 1e-5);
    tm.dispose();
  }
  const labels = Int32Array.from({ length: 4 }, (_, i) => i % 3);
  const after: Record<string, Tensor>[] = [];
  for (const fastMaxPool of [true, false]) {
    const tm = TorchModel.create(m, { fastMaxPool });
    tm.configureOptimizer({ momentum: 0.9, nesterov: false, weightDecay: 0 });
    for (let i = 0; i < 2; i++) await tm.trainStep(input.data, input.shape, labels, 0.01);
    after.push(tm.readTensors());
    tm.dispose();
  }
  assert.notDeepEqual(after[0]!['c1.weight']!.data, m.tensors['c1.weight']!.data, 'weights moved');
  for (const k of Object.keys(after[1]!)) assert.deepEqual(after[0]![k]!.data, after[1]![k]!.data, `${k}: engine pool vs libtorch`);
});

test('large CPU blocks are cached: a repeated training step allocates none, release empties the cache, CMIPRUNE_CPU_CACHE_MB=0 opts out', async () => {
  // a model whose activations exceed the 1 MiB threshold: batch 16, 16 channels of 32x32
  const b = new Builder(rng(11));
  let x = b.simple('Relu', 'r1', b.bn('bn1', b.conv('c1', 'input', 3, 16, 3, { pad: 1 }), 16));
  x = b.pool('MaxPool', 'p1', b.simple('Relu', 'r2', b.bn('bn2', b.conv('c2', x, 16, 16, 3, { pad: 1 }), 16)), 2, 2);
  x = b.linear('fc', b.flatten('flat', b.simple('GlobalAvgPool', 'gap', x)), 16, 4);
  const m = b.model('cache', [3, 32, 32], x);
  const input = randTensor(rng(70), [16, 3, 32, 32]);
  const labels = Int32Array.from({ length: 16 }, (_, i) => i % 4);
  const tm = TorchModel.create(m);
  tm.configureOptimizer({ momentum: 0.9, nesterov: true, weightDecay: 5e-4 });
  assert.equal(engineCacheStats().installed, true);
  for (let i = 0; i < 2; i++) await tm.trainStep(input.data, input.shape, labels, 0.01);
  const before = engineCacheStats();
  await tm.trainStep(input.data, input.shape, labels, 0.01);
  const after = engineCacheStats();
  assert.equal(after.misses, before.misses, 'third step: every large block came from the cache');
  assert.ok(after.hits > before.hits, `third step used cached blocks (${before.hits} -> ${after.hits})`);
  assert.ok(after.cachedBytes >= 1 << 20, 'freed blocks wait in the cache');
  tm.dispose();
  releaseCachedMemory();
  assert.equal(engineCacheStats().cachedBytes, 0);

  const engineModule = new URL('../src/engine/index.js', import.meta.url).href;
  const probe = `import(${JSON.stringify(engineModule)}).then((e) => console.log(JSON.stringify(e.engineCacheStats())))`;
  const r = spawnSync(process.execPath, ['-e', probe], { env: { ...process.env, CMIPRUNE_CPU_CACHE_MB: '0' }, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).installed, false);
});
