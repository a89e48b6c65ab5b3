/**
 * kube-proxy's rules, written the way kube-proxy writes them, for the
 * side-by-side benchmark: iptables mode (KUBE-SERVICES -> KUBE-SVC-* with
 * statistic probabilities -> KUBE-SEP-* DNAT, masquerade marks; chain names
 * hashed as kube-proxy hashes them) and nftables mode (KEP-3866: one
 * verdict map from (IP, proto, port) to per-service chains that pick an
 * endpoint chain with numgen).
 */
import { createHash } from 'node:crypto';

export interface BenchService {
  namespace: string;
  name: string;
  portName: string;
  clusterIP: string;
  port: number;
  protocol: 'TCP' | 'UDP';
  endpoints: Array<{ ip: string; port: number }>;
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
const spn = (s: BenchService): string => `${s.namespace}/${s.name}:${s.portName}`;
export const svcChain = (s: BenchService): string => `KUBE-SVC-${hash(spn(s) + s.protocol.toLowerCase()).slice(0, 16)}`;
export const sepChain = (s: BenchService, e: { ip: string; port: number }): string =>
  `KUBE-SEP-${hash(spn(s) + s.protocol.toLowerCase() + `${e.ip}:${e.port}`).slice(0, 16)}`;

/** A full iptables-restore payload for these services (kube-proxy's full sync). */
export function iptablesRules(services: readonly BenchService[], clusterCidr: string): string {
  const f: string[] = [];
  const n: string[] = [];
  f.push('*filter', ':KUBE-SERVICES - [0:0]', ':KUBE-EXTERNAL-SERVICES - [0:0]', ':KUBE-FORWARD - [0:0]', ':KUBE-NODEPORTS - [0:0]', ':KUBE-PROXY-FIREWALL - [0:0]',
    '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
    '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
    '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
    '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
    '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
    '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    'COMMIT');
  n.push('*nat', ':KUBE-SERVICES - [0:0]', ':KUBE-POSTROUTING - [0:0]', ':KUBE-MARK-MASQ - [0:0]', ':KUBE-NODEPORTS - [0:0]');
  for (const s of services) {
    n.push(`:${svcChain(s)} - [0:0]`);
    for (const e of s.endpoints) n.push(`:${sepChain(s, e)} - [0:0]`);
  }
  n.push('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
    '-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000',
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
    '-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000');
  for (const s of services) {
    const p = s.protocol.toLowerCase();
    const c = `"${spn(s)} cluster IP"`;
    if (s.endpoints.length === 0) continue; // kube-proxy puts a REJECT in the filter table instead
    n.push(`-A KUBE-SERVICES -d ${s.clusterIP}/32 -p ${p} -m comment --comment ${c} -m ${p} --dport ${s.port} -j ${svcChain(s)}`);
    n.push(`-A ${svcChain(s)} ! -s ${clusterCidr} -d ${s.clusterIP}/32 -p ${p} -m comment --comment ${c} -m ${p} --dport ${s.port} -j KUBE-MARK-MASQ`);
    s.endpoints.forEach((e, i) => {
      const left = s.endpoints.length - i;
      const prob = left > 1 ? ` -m statistic --mode random --probability ${(1 / left).toFixed(11)}` : '';
      n.push(`-A ${svcChain(s)} -m comment --comment "${spn(s)} -> ${e.ip}:${e.port}"${prob} -j ${sepChain(s, e)}`);
    });
    for (const e of s.endpoints) {
      n.push(`-A ${sepChain(s, e)} -s ${e.ip}/32 -m comment --comment "${spn(s)}" -j KUBE-MARK-MASQ`);
      n.push(`-A ${sepChain(s, e)} -p ${p} -m comment --comment "${spn(s)}" -m ${p} -j DNAT --to-destination ${e.ip}:${e.port}`);
    }
  }
  n.push('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
    'COMMIT');
  return `${f.join('\n')}\n${n.join('\n')}\n`;
}

/** nftables mode names: "<kind>-<hash of base>-<base>", base "ns/name/proto/port". */
const nftBase = (s: BenchService): string => `${s.namespace}/${s.name}/${s.protocol.toLowerCase()}/${s.portName}`;
const nftName = (kind: string, base: string): string => `${kind}-${hash(base).slice(0, 8)}-${base}`;
export const nftSvcChain = (s: BenchService): string => nftName('service', nftBase(s));
export const nftEpChain = (s: BenchService, e: { ip: string; port: number }): string =>
  nftName('endpoint', `${nftBase(s)}__${e.ip}/${e.port}`);

function nftServiceBody(s: BenchService, clusterCidr: string): string[] {
  const p = s.protocol.toLowerCase();
  const out = [`add rule ip kube-proxy ${nftSvcChain(s)} ip daddr ${s.clusterIP} ${p} dport ${s.port} ip saddr != ${clusterCidr} jump mark-for-masquerade`];
  out.push(`add rule ip kube-proxy ${nftSvcChain(s)} numgen random mod ${s.endpoints.length} vmap { ${s.endpoints.map((e, i) => `${i} : goto ${nftEpChain(s, e)}`).join(' , ')} }`);
  return out;
}

function nftEndpoint(s: BenchService, e: { ip: string; port: number }): string[] {
  const c = nftEpChain(s, e);
  return [`add chain ip kube-proxy ${c}`, `add rule ip kube-proxy ${c} ip saddr ${e.ip} jump mark-for-masquerade`,
    `add rule ip kube-proxy ${c} meta l4proto ${s.protocol.toLowerCase()} dnat to ${e.ip}:${e.port}`];
}

/** A full `nft -f` transaction for these services (first sync). */
export function nftRules(services: readonly BenchService[], clusterCidr: string): string {
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
export function nftEndpointChange(before: BenchService, after: BenchService, clusterCidr: string): string {
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
