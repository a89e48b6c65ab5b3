/**
 * A one-node setup for IPv6 BPF_PROG_RUN tables (the twin of
 * progrun-node.ts): a namespace with a veth "uplink" d0 carrying
 * 2001:db8:1::11/64 (and 192.0.2.11/24, so IPv4 can be checked beside),
 * IPv6 forwarding on, DAD off, a route to this node's pods and a narrow one
 * (MTU 1280) to the other node's, so FIB lookups are deterministic.
 */
import type { Test } from 'tap';
import { BpfReconciler } from '../../src/dataplane/bpf/reconciler.js';
import type { Datapath, ProgramRole } from '../../src/dataplane/bpf/loader.js';
import { native } from '../../src/native/index.js';
import { ip, sysctl } from '../../testkit/netns.js';
import { inNetns, tmpDatapath, tmpNetns } from './env.js';
import { runProg6, type Run6 } from './progrun.js';

export const NODE6 = '2001:db8:1::11';
export const CLIENT6 = '2001:db8:1::100';
export const ROUTER6 = '2001:db8:1::1';
export const POD6 = 'fd00:10:244:1::99';

export type { Run6 };

export interface Progrun6Node {
  ns: string;
  ifindex: number;
  dp: Datapath;
  rec: BpfReconciler;
  runRaw(role: ProgramRole, raw: Buffer): Run6;
}

export async function progrun6Node(t: Test): Promise<Progrun6Node> {
  const ns = tmpNetns(t);
  sysctl(ns, 'net.ipv6.conf.all.accept_dad', '0');
  sysctl(ns, 'net.ipv6.conf.default.accept_dad', '0');
  sysctl(ns, 'net.ipv6.conf.all.forwarding', '1');
  sysctl(ns, 'net.ipv4.ip_forward', '1');
  ip(ns, 'link', 'add', 'd0', 'type', 'veth', 'peer', 'name', 'd1');
  ip(ns, 'link', 'set', 'd1', 'up');
  ip(ns, 'addr', 'add', `${NODE6}/64`, 'dev', 'd0', 'nodad');
  ip(ns, 'addr', 'add', '192.0.2.11/24', 'dev', 'd0');
  ip(ns, 'link', 'set', 'd0', 'up');
  ip(ns, '-6', 'route', 'add', 'fd00:10:244:1::/64', 'dev', 'd0');
  ip(ns, '-6', 'route', 'add', 'fd00:10:244:2::/64', 'via', '2001:db8:1::12', 'mtu', 'lock', '1280');
  ip(ns, 'route', 'add', '10.244.1.0/24', 'dev', 'd0');
  const ifindex = inNetns(
    ns,
    () =>
      native()
        .interfaces()
        .find((i) => i.name === 'd0')!.index,
  );
  const dp = await tmpDatapath(t);
  const rec = new BpfReconciler(dp.maps);
  const runRaw = (role: ProgramRole, raw: Buffer): Run6 => inNetns(ns, () => runProg6(dp, role, raw, ifindex));
  return { ns, ifindex, dp, rec, runRaw };
}
