/**
 * What changed between two compilations, as the writes a dataplane makes:
 * identity prefixes to upsert or delete, endpoints to add, change or
 * remove, and per endpoint the table entries to upsert or delete.
 *
 * Make-before-break order for a writer: identities.upsert, rules.upsert,
 * endpoints.upsert (new tables filled before the endpoint is switched to
 * them), entries[].upsert, then entries[].delete, endpoints.delete,
 * identities.delete, rules.delete, and the generation last.
 */
import type { CompiledPolicy, EndpointPolicy, IdentityEntry, PolicyRuleEntry, PolicyRuleKey, PolicyRuleRef } from './compiled.js';

export interface EndpointEntriesDiff {
  endpoint: number;
  upsert: PolicyRuleEntry[];
  delete: PolicyRuleKey[];
}

export interface PolicyDiff {
  identities: { upsert: IdentityEntry[]; delete: string[] };
  /** upsert: new endpoints and endpoints whose pod, addresses or isolation changed. delete: endpoint ids (their tables go whole). */
  endpoints: { upsert: EndpointPolicy[]; delete: number[] };
  /** Per endpoint that stays or is new: table entries to write and to remove (a new endpoint's whole table is upserts). */
  entries: EndpointEntriesDiff[];
  rules: { upsert: PolicyRuleRef[]; delete: number[] };
  generation: { from: number; to: number };
}

export const ruleKeyString = (k: PolicyRuleKey): string =>
  `${k.direction === 'ingress' ? 'i' : 'e'}${k.peer},${k.proto},${k.port}/${k.portPrefixLen}`;

/** The canonical order of table entries (the compiler emits them so): ingress first, then peer, proto, port, prefix length. */
export function compareRuleKeys(a: PolicyRuleKey, b: PolicyRuleKey): number {
  if (a.direction !== b.direction) return a.direction === 'ingress' ? -1 : 1;
  return a.peer - b.peer || a.proto - b.proto || a.port - b.port || a.portPrefixLen - b.portPrefixLen;
}

const sameEntry = (a: PolicyRuleEntry, b: PolicyRuleEntry) => a === b || (a.verdict === b.verdict && a.ruleId === b.ruleId);
const sameList = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/** Two entry lists hold the same entries in the same order. */
export function sameEntryList(a: readonly PolicyRuleEntry[], b: readonly PolicyRuleEntry[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (compareRuleKeys(a[i]!, b[i]!) !== 0 || !sameEntry(a[i]!, b[i]!)) return false;
  return true;
}

function sorted(list: readonly PolicyRuleEntry[]): readonly PolicyRuleEntry[] {
  for (let i = 1; i < list.length; i++) if (compareRuleKeys(list[i - 1]!, list[i]!) > 0) return [...list].sort(compareRuleKeys);
  return list;
}

const keyOf = ({ peer, direction, proto, port, portPrefixLen }: PolicyRuleKey): PolicyRuleKey => ({
  peer,
  direction,
  proto,
  port,
  portPrefixLen,
});

/** Entry writes from one list to the other: a merge over both in canonical order (lists not in it are sorted first). */
function entriesDiff(
  oldList: readonly PolicyRuleEntry[],
  nextList: readonly PolicyRuleEntry[],
): { upsert: PolicyRuleEntry[]; delete: PolicyRuleKey[] } {
  const old = sorted(oldList);
  const next = sorted(nextList);
  const upsert: PolicyRuleEntry[] = [];
  const del: PolicyRuleKey[] = [];
  let i = 0;
  let j = 0;
  while (i < old.length || j < next.length) {
    const c = i >= old.length ? 1 : j >= next.length ? -1 : compareRuleKeys(old[i]!, next[j]!);
    if (c < 0) del.push(keyOf(old[i++]!));
    else if (c > 0) upsert.push(next[j++]!);
    else {
      if (!sameEntry(old[i]!, next[j]!)) upsert.push(next[j]!);
      i++;
      j++;
    }
  }
  return { upsert, delete: del };
}

/** The writes that turn `old` (undefined: empty maps) into `next`. Unchanged endpoint objects and entry lists are skipped by reference. */
export function diffCompiled(old: CompiledPolicy | undefined, next: CompiledPolicy): PolicyDiff {
  const d: PolicyDiff = {
    identities: { upsert: [], delete: [] },
    endpoints: { upsert: [], delete: [] },
    entries: [],
    rules: { upsert: [], delete: [] },
    generation: { from: old?.generation ?? 0, to: next.generation },
  };
  if (old !== next && old?.identities !== next.identities) {
    const oldIds = new Map<string, IdentityEntry>();
    for (const e of old?.identities ?? []) oldIds.set(e.prefix, e);
    for (const e of next.identities) {
      const o = oldIds.get(e.prefix);
      if (!o || (o !== e && (o.identity !== e.identity || o.endpoint !== e.endpoint))) d.identities.upsert.push(e);
      oldIds.delete(e.prefix);
    }
    d.identities.delete = [...oldIds.keys()];
  }
  if (old !== next && old?.endpoints !== next.endpoints) {
    const oldEps = new Map<number, EndpointPolicy>();
    for (const ep of old?.endpoints ?? []) oldEps.set(ep.id, ep);
    // Endpoints of one policy set share one entry list: diff each pair of lists once.
    const memo = new Map<readonly PolicyRuleEntry[], Map<readonly PolicyRuleEntry[], ReturnType<typeof entriesDiff>>>();
    const listDiff = (a: readonly PolicyRuleEntry[], b: readonly PolicyRuleEntry[]) => {
      let m = memo.get(a);
      if (!m) memo.set(a, (m = new Map<readonly PolicyRuleEntry[], ReturnType<typeof entriesDiff>>()));
      let r = m.get(b);
      if (!r) m.set(b, (r = entriesDiff(a, b)));
      return r;
    };
    for (const ep of next.endpoints) {
      const o = oldEps.get(ep.id);
      oldEps.delete(ep.id);
      if (o === ep) continue;
      if (
        !o ||
        o.pod !== ep.pod ||
        o.ingressIsolated !== ep.ingressIsolated ||
        o.egressIsolated !== ep.egressIsolated ||
        !sameList(o.addresses, ep.addresses)
      ) {
        d.endpoints.upsert.push(ep);
      }
      if (o?.entries === ep.entries) continue;
      const r = listDiff(o?.entries ?? [], ep.entries);
      if (r.upsert.length || r.delete.length) d.entries.push({ endpoint: ep.id, upsert: r.upsert, delete: r.delete });
    }
    d.endpoints.delete = [...oldEps.keys()];
  }
  if (old !== next && old?.rules !== next.rules) {
    const oldRules = new Map<number, PolicyRuleRef>();
    for (const r of old?.rules ?? []) oldRules.set(r.id, r);
    for (const r of next.rules) {
      const o = oldRules.get(r.id);
      if (!o || o.policy !== r.policy || o.direction !== r.direction || o.index !== r.index) d.rules.upsert.push(r);
      oldRules.delete(r.id);
    }
    d.rules.delete = [...oldRules.keys()];
  }
  return d;
}

/** Whether the diff changes any decision (the rule list only names rules; it decides nothing). */
export function changesDecisions(d: PolicyDiff): boolean {
  return (
    d.identities.upsert.length > 0 ||
    d.identities.delete.length > 0 ||
    d.endpoints.upsert.length > 0 ||
    d.endpoints.delete.length > 0 ||
    d.entries.length > 0
  );
}

export function isEmptyDiff(d: PolicyDiff): boolean {
  return !changesDecisions(d) && d.rules.upsert.length === 0 && d.rules.delete.length === 0;
}
