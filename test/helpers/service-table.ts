/**
 * The service datapath's table of packet cases through BPF_PROG_RUN, one
 * harness for both families: the same Services (every type, TCP and UDP,
 * traffic policies, affinity, a pod behind its own service) with the same
 * cases, in IPv4 (test/datapath-progrun.test.ts) and in IPv6
 * (test/datapath-ipv6.test.ts, which adds IPv6's own cases: extension
 * headers, fragments). Addresses come from one book per family, name for
 * name (ADDRS.ipv4.cip is 10.96.0.10, ADDRS.ipv6.cip fd00:10:96::10).
 */
import type { Test } from 'tap';
import type { BpfReconciler } from '../../src/dataplane/bpf/reconciler.js';
import type { Datapath } from '../../src/dataplane/bpf/loader.js';
import { frame, type L4 } from '../../testkit/packet.js';
import { frame6, type Ext } from '../../testkit/packet6.js';
import { be, fe } from './fixtures.js';
import { inNetns } from './env.js';
import { reasonCount, runProg, runProg6 } from './progrun.js';
import type { Family } from './family.js';

export interface AddressBook {
  /** the node's address on its uplink, and the wildcard NodePort frontends use */
  node: string;
  any: string;
  client: string;
  /** an address on the node's LAN that is not the node's */
  foreign: string;
  /** the pod sending (on this node) */
  pod: string;
  hairpin: string;
  /** cluster IPs */
  cip: string;
  dns: string;
  remoteCip: string;
  empty: string;
  itp: string;
  sticky: string;
  self: string;
  lb: string;
  externalIp: string;
  /** endpoints: l1, l2 and dnsEp on this node, remote on the other */
  l1: string;
  l2: string;
  dnsEp: string;
  remote: string;
  stickyEps: string[];
}

export const ADDRS: Record<Family, AddressBook> = {
  ipv4: {
    node: '192.0.2.11',
    any: '0.0.0.0',
    client: '192.0.2.100',
    foreign: '192.0.2.77',
    pod: '10.244.1.99',
    hairpin: '169.254.42.1',
    cip: '10.96.0.10',
    dns: '10.96.0.53',
    remoteCip: '10.96.0.20',
    empty: '10.96.0.30',
    itp: '10.96.0.40',
    sticky: '10.96.0.50',
    self: '10.96.0.60',
    lb: '198.51.100.10',
    externalIp: '203.0.113.10',
    l1: '10.244.1.11',
    l2: '10.244.1.12',
    dnsEp: '10.244.1.13',
    remote: '10.244.2.11',
    stickyEps: ['10.244.1.21', '10.244.1.22', '10.244.1.23', '10.244.1.24'],
  },
  ipv6: {
    node: '2001:db8:1::11',
    any: '::',
    client: '2001:db8:1::100',
    foreign: '2001:db8:1::77',
    pod: 'fd00:10:244:1::99',
    hairpin: 'fd62:7078:2a01::1',
    cip: 'fd00:10:96::10',
    dns: 'fd00:10:96::53',
    remoteCip: 'fd00:10:96::20',
    empty: 'fd00:10:96::30',
    itp: 'fd00:10:96::40',
    sticky: 'fd00:10:96::50',
    self: 'fd00:10:96::60',
    lb: '2001:db8:ff::10',
    externalIp: '2001:db8:fe::10',
    l1: 'fd00:10:244:1::11',
    l2: 'fd00:10:244:1::12',
    dnsEp: 'fd00:10:244:1::13',
    remote: 'fd00:10:244:2::11',
    stickyEps: ['fd00:10:244:1::21', 'fd00:10:244:1::22', 'fd00:10:244:1::23', 'fd00:10:244:1::24'],
  },
};

/** Program the table's Services in `family` (each must program without problems). */
export function programServices(t: Test, rec: BpfReconciler, family: Family): void {
  const a = ADDRS[family];
  const sync = (svc: string, fes: ReturnType<typeof fe>[]) => {
    const r = rec.syncService(svc, fes);
    t.same(r.problems, [], `${svc} programmed without problems`);
  };
  const web = [be(a.l1, 8080), be(a.l2, 8080)];
  const remote = [be(a.remote, 8080, false)];
  sync('test/web', [
    fe('ClusterIP', a.cip, 80, 'TCP', web, { servicePort: 'test/web:http/TCP' }),
    fe('NodePort', a.any, 30080, 'TCP', web, { servicePort: 'test/web:http/TCP' }),
    fe('LoadBalancer', a.lb, 80, 'TCP', web, { servicePort: 'test/web:http/TCP' }),
    fe('ExternalIP', a.externalIp, 80, 'TCP', web, { servicePort: 'test/web:http/TCP' }),
  ]);
  sync('test/dns', [fe('ClusterIP', a.dns, 53, 'UDP', [be(a.dnsEp, 53)])]);
  sync('test/remote', [
    fe('ClusterIP', a.remoteCip, 80, 'TCP', remote, { servicePort: 'test/remote:http/TCP' }),
    fe('NodePort', a.any, 30081, 'TCP', remote, { servicePort: 'test/remote:http/TCP' }),
  ]);
  sync('test/local', [fe('NodePort', a.any, 30082, 'TCP', remote, { externalLocal: true })]);
  sync('test/empty', [fe('ClusterIP', a.empty, 80, 'TCP', []), fe('ClusterIP', a.empty, 53, 'UDP', [])]);
  sync('test/itp', [fe('ClusterIP', a.itp, 80, 'TCP', remote, { internalLocal: true })]);
  sync('test/sticky', [
    fe(
      'ClusterIP',
      a.sticky,
      80,
      'TCP',
      a.stickyEps.map((x) => be(x, 80)),
      { affinityTimeout: 10800 },
    ),
  ]);
  sync('test/self', [fe('ClusterIP', a.self, 80, 'TCP', [be(a.pod, 8080)])]);
}

export interface ServiceCase {
  name: string;
  role: 'fromPod' | 'fromData';
  from: string;
  to: string;
  l4: L4;
  /** IPv6 extension headers before the L4 header (IPv6 cases only) */
  ext?: Ext[];
  verdict: string;
  dst?: string[];
  dport?: number;
  src?: string;
  sport?: number;
}

/** The cases both families share. */
export function serviceCases(family: Family): ServiceCase[] {
  const a = ADDRS[family];
  return [
    {
      name: 'ClusterIP TCP from a pod is DNATed, source kept',
      role: 'fromPod',
      from: a.pod,
      to: a.cip,
      l4: { proto: 'tcp', sport: 40000, dport: 80 },
      verdict: 'redirect',
      dst: [a.l1, a.l2],
      dport: 8080,
      src: a.pod,
      sport: 40000,
    },
    {
      name: 'ClusterIP UDP from a pod is DNATed',
      role: 'fromPod',
      from: a.pod,
      to: a.dns,
      l4: { proto: 'udp', sport: 5353, dport: 53, payload: Buffer.from('query') },
      verdict: 'redirect',
      dst: [a.dnsEp],
      dport: 53,
      src: a.pod,
      sport: 5353,
    },
    {
      name: 'NodePort from outside to a local endpoint keeps the client IP',
      role: 'fromData',
      from: a.client,
      to: a.node,
      l4: { proto: 'tcp', sport: 41000, dport: 30080 },
      verdict: 'redirect',
      dst: [a.l1, a.l2],
      dport: 8080,
      src: a.client,
      sport: 41000,
    },
    {
      name: 'LoadBalancer IP from outside',
      role: 'fromData',
      from: a.client,
      to: a.lb,
      l4: { proto: 'tcp', sport: 41001, dport: 80 },
      verdict: 'redirect',
      dst: [a.l1, a.l2],
      dport: 8080,
      src: a.client,
    },
    {
      name: 'externalIP from outside',
      role: 'fromData',
      from: a.client,
      to: a.externalIp,
      l4: { proto: 'tcp', sport: 41002, dport: 80 },
      verdict: 'redirect',
      dst: [a.l1, a.l2],
      dport: 8080,
      src: a.client,
    },
    {
      name: "NodePort port on an address that is not the node's is left alone",
      role: 'fromData',
      from: a.client,
      to: a.foreign,
      l4: { proto: 'tcp', sport: 41003, dport: 30080 },
      verdict: 'pass',
      dst: [a.foreign],
      dport: 30080,
    },
    {
      name: 'eTP=Local NodePort with no local endpoint drops external traffic',
      role: 'fromData',
      from: a.client,
      to: a.node,
      l4: { proto: 'tcp', sport: 41004, dport: 30082 },
      verdict: 'drop',
    },
    {
      name: 'eTP=Local does not apply to pods: internal traffic reaches the remote endpoint',
      role: 'fromPod',
      from: a.pod,
      to: a.node,
      l4: { proto: 'tcp', sport: 41005, dport: 30082 },
      verdict: 'redirect',
      dst: [a.remote],
      src: a.pod,
    },
    {
      name: 'iTP=Local with no local endpoint drops pod traffic',
      role: 'fromPod',
      from: a.pod,
      to: a.itp,
      l4: { proto: 'tcp', sport: 41006, dport: 80 },
      verdict: 'drop',
    },
    {
      name: 'traffic to no service passes untouched',
      role: 'fromPod',
      from: a.pod,
      to: a.l2,
      l4: { proto: 'tcp', sport: 41007, dport: 8080 },
      verdict: 'pass',
      dst: [a.l2],
      dport: 8080,
      src: a.pod,
    },
  ];
}

export interface TableNode {
  ns: string;
  ifindex: number;
  dp: Datapath;
}

/** One packet of a case through its program, decoded whatever the family. */
export function sendCase(node: TableNode, family: Family, c: Pick<ServiceCase, 'role' | 'from' | 'to' | 'l4' | 'ext'>) {
  return inNetns(node.ns, () => {
    if (family === 'ipv4') {
      if (c.ext) throw new Error(`test/helpers/service-table.ts: extension headers in an IPv4 case (${c.from} -> ${c.to})`);
      const r = runProg(node.dp, c.role, frame({ src: c.from, dst: c.to }, c.l4), node.ifindex);
      return { verdict: r.verdict, ...r.out, hops: r.out.ttl, csumOk: !!(r.out.ipCsumOk && r.out.l4CsumOk) };
    }
    const r = runProg6(node.dp, c.role, frame6({ src: c.from, dst: c.to, ext: c.ext }, c.l4), node.ifindex);
    return { verdict: r.verdict, ...r.out, hops: r.out.hopLimit, csumOk: !!r.out.l4CsumOk };
  });
}

/**
 * Send every case (the shared ones, then `extra`) and check what came out:
 * verdict; unless dropped, destination, ports, source, checksums (IPv4: the
 * IP and L4 ones; IPv6: L4 with the pseudo-header, unless a fragment header
 * hides the whole segment) and, when forwarded, the TTL / hop limit
 * decremented once. Both Local-policy drops are counted by reason.
 */
export function runServiceTable(t: Test, node: TableNode, family: Family, extra: ServiceCase[] = []): void {
  for (const c of [...serviceCases(family), ...extra]) {
    const r = sendCase(node, family, c);
    t.equal(r.verdict, c.verdict, `${c.name}: verdict`);
    if (c.verdict === 'drop') continue;
    if (c.dst) t.ok(c.dst.includes(r.dst), `${c.name}: dst ${r.dst} in ${c.dst.join(',')}`);
    if (c.dport) t.equal(r.dport, c.dport, `${c.name}: dport`);
    if (c.src) t.equal(r.src, c.src, `${c.name}: src`);
    if (c.sport) t.equal(r.sport, c.sport, `${c.name}: sport`);
    if (family === 'ipv4') t.ok(r.csumOk, `${c.name}: checksums valid`);
    else if (!c.ext?.some((e) => e.type === 'frag')) t.ok(r.csumOk, `${c.name}: L4 checksum valid (pseudo-header included)`);
    if (c.verdict === 'redirect') t.equal(r.hops, 63, `${c.name}: ${family === 'ipv4' ? 'TTL' : 'hop limit'} decremented once`);
  }
  t.equal(reasonCount(node.dp, 'no-local-endpoints'), 2, 'both Local-policy drops counted by reason');
}
