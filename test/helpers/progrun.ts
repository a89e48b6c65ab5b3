/** BPF_PROG_RUN of the TC programs with a packet, decoded. */
import { native } from '../../src/native/index.js';
import type { Datapath, ProgramRole } from '../../src/dataplane/bpf/loader.js';
import { parseFrame, type Parsed } from '../../testkit/packet.js';
import { parseFrame6, type Parsed6 } from '../../testkit/packet6.js';

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

export interface Run6 {
  verdict: Verdict;
  out: Parsed6;
  raw: Buffer;
}

const verdictOf = (retval: number): Verdict =>
  retval === TC_ACT_OK ? 'pass' : retval === TC_ACT_SHOT ? 'drop' : retval === TC_ACT_REDIRECT ? 'redirect' : `other(${retval})`;

export function runProg(dp: Datapath, role: ProgramRole, frame: Buffer, ifindex = 0): RunResult {
  const r = native().progTestRun(dp.programs[role].fd, frame, ifindex ? { ctx: skbCtx(ifindex) } : {});
  const verdict = verdictOf(r.retval);
  let out: Parsed;
  try {
    out = parseFrame(r.data);
  } catch {
    // a malformed frame the program rightly refused to touch
    out = { srcMac: '', dstMac: '', ethType: 0, src: '', dst: '', proto: 0, ttl: 0, totalLen: 0, ipCsumOk: false, payload: r.data };
  }
  return { verdict, out, raw: r.data };
}

/** runProg for IPv6 frames: the output parsed as IPv6. */
export function runProg6(dp: Datapath, role: ProgramRole, frame: Buffer, ifindex = 0): Run6 {
  const r = native().progTestRun(dp.programs[role].fd, frame, ifindex ? { ctx: skbCtx(ifindex) } : {});
  let out: Parsed6;
  try {
    out = parseFrame6(r.data);
  } catch {
    out = { ethType: 0, src: '', dst: '', nh: 0, hopLimit: 0, payloadLen: 0, payload: r.data };
  }
  return { verdict: verdictOf(r.retval), out, raw: r.data };
}

export function reasonCount(dp: Datapath, name: string): number {
  const { REASONS } = REASONS_MOD;
  const idx = REASONS.findIndex((r) => r.name === name);
  return dp.maps.reasons.getPerCpu({ v: idx }).reduce((a, c) => a + Number(c.packets), 0);
}

import * as REASONS_MOD from '../../src/dataplane/bpf/reasons.js';
