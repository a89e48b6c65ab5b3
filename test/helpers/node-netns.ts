/**
 * A "node" in network namespaces the test creates, for tests with real
 * traffic: our TC programs on its pod veths (and uplink) as the agent
 * attaches them, IPv4 pods behind veths, and the IPv6 topology the IPv6
 * tests share (pods behind veths with the node's fe80::1 as gateway, an
 * external client behind the uplink d0). DAD is off on every IPv6
 * interface. Namespaces and pins go with the test (tmpNetns, tmpDatapath),
 * also on failure.
 */
import type { Test } from 'tap';
import { native } from '../../src/native/index.js';
import { TC_HANDLE, TC_PRIORITY } from '../../src/dataplane/bpf/attach.js';
import type { Datapath } from '../../src/dataplane/bpf/loader.js';
import { ip, sysctl } from '../../testkit/netns.js';
import { inNetns, tmpDatapath, tmpNetns } from './env.js';

/**
 * In namespace node: bpfproxy_pod on the ingress and bpfproxy_to_pod on
 * the egress of each pod veth (registered in bpfproxy_pod_ifs), and
 * bpfproxy_data on the ingress of the uplink, when one is named.
 */
export function attachTc(node: string, dp: Datapath, podIfs: readonly string[], dataIf?: string): void {
  inNetns(node, () => {
    const index = (dev: string) =>
      native()
        .interfaces()
        .find((i) => i.name === dev)!.index;
    for (const dev of podIfs) {
      const idx = index(dev);
      native().tcHookCreate(idx);
      native().tcAttach(idx, 'ingress', dp.programs.fromPod.fd, TC_HANDLE, TC_PRIORITY);
      native().tcAttach(idx, 'egress', dp.programs.toPod.fd, TC_HANDLE, TC_PRIORITY);
      dp.maps.podIfs.set({ ifindex: idx }, { v: 1 });
    }
    if (dataIf !== undefined) {
      const idx = index(dataIf);
      native().tcHookCreate(idx);
      native().tcAttach(idx, 'ingress', dp.programs.fromData.fd, TC_HANDLE, TC_PRIORITY);
    }
  });
}

/** A pod namespace behind a veth of the node: /32 address, the node side (169.254.1.1) as its gateway, the node's route to it with source nodeIp. */
export function podNs4(t: Test, node: string, hostIf: string, addr: string, nodeIp: string, prefix: string): string {
  const ns = tmpNetns(t, prefix);
  ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', hostIf, 'netns', node);
  ip(ns, 'addr', 'add', `${addr}/32`, 'dev', 'eth0');
  ip(ns, 'link', 'set', 'eth0', 'up');
  ip(ns, 'link', 'set', 'lo', 'up');
  ip(ns, 'route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link');
  ip(ns, 'route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0');
  ip(node, 'link', 'set', hostIf, 'up');
  const mac = (JSON.parse(ip(node, '-j', 'link', 'show', hostIf)) as Array<{ address: string }>)[0]!.address;
  ip(ns, 'neigh', 'replace', '169.254.1.1', 'lladdr', mac, 'dev', 'eth0', 'nud', 'permanent');
  sysctl(node, `net.ipv4.conf.${hostIf}.rp_filter`, '0');
  ip(node, 'route', 'add', `${addr}/32`, 'dev', hostIf, 'scope', 'link', 'src', nodeIp);
  return ns;
}

/** The node's address on pod veths, every pod's IPv6 default gateway. */
export const GW6 = 'fe80::1';

/** No duplicate address detection in ns: addresses are usable at once. */
export function noDad(ns: string): void {
  sysctl(ns, 'net.ipv6.conf.all.accept_dad', '0');
  sysctl(ns, 'net.ipv6.conf.default.accept_dad', '0');
}

/** A pod namespace behind a veth of the node: /128 address, the node's fe80::1 as gateway. */
export function podNs6(t: Test, node: string, hostIf: string, addr: string, prefix: string): string {
  const ns = tmpNetns(t, prefix);
  noDad(ns);
  ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', hostIf, 'netns', node);
  ip(ns, 'addr', 'add', `${addr}/128`, 'dev', 'eth0', 'nodad');
  ip(ns, 'link', 'set', 'eth0', 'up');
  ip(ns, 'link', 'set', 'lo', 'up');
  ip(node, 'addr', 'add', `${GW6}/64`, 'dev', hostIf, 'nodad');
  ip(node, 'link', 'set', hostIf, 'up');
  ip(ns, '-6', 'route', 'add', 'default', 'via', GW6, 'dev', 'eth0');
  ip(node, '-6', 'route', 'add', `${addr}/128`, 'dev', hostIf);
  return ns;
}

/** The addresses of ipv6Node(). */
export const IPV6_NODE = {
  /** the node, on its uplink d0 */
  node: '2001:db8:1::11',
  /** the external client behind d0 */
  ext: '2001:db8:1::100',
  /** pod a (veth calia) */
  a: 'fd00:10:244:1::2',
  /** pod b (veth calib) */
  b: 'fd00:10:244:1::3',
} as const;

export interface Ipv6Node {
  node: string;
  /** pod namespaces */
  a: string;
  b: string;
  /** the external client's namespace */
  ext: string;
  dp: Datapath;
}

/**
 * An IPv6 node (forwarding on) with pods a and b behind veths calia and
 * calib and an external client behind the uplink d0 (one /64), a datapath
 * loaded into a pin dir of the test and our programs attached.
 */
export async function ipv6Node(t: Test, prefix: string): Promise<Ipv6Node> {
  const node = tmpNetns(t, prefix);
  noDad(node);
  sysctl(node, 'net.ipv6.conf.all.forwarding', '1');
  const a = podNs6(t, node, 'calia', IPV6_NODE.a, prefix);
  const b = podNs6(t, node, 'calib', IPV6_NODE.b, prefix);
  const ext = tmpNetns(t, prefix);
  noDad(ext);
  ip(ext, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'd0', 'netns', node);
  ip(ext, 'addr', 'add', `${IPV6_NODE.ext}/64`, 'dev', 'eth0', 'nodad');
  ip(ext, 'link', 'set', 'eth0', 'up');
  ip(node, 'addr', 'add', `${IPV6_NODE.node}/64`, 'dev', 'd0', 'nodad');
  ip(node, 'link', 'set', 'd0', 'up');
  const dp = await tmpDatapath(t);
  attachTc(node, dp, ['calia', 'calib'], 'd0');
  return { node, a, b, ext, dp };
}
