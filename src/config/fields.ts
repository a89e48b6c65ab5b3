/**
 * The FelixConfiguration fields bpfproxy reads: one row per field with its
 * parser, Calico's default (felix/config/config_params.go), what a change
 * takes, and where it lands in Config. The same parser reads the field and
 * the command-line flag that sets it.
 *
 * One field, end to end (bpfConntrackTimeouts):
 *   FelixConfiguration spec.bpfConntrackTimeouts {tcpEstablished: "2h"}
 *   → felix.ts effectiveConfig: default ← node.<name>, each field through this table
 *   → FIELDS.bpfConntrackTimeouts (kinds.ts conntrackTimeouts: durations to ms)
 *   → Config.conntrack.tcpEstablished = 7_200_000
 *   → datapath.ts datapathConfig(): DatapathConfig.ctTimeoutsNs.established = 7_200_000_000_000n
 *   → dataplane/bpf/loader.ts rodataFor(): const volatile cfg_ct_established_ns (bpf/lib/config.h)
 * Its change class, 'reload', makes the runtime load the programs again
 * with the new rodata (change.ts, agent/runtime.ts reconfigure).
 */
import type { BpfLogLevel, Config, ExternalServiceMode, ConnectTimeLb, MapSizes, NetworkPolicyMode, XdpAcceleration } from './config.js';
import {
  bool,
  cidrList,
  conntrackTimeouts,
  duration,
  oneOf,
  optionalPattern,
  pattern,
  port,
  wholeNumber,
  type Issue,
  type Kind,
} from './kinds.js';

/**
 * What a change of the field takes while the agent runs. live: applied in
 * place; reload: the BPF programs are loaded again (load-time rodata) under
 * the same maps; resize: the maps would have to be created again, which the
 * agent does not do under live traffic (the pinned maps keep their size).
 */
export type ChangeClass = 'live' | 'reload' | 'resize';

export interface FieldSpec<T> {
  kind: Kind<T>;
  /** Calico's default */
  default: T;
  change: ChangeClass;
  /** what it does, for --help */
  help: string;
  get(c: Config): T;
  /** put v in c (a copy being built; nested parts are replaced, not changed) */
  set(c: Config, v: T): void;
}

/** A row of the table; the operations below do not depend on the value's type. */
export interface Field<T> extends FieldSpec<T> {
  /** Apply a FelixConfiguration value over c (a copy being built); the problems, none when applied. */
  apply(c: Config, raw: unknown): Issue[];
  same(a: Config, b: Config): boolean;
}
export type AnyField = Pick<Field<unknown>, 'change' | 'help' | 'apply' | 'same'>;

function field<T>(spec: FieldSpec<T>): Field<T> {
  return {
    ...spec,
    apply(c, raw) {
      const r = spec.kind.parse(raw, spec.get(c));
      if (!r.ok) return r.issues;
      spec.set(c, r.value);
      return [];
    },
    same: (a, b) => spec.kind.equal(spec.get(a), spec.get(b)),
  };
}

const mapSize = (key: keyof MapSizes, def: number, help: string): Field<number> =>
  field({
    kind: wholeNumber(1, 1 << 28),
    default: def,
    change: 'resize',
    help,
    get: (c) => c.mapSizes[key],
    set: (c, v) => {
      c.mapSizes = { ...c.mapSizes, [key]: v };
    },
  });

export const FIELDS = {
  bpfEnabled: field({
    kind: bool,
    default: false,
    change: 'live',
    help: 'own the service dataplane (false: hand it back to kube-proxy)',
    get: (c) => c.enabled,
    set: (c, v) => {
      c.enabled = v;
    },
  }),
  bpfDataIfacePattern: field({
    kind: pattern,
    default: new RegExp('^((en|wl|ww|sl|ib)[Popsx].*|(eth|wlan|wwan|bond).*)'),
    change: 'live',
    help: 'uplinks where NodePort, LoadBalancer and external IPs arrive',
    get: (c) => c.dataIfaces,
    set: (c, v) => {
      c.dataIfaces = v;
    },
  }),
  bpfL3IfacePattern: field({
    kind: optionalPattern,
    default: null,
    change: 'live',
    help: 'extra L3/tunnel devices treated as uplinks',
    get: (c) => c.l3Ifaces,
    set: (c, v) => {
      c.l3Ifaces = v;
    },
  }),
  bpfExternalServiceMode: field<ExternalServiceMode>({
    kind: oneOf(['Tunnel', 'DSR', 'SNAT']),
    default: 'Tunnel',
    change: 'live',
    help: "how external traffic reaches an endpoint on another node: Tunnel (VXLAN, reply back through this node), DSR (VXLAN, reply straight to the client), SNAT (kube-proxy's: the endpoint sees this node's address); new flows only",
    get: (c) => c.externalServiceMode,
    set: (c, v) => {
      c.externalServiceMode = v;
    },
  }),
  bpfDSROptoutCIDRs: field({
    kind: cidrList,
    default: [],
    change: 'live',
    help: 'clients (IPv4 or IPv6 CIDRs) kept on Tunnel when bpfExternalServiceMode is DSR',
    get: (c) => c.dsrOptoutCIDRs,
    set: (c, v) => {
      c.dsrOptoutCIDRs = v;
    },
  }),
  bpfKubeProxyIptablesCleanupEnabled: field({
    kind: bool,
    default: true,
    change: 'live',
    help: "remove kube-proxy's iptables rules when taking over",
    get: (c) => c.kubeProxyIptablesCleanup,
    set: (c, v) => {
      c.kubeProxyIptablesCleanup = v;
    },
  }),
  bpfKubeProxyMinSyncPeriod: field({
    kind: duration,
    default: 1000,
    change: 'live',
    help: 'minimum time between syncs',
    get: (c) => c.minSyncPeriodMs,
    set: (c, v) => {
      c.minSyncPeriodMs = v;
    },
  }),
  bpfConntrackTimeouts: field({
    kind: conntrackTimeouts,
    default: { tcpSynSent: 20_000, tcpEstablished: 3_600_000, tcpFinsSeen: 30_000, tcpResetSeen: 40_000, udpTimeout: 60_000 },
    change: 'reload',
    help: 'conntrack entry lifetimes',
    get: (c) => c.conntrack,
    set: (c, v) => {
      c.conntrack = v;
    },
  }),
  bpfMapSizeConntrack: mapSize('conntrack', 512_000, 'conntrack map entries'),
  bpfMapSizeNATFrontend: mapSize('natFrontend', 65_536, 'service frontend map entries'),
  bpfMapSizeNATBackend: mapSize('natBackend', 262_144, 'service backend map entries'),
  bpfMapSizeNATAffinity: mapSize('natAffinity', 65_536, 'session affinity map entries'),
  bpfLogLevel: field<BpfLogLevel>({
    kind: oneOf(['Off', 'Info', 'Debug'], true),
    default: 'Off',
    change: 'live',
    help: 'Debug: the agent logs at debug level',
    get: (c) => c.logLevel,
    set: (c, v) => {
      c.logLevel = v;
    },
  }),
  bpfMaglevMaxEndpointsPerService: field({
    kind: wholeNumber(1, 65_521),
    default: 100,
    change: 'live',
    help: 'Maglev tables grow with the endpoint count (about 700 entries an endpoint, 1 or 2 bytes each) up to this many',
    get: (c) => c.maglevMaxEndpointsPerService,
    set: (c, v) => {
      c.maglevMaxEndpointsPerService = v;
    },
  }),
  /*
   * Not Calico's (its XDP is for untracked policy only): Cilium's
   * loadBalancer.acceleration. Off by default, as Cilium's: XDP on veth and
   * in generic mode copies every frame first (slower than TC, not faster),
   * frames XDP forwards are invisible to tcpdump, and some drivers (bonds)
   * cannot run it; it pays on physical NICs with native XDP.
   */
  bpfXDPAcceleration: field<XdpAcceleration>({
    kind: oneOf(['Off', 'Native', 'Generic'], true),
    default: 'Off',
    change: 'live',
    help: "NodePort, LoadBalancer and external-IP traffic served in XDP on the data interfaces (bpfproxy's own, like Cilium's loadBalancer.acceleration): Off, Native (driver XDP) or Generic (any interface, slower)",
    get: (c) => c.xdpAcceleration,
    set: (c, v) => {
      c.xdpAcceleration = v;
    },
  }),
  bpfConnectTimeLoadBalancing: field<ConnectTimeLb>({
    kind: oneOf(['TCP', 'Enabled', 'Disabled']),
    default: 'TCP',
    change: 'reload',
    help: 'socket-level load balancing (where --socket-lb attaches it): TCP only, Enabled = TCP and UDP, Disabled = neither',
    get: (c) => c.connectTimeLb,
    set: (c, v) => {
      c.connectTimeLb = v;
    },
  }),
  bpfKubeProxyHealthzPort: field({
    kind: port,
    default: 10256,
    change: 'live',
    help: "kube-proxy's /healthz port",
    get: (c) => c.healthzPort,
    set: (c, v) => {
      c.healthzPort = v;
    },
  }),
  bpfNetworkPolicy: field<NetworkPolicyMode>({
    kind: oneOf(['on', 'off'], true),
    default: 'on',
    change: 'live',
    help:
      "enforce Kubernetes NetworkPolicy on this node's pods (off: every pod unisolated, for clusters where another component enforces policy). " +
      "bpfproxy's own field: Calico has none (Felix always enforces policy), so it is named after the bpf* fields it sits with",
    get: (c) => c.networkPolicy,
    set: (c, v) => {
      c.networkPolicy = v;
    },
  }),
};

export type FelixField = keyof typeof FIELDS;
export type FieldValue<K extends FelixField> = (typeof FIELDS)[K]['default'];

/** The row for a FelixConfiguration field name, if bpfproxy reads it. */
export const fieldNamed = (name: string): AnyField | undefined => (Object.hasOwn(FIELDS, name) ? FIELDS[name as FelixField] : undefined);

export const FIELD_NAMES = Object.keys(FIELDS) as FelixField[];

/** Calico's defaults, every field. */
export const DEFAULT_CONFIG: Readonly<Config> = (() => {
  const c = {} as Config;
  for (const f of Object.values(FIELDS) as Array<Field<unknown>>) f.set(c, f.default);
  Object.freeze(c.conntrack);
  Object.freeze(c.mapSizes);
  Object.freeze(c.dsrOptoutCIDRs);
  return Object.freeze(c);
})();

/** BPF fields Calico has that bpfproxy does not act on yet. */
export const UNSUPPORTED_FIELDS: ReadonlySet<string> = new Set([
  'bpfConnectTimeLoadBalancingEnabled',
  'bpfHostNetworkedNATWithoutCTLB',
  'bpfPSNATPorts',
  'bpfEnforceRPF',
  'bpfExcludeCIDRsFromNAT',
  'bpfExtToServiceConnmark',
  'bpfAttachType',
  'bpfLogFilters',
  'bpfMapSizeRoute',
  'bpfMapSizeConntrackScaling',
  'bpfMapSizeIPSets',
  'bpfMapSizeIfState',
  'bpfPolicyDebugEnabled',
  'bpfDisableUnprivileged',
  'bpfDisableGROForIfaces',
  'bpfHostConntrackBypass',
  'bpfForceTrackPacketsFromIfaces',
  'bpfCTLBLogFilter',
  'bpfRedirectToPeer',
  'bpfExportBufferSizeMB',
  'bpfMapSizeConntrackCleanupQueue',
  'bpfConntrackLogLevel',
  'bpfConntrackCleanupMode',
  'bpfMapSizePerCPUConntrack',
  'bpfProfiling',
  'bpfJITHardening',
  'bpfMaglevMaxServices',
  'bpfIpv6Enabled',
]);
