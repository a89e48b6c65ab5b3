/**
 * Calico's FelixConfiguration, the BPF fields bpfproxy honours, with
 * Calico's names and defaults. The cluster-wide `default` is overlaid by the
 * per-node `node.<nodename>`, field by field. A config with an invalid value
 * is refused whole, each problem naming its field; the last good config
 * stays in force.
 */
import { DEFAULT_DATA_IFACES } from '../dataplane/bpf/attach.js';
import { DEFAULT_CT_TIMEOUTS, DEFAULT_MAP_SIZES, parseDuration, type ConntrackTimeouts } from '../dataplane/bpf/config.js';

export interface AgentConfig {
  bpfEnabled: boolean;
  bpfDataIfacePattern: string;
  bpfL3IfacePattern: string;
  bpfExternalServiceMode: 'Tunnel' | 'DSR';
  bpfKubeProxyIptablesCleanupEnabled: boolean;
  /** ms */
  bpfKubeProxyMinSyncPeriod: number;
  bpfConntrackTimeouts: ConntrackTimeouts;
  bpfMapSizeNATFrontend: number;
  bpfMapSizeNATBackend: number;
  bpfMapSizeNATAffinity: number;
  bpfMapSizeConntrack: number;
  bpfLogLevel: 'Off' | 'Info' | 'Debug';
  bpfKubeProxyHealthzPort: number;
}

/** Calico's defaults (felix/config/config_params.go). */
export const CALICO_DEFAULTS: AgentConfig = {
  bpfEnabled: false,
  bpfDataIfacePattern: DEFAULT_DATA_IFACES,
  bpfL3IfacePattern: '',
  bpfExternalServiceMode: 'Tunnel',
  bpfKubeProxyIptablesCleanupEnabled: true,
  bpfKubeProxyMinSyncPeriod: 1000,
  bpfConntrackTimeouts: DEFAULT_CT_TIMEOUTS,
  bpfMapSizeNATFrontend: DEFAULT_MAP_SIZES.natFrontend,
  bpfMapSizeNATBackend: DEFAULT_MAP_SIZES.natBackend,
  bpfMapSizeNATAffinity: DEFAULT_MAP_SIZES.natAffinity,
  bpfMapSizeConntrack: DEFAULT_MAP_SIZES.conntrack,
  bpfLogLevel: 'Off',
  bpfKubeProxyHealthzPort: 10256,
};

/** BPF fields Calico has that bpfproxy does not act on yet. */
const UNSUPPORTED = new Set([
  'bpfConnectTimeLoadBalancing',
  'bpfConnectTimeLoadBalancingEnabled',
  'bpfHostNetworkedNATWithoutCTLB',
  'bpfPSNATPorts',
  'bpfEnforceRPF',
  'bpfExcludeCIDRsFromNAT',
  'bpfExtToServiceConnmark',
  'bpfAttachType',
  'bpfDSROptoutCIDRs',
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
  'bpfMaglevMaxEndpointsPerService',
  'bpfMaglevMaxServices',
  'bpfIpv6Enabled',
]);

export interface ConfigProblem {
  /** "default" or "node.<name>" */
  object: string;
  field: string;
  message: string;
}

export interface ConfigResult {
  config?: AgentConfig;
  problems: ConfigProblem[];
  /** fields present that bpfproxy ignores */
  ignored: string[];
}

type Spec = Record<string, unknown>;

const CT_KEYS: Record<string, keyof ConntrackTimeouts | null> = {
  tcpSynSent: 'TCPSynSent',
  tcpEstablished: 'TCPEstablished',
  tcpFinsSeen: 'TCPFinsSeen',
  tcpResetSeen: 'TCPResetSeen',
  udpTimeout: 'UDPTimeout',
  creationGracePeriod: null,
  genericTimeout: null,
  icmpTimeout: null,
};

function validRegex(s: string): string | undefined {
  try {
    new RegExp(s);
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

/** Apply one spec's fields over a config; problems are collected, not thrown. */
function overlay(base: AgentConfig, spec: Spec, object: string, problems: ConfigProblem[], ignored: string[]): AgentConfig {
  const c: AgentConfig = { ...base, bpfConntrackTimeouts: { ...base.bpfConntrackTimeouts } };
  const bad = (field: string, message: string) => problems.push({ object, field: `spec.${field}`, message });
  for (const [k, v] of Object.entries(spec)) {
    if (v === null || v === undefined) continue;
    switch (k) {
      case 'bpfEnabled':
      case 'bpfKubeProxyIptablesCleanupEnabled':
        if (typeof v !== 'boolean') bad(k, `must be true or false, not ${JSON.stringify(v)}`);
        else c[k] = v;
        break;
      case 'bpfDataIfacePattern':
      case 'bpfL3IfacePattern': {
        if (typeof v !== 'string') {
          bad(k, 'must be a regular expression string');
          break;
        }
        const err = validRegex(v);
        if (err) bad(k, `"${v}" is not a valid regular expression: ${err}`);
        else c[k] = v;
        break;
      }
      case 'bpfExternalServiceMode':
        if (v !== 'Tunnel' && v !== 'DSR') bad(k, `must be Tunnel or DSR, not ${JSON.stringify(v)}`);
        else c[k] = v;
        break;
      case 'bpfKubeProxyMinSyncPeriod':
        try {
          c[k] = parseDuration(typeof v === 'string' || typeof v === 'number' ? String(v) : JSON.stringify(v), `spec.${k}`) * 1000;
        } catch (e) {
          bad(k, (e as Error).message.replace(/^spec\.\w+: /, ''));
        }
        break;
      case 'bpfConntrackTimeouts': {
        if (typeof v !== 'object' || Array.isArray(v)) {
          bad(k, 'must be an object such as {tcpEstablished: 1h}');
          break;
        }
        for (const [tk, tv] of Object.entries(v as Spec)) {
          if (!(tk in CT_KEYS)) {
            bad(`${k}.${tk}`, `unknown timeout (known: ${Object.keys(CT_KEYS).join(', ')})`);
            continue;
          }
          const ours = CT_KEYS[tk];
          if (tv === 'Auto' || tv === null) continue;
          try {
            const secs = parseDuration(
              typeof tv === 'string' || typeof tv === 'number' ? String(tv) : JSON.stringify(tv),
              `spec.${k}.${tk}`,
            );
            if (secs <= 0) bad(`${k}.${tk}`, 'must be more than 0');
            else if (ours) c.bpfConntrackTimeouts[ours] = secs;
          } catch (e) {
            bad(`${k}.${tk}`, (e as Error).message.replace(/^spec\.[\w.]+: /, ''));
          }
        }
        break;
      }
      case 'bpfMapSizeNATFrontend':
      case 'bpfMapSizeNATBackend':
      case 'bpfMapSizeNATAffinity':
      case 'bpfMapSizeConntrack':
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 1 << 28)
          bad(k, `must be a whole number from 1 to ${1 << 28}, not ${JSON.stringify(v)}`);
        else c[k] = v;
        break;
      case 'bpfLogLevel': {
        const m = typeof v === 'string' ? ['Off', 'Info', 'Debug'].find((x) => x.toLowerCase() === v.toLowerCase()) : undefined;
        if (!m) bad(k, `must be Off, Info or Debug, not ${JSON.stringify(v)}`);
        else c[k] = m as AgentConfig['bpfLogLevel'];
        break;
      }
      case 'bpfKubeProxyHealthzPort':
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535)
          bad(k, `must be a port number from 1 to 65535, not ${JSON.stringify(v)}`);
        else c[k] = v;
        break;
      default:
        if (k.startsWith('bpf')) ignored.push(UNSUPPORTED.has(k) ? `${k} (not supported by bpfproxy yet)` : `${k} (unknown)`);
    }
  }
  return c;
}

/**
 * The effective config for a node: base (defaults and command-line
 * settings) <- FelixConfiguration `default` <- `node.<nodeName>`.
 */
export function effectiveConfig(
  base: AgentConfig,
  defaultSpec: Spec | undefined,
  nodeSpec: Spec | undefined,
  nodeName: string,
): ConfigResult {
  const problems: ConfigProblem[] = [];
  const ignored: string[] = [];
  let c = base;
  if (defaultSpec) c = overlay(c, defaultSpec, 'default', problems, ignored);
  if (nodeSpec) c = overlay(c, nodeSpec, `node.${nodeName}`, problems, ignored);
  return problems.length ? { problems, ignored } : { config: c, problems, ignored };
}

/** Fields whose change needs the BPF programs reloaded (load-time settings). */
export function needsReload(a: AgentConfig, b: AgentConfig): boolean {
  return JSON.stringify(a.bpfConntrackTimeouts) !== JSON.stringify(b.bpfConntrackTimeouts);
}

export function mapSizesChanged(a: AgentConfig, b: AgentConfig): boolean {
  return (
    a.bpfMapSizeConntrack !== b.bpfMapSizeConntrack ||
    a.bpfMapSizeNATFrontend !== b.bpfMapSizeNATFrontend ||
    a.bpfMapSizeNATBackend !== b.bpfMapSizeNATBackend ||
    a.bpfMapSizeNATAffinity !== b.bpfMapSizeNATAffinity
  );
}

/** What bpfproxy cannot honour in this config, said plainly. */
export function unsupported(c: AgentConfig): string[] {
  const out: string[] = [];
  out.push(
    `bpfExternalServiceMode=${c.bpfExternalServiceMode} is not supported yet: external traffic to an endpoint on another node is SNATed to this node (kube-proxy behaviour), so that endpoint sees the node's address, not the client's`,
  );
  return out;
}
