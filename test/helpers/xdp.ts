/** BPF_PROG_RUN of the XDP data program (bpf/xdp_data.c) with a frame, decoded. */
import { native } from '../../src/native/index.js';
import type { Datapath } from '../../src/dataplane/bpf/loader.js';
import { XDP_DATA_PROGRAM } from '../../src/dataplane/bpf/xdp.js';
import { parseFrame, type Parsed } from '../../testkit/packet.js';

export const XDP = { ABORTED: 0, DROP: 1, PASS: 2, TX: 3, REDIRECT: 4 } as const;
export type XdpVerdict = 'aborted' | 'drop' | 'pass' | 'tx' | 'redirect';
const NAMES: XdpVerdict[] = ['aborted', 'drop', 'pass', 'tx', 'redirect'];

export interface XdpRunResult {
  verdict: XdpVerdict;
  out: Parsed | undefined;
  raw: Buffer;
  /** metadata the program put in front of the frame */
  meta: Buffer;
  durationNs: number;
}

/** struct xdp_md for BPF_PROG_RUN: data 0 (no metadata), data_end the frame's length, the ingress interface. */
export function xdpCtx(ifindex: number, len: number): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(0, 0);
  b.writeUInt32LE(len, 4);
  b.writeUInt32LE(ifindex, 12);
  return b;
}

export function xdpProgFd(dp: Datapath): number {
  const p = dp.objects[0]!.programs().find((x) => x.name === XDP_DATA_PROGRAM);
  if (!p) throw new Error(`the loaded object has no ${XDP_DATA_PROGRAM}: rebuild with "make bpf"`);
  return p.fd;
}

export function runXdp(dp: Datapath, frame: Buffer, ifindex: number, repeat = 1): XdpRunResult {
  const r = native().progTestRun(xdpProgFd(dp), frame, { ctx: xdpCtx(ifindex, frame.length), repeat });
  const verdict = NAMES[r.retval];
  if (!verdict) throw new Error(`XDP program returned ${r.retval}, not an XDP action`);
  // The kernel returns metadata and frame together; ctx.data is where the frame starts.
  const metaLen = r.ctx ? r.ctx.readUInt32LE(0) : 0;
  const meta = r.data.subarray(0, metaLen);
  const raw = r.data.subarray(metaLen);
  let out: Parsed | undefined;
  try {
    out = parseFrame(raw);
  } catch {
    out = undefined;
  }
  return { verdict, out, raw, meta, durationNs: r.durationNs };
}
