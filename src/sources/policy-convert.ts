/**
 * Kubernetes Pods, Namespaces and networking.k8s.io/v1 NetworkPolicies to
 * the policy model's domain types (src/model/policy/types.ts).
 *
 * NetworkPolicies are validated as the API server validates them
 * (pkg/apis/networking/validation) and defaulted as it defaults them
 * (policyTypes, protocol), and every problem **fails closed**: the policy
 * still selects and isolates its pods, and only what is invalid is left
 * out, so it can only allow less, never more:
 * - an invalid peer (selector syntax, CIDR, an except outside its cidr, no
 *   or too many kinds) is left out of its rule; a rule whose peers were all
 *   left out allows nothing (it does not become "from anywhere");
 * - an invalid port (protocol, number, name, endPort) likewise;
 * - an invalid spec.podSelector requirement is dropped, so the policy
 *   selects more pods (a superset of what was meant), and the policy allows
 *   nothing: its rules are left out, since applied to that superset they
 *   could open pods another policy isolates;
 * - an unknown policyTypes entry isolates in both directions.
 * Every problem names the policy and the field, and says what happened.
 */
import { z } from 'zod';
import { isIPv4, isIPv6 } from '../net/ip.js';
import { ipv4ToInt, nonUnicastReasonOf } from '../model/addresses.js';
import { canonicalIpv6 } from '../net/ip6.js';
import { dns1123Label, dns1123Subdomain, ianaSvcName, labelValue, LABEL_MAX, quote, SUBDOMAIN_MAX } from '../model/names.js';
import { ipv6ToBig, prefix6Of, prefixOf, prefixWithin, type Prefix } from '../model/policy/prefix.js';
import {
  NAMESPACE_NAME_LABEL,
  type ContainerPort,
  type LabelRequirement,
  type LabelSelector,
  type Namespace,
  type NetworkPolicy,
  type Pod,
  type PolicyPeer,
  type PolicyPort,
  type PolicyProtocol,
  type PolicyRule,
} from '../model/policy/types.js';
import type { Converted, Problem } from '../model/problem.js';

/** Problems listed one by one per list field before they are summed up. */
const LISTED_PER_FIELD = 10;

class Problems {
  readonly list: Problem[] = [];
  private readonly perList = new Map<string, number>();
  constructor(readonly object: string) {}

  warn(field: string, message: string): void {
    this.list.push({ object: this.object, field, message, fatal: false });
  }

  /** A problem with one entry of the list `list`: ten are listed, the rest counted. */
  entry(list: string, field: string, message: string): void {
    const n = (this.perList.get(list) ?? 0) + 1;
    this.perList.set(list, n);
    if (n <= LISTED_PER_FIELD) this.warn(field, message);
  }

  fatal(field: string, message: string): Converted<never> {
    return { problems: [...this.done(), { object: this.object, field, message, fatal: true }] };
  }

  done(): Problem[] {
    for (const [list, n] of this.perList) {
      if (n > LISTED_PER_FIELD) this.warn(list, `${n - LISTED_PER_FIELD} more entries with problems, not listed one by one; all left out`);
    }
    this.perList.clear();
    return this.list;
  }
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const has = (o: Record<string, unknown>, k: string): boolean => Object.hasOwn(o, k) && o[k] !== undefined && o[k] !== null;
const show = (v: unknown): string => (typeof v === 'string' ? quote(v) : (JSON.stringify(v) ?? String(v)).slice(0, 80));

function objectName(kind: string, o: unknown, defaultNs: string | undefined): string {
  const m = isObj(o) && isObj(o.metadata) ? o.metadata : {};
  const short = (v: string) => (v.length > 80 ? `${v.slice(0, 80)}…` : v);
  const name = typeof m.name === 'string' && m.name ? short(m.name) : '<unnamed>';
  if (defaultNs === undefined) return `${kind} ${name}`;
  const ns = typeof m.namespace === 'string' && m.namespace ? short(m.namespace) : defaultNs;
  return `${kind} ${ns}/${name}`;
}

const Meta = z.looseObject({
  name: z.string().min(1),
  namespace: z.string().optional(),
  labels: z.record(z.string(), z.string()).nullable().optional(),
});

/** A label key: an optional DNS-1123 subdomain prefix and "/", then a name (IsQualifiedName). */
export function labelKeyError(key: string): string | undefined {
  const parts = key.split('/');
  if (parts.length > 2) return `${quote(key)} is not a label key: at most one "/" (prefix/name)`;
  const name = parts[parts.length - 1]!;
  if (parts.length === 2) {
    const prefix = parts[0]!;
    if (!prefix) return `${quote(key)} is not a label key: the prefix before "/" is empty`;
    if (prefix.length > SUBDOMAIN_MAX || dns1123Subdomain(prefix)) {
      return `${quote(key)} is not a label key: its prefix must be a DNS-1123 subdomain (lower-case labels separated by ".")`;
    }
  }
  if (!name) return `${quote(key)} is not a label key: the name part is empty`;
  if (name.length > LABEL_MAX) return `${quote(key)} is not a label key: its name part has more than ${LABEL_MAX} characters`;
  if (!/^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/.test(name)) {
    return `${quote(key)} is not a label key: letters, digits, "-", "_" and ".", starting and ending with a letter or digit`;
  }
  return undefined;
}

function labelsOf(raw: unknown, field: string, p: Problems): Record<string, string> {
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  if (raw === undefined || raw === null) return out;
  if (!isObj(raw)) {
    p.warn(field, `must be a map of label key to value, not ${show(raw)}; the object is treated as having no labels`);
    return out;
  }
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== 'string') {
      p.entry(field, `${field}["${k}"]`, `the value ${show(v)} is not a string; this label is left out`);
      continue;
    }
    // Kept as written: matching compares strings, so an odd label matches
    // exactly what a selector naming it literally would match.
    const err = labelKeyError(k) ?? labelValue(v);
    if (err) p.entry(field, `${field}["${k}"]`, `${err} (the API server would reject it); kept as written`);
    out[k] = v;
  }
  return out;
}

const PROTOCOLS: readonly PolicyProtocol[] = ['TCP', 'UDP', 'SCTP'];
const isProtocol = (v: unknown): v is PolicyProtocol => typeof v === 'string' && (PROTOCOLS as readonly string[]).includes(v);
const isPortNumber = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535;

// ---------------------------------------------------------------------------
// Namespace

/** A v1 Namespace. Its labels get kubernetes.io/metadata.name = name, as the API server sets it. */
export function toNamespace(o: unknown): Converted<Namespace> {
  const p = new Problems(objectName('Namespace', o, undefined));
  const m = isObj(o) ? Meta.safeParse(o.metadata) : undefined;
  if (!m?.success) return p.fatal('metadata.name', 'missing or not a string; the namespace is ignored');
  const name = m.data.name;
  const err = dns1123Label(name);
  if (err) return p.fatal('metadata.name', `a namespace name ${err}; the namespace is ignored`);
  const labels = labelsOf((o as { metadata: Record<string, unknown> }).metadata.labels, 'metadata.labels', p);
  labels[NAMESPACE_NAME_LABEL] = name;
  return { value: { name, labels }, problems: p.done() };
}

// ---------------------------------------------------------------------------
// Pod

function containerPorts(spec: Record<string, unknown>, p: Problems): ContainerPort[] {
  const out: ContainerPort[] = [];
  const lists: Array<[string, unknown]> = [['spec.containers', spec.containers]];
  if (Array.isArray(spec.initContainers)) {
    // Restartable init containers (sidecars) serve for the pod's lifetime; their ports count.
    spec.initContainers.forEach((c, i) => {
      if (isObj(c) && c.restartPolicy === 'Always') lists.push([`spec.initContainers[${i}]`, [c]]);
    });
  }
  for (const [base, list] of lists) {
    if (!Array.isArray(list)) continue;
    list.forEach((c, ci) => {
      if (!isObj(c) || !Array.isArray(c.ports)) return;
      const at = base === 'spec.containers' ? `${base}[${ci}]` : base;
      c.ports.forEach((raw, pi) => {
        const field = `${at}.ports[${pi}]`;
        if (!isObj(raw)) return p.entry('ports', field, `${show(raw)} is not a container port; left out`);
        if (!isPortNumber(raw.containerPort)) {
          return p.entry('ports', `${field}.containerPort`, `${show(raw.containerPort)} is not a port number (1-65535); port left out`);
        }
        const protocol = raw.protocol ?? 'TCP';
        if (!isProtocol(protocol)) {
          return p.entry('ports', `${field}.protocol`, `${show(protocol)} is not TCP, UDP or SCTP; port left out`);
        }
        let name = '';
        if (has(raw, 'name')) {
          const err = typeof raw.name === 'string' ? ianaSvcName(raw.name) : 'is not a string';
          if (err) {
            p.entry('ports', `${field}.name`, `${err}; the port is kept without its name (named-port rules do not match it)`);
          } else name = raw.name as string;
        }
        out.push({ name, port: raw.containerPort, protocol });
      });
    });
  }
  return out;
}

/** A v1 Pod: what policy needs of it (IPv6 addresses in their RFC 5952 form). */
export function toPod(o: unknown): Converted<Pod> {
  const p = new Problems(objectName('Pod', o, 'default'));
  const m = isObj(o) ? Meta.safeParse(o.metadata) : undefined;
  if (!m?.success) return p.fatal('metadata.name', 'missing or not a string; the pod is ignored');
  const { name } = m.data;
  const namespace = m.data.namespace || 'default';
  const nsErr = dns1123Label(namespace);
  if (nsErr) return p.fatal('metadata.namespace', `a namespace ${nsErr}; the pod is ignored`);
  const obj = o as Record<string, unknown>;
  const labels = labelsOf((obj.metadata as Record<string, unknown>).labels, 'metadata.labels', p);
  const spec = isObj(obj.spec) ? obj.spec : {};
  const status = isObj(obj.status) ? obj.status : {};
  const nodeName = typeof spec.nodeName === 'string' ? spec.nodeName : '';
  const hostNetwork = spec.hostNetwork === true;

  const ips: string[] = [];
  // A pod that has terminated holds no address: the IP may be another pod's already.
  const terminated = status.phase === 'Succeeded' || status.phase === 'Failed';
  if (!terminated && !hostNetwork) {
    const raw: Array<[string, unknown]> = Array.isArray(status.podIPs)
      ? status.podIPs.map((e, i) => [`status.podIPs[${i}].ip`, isObj(e) ? e.ip : e])
      : has(status, 'podIP')
        ? [['status.podIP', status.podIP]]
        : [];
    for (const [field, given] of raw) {
      const ip = typeof given === 'string' && isIPv6(given) ? canonicalIpv6(given) : given;
      if (typeof ip !== 'string' || !(isIPv4(ip) || isIPv6(ip))) {
        p.entry('status.podIPs', field, `${show(given)} is not an IP address; left out`);
        continue;
      }
      const why = nonUnicastReasonOf(ip);
      if (why) {
        p.entry('status.podIPs', field, `${ip} ${why}; left out`);
        continue;
      }
      if (!ips.includes(ip)) ips.push(ip);
    }
  }
  return {
    value: { namespace, name, labels, ips, nodeName, hostNetwork, containerPorts: containerPorts(spec, p) },
    problems: p.done(),
  };
}

// ---------------------------------------------------------------------------
// NetworkPolicy

/** A label selector, or the reason it is invalid (the first problem found). */
function selectorOf(raw: unknown, field: string): { selector: LabelSelector; errors: Array<{ field: string; message: string }> } {
  const errors: Array<{ field: string; message: string }> = [];
  const requirements: LabelRequirement[] = [];
  if (!isObj(raw)) {
    errors.push({ field, message: `${show(raw)} is not a label selector (matchLabels, matchExpressions)` });
    return { selector: { requirements }, errors };
  }
  if (has(raw, 'matchLabels')) {
    const ml = raw.matchLabels;
    if (!isObj(ml)) errors.push({ field: `${field}.matchLabels`, message: `${show(ml)} is not a map of label key to value` });
    else {
      for (const [k, v] of Object.entries(ml)) {
        const f = `${field}.matchLabels["${k}"]`;
        if (typeof v !== 'string') {
          errors.push({ field: f, message: `the value ${show(v)} is not a string` });
          continue;
        }
        const err = labelKeyError(k) ?? labelValue(v);
        if (err) errors.push({ field: f, message: err });
        else requirements.push({ key: k, operator: 'In', values: [v] });
      }
    }
  }
  if (has(raw, 'matchExpressions')) {
    const me = raw.matchExpressions;
    if (!Array.isArray(me)) errors.push({ field: `${field}.matchExpressions`, message: `${show(me)} is not a list of requirements` });
    else {
      me.forEach((r, i) => {
        const f = `${field}.matchExpressions[${i}]`;
        if (!isObj(r)) return errors.push({ field: f, message: `${show(r)} is not a requirement (key, operator, values)` });
        if (typeof r.key !== 'string') return errors.push({ field: `${f}.key`, message: `${show(r.key)} is not a label key` });
        const keyErr = labelKeyError(r.key);
        if (keyErr) return errors.push({ field: `${f}.key`, message: keyErr });
        const op = r.operator;
        if (op !== 'In' && op !== 'NotIn' && op !== 'Exists' && op !== 'DoesNotExist') {
          return errors.push({ field: `${f}.operator`, message: `${show(op)} is not In, NotIn, Exists or DoesNotExist` });
        }
        const values = r.values === undefined || r.values === null ? [] : r.values;
        if (!Array.isArray(values)) return errors.push({ field: `${f}.values`, message: `${show(values)} is not a list of values` });
        if ((op === 'In' || op === 'NotIn') && values.length === 0) {
          return errors.push({ field: `${f}.values`, message: `must be non-empty when operator is ${op}` });
        }
        if ((op === 'Exists' || op === 'DoesNotExist') && values.length > 0) {
          return errors.push({ field: `${f}.values`, message: `must be empty when operator is ${op}` });
        }
        for (let j = 0; j < values.length; j++) {
          const v: unknown = values[j];
          const err = typeof v === 'string' ? labelValue(v) : `${show(v)} is not a string`;
          if (err) return errors.push({ field: `${f}.values[${j}]`, message: err });
        }
        requirements.push({ key: r.key, operator: op, values: values as string[] });
      });
    }
  }
  return { selector: { requirements }, errors };
}

type CidrResult = { prefix: Prefix } | { error: string };

/** A CIDR as the API server reads it (Go's ParseCIDR: host bits may be set and are cleared). */
function cidrOf(raw: unknown): CidrResult {
  if (typeof raw !== 'string' || raw === '') return { error: `${show(raw)} is not a CIDR such as 10.0.0.0/8` };
  const slash = raw.indexOf('/');
  const addr = slash < 0 ? raw : raw.slice(0, slash);
  const len = slash < 0 ? '' : raw.slice(slash + 1);
  if (isIPv6(addr) && /^\d{1,3}$/.test(len) && Number(len) <= 128 && canonicalIpv6(addr)) {
    return { prefix: prefix6Of(ipv6ToBig(addr), Number(len)) };
  }
  if (!isIPv4(addr) || !/^\d{1,2}$/.test(len) || Number(len) > 32) {
    return { error: `${quote(raw)} is not a CIDR such as 10.0.0.0/8 or fd00::/64 (an address, "/" and a prefix length)` };
  }
  return { prefix: prefixOf(ipv4ToInt(addr), Number(len)) };
}

const FAIL_CLOSED = 'the pods the policy selects stay isolated';

/** spec.ingress[i].from[j] / spec.egress[i].to[j] */
function peerOf(raw: unknown, field: string, p: Problems, list: string): PolicyPeer | undefined {
  const leftOut = `this peer is left out (its rule allows nothing from it); ${FAIL_CLOSED}`;
  if (!isObj(raw))
    return (p.entry(list, field, `${show(raw)} is not a peer (podSelector, namespaceSelector or ipBlock); ${leftOut}`), undefined);
  const kinds = ['podSelector', 'namespaceSelector', 'ipBlock'].filter((k) => has(raw, k));
  if (kinds.length === 0) {
    return (p.entry(list, field, `must specify a peer: podSelector, namespaceSelector or ipBlock; ${leftOut}`), undefined);
  }
  if (has(raw, 'ipBlock') && kinds.length > 1) {
    return (p.entry(list, field, `may not specify both ipBlock and another peer (${kinds.join(', ')}); ${leftOut}`), undefined);
  }
  if (has(raw, 'ipBlock')) {
    const ib = raw.ipBlock;
    const at = `${field}.ipBlock`;
    if (!isObj(ib)) return (p.entry(list, at, `${show(ib)} is not an ipBlock (cidr, except); ${leftOut}`), undefined);
    const c = cidrOf(ib.cidr);
    if ('error' in c) return (p.entry(list, `${at}.cidr`, `${c.error}; ${leftOut}`), undefined);
    const exceptRaw = ib.except === undefined || ib.except === null ? [] : ib.except;
    if (!Array.isArray(exceptRaw)) {
      return (p.entry(list, `${at}.except`, `${show(exceptRaw)} is not a list of CIDRs; ${leftOut}`), undefined);
    }
    const except: string[] = [];
    for (let i = 0; i < exceptRaw.length; i++) {
      const ef = `${at}.except[${i}]`;
      const e = cidrOf(exceptRaw[i]);
      // A bad except cannot just be dropped: that would allow what it excepted.
      if ('error' in e) return (p.entry(list, ef, `${e.error}; ${leftOut}`), undefined);
      if (!(e.prefix.bits > c.prefix.bits && prefixWithin(e.prefix, c.prefix))) {
        return (p.entry(list, ef, `${show(exceptRaw[i])} must be a strict subset of cidr ${c.prefix.text}; ${leftOut}`), undefined);
      }
      except.push(e.prefix.text);
    }
    return { kind: 'ipBlock', cidr: c.prefix.text, except };
  }
  const peer: { kind: 'pods'; namespaceSelector?: LabelSelector; podSelector?: LabelSelector } = { kind: 'pods' };
  let bad = false;
  for (const k of ['namespaceSelector', 'podSelector'] as const) {
    if (!has(raw, k)) continue;
    const s = selectorOf(raw[k], `${field}.${k}`);
    for (const e of s.errors) p.entry(list, e.field, `${e.message}; ${leftOut}`);
    if (s.errors.length) bad = true;
    peer[k] = s.selector;
  }
  return bad ? undefined : peer;
}

function portOf(raw: unknown, field: string, p: Problems, list: string): PolicyPort | undefined {
  const leftOut = `this port is left out (its rule allows nothing on it); ${FAIL_CLOSED}`;
  if (!isObj(raw)) return (p.entry(list, field, `${show(raw)} is not a port (protocol, port, endPort); ${leftOut}`), undefined);
  const protocol = has(raw, 'protocol') ? raw.protocol : 'TCP';
  if (!isProtocol(protocol))
    return (p.entry(list, `${field}.protocol`, `${show(protocol)} is not TCP, UDP or SCTP; ${leftOut}`), undefined);
  const port = has(raw, 'port') ? raw.port : undefined;
  const endPort = has(raw, 'endPort') ? raw.endPort : undefined;
  if (port === undefined) {
    if (endPort !== undefined) return (p.entry(list, `${field}.endPort`, `may not be specified when port is not; ${leftOut}`), undefined);
    return { protocol };
  }
  if (typeof port === 'string') {
    const err = ianaSvcName(port);
    if (err) return (p.entry(list, `${field}.port`, `a named port ${err}; ${leftOut}`), undefined);
    if (endPort !== undefined) {
      return (p.entry(list, `${field}.endPort`, `may not be specified when port is a name (${quote(port)}); ${leftOut}`), undefined);
    }
    return { protocol, port };
  }
  if (!isPortNumber(port))
    return (p.entry(list, `${field}.port`, `${show(port)} is not a port number (1-65535) or name; ${leftOut}`), undefined);
  if (endPort === undefined) return { protocol, port };
  if (!isPortNumber(endPort))
    return (p.entry(list, `${field}.endPort`, `${show(endPort)} is not a port number (1-65535); ${leftOut}`), undefined);
  if (endPort < port) {
    return (p.entry(list, `${field}.endPort`, `${endPort} must be greater than or equal to port (${port}); ${leftOut}`), undefined);
  }
  return endPort === port ? { protocol, port } : { protocol, port, endPort };
}

function rulesOf(raw: unknown, dir: 'ingress' | 'egress', p: Problems): PolicyRule[] {
  const base = `spec.${dir}`;
  const peersField = dir === 'ingress' ? 'from' : 'to';
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) {
    p.warn(base, `${show(raw)} is not a list of rules; no ${dir} is allowed by this policy; ${FAIL_CLOSED}`);
    return [];
  }
  const rules: PolicyRule[] = [];
  raw.forEach((r, index) => {
    const at = `${base}[${index}]`;
    if (!isObj(r)) return p.entry(base, at, `${show(r)} is not a rule (${peersField}, ports); this rule is left out; ${FAIL_CLOSED}`);
    let peers: PolicyRule['peers'] = 'any';
    const rp = r[peersField];
    if (rp !== undefined && rp !== null) {
      if (!Array.isArray(rp)) {
        p.entry(
          `${at}.${peersField}`,
          `${at}.${peersField}`,
          `${show(rp)} is not a list of peers; the rule allows nothing; ${FAIL_CLOSED}`,
        );
        peers = [];
      } else if (rp.length > 0) {
        const list = `${at}.${peersField}`;
        peers = rp.map((x, j) => peerOf(x, `${list}[${j}]`, p, list)).filter((x): x is PolicyPeer => x !== undefined);
      }
    }
    let ports: PolicyRule['ports'] = 'any';
    const rports = r.ports;
    if (rports !== undefined && rports !== null) {
      if (!Array.isArray(rports)) {
        p.entry(`${at}.ports`, `${at}.ports`, `${show(rports)} is not a list of ports; the rule allows nothing; ${FAIL_CLOSED}`);
        ports = [];
      } else if (rports.length > 0) {
        const list = `${at}.ports`;
        ports = rports.map((x, j) => portOf(x, `${list}[${j}]`, p, list)).filter((x): x is PolicyPort => x !== undefined);
      }
    }
    rules.push({ index, peers, ports });
  });
  return rules;
}

/** A networking.k8s.io/v1 NetworkPolicy. */
export function toNetworkPolicy(o: unknown): Converted<NetworkPolicy> {
  const p = new Problems(objectName('NetworkPolicy', o, 'default'));
  const m = isObj(o) ? Meta.safeParse(o.metadata) : undefined;
  if (!m?.success) return p.fatal('metadata.name', 'missing or not a string; the policy is ignored');
  const { name } = m.data;
  const namespace = m.data.namespace || 'default';
  // A policy whose name or namespace the API server would refuse still
  // isolates: dropping it would open its pods.
  const nameErr = dns1123Subdomain(name);
  if (nameErr) p.warn('metadata.name', `a NetworkPolicy name ${nameErr} (the API server would reject it); applied anyway`);
  const nsErr = dns1123Label(namespace);
  if (nsErr) p.warn('metadata.namespace', `a namespace ${nsErr}; the policy can select no pod`);
  const obj = o as Record<string, unknown>;
  if (has(obj, 'spec') && !isObj(obj.spec)) {
    p.warn(
      'spec',
      `${show(obj.spec)} is not a policy spec; the policy isolates every pod of ${namespace} in both directions and allows nothing`,
    );
  }
  const spec = isObj(obj.spec) ? obj.spec : undefined;

  // spec.podSelector: missing is {} (the Go field is not a pointer): every pod.
  let podSelector: LabelSelector = { requirements: [] };
  let selectorBroken = spec === undefined && has(obj, 'spec');
  if (spec && has(spec, 'podSelector')) {
    const s = selectorOf(spec.podSelector, 'spec.podSelector');
    podSelector = s.selector; // the valid requirements: a superset of the pods meant
    for (const e of s.errors) {
      p.warn(e.field, `${e.message}; the policy selects the pods matching the rest of the selector, isolates them and allows nothing`);
    }
    selectorBroken = s.errors.length > 0;
  }

  let ingress = spec ? rulesOf(spec.ingress, 'ingress', p) : [];
  let egress = spec ? rulesOf(spec.egress, 'egress', p) : [];

  // spec.policyTypes, defaulted as SetDefaults_NetworkPolicySpec does:
  // Ingress always, Egress when spec.egress has rules (an empty list is none).
  let ingressIsolation = true;
  let egressIsolation = spec !== undefined && Array.isArray(spec.egress) && spec.egress.length > 0;
  if (spec === undefined) egressIsolation = has(obj, 'spec');
  const pt = spec?.policyTypes;
  if (pt !== undefined && pt !== null) {
    const both = `the policy isolates in both directions (fail closed); ${FAIL_CLOSED}`;
    if (!Array.isArray(pt)) {
      p.warn('spec.policyTypes', `${show(pt)} is not a list of Ingress and Egress; ${both}`);
      [ingressIsolation, egressIsolation] = [true, true];
    } else if (pt.length > 0) {
      if (pt.length > 2) {
        p.warn('spec.policyTypes', `may not specify more than two policyTypes (${pt.length}); ${both}`);
        [ingressIsolation, egressIsolation] = [true, true];
      } else {
        const bad = pt.findIndex((t) => t !== 'Ingress' && t !== 'Egress');
        if (bad >= 0) {
          p.warn(`spec.policyTypes[${bad}]`, `${show(pt[bad])} is not Ingress or Egress; ${both}`);
          [ingressIsolation, egressIsolation] = [true, true];
        } else {
          ingressIsolation = pt.includes('Ingress');
          egressIsolation = pt.includes('Egress');
        }
      }
    }
  }
  if (selectorBroken) [ingress, egress] = [[], []];
  return {
    value: { namespace, name, podSelector, ingressIsolation, egressIsolation, ingress, egress },
    problems: p.done(),
  };
}
