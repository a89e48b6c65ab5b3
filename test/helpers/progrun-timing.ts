/**
 * Per-packet cost of a program through BPF_PROG_RUN, as the kernel times
 * each run: one frame run many times on fresh copies (an established
 * flow's packet), or many distinct frames once each (new flows), in a
 * native loop. The median of a few rounds, so that a neighbour's burst on
 * a shared machine does not make the figure.
 */
import { native } from '../../src/native/index.js';
import type { Datapath, ProgramRole } from '../../src/dataplane/bpf/loader.js';
import { inNetns } from './env.js';
import { skbCtx } from './progrun.js';

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
};

/**
 * ns per run of one frame, run `count` times, each time on a fresh copy (a
 * packet of an established flow: the first run creates what later runs
 * find). Not the kernel's `repeat`: that runs the program again on the
 * packet as the previous run left it, and a translated packet would be
 * measured as its translation from the second run on.
 */
export function nsPerPacket(
  ns: string,
  dp: Datapath,
  role: ProgramRole,
  frame: Buffer,
  ifindex: number,
  opts: { count?: number; rounds?: number } = {},
): number {
  const count = opts.count ?? 5_000;
  const rounds = opts.rounds ?? 7;
  const ctx = skbCtx(ifindex);
  const frames = Array.from({ length: count }, () => frame);
  return inNetns(ns, () => {
    native().progTestRun(dp.programs[role].fd, frame, { ctx }); // warm: the first packet creates state
    const xs: number[] = [];
    for (let i = 0; i < rounds; i++) xs.push(native().progTestRunEach(dp.programs[role].fd, frames, { ctx }).totalNs / count);
    return median(xs);
  });
}

/** ns per frame, each frame run once (distinct packets: new flows). `make(round, i)` builds frame i of a round. */
export function nsPerNewFlow(
  ns: string,
  dp: Datapath,
  role: ProgramRole,
  make: (round: number, i: number) => Buffer,
  ifindex: number,
  opts: { count?: number; rounds?: number } = {},
): number {
  const count = opts.count ?? 5_000;
  const rounds = opts.rounds ?? 5;
  const ctx = skbCtx(ifindex);
  return inNetns(ns, () => {
    const xs: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const frames = Array.from({ length: count }, (_, i) => make(r, i));
      xs.push(native().progTestRunEach(dp.programs[role].fd, frames, { ctx }).totalNs / count);
    }
    return median(xs);
  });
}
