/**
 * What serves Services on a lab node, read from the node itself: kube-proxy's
 * rules in its nat table (service chains, and the connections its
 * KUBE-SERVICES and KUBE-NODEPORTS rules translated) and bpfproxy's dataplane
 * (what `bpfproxy status` reads: programs attached in the node's namespace,
 * maps pinned in its pin dir, conntrack entries), read in this process.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { attachedHere } from '../src/dataplane/bpf/attach.js';
import { MAP_NAMES, openPinnedMaps } from '../src/dataplane/bpf/loader.js';
import { native } from '../src/native/index.js';
import { nsPath, sh } from '../testkit/netns.js';
import type { LabNode } from './lab.js';

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
  const prev = native().enterNetns(nsPath(n.ns));
  let ifaces: Set<string>;
  try {
    ifaces = new Set(attachedHere(n.pinDir).map((x) => x.iface));
  } finally {
    native().restoreNetns(prev);
  }
  const on = existsSync(join(n.pinDir, MAP_NAMES.fe));
  let ct = 0;
  if (on) {
    try {
      const pinned = openPinnedMaps(n.pinDir);
      try {
        ct = pinned.maps.ct.count();
      } finally {
        pinned.close();
      }
    } catch {
      ct = 0; // unpinned while we looked: the agent is handing back
    }
  }
  return {
    node: n.name,
    kubeProxyChains: chains,
    kubeProxyPackets: packets,
    bpfOn: on,
    bpfInterfaces: ifaces.size,
    bpfFlows: Math.floor(ct / 2),
  };
}

export const observeLab = (nodes: readonly LabNode[]): NodeView[] => nodes.map(observeNode);
