/**
 * An independent reading of the NetworkPolicy API documentation, straight
 * over the Kubernetes objects (valid ones: no validation here), pair by pair:
 * the expectation the compiled model is checked against in generated cases.
 * It shares no code with src/model/policy.
 */

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- Kubernetes objects, read untyped

function labelsMatch(sel: Obj | undefined | null, labels: Record<string, string>): boolean {
  if (!sel) return true;
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const r of sel.matchExpressions ?? []) {
    const has = Object.prototype.hasOwnProperty.call(labels, r.key);
    const v = labels[r.key];
    if (r.operator === 'In' && !(has && r.values.includes(v))) return false;
    if (r.operator === 'NotIn' && has && r.values.includes(v)) return false;
    if (r.operator === 'Exists' && !has) return false;
    if (r.operator === 'DoesNotExist' && has) return false;
  }
  return true;
}

function ipToNum(ip: string): number {
  return ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
}

function inCidr(ip: string, cidr: string): boolean {
  const [net, len] = cidr.split('/');
  const bits = Number(len);
  const size = 2 ** (32 - bits);
  const base = Math.floor(ipToNum(net!) / size) * size;
  const n = ipToNum(ip);
  return n >= base && n < base + size;
}

export interface OraclePod {
  ns: string;
  name: string;
  ip: string;
  labels: Record<string, string>;
  ports: Array<{ name?: string; containerPort: number; protocol?: string }>;
}

export interface OracleWorld {
  namespaces: Record<string, Record<string, string>>;
  pods: OraclePod[];
  policies: Obj[];
}

function policyTypes(p: Obj): string[] {
  const t = p.spec.policyTypes;
  if (t && t.length) return t;
  return p.spec.egress && p.spec.egress.length ? ['Ingress', 'Egress'] : ['Ingress'];
}

function peerMatches(peer: Obj, policyNs: string, other: OraclePod, w: OracleWorld): boolean {
  if (peer.ipBlock) {
    return inCidr(other.ip, peer.ipBlock.cidr) && !(peer.ipBlock.except ?? []).some((e: string) => inCidr(other.ip, e));
  }
  if (peer.namespaceSelector) {
    const nsLabels = { ...(w.namespaces[other.ns] ?? {}), 'kubernetes.io/metadata.name': other.ns };
    if (!labelsMatch(peer.namespaceSelector, nsLabels)) return false;
  } else if (other.ns !== policyNs) return false;
  return labelsMatch(peer.podSelector, other.labels);
}

function portMatches(port: Obj, dport: number, proto: string, dest: OraclePod): boolean {
  if ((port.protocol ?? 'TCP') !== proto) return false;
  if (port.port === undefined || port.port === null) return true;
  if (typeof port.port === 'string') {
    return dest.ports.some((cp) => cp.name === port.port && (cp.protocol ?? 'TCP') === proto && cp.containerPort === dport);
  }
  const end = port.endPort ?? port.port;
  return dport >= port.port && dport <= end;
}

/** Is traffic from src to dst:dport/proto allowed by both ends' policies? */
export function oracleAllows(w: OracleWorld, src: OraclePod, dst: OraclePod, dport: number, proto: string): boolean {
  const side = (local: OraclePod, other: OraclePod, dir: 'Ingress' | 'Egress'): boolean => {
    const pols = w.policies.filter(
      (p) =>
        (p.metadata.namespace ?? 'default') === local.ns && labelsMatch(p.spec.podSelector, local.labels) && policyTypes(p).includes(dir),
    );
    if (pols.length === 0) return true;
    const dest = dir === 'Ingress' ? local : other;
    return pols.some((p) =>
      ((dir === 'Ingress' ? p.spec.ingress : p.spec.egress) ?? []).some((rule: Obj) => {
        const peers = dir === 'Ingress' ? rule.from : rule.to;
        const peerOk = !peers || peers.length === 0 || peers.some((pe: Obj) => peerMatches(pe, local.ns, other, w));
        const portOk = !rule.ports || rule.ports.length === 0 || rule.ports.some((po: Obj) => portMatches(po, dport, proto, dest));
        return peerOk && portOk;
      }),
    );
  };
  return side(src, dst, 'Egress') && side(dst, src, 'Ingress');
}
