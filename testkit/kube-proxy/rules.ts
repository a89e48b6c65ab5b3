/**
 * kube-proxy's rules, written the way kube-proxy writes them (pkg/proxy/iptables
 * syncProxyRules, 1.32), for the side-by-side benchmark and the lab's
 * kube-proxy stand-in: iptables mode (KUBE-SERVICES -> KUBE-SVC-* with
 * statistic probabilities -> KUBE-SEP-* DNAT, masquerade marks; node ports,
 * external and load-balancer IPs through KUBE-EXT-*, externalTrafficPolicy and
 * internalTrafficPolicy Local through KUBE-SVL-*, loadBalancerSourceRanges
 * through KUBE-FW-*, ClientIP affinity with `-m recent`, REJECT/DROP filter
 * rules for services without (local) endpoints; chain names hashed as
 * kube-proxy hashes them; the restore input of kube-proxy's full and partial
 * syncs, and when it does which) and nftables mode (KEP-3866: one verdict map
 * from (IP, proto, port) to per-service chains that pick an endpoint chain with
 * numgen; cluster IPs only).
 */
import { createHash } from 'node:crypto';

/** An endpoint of a service port, with its EndpointSlice conditions (unset: ready, serving, not terminating). */
export interface Endpoint {
  ip: string;
  port: number;
  /** on this node (the EndpointSlice's nodeName is kube-proxy's hostname) */
  local?: boolean;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
}

/** One port of one Service, as kube-proxy's ServicePort holds it, with its endpoints. */
export interface ServicePort {
  namespace: string;
  name: string;
  portName: string;
  clusterIP: string;
  port: number;
  protocol: 'TCP' | 'UDP';
  endpoints: Endpoint[];
  nodePort?: number;
  externalIPs?: readonly string[];
  /** status.loadBalancer.ingress[].ip */
  loadBalancerIPs?: readonly string[];
  loadBalancerSourceRanges?: readonly string[];
  /** externalTrafficPolicy: Local (only counts when the port is reachable from outside) */
  externalPolicyLocal?: boolean;
  /** internalTrafficPolicy: Local */
  internalPolicyLocal?: boolean;
  /** sessionAffinity: ClientIP, with sessionAffinityConfig.clientIP.timeoutSeconds */
  affinityTimeoutSeconds?: number;
  /** spec.healthCheckNodePort (used with externalTrafficPolicy: Local) */
  healthCheckNodePort?: number;
}

const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
/** Go's base32.StdEncoding of a sha256, as kube-proxy's chain names use. */
function base32(buf: Buffer): string {
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of buf) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += B32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return out;
}
const hash = (s: string): string => base32(createHash('sha256').update(s).digest());
const spn = (s: ServicePort): string => `${s.namespace}/${s.name}:${s.portName}`;
const portProtoHash = (s: ServicePort): string => hash(spn(s) + s.protocol.toLowerCase()).slice(0, 16);
export const svcChain = (s: ServicePort): string => `KUBE-SVC-${portProtoHash(s)}`;
export const svlChain = (s: ServicePort): string => `KUBE-SVL-${portProtoHash(s)}`;
export const extChain = (s: ServicePort): string => `KUBE-EXT-${portProtoHash(s)}`;
export const fwChain = (s: ServicePort): string => `KUBE-FW-${portProtoHash(s)}`;
export const sepChain = (s: ServicePort, e: { ip: string; port: number }): string =>
  `KUBE-SEP-${hash(spn(s) + s.protocol.toLowerCase() + `${e.ip}:${e.port}`).slice(0, 16)}`;

/**
 * kube-proxy's defaults for the iptables proxier (KubeProxyConfiguration and
 * pkg/proxy/util):
 * - syncPeriod 30 s: how often the canary chain is checked, and, in large
 *   cluster mode, the shortest interval between stale-chain cleanups (each
 *   one an `iptables-save -t nat`);
 * - minSyncPeriod 1 s: the most often it syncs under steady churn;
 * - FullSyncPeriod 1 h: a sync runs at least once an hour, and it is a full
 *   one unless kube-proxy is in large cluster mode (kubernetes#138571, in
 *   1.34.x, 1.35.x, 1.36.x and later: no periodic full syncs above 1000
 *   endpoints);
 * - large cluster mode above 1000 endpoints: no per-endpoint comments, and the
 *   stale-chain cleanup at most once per syncPeriod instead of every sync.
 */
export const KUBE_PROXY_DEFAULTS = {
  syncPeriodMs: 30_000,
  minSyncPeriodMs: 1_000,
  fullSyncPeriodMs: 3_600_000,
  largeClusterEndpointsThreshold: 1000,
} as const;

/**
 * Virtual time between two endpoint changes in the benchmark's kube-proxy
 * iptables timeline: a cluster with steady churn (six changes a minute), so
 * over the samples kube-proxy's 30 s cleanup timer fires as often as it would
 * there.
 */
export const KUBE_PROXY_CHANGE_INTERVAL_MS = 10_000;

/** kube-proxy's iptables-restore flags: never flush a whole table, keep counters; wait for the xtables lock. */
export const IPTABLES_RESTORE_ARGS: readonly string[] = ['-w', '5', '-W', '100000', '--noflush', '--counters'];
/** kube-proxy's flags for single iptables commands (EnsureChain, EnsureRule, ChainExists). */
export const IPTABLES_WAIT_ARGS: readonly string[] = ['-w', '5', '-W', '100000'];

/** The canary chain kube-proxy's monitor creates in mangle, nat and filter, and checks in mangle every syncPeriod. */
export const CANARY_CHAIN = 'KUBE-PROXY-CANARY';
export const CANARY_TABLES = ['mangle', 'nat', 'filter'] as const;

/**
 * Jumps from the built-in chains into kube-proxy's, which kube-proxy ensures
 * with single iptables commands (EnsureChain, then EnsureRule prepending) on
 * every full sync and never on a partial one (iptablesJumpChains and
 * iptablesKubeletJumpChains).
 */
export interface JumpChain {
  table: 'filter' | 'nat';
  chain: string;
  from: string;
  args: readonly string[];
}
const NEW = ['-m', 'conntrack', '--ctstate', 'NEW'];
const jump = (table: JumpChain['table'], chain: string, from: string, comment: string, extra: readonly string[] = []): JumpChain => ({
  table,
  chain,
  from,
  args: [...extra, ...(comment ? ['-m', 'comment', '--comment', comment] : []), '-j', chain],
});
export const JUMP_CHAINS: readonly JumpChain[] = [
  jump('filter', 'KUBE-EXTERNAL-SERVICES', 'INPUT', 'kubernetes externally-visible service portals', NEW),
  jump('filter', 'KUBE-EXTERNAL-SERVICES', 'FORWARD', 'kubernetes externally-visible service portals', NEW),
  jump('filter', 'KUBE-NODEPORTS', 'INPUT', 'kubernetes health check service ports'),
  jump('filter', 'KUBE-SERVICES', 'FORWARD', 'kubernetes service portals', NEW),
  jump('filter', 'KUBE-SERVICES', 'OUTPUT', 'kubernetes service portals', NEW),
  jump('filter', 'KUBE-FORWARD', 'FORWARD', 'kubernetes forwarding rules'),
  jump('filter', 'KUBE-PROXY-FIREWALL', 'INPUT', 'kubernetes load balancer firewall', NEW),
  jump('filter', 'KUBE-PROXY-FIREWALL', 'OUTPUT', 'kubernetes load balancer firewall', NEW),
  jump('filter', 'KUBE-PROXY-FIREWALL', 'FORWARD', 'kubernetes load balancer firewall', NEW),
  jump('nat', 'KUBE-SERVICES', 'OUTPUT', 'kubernetes service portals'),
  jump('nat', 'KUBE-SERVICES', 'PREROUTING', 'kubernetes service portals'),
  jump('nat', 'KUBE-POSTROUTING', 'POSTROUTING', 'kubernetes postrouting rules'),
  jump('filter', 'KUBE-FIREWALL', 'INPUT', ''),
  jump('filter', 'KUBE-FIREWALL', 'OUTPUT', ''),
];

/** The service (namespace/name) a service port belongs to: what kube-proxy's change trackers key updates by. */
export const serviceKey = (s: ServicePort): string => `${s.namespace}/${s.name}`;
const isServiceChain = (c: string): boolean => /^KUBE-(SVC|SVL|EXT|FW|SEP)-/.test(c);
/** kube-proxy's computeProbability: 1/n with ten decimals. */
const probability = (n: number): string => (1 / n).toFixed(10);

export interface IptablesSyncOptions {
  clusterCidr: string;
  /** a full sync writes every service's chains; a partial one only those of `changed` */
  full: boolean;
  /** services (namespace/name) whose service or endpoints changed since the last sync */
  changed?: ReadonlySet<string>;
  /**
   * The nat table's chains as `iptables-save -t nat` lists them now, when this
   * sync cleans up stale chains (every sync, or once per syncPeriod in large
   * cluster mode); null when it skips the cleanup.
   */
  existingNatChains?: ReadonlySet<string> | null;
  /** `MASQUERADE --random-fully`, as kube-proxy writes when iptables supports it (true on any current iptables) */
  randomFully?: boolean;
  /** the node's address: a loadBalancerSourceRanges entry containing it also admits traffic from the LB IPs (VIP looped back) */
  nodeIP?: string;
}

export interface IptablesRestore {
  /** the iptables-restore input, fed with IPTABLES_RESTORE_ARGS */
  input: string;
  largeClusterMode: boolean;
  /** stale service chains this restore deletes */
  deletedChains: string[];
  /** service chains this restore writes (flushes and refills) */
  writtenChains: string[];
  totalEndpoints: number;
}

const isReady = (e: Endpoint): boolean => e.ready !== false;
const isServing = (e: Endpoint): boolean => e.serving ?? isReady(e);
const isTerminating = (e: Endpoint): boolean => e.terminating === true;
const epKey = (e: Endpoint): string => `${e.ip}:${e.port}`;

/** A port reachable from outside the cluster: a node port, an external IP or a load-balancer IP. */
export const externallyAccessible = (s: ServicePort): boolean => !!s.nodePort || !!s.externalIPs?.length || !!s.loadBalancerIPs?.length;
const externalPolicyLocal = (s: ServicePort): boolean => !!s.externalPolicyLocal && externallyAccessible(s);
const usesClusterEndpoints = (s: ServicePort): boolean => !s.internalPolicyLocal || externallyAccessible(s);
const usesLocalEndpoints = (s: ServicePort): boolean => !!s.internalPolicyLocal || externalPolicyLocal(s);

/**
 * kube-proxy's CategorizeEndpoints (without topology hints): the endpoints the
 * Cluster and Local policies use (ready ones, else serving-and-terminating
 * ones), every endpoint one of them reaches, and whether the port has any
 * usable endpoint at all.
 */
export function categorizeEndpoints(s: ServicePort): { cluster: Endpoint[]; local: Endpoint[]; reachable: Endpoint[]; any: boolean } {
  let cluster: Endpoint[] = [];
  let local: Endpoint[] = [];
  let any = false;
  if (usesClusterEndpoints(s)) {
    cluster = s.endpoints.filter(isReady);
    if (!cluster.length) cluster = s.endpoints.filter((e) => isServing(e) && isTerminating(e));
    any = cluster.length > 0;
  }
  if (!usesLocalEndpoints(s)) return { cluster, local, reachable: cluster, any };
  let localReady = false;
  let localTerminating = false;
  for (const e of s.endpoints) {
    if (isReady(e)) {
      any = true;
      localReady ||= !!e.local;
    } else if (isServing(e) && isTerminating(e)) {
      any = true;
      localTerminating ||= !!e.local;
    }
  }
  if (localReady) local = s.endpoints.filter((e) => e.local && isReady(e));
  else if (localTerminating) local = s.endpoints.filter((e) => e.local && isServing(e) && isTerminating(e));
  if (!usesClusterEndpoints(s)) return { cluster, local, reachable: local, any };
  const all = new Map<string, Endpoint>();
  for (const e of [...cluster, ...local]) all.set(epKey(e), e);
  return { cluster, local, reachable: [...all.values()], any };
}

/** IPv4 CIDR membership, for loadBalancerSourceRanges against the node address. */
function cidrContains(cidr: string, ip: string): boolean {
  const [net, bits] = cidr.trim().split('/');
  const n = Number(bits ?? 32);
  const num = (a: string): number => a.split('.').reduce((x, o) => x * 256 + Number(o), 0);
  if (!net || !ip || !Number.isInteger(n) || n < 0 || n > 32) return false;
  const mask = n === 0 ? 0 : 2 ** 32 - 2 ** (32 - n);
  const and = (x: number): number => Number((BigInt(x) & BigInt(mask)).toString());
  return and(num(net)) === and(num(ip));
}

/**
 * The iptables-restore input of one kube-proxy sync (pkg/proxy/iptables
 * syncProxyRules). Every sync, full or partial, writes the whole filter table
 * and the nat table's top-level chains: KUBE-SERVICES with one rule per
 * service port and destination, KUBE-NODEPORTS, KUBE-POSTROUTING,
 * KUBE-MARK-MASQ. A partial sync (MinimizeIPTablesRestore, KEP-3453, default
 * since 1.27) writes the KUBE-SVC/SVL/EXT/FW/SEP chains only of services that
 * changed; a full one writes every service's. Stale service chains found in
 * the nat table are declared (which flushes them) and deleted with -X.
 */
export function iptablesRestoreInput(services: readonly ServicePort[], o: IptablesSyncOptions): IptablesRestore {
  const totalEndpoints = services.reduce((a, s) => a + s.endpoints.length, 0);
  const large = totalEndpoints > KUBE_PROXY_DEFAULTS.largeClusterEndpointsThreshold;
  const comment = (c: string): string => (large ? '' : ` -m comment --comment ${c}`);
  const filterChains = [
    'KUBE-SERVICES',
    'KUBE-EXTERNAL-SERVICES',
    'KUBE-FORWARD',
    'KUBE-NODEPORTS',
    'KUBE-PROXY-FIREWALL',
    'KUBE-FIREWALL',
  ];
  const filterRules = [
    '-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP',
  ];
  const natChains = ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ'];
  const natRules = [
    '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
    '-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000',
    `-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE${o.randomFully === false ? '' : ' --random-fully'}`,
    '-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000',
  ];
  const active = new Set<string>();
  const written: string[] = [];
  for (const s of services) {
    const p = s.protocol.toLowerCase();
    const name = spn(s);
    const { cluster, local, reachable, any: hasEndpoints } = categorizeEndpoints(s);
    const clusterChain = svcChain(s);
    const localChain = svlChain(s);
    const usesClusterChain = cluster.length > 0 && usesClusterEndpoints(s);
    const usesLocalChain = local.length > 0 && usesLocalEndpoints(s);
    const internalChain = s.internalPolicyLocal ? localChain : clusterChain;
    const hasInternal = hasEndpoints && !(s.internalPolicyLocal && !local.length);
    const extLocal = externalPolicyLocal(s);
    const externalPolicyChain = extLocal ? localChain : clusterChain;
    const hasExternal = hasEndpoints && !(extLocal && !local.length);
    const externalChain = extChain(s);
    const usesExternalChain = hasEndpoints && externallyAccessible(s);
    const lbIPs = s.loadBalancerIPs ?? [];
    const sourceRanges = (s.loadBalancerSourceRanges ?? []).map((r) => r.trim()).filter(Boolean);
    const usesFw = hasEndpoints && lbIPs.length > 0 && sourceRanges.length > 0;
    const lbChain = usesFw ? fwChain(s) : externalChain;
    for (const [used, c] of [
      [usesClusterChain, clusterChain],
      [usesLocalChain, localChain],
      [usesExternalChain, externalChain],
      [usesFw, fwChain(s)],
    ] as const) {
      if (used) active.add(c);
    }
    for (const e of reachable) active.add(sepChain(s, e));

    // No endpoints at all: REJECT; endpoints, but none local where Local policy applies: DROP.
    const filter = hasEndpoints
      ? { target: 'DROP', comment: `"${name} has no local endpoints"` }
      : { target: 'REJECT', comment: `"${name} has no endpoints"` };
    const dst = (ip: string): string => `-m ${p} -p ${p} -d ${ip} --dport ${s.port}`;

    // Capture the cluster IP.
    if (hasInternal) natRules.push(`-A KUBE-SERVICES -m comment --comment "${name} cluster IP" ${dst(s.clusterIP)} -j ${internalChain}`);
    else filterRules.push(`-A KUBE-SERVICES -m comment --comment ${filter.comment} ${dst(s.clusterIP)} -j ${filter.target}`);
    // External IPs.
    for (const ip of s.externalIPs ?? []) {
      if (hasEndpoints) natRules.push(`-A KUBE-SERVICES -m comment --comment "${name} external IP" ${dst(ip)} -j ${externalChain}`);
      if (!hasExternal) filterRules.push(`-A KUBE-EXTERNAL-SERVICES -m comment --comment ${filter.comment} ${dst(ip)} -j ${filter.target}`);
    }
    // Load-balancer ingress IPs.
    for (const ip of lbIPs) {
      if (hasEndpoints) natRules.push(`-A KUBE-SERVICES -m comment --comment "${name} loadbalancer IP" ${dst(ip)} -j ${lbChain}`);
      if (usesFw)
        filterRules.push(`-A KUBE-PROXY-FIREWALL -m comment --comment "${name} traffic not accepted by ${fwChain(s)}" ${dst(ip)} -j DROP`);
    }
    if (!hasExternal) {
      for (const ip of lbIPs)
        filterRules.push(`-A KUBE-EXTERNAL-SERVICES -m comment --comment ${filter.comment} ${dst(ip)} -j ${filter.target}`);
    }
    // Node ports.
    if (s.nodePort) {
      if (hasEndpoints)
        natRules.push(`-A KUBE-NODEPORTS -m comment --comment ${name} -m ${p} -p ${p} --dport ${s.nodePort} -j ${externalChain}`);
      if (!hasExternal)
        filterRules.push(
          `-A KUBE-EXTERNAL-SERVICES -m comment --comment ${filter.comment} -m addrtype --dst-type LOCAL -m ${p} -p ${p} --dport ${s.nodePort} -j ${filter.target}`,
        );
    }
    // Health check node ports (only with externalTrafficPolicy: Local).
    if (extLocal && s.healthCheckNodePort)
      filterRules.push(
        `-A KUBE-NODEPORTS -m comment --comment "${name} health check node port" -m tcp -p tcp --dport ${s.healthCheckNodePort} -j ACCEPT`,
      );

    if (!o.full && !o.changed?.has(serviceKey(s))) continue;

    // The service's own chains: written by full syncs, and by partial ones when it changed.
    if (hasInternal)
      natRules.push(
        `-A ${internalChain} -m comment --comment "${name} cluster IP" ${dst(s.clusterIP)} ! -s ${o.clusterCidr} -j KUBE-MARK-MASQ`,
      );
    if (usesExternalChain) {
      natChains.push(externalChain);
      written.push(externalChain);
      if (!extLocal) {
        natRules.push(`-A ${externalChain} -m comment --comment "masquerade traffic for ${name} external destinations" -j KUBE-MARK-MASQ`);
      } else {
        natRules.push(
          `-A ${externalChain} -m comment --comment "pod traffic for ${name} external destinations" -s ${o.clusterCidr} -j ${clusterChain}`,
          `-A ${externalChain} -m comment --comment "masquerade LOCAL traffic for ${name} external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ`,
          `-A ${externalChain} -m comment --comment "route LOCAL traffic for ${name} external destinations" -m addrtype --src-type LOCAL -j ${clusterChain}`,
        );
      }
      if (hasExternal) natRules.push(`-A ${externalChain} -j ${externalPolicyChain}`);
    }
    if (usesFw) {
      const fw = fwChain(s);
      natChains.push(fw);
      written.push(fw);
      const head = `-A ${fw} -m comment --comment "${name} loadbalancer IP"`;
      for (const r of sourceRanges) natRules.push(`${head} -s ${r} -j ${externalChain}`);
      if (o.nodeIP && sourceRanges.some((r) => cidrContains(r, o.nodeIP!)))
        for (const ip of lbIPs) natRules.push(`${head} -s ${ip} -j ${externalChain}`);
      natRules.push(`-A ${fw} -m comment --comment "other traffic to ${name} will be dropped by KUBE-PROXY-FIREWALL"`);
    }
    const toEndpoints = (chain: string, eps: readonly Endpoint[]): void => {
      natChains.push(chain);
      written.push(chain);
      if (s.affinityTimeoutSeconds !== undefined) {
        for (const e of eps) {
          natRules.push(
            `-A ${chain}${comment(`"${name} -> ${epKey(e)}"`)} -m recent --name ${sepChain(s, e)} --rcheck --seconds ${s.affinityTimeoutSeconds} --reap -j ${sepChain(s, e)}`,
          );
        }
      }
      eps.forEach((e, i) => {
        const left = eps.length - i;
        const stat = left > 1 ? ` -m statistic --mode random --probability ${probability(left)}` : '';
        natRules.push(`-A ${chain}${comment(`"${name} -> ${epKey(e)}"`)}${stat} -j ${sepChain(s, e)}`);
      });
    };
    if (usesClusterChain) toEndpoints(clusterChain, cluster);
    if (usesLocalChain) toEndpoints(localChain, local);
    for (const e of reachable) {
      const sep = sepChain(s, e);
      natChains.push(sep);
      written.push(sep);
      natRules.push(`-A ${sep}${comment(name)} -s ${e.ip} -j KUBE-MARK-MASQ`);
      const recent = s.affinityTimeoutSeconds !== undefined ? ` -m recent --name ${sep} --set` : '';
      natRules.push(`-A ${sep}${comment(name)}${recent} -m ${p} -p ${p} -j DNAT --to-destination ${epKey(e)}`);
    }
  }
  const deleted = [...(o.existingNatChains ?? [])].filter((c) => isServiceChain(c) && !active.has(c)).sort();
  for (const c of deleted) {
    natChains.push(c);
    natRules.push(`-X ${c}`);
  }
  natRules.push(
    '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
  );
  filterRules.push(
    '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
  );
  const decl = (c: string): string => `:${c} - [0:0]`;
  const input = [
    '*filter',
    ...filterChains.map(decl),
    ...filterRules,
    'COMMIT',
    '*nat',
    ...natChains.map(decl),
    ...natRules,
    'COMMIT',
    '',
  ].join('\n');
  return { input, largeClusterMode: large, deletedChains: deleted, writtenChains: written, totalEndpoints };
}

/** kube-proxy's first sync for these services: a full restore into tables that hold none of its chains. */
export function iptablesRules(services: readonly ServicePort[], clusterCidr: string): string {
  return iptablesRestoreInput(services, { clusterCidr, full: true, existingNatChains: new Set() }).input;
}

/** The service chain names in `iptables-save -t nat` output (utiliptables.GetChainsFromTable). */
export function natChainsFromSave(save: string): Set<string> {
  const out = new Set<string>();
  for (const line of save.split('\n')) if (line.startsWith(':')) out.add(line.slice(1).split(' ')[0]!);
  return out;
}

export type SyncKind = 'full' | 'partial';
export interface SyncPlan {
  kind: SyncKind;
  /** this sync runs iptables-save -t nat to find stale chains */
  cleanup: boolean;
  largeClusterMode: boolean;
  /** this sync ensures the jump rules from the built-in chains (full syncs only) */
  ensureJumps: boolean;
}

/**
 * When kube-proxy's iptables proxier does what, at its defaults: the decisions
 * of syncProxyRules and of the timers around it, on a clock the caller
 * advances (ms). No I/O: the benchmark runs the commands a plan calls for.
 */
export class KubeProxySchedule {
  private needFullSync = true;
  private lastFullSync = -Infinity;
  private lastCleanup = -Infinity;
  private lastSync = -Infinity;
  private lastCanary = -Infinity;
  /** set by the previous sync, read by the next one's full-sync decision (as in kube-proxy) */
  private largeClusterMode = false;

  constructor(
    readonly d: { syncPeriodMs: number; fullSyncPeriodMs: number; largeClusterEndpointsThreshold: number } = KUBE_PROXY_DEFAULTS,
  ) {}

  /** The sync kube-proxy runs at `now` for `totalEndpoints` endpoints (call done() when it succeeded). */
  plan(now: number, totalEndpoints: number): SyncPlan {
    const full = this.needFullSync || (now - this.lastFullSync > this.d.fullSyncPeriodMs && !this.largeClusterMode);
    const large = totalEndpoints > this.d.largeClusterEndpointsThreshold;
    return {
      kind: full ? 'full' : 'partial',
      cleanup: !large || now - this.lastCleanup > this.d.syncPeriodMs,
      largeClusterMode: large,
      ensureJumps: full,
    };
  }

  done(now: number, p: SyncPlan): void {
    this.largeClusterMode = p.largeClusterMode;
    if (p.cleanup) this.lastCleanup = now;
    if (p.kind === 'full') this.lastFullSync = now;
    this.needFullSync = false;
    this.lastSync = now;
  }

  /** A failed restore: the next sync is a full one (the change trackers were already drained). */
  failed(): void {
    this.needFullSync = true;
  }

  /** The next time the sync runner fires with nothing changed: FullSyncPeriod after the last sync. */
  nextPeriodicSync(): number {
    return this.lastSync + this.d.fullSyncPeriodMs;
  }

  /** Canary checks (one `iptables -S KUBE-PROXY-CANARY -t mangle` each) due in (last check, now]. */
  canaryChecksDue(now: number): number {
    if (this.lastCanary === -Infinity) {
      this.lastCanary = now;
      return 0;
    }
    const n = Math.floor((now - this.lastCanary) / this.d.syncPeriodMs);
    this.lastCanary += n * this.d.syncPeriodMs;
    return n;
  }
}

/** nftables mode names: "<kind>-<hash of base>-<base>", base "ns/name/proto/port". */
const nftBase = (s: ServicePort): string => `${s.namespace}/${s.name}/${s.protocol.toLowerCase()}/${s.portName}`;
const nftName = (kind: string, base: string): string => `${kind}-${hash(base).slice(0, 8)}-${base}`;
export const nftSvcChain = (s: ServicePort): string => nftName('service', nftBase(s));
export const nftEpChain = (s: ServicePort, e: { ip: string; port: number }): string =>
  nftName('endpoint', `${nftBase(s)}__${e.ip}/${e.port}`);

function nftServiceBody(s: ServicePort, clusterCidr: string): string[] {
  const p = s.protocol.toLowerCase();
  const out = [
    `add rule ip kube-proxy ${nftSvcChain(s)} ip daddr ${s.clusterIP} ${p} dport ${s.port} ip saddr != ${clusterCidr} jump mark-for-masquerade`,
  ];
  out.push(
    `add rule ip kube-proxy ${nftSvcChain(s)} numgen random mod ${s.endpoints.length} vmap { ${s.endpoints.map((e, i) => `${i} : goto ${nftEpChain(s, e)}`).join(' , ')} }`,
  );
  return out;
}

function nftEndpoint(s: ServicePort, e: { ip: string; port: number }): string[] {
  const c = nftEpChain(s, e);
  return [
    `add chain ip kube-proxy ${c}`,
    `add rule ip kube-proxy ${c} ip saddr ${e.ip} jump mark-for-masquerade`,
    `add rule ip kube-proxy ${c} meta l4proto ${s.protocol.toLowerCase()} dnat to ${e.ip}:${e.port}`,
  ];
}

/** A full `nft -f` transaction for these services (first sync). */
export function nftRules(services: readonly ServicePort[], clusterCidr: string): string {
  const o: string[] = [
    'add table ip kube-proxy { comment "rules for kube-proxy" ; }',
    'add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }',
    'add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }',
    'add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }',
    'add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }',
    'add chain ip kube-proxy filter-forward { type filter hook forward priority -110 ; }',
    'add chain ip kube-proxy mark-for-masquerade',
    'add chain ip kube-proxy masquerading',
    'add chain ip kube-proxy services',
    'add rule ip kube-proxy nat-prerouting jump services',
    'add rule ip kube-proxy nat-output jump services',
    'add rule ip kube-proxy nat-postrouting jump masquerading',
    'add rule ip kube-proxy filter-forward ct state invalid drop',
    'add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000',
    'add rule ip kube-proxy masquerading mark and 0x4000 == 0 return',
    'add rule ip kube-proxy masquerading mark set mark xor 0x4000',
    'add rule ip kube-proxy masquerading masquerade fully-random',
    'add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips',
  ];
  for (const s of services) {
    if (s.endpoints.length === 0) continue;
    o.push(`add chain ip kube-proxy ${nftSvcChain(s)}`);
    for (const e of s.endpoints) o.push(...nftEndpoint(s, e));
    o.push(...nftServiceBody(s, clusterCidr));
    o.push(`add element ip kube-proxy service-ips { ${s.clusterIP} . ${s.protocol.toLowerCase()} . ${s.port} : goto ${nftSvcChain(s)} }`);
  }
  return `${o.join('\n')}\n`;
}

/** kube-proxy's incremental nft transaction for one service whose endpoints changed. */
export function nftEndpointChange(before: ServicePort, after: ServicePort, clusterCidr: string): string {
  const keep = new Set(after.endpoints.map((e) => nftEpChain(after, e)));
  const had = new Set(before.endpoints.map((e) => nftEpChain(before, e)));
  const o = [`flush chain ip kube-proxy ${nftSvcChain(after)}`];
  for (const e of after.endpoints) if (!had.has(nftEpChain(after, e))) o.push(...nftEndpoint(after, e));
  o.push(...nftServiceBody(after, clusterCidr));
  for (const e of before.endpoints) {
    const c = nftEpChain(before, e);
    if (!keep.has(c)) o.push(`flush chain ip kube-proxy ${c}`, `delete chain ip kube-proxy ${c}`);
  }
  return `${o.join('\n')}\n`;
}
