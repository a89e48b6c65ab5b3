/**
 * A one-node setup for BPF_PROG_RUN tables: a namespace with a veth "uplink"
 * d0 (192.0.2.11/24), pod routes on it and a narrow route to the other
 * node's pods, so FIB lookups are deterministic; a datapath and a reconciler
 * over its maps. Everything goes with the test.
 */
import type { Test } from 'tap';
import { BpfReconciler } from '../../src/dataplane/bpf/reconciler.js';
import type { DatapathConfig } from '../../src/config/datapath.js';
import type { Datapath, ProgramRole } from '../../src/dataplane/bpf/loader.js';
import { ip, sysctl } from '../../testkit/netns.js';
import { native } from '../../src/native/index.js';
import { frame, type FrameSpec, type L4 } from '../../testkit/packet.js';
import { inNetns, tmpDatapath, tmpNetns } from './env.js';
import { runProg, type RunResult } from './progrun.js';

export const NODE_IP = '192.0.2.11';
export const CLIENT = '192.0.2.100';
export const POD = '10.244.1.99';

export interface ProgrunNode {
  ns: string;
  ifindex: number;
  dp: Datapath;
  rec: BpfReconciler;
  run(role: ProgramRole, f: FrameSpec, l4: L4): RunResult;
  runRaw(role: ProgramRole, raw: Buffer): RunResult;
}

export async function progrunNode(t: Test, cfg: Partial<DatapathConfig> = {}): Promise<ProgrunNode> {
  const ns = tmpNetns(t);
  ip(ns, 'link', 'add', 'd0', 'type', 'veth', 'peer', 'name', 'd1');
  ip(ns, 'link', 'set', 'd1', 'up');
  sysctl(ns, 'net.ipv4.ip_forward', '1');
  ip(ns, 'addr', 'add', `${NODE_IP}/24`, 'dev', 'd0');
  ip(ns, 'link', 'set', 'd0', 'up');
  ip(ns, 'route', 'add', '10.244.1.0/24', 'dev', 'd0');
  ip(ns, 'route', 'add', '10.244.2.0/24', 'via', '192.0.2.12', 'mtu', 'lock', '1280');
  const ifindex = inNetns(
    ns,
    () =>
      native()
        .interfaces()
        .find((i) => i.name === 'd0')!.index,
  );
  const dp = await tmpDatapath(t, cfg);
  const rec = new BpfReconciler(dp.maps);
  const runRaw = (role: ProgramRole, raw: Buffer) => inNetns(ns, () => runProg(dp, role, raw, ifindex));
  return { ns, ifindex, dp, rec, runRaw, run: (role, f, l4) => runRaw(role, frame(f, l4)) };
}
