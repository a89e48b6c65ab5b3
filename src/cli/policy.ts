/**
 * `bpfproxy policy`: per local endpoint, the NetworkPolicy rules as the
 * datapath has them, read from the pinned maps (not from the agent's
 * memory): isolation per direction, each table entry with its peer (the
 * identity and the prefixes that carry it), protocol, port range, verdict,
 * the NetworkPolicy rule it comes from and that rule's hit counter.
 */
import { type Command } from '@commander-js/extra-typings';
import {
  IDENTITY_ANY,
  IDENTITY_HOST,
  IDENTITY_WORLD,
  IDENTITY_WORLD6,
  PROTO_ANY,
  PROTO_SCTP,
  PROTO_TCP,
  PROTO_UDP,
  type CompiledPolicy,
} from '../model/policy/compiled.js';
import { openPinnedMaps, type DatapathMaps } from '../dataplane/bpf/loader.js';
import { readPinned, RULES_MAX } from '../dataplane/bpf/policy-maps.js';
import { outputOption, pinDirOption } from './options.js';
import { table } from './table.js';

export interface PolicyRuleView {
  direction: 'ingress' | 'egress';
  /** identity number; 0: any peer */
  peer: number;
  /** "any", "host", "world", "world (IPv6)", or the prefixes (IPv4 and IPv6) carrying the identity */
  peerText: string;
  proto: 'any' | 'tcp' | 'udp' | 'sctp' | number;
  /** "any", "8080", "30000-30015" */
  ports: string;
  verdict: 'allow' | 'deny';
  ruleId: number;
  /** "namespace/name ingress[0]"; "(node)" for the node's access to its pods */
  rule: string;
  hits: number;
}

export interface EndpointView {
  endpoint: number;
  pod: string;
  addresses: string[];
  ingressIsolated: boolean;
  egressIsolated: boolean;
  /** the endpoint is isolated and its table exists (a missing one denies: policy-no-table) */
  table: boolean;
  rules: PolicyRuleView[];
}

export interface PolicyView {
  generation: number;
  /** endpoints isolated in at least one direction, as the datapath counts them */
  isolated: number;
  identities: number;
  endpoints: EndpointView[];
}

const PROTO_NAMES: Record<number, PolicyRuleView['proto']> = {
  [PROTO_ANY]: 'any',
  [PROTO_TCP]: 'tcp',
  [PROTO_UDP]: 'udp',
  [PROTO_SCTP]: 'sctp',
};

function portsText(proto: number, port: number, prefixLen: number): string {
  if (proto === PROTO_ANY || prefixLen === 0) return 'any';
  if (prefixLen >= 16) return String(port);
  return `${port}-${port + 2 ** (16 - prefixLen) - 1}`;
}

/** What the pinned policy maps hold, per local endpoint. */
export function policyView(maps: DatapathMaps, pinned: CompiledPolicy = readPinned(maps)): PolicyView {
  const prefixesOf = new Map<number, string[]>();
  for (const i of pinned.identities) prefixesOf.set(i.identity, [...(prefixesOf.get(i.identity) ?? []), i.prefix]);
  const peerText = (id: number): string => {
    if (id === IDENTITY_ANY) return 'any';
    const p = prefixesOf.get(id) ?? [];
    const shown = p.length > 3 ? `${p.slice(0, 3).join(', ')}, +${p.length - 3}` : p.join(', ');
    if (id === IDENTITY_WORLD) return 'world';
    if (id === IDENTITY_WORLD6) return 'world (IPv6)';
    if (id === IDENTITY_HOST) return `host (${shown})`;
    return `id ${id}${shown ? ` (${shown})` : ' (no address)'}`;
  };
  const rules = new Map(pinned.rules.map((r) => [r.id, r]));
  const hits = new Map<number, number>();
  const hitsOf = (id: number): number => {
    if (id >= RULES_MAX) return 0;
    let n = hits.get(id);
    if (n === undefined) {
      n = maps.polHits.getPerCpu({ v: id }).reduce((a, c) => a + Number(c.hits), 0);
      hits.set(id, n);
    }
    return n;
  };
  const tables = new Set(maps.policy.entries().map(([k]) => k.v));
  const state = maps.polState.get({ v: 0 });
  return {
    generation: pinned.generation,
    isolated: state?.isolated ?? 0,
    identities: pinned.identities.length,
    endpoints: pinned.endpoints.map((e) => ({
      endpoint: e.id,
      pod: e.pod,
      addresses: e.addresses,
      ingressIsolated: e.ingressIsolated,
      egressIsolated: e.egressIsolated,
      table: tables.has(e.id),
      rules: e.entries.map((x) => {
        const r = rules.get(x.ruleId);
        return {
          direction: x.direction,
          peer: x.peer,
          peerText: peerText(x.peer),
          proto: PROTO_NAMES[x.proto] ?? x.proto,
          ports: portsText(x.proto, x.port, x.portPrefixLen),
          verdict: x.verdict,
          ruleId: x.ruleId,
          rule: r ? (r.index < 0 || r.policy.startsWith('(') ? r.policy : `${r.policy} ${r.direction}[${r.index}]`) : `rule ${x.ruleId}`,
          hits: hitsOf(x.ruleId),
        };
      }),
    })),
  };
}

function isolationText(e: EndpointView): string {
  const dirs = [e.ingressIsolated ? 'ingress' : '', e.egressIsolated ? 'egress' : ''].filter(Boolean);
  return dirs.length ? `isolated for ${dirs.join(' and ')}` : 'not isolated (every policy direction allowed)';
}

export function printPolicyView(v: PolicyView): void {
  if (!v.identities && !v.endpoints.length) {
    console.log(
      'No network policy is programmed: every pod is unisolated (the agent runs with --network-policy=off, or has not synced policy yet).',
    );
    return;
  }
  console.log(
    `Network policy: generation ${v.generation}, ${v.identities} identities, ${v.isolated} of ${v.endpoints.length} endpoint(s) isolated`,
  );
  for (const e of v.endpoints) {
    console.log(`\n${e.pod || '(unnamed)'} (endpoint ${e.endpoint}, ${e.addresses.join(', ') || 'no address'}): ${isolationText(e)}`);
    const iso = e.ingressIsolated || e.egressIsolated;
    if (!iso) continue;
    if (!e.table) {
      console.log('  no rule table: everything in its isolated directions is denied (policy-no-table); see the agent log');
      continue;
    }
    if (!e.rules.length) {
      console.log('  no rule allows anything: everything in its isolated directions is denied');
      continue;
    }
    console.log(
      table(
        ['  DIRECTION', 'PEER', 'PROTO', 'PORTS', 'VERDICT', 'RULE', 'HITS'],
        e.rules.map((r) => [`  ${r.direction}`, r.peerText, String(r.proto), r.ports, r.verdict, r.rule, String(r.hits)]),
      ),
    );
  }
}

export function addPolicyCommand(program: Command): void {
  program
    .command('policy')
    .description(
      'NetworkPolicy as programmed, per local endpoint: isolation, the rules of its table (peer, protocol, ports, verdict, the policy rule, hits), read from the pinned maps',
    )
    .addOption(pinDirOption())
    .addOption(outputOption())
    .action((o) => {
      let pinned;
      try {
        pinned = openPinnedMaps(o.pinDir);
      } catch (e) {
        process.stderr.write(`bpfproxy: ${(e as Error).message}\n`);
        process.exit(1);
      }
      try {
        const v = policyView(pinned.maps);
        if (o.output === 'json') console.log(JSON.stringify(v, null, 2));
        else printPolicyView(v);
      } finally {
        pinned.close();
      }
    });
}
