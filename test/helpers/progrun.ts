/** BPF_PROG_RUN of the TC programs with a packet, decoded. */
import { native } from '../../src/native/index.js';
import type { Datapath, ProgramRole } from '../../src/dataplane/bpf/loader.js';
import { parseFrame, type Parsed } from '../../testkit/packet.js';

export const TC_ACT_OK = 0;
export const TC_ACT_SHOT = 2;
export const TC_ACT_REDIRECT = 7;

export type Verdict = 'pass' | 'drop' | 'redirect' | `other(${number})`;

export interface RunResult {
  verdict: Verdict;
  out: Parsed;
  raw: Buffer;
}

/** struct __sk_buff with ingress_ifindex and ifindex set (offsets 36, 40). */
export function skbCtx(ifindex: number): Buffer {
  const b = Buffer.alloc(192);
  b.writeUInt32LE(ifindex, 36);
  b.writeUInt32LE(ifindex, 40);
  return b;
}

export function runProg(dp: Datapath, role: ProgramRole, frame: Buffer, ifindex = 0): RunResult {
  const r = native().progTestRun(dp.programs[role].fd, frame, ifindex ? { ctx: skbCtx(ifindex) } : {});
  const verdict: Verdict =
    r.retval === TC_ACT_OK ? 'pass' : r.retval === TC_ACT_SHOT ? 'drop' : r.retval === TC_ACT_REDIRECT ? 'redirect' : `other(${r.retval})`;
  let out: Parsed;
  try {
    out = parseFrame(r.data);
  } catch {
    // a malformed frame the program rightly refused to touch
    out = { srcMac: '', dstMac: '', ethType: 0, src: '', dst: '', proto: 0, ttl: 0, totalLen: 0, ipCsumOk: false, payload: r.data };
  }
  return { verdict, out, raw: r.data };
}

export function reasonCount(dp: Datapath, name: string): number {
  const { REASONS } = REASONS_MOD;
  const idx = REASONS.findIndex((r) => r.name === name);
  return dp.maps.reasons.getPerCpu({ v: idx }).reduce((a, c) => a + Number(c.packets), 0);
}

import * as REASONS_MOD from '../../src/dataplane/bpf/reasons.js';
