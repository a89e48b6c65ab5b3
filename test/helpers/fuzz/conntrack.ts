/**
 * Conntrack consistency after a fuzz round. A connection is two entries in
 * bpfproxy_ct (bpf/lib/conntrack.h): CT_DIR_FWD keyed by the client's tuple
 * and CT_DIR_REPLY keyed by the backend's reply tuple; each entry's rewrite
 * (nat_*) names the other's key (ct_peer_key). When the conntrack design
 * changes, change ctPeerKey (and the classification below) here: the fuzz
 * runner only calls checkCtPeers.
 */
import { CtDir, CtFlags, type CtKey, type CtValue } from '../../../src/dataplane/bpf/codecs.js';

/** The key of the other half of a connection: ct_peer_key() of bpf/lib/conntrack.h. */
export function ctPeerKey(k: CtKey, v: CtValue): CtKey {
  return { saddr: v.natDaddr, daddr: v.natSaddr, sport: v.natDport, dport: v.natSport, proto: k.proto };
}

export const keyStr = (k: CtKey): string => `${k.proto}:${k.saddr}:${k.sport}>${k.daddr}:${k.dport}`;

export type PeerProblemKind =
  /** no entry under the peer key */
  | 'peer-missing'
  /** the entry is live but its peer is past its deadline (a miss to the datapath, GC removes it) */
  | 'peer-expired'
  /** the peer is the same direction as the entry */
  | 'peer-same-dir'
  /**
   * a forward entry whose reply tuple another connection's reply entry now
   * holds, outside the documented "newer wins" case (same client port)
   */
  | 'reply-taken-over'
  /** the peer's own peer is not this entry (any other case) */
  | 'peer-not-mutual'
  /**
   * the halves disagree on state while another forward entry also points at
   * the reply entry: that other flow's packets wrote their state into it
   */
  | 'state-from-other-flow'
  /** the halves disagree on state, flags, service or creation time */
  | 'peer-differs';

export interface PeerProblem {
  kind: PeerProblemKind;
  key: string;
  value: CtValue;
  peerKey: string;
  peer?: CtValue;
}

export interface PeerReport {
  entries: number;
  /** Entries past their deadline: misses to the datapath, skipped. */
  expired: number;
  /** Connections whose two halves agree. */
  pairs: number;
  /**
   * Forward entries whose reply tuple a newer flow from the same client port
   * to the same backend took over (documented in bpf/lib/service.h:
   * "the newer wins"). Not a violation; counted for the summary.
   */
  superseded: number;
  problems: PeerProblem[];
  counts: Record<PeerProblemKind, number>;
}

export function emptyCounts(): Record<PeerProblemKind, number> {
  return {
    'peer-missing': 0,
    'peer-expired': 0,
    'peer-same-dir': 0,
    'reply-taken-over': 0,
    'peer-not-mutual': 0,
    'state-from-other-flow': 0,
    'peer-differs': 0,
  };
}

export function checkCtPeers(
  entries: ReadonlyArray<readonly [CtKey, CtValue]>,
  nowNs: bigint,
  peerKeyOf: (k: CtKey, v: CtValue) => CtKey = ctPeerKey,
  keep = 20,
): PeerReport {
  const byKey = new Map<string, [CtKey, CtValue]>();
  for (const [k, v] of entries) byKey.set(keyStr(k), [k, v]);
  const report: PeerReport = {
    entries: entries.length,
    expired: 0,
    pairs: 0,
    superseded: 0,
    problems: [],
    counts: emptyCounts(),
  };
  const problem = (kind: PeerProblemKind, k: CtKey, v: CtValue, pk: CtKey, peer?: CtValue) => {
    report.counts[kind]++;
    if (report.problems.length < keep)
      report.problems.push({ kind, key: keyStr(k), value: v, peerKey: keyStr(pk), ...(peer ? { peer } : {}) });
  };
  // how many live forward entries point at each reply tuple
  const pointers = new Map<string, number>();
  for (const [k, v] of entries) {
    if (v.dir !== CtDir.FWD || v.expiresNs < nowNs) continue;
    const pk = keyStr(peerKeyOf(k, v));
    pointers.set(pk, (pointers.get(pk) ?? 0) + 1);
  }
  for (const [k, v] of entries) {
    if (v.expiresNs < nowNs) {
      report.expired++;
      continue;
    }
    const pk = peerKeyOf(k, v);
    const hit = byKey.get(keyStr(pk));
    if (!hit) {
      problem('peer-missing', k, v, pk);
      continue;
    }
    const [, p] = hit;
    if (p.expiresNs < nowNs) {
      problem('peer-expired', k, v, pk, p);
      continue;
    }
    if (p.dir === v.dir) {
      problem('peer-same-dir', k, v, pk, p);
      continue;
    }
    const back = peerKeyOf(pk, p);
    if (keyStr(back) !== keyStr(k)) {
      const other = byKey.get(keyStr(back));
      const newerWins =
        v.dir === CtDir.FWD &&
        !(v.flags & CtFlags.SNAT) &&
        other !== undefined &&
        other[1].dir === CtDir.FWD &&
        back.saddr === k.saddr &&
        back.sport === k.sport &&
        back.proto === k.proto &&
        keyStr(peerKeyOf(back, other[1])) === keyStr(pk) &&
        other[1].createdNs >= v.createdNs;
      if (newerWins) report.superseded++;
      else if (v.dir === CtDir.FWD && other !== undefined && other[1].dir === CtDir.FWD) problem('reply-taken-over', k, v, pk, p);
      else problem('peer-not-mutual', k, v, pk, p);
      continue;
    }
    if (p.flags !== v.flags || p.svcId !== v.svcId || p.createdNs !== v.createdNs) {
      problem('peer-differs', k, v, pk, p);
      continue;
    }
    if (p.state !== v.state) {
      const replyKey = keyStr(v.dir === CtDir.REPLY ? k : pk);
      problem((pointers.get(replyKey) ?? 0) > 1 ? 'state-from-other-flow' : 'peer-differs', k, v, pk, p);
      continue;
    }
    if (v.dir === CtDir.FWD) report.pairs++;
  }
  return report;
}
