// Graph queries over the IR: who consumes a value, and which conv layers form prunable units.
import type { BatchNormNode, Conv2dNode, Model, Node, ReluNode } from './model.js';

/** value name -> nodes that read it */
export function consumers(model: Model): Map<string, Node[]> {
  const map = new Map<string, Node[]>();
  for (const n of model.nodes) {
    for (const v of n.inputs) {
      const list = map.get(v) ?? [];
      list.push(n);
      map.set(v, list);
    }
  }
  return map;
}

/**
 * A conv layer as the method sees it: Conv -> [BatchNorm] -> [Relu], where the feature maps the
 * estimators read are the unit's last output (SPEC: "taken after Conv -> BN -> ReLU").
 */
export interface ConvUnit {
  /** the conv node's name, used as the layer name everywhere (CLI --layer, reports, checkpoints) */
  name: string;
  /** 0-based position among the model's conv units, in network order */
  index: number;
  conv: Conv2dNode;
  bn?: BatchNormNode;
  relu?: ReluNode;
  /** the value whose maps are ranked */
  tap: string;
  channels: number;
}

/** Conv units in network order; BN and ReLU are absorbed only when they are the sole consumer. */
export function convUnits(model: Model): ConvUnit[] {
  const cons = consumers(model);
  const only = (value: string): Node | undefined => {
    const c = cons.get(value);
    return c && c.length === 1 && !model.outputs.includes(value) ? c[0] : undefined;
  };
  const units: ConvUnit[] = [];
  for (const node of model.nodes) {
    if (node.op !== 'Conv2d') continue;
    let tap = node.outputs[0];
    let bn: BatchNormNode | undefined;
    let relu: ReluNode | undefined;
    const next = only(tap);
    if (next?.op === 'BatchNorm') {
      bn = next;
      tap = next.outputs[0];
    }
    const after = only(tap);
    if (after?.op === 'Relu') {
      relu = after;
      tap = after.outputs[0];
    }
    units.push({ name: node.name, index: units.length, conv: node, bn, relu, tap, channels: node.attrs.outChannels });
  }
  return units;
}
