/**
 * What serves Services on a lab node, read from the node itself: kube-proxy's
 * rules in its nat table (service chains, and the packets its KUBE-SERVICES
 * and KUBE-NODEPORTS rules matched) and bpfproxy's dataplane (`bpfproxy
 * status -o json`: programs attached, maps pinned, conntrack entries).
 */
import { spawnSync } from 'node:child_process';
import { nsPath, sh } from '../testkit/netns.js';
import { AGENT_CLI, type LabNode } from './lab.js';

export interface NodeView {
  node: string;
  /** KUBE-SVC/SVL/EXT/FW/SEP chains in the nat table */
  kubeProxyChains: number;
  /** connections kube-proxy's rules translated: packets (only a connection's first goes through nat) its KUBE-SERVICES and KUBE-NODEPORTS rules sent to a service chain */
  kubeProxyPackets: number;
  /** bpfproxy's maps are pinned on this node */
  bpfOn: boolean;
  /** interfaces with a bpfproxy program attached */
  bpfInterfaces: number;
  /** flows in bpfproxy's conntrack (each translated connection has two entries) */
  bpfFlows: number;
}

export function observeNode(n: LabNode): NodeView {
  const save = sh('iptables-save', ['-c', '-t', 'nat'], { ns: n.ns, allowFail: true });
  let chains = 0;
  let packets = 0;
  for (const line of save.split('\n')) {
    if (/^:KUBE-(SVC|SVL|EXT|FW|SEP)-/.test(line)) chains++;
    const m = /^\[(\d+):\d+\] -A KUBE-(SERVICES|NODEPORTS) .* -j KUBE-(SVC|SVL|EXT|FW)-/.exec(line);
    if (m) packets += Number(m[1]);
  }
  const r = spawnSync(
    'nsenter',
    [`--net=${nsPath(n.ns)}`, '--', process.execPath, AGENT_CLI, 'status', '-o', 'json', '--pin-dir', n.pinDir],
    {
      encoding: 'utf8',
      timeout: 20_000,
    },
  );
  let st: { dataplane?: string; interfaces?: unknown[]; maps?: Array<{ map: string; entries: number }> | null } = {};
  try {
    st = JSON.parse(r.stdout) as typeof st;
  } catch {
    st = {};
  }
  const ct = st.maps?.find((m) => m.map === 'bpfproxy_ct')?.entries ?? 0;
  return {
    node: n.name,
    kubeProxyChains: chains,
    kubeProxyPackets: packets,
    bpfOn: st.dataplane === 'on',
    bpfInterfaces: st.interfaces?.length ?? 0,
    bpfFlows: Math.floor(ct / 2),
  };
}

export const observeLab = (nodes: readonly LabNode[]): NodeView[] => nodes.map(observeNode);
