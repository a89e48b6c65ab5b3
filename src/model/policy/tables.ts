/**
 * Rules as table entries: a rule's ports as protocol and port prefixes,
 * and the union of several rules' sorted entry lists into one table in the
 * canonical order (diff.ts compareRuleKeys).
 */
import { PROTO_ANY, PROTO_SCTP, PROTO_TCP, PROTO_UDP, type PolicyDirection, type PolicyRuleEntry } from './compiled.js';
import { portRangePrefixes } from './prefix.js';
import type { PolicyProtocol, PolicyRule } from './types.js';

export const PROTO_NUMBER: Record<PolicyProtocol, number> = { TCP: PROTO_TCP, UDP: PROTO_UDP, SCTP: PROTO_SCTP };

export interface PortSpec {
  proto: number;
  /** undefined: every port of proto (or every protocol when proto is PROTO_ANY). */
  ranges?: Array<{ port: number; prefixLen: number }>;
  name?: string;
}

export function portSpecs(rule: PolicyRule): PortSpec[] {
  if (rule.ports === 'any') return [{ proto: PROTO_ANY }];
  return rule.ports.map((p) => {
    const proto = PROTO_NUMBER[p.protocol];
    if (p.port === undefined) return { proto };
    if (typeof p.port === 'string') return { proto, name: p.port };
    return { proto, ranges: portRangePrefixes(p.port, p.endPort ?? p.port) };
  });
}

export type FixedEntry = { peer: number; proto: number; port: number; portPrefixLen: number };
export const compareFixed = (a: FixedEntry, b: FixedEntry): number =>
  a.peer - b.peer || a.proto - b.proto || a.port - b.port || a.portPrefixLen - b.portPrefixLen;

/**
 * Union of sorted runs (each an expansion's entries with the rule id to
 * give them) and a few loose entries, appended to `out` in canonical order;
 * a key in several runs takes the lowest rule id.
 */
export function mergeRuns(
  direction: PolicyDirection,
  runs: Array<{ list: readonly FixedEntry[]; ruleId: number }>,
  loose: Array<FixedEntry & { ruleId: number }>,
  out: PolicyRuleEntry[],
): void {
  if (loose.length) runs.push({ list: loose.sort((a, b) => compareFixed(a, b) || a.ruleId - b.ruleId), ruleId: -1 });
  const at = runs.map(() => 0);
  for (;;) {
    let best = -1;
    let bestRule = 0;
    for (let k = 0; k < runs.length; k++) {
      const run = runs[k]!;
      const e = run.list[at[k]!];
      if (!e) continue;
      const rid = run.ruleId >= 0 ? run.ruleId : (e as FixedEntry & { ruleId: number }).ruleId;
      if (best < 0) {
        best = k;
        bestRule = rid;
        continue;
      }
      const c = compareFixed(e, runs[best]!.list[at[best]!]!);
      if (c < 0 || (c === 0 && rid < bestRule)) {
        best = k;
        bestRule = rid;
      }
    }
    if (best < 0) return;
    const e = runs[best]!.list[at[best]!]!;
    out.push({ peer: e.peer, direction, proto: e.proto, port: e.port, portPrefixLen: e.portPrefixLen, verdict: 'allow', ruleId: bestRule });
    // Skip this key in every run.
    for (let k = 0; k < runs.length; k++) {
      const list = runs[k]!.list;
      while (at[k]! < list.length && compareFixed(list[at[k]!]!, e) === 0) at[k]!++;
    }
  }
}
