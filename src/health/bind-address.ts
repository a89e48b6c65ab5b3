/**
 * Listen addresses as kube-proxy takes them (--healthz-bind-address,
 * --metrics-bind-address): an IP with an optional port, "1.2.3.4:10256",
 * "[::1]:10249", "0.0.0.0", "::" or "[::]"; empty turns the server off.
 * A port flag of the old kind (--healthz-port) sets the port part, as
 * kube-proxy's deprecated --healthz-port/--metrics-port do; port 0 turns
 * the server off.
 */
import { isIP } from 'node:net';
import { DEFAULT_CONFIG } from '../config/fields.js';

export interface BindAddress {
  host: string;
  port: number;
}

/**
 * The agent's defaults. healthz: kube-proxy's 0.0.0.0 (load balancers and
 * kubelet reach it from outside), port bpfKubeProxyHealthzPort. metrics:
 * kube-proxy's 127.0.0.1 on our port 9091 (Calico Felix's metrics port).
 * health: 127.0.0.1, where the DaemonSet's kubelet probes go (hostNetwork).
 */
export const LISTEN_DEFAULTS = {
  healthz: { host: '0.0.0.0', port: DEFAULT_CONFIG.healthzPort },
  metrics: { host: '127.0.0.1', port: 9091 },
  health: { host: '127.0.0.1', port: 9099 },
} as const satisfies Record<string, BindAddress>;

/** What the flag said: a host, perhaps a port; or off (empty). */
export type BindSpec = { host: string; port?: number } | 'off';

const EXAMPLES = 'an IP address with an optional port, e.g. 0.0.0.0:10256, 127.0.0.1, [::1]:10249 or ::';

function parsePort(flag: string, value: string, p: string): number {
  if (!/^\d{1,5}$/.test(p) || Number(p) > 65535) throw new Error(`${flag} "${value}": port "${p}" must be a number from 0 to 65535`);
  return Number(p);
}

function checkHost(flag: string, value: string, host: string, family?: 4 | 6): string {
  const f = isIP(host);
  if (!f || (family && f !== family)) {
    throw new Error(
      `${flag} "${value}": "${host}" is not an IP${family === 6 ? 'v6' : ''} address (host names are not taken); give ${EXAMPLES}`,
    );
  }
  return host;
}

/** Parse one flag value; throws an Error naming the flag. */
export function parseBindAddress(flag: string, value: string): BindSpec {
  const v = value.trim();
  if (v === '') return 'off';
  const bracket = /^\[([^\]]*)\](?::(.*))?$/.exec(v);
  if (bracket) {
    const host = checkHost(flag, value, bracket[1]!, 6);
    return bracket[2] === undefined ? { host } : { host, port: parsePort(flag, value, bracket[2]) };
  }
  if (v.startsWith('[')) throw new Error(`${flag} "${value}": unbalanced "[": give ${EXAMPLES}`);
  const colons = v.split(':').length - 1;
  if (colons === 0) return { host: checkHost(flag, value, v, 4) };
  if (colons === 1) {
    const [host, port] = v.split(':') as [string, string];
    return { host: checkHost(flag, value, host, 4), port: parsePort(flag, value, port) };
  }
  // More than one colon and no brackets: a bare IPv6 address, no port.
  return { host: checkHost(flag, value, v, 6) };
}

export function formatBindAddress(a: BindAddress): string {
  return isIP(a.host) === 6 ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/**
 * Combine a bind address flag, its port flag and the defaults: undefined
 * means off. Throws when both flags give a port and they disagree.
 */
export function resolveBindAddress(
  flag: string,
  spec: BindSpec | undefined,
  portFlag: string,
  port: number | undefined,
  def: BindAddress,
): BindAddress | undefined {
  if (spec === 'off') return undefined;
  const host = spec?.host ?? def.host;
  if (spec?.port !== undefined && port !== undefined && spec.port !== port) {
    throw new Error(`${flag} says port ${spec.port} and ${portFlag} says ${port}: give the port in one of them`);
  }
  const p = port ?? spec?.port ?? def.port;
  return p === 0 ? undefined : { host, port: p };
}
