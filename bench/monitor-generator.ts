/**
 * The event generator of `bpfproxy-bench monitor`, on a worker thread so
 * that it does not share the event loop with the listener it measures: one
 * frame run through a program at a steady rate (BPF_PROG_RUN with repeat, a
 * slice every ~millisecond), for a while; posts how many runs it made and
 * how long it took.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { native } from '../src/native/index.js';

export interface GeneratorJob {
  progFd: number;
  frame: Uint8Array;
  /** runs per second; 0: as fast as it can */
  rate: number;
  seconds: number;
  /** at most this many runs per slice (a slice must fit the ring with room to spare) */
  slice: number;
}

export interface GeneratorResult {
  sent: number;
  seconds: number;
}

const job = workerData as GeneratorJob;
const frame = Buffer.from(job.frame);
const wait = new Int32Array(new SharedArrayBuffer(4));
const t0 = performance.now();
let sent = 0;
for (;;) {
  const elapsed = (performance.now() - t0) / 1000;
  if (elapsed >= job.seconds) break;
  const due = job.rate ? Math.floor(job.rate * elapsed) - sent : job.slice;
  if (due <= 0) {
    Atomics.wait(wait, 0, 0, 0.2);
    continue;
  }
  const n = Math.min(due, job.slice);
  native().progTestRun(job.progFd, frame, { repeat: n });
  sent += n;
}
const result: GeneratorResult = { sent, seconds: (performance.now() - t0) / 1000 };
parentPort!.postMessage(result);
