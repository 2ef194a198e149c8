// The experiments' view of residual networks: which mode decides the channel groups, and the
// conv filter count that "filters removed" means whatever the groups are.
//
// ResidualMode is being added to src/prune/groups.ts (channelGroups(model, residual)); until that
// lands the type is restated here and the call goes through a cast, and 'all' is refused when the
// groups it gets back still stop at the Adds (else a run keyed 'all' would silently be 'inner').
import type { Model } from '../ir/model.js';
import { channelGroups } from '../prune/groups.js';
import type { ChannelGroup } from '../prune/types.js';
import { UserError } from '../util/errors.js';

/** 'inner': only convs whose channels reach no Add are prunable; 'all': coupled across the Adds as well */
export type ResidualMode = 'inner' | 'all';
export const RESIDUAL_MODES: readonly ResidualMode[] = ['inner', 'all'];

/** The model's channel groups in the given residual mode. */
export function groupsFor(model: Model, residual: ResidualMode): ChannelGroup[] {
  const groups = (channelGroups as (m: Model, r?: ResidualMode) => ChannelGroup[])(model, residual);
  const stopped = groups.filter((g) => !g.prunable && /residual|\bAdd\b/.test(g.reason ?? ''));
  if (residual === 'all' && stopped.length > 0)
    throw new UserError(`--residual all: the channel groups still stop at residual Adds (${stopped[0]!.name}: ${stopped[0]!.reason}); this build prunes residual networks with --residual inner only`);
  return groups;
}

/** Conv filters (output channels of every Conv2d) in a model: what "filters" counts in the experiments. */
export function convFilters(model: Model): number {
  return model.nodes.reduce((s, n) => s + (n.op === 'Conv2d' ? (n.attrs as { outChannels: number }).outChannels : 0), 0);
}
