/**
 * The agent's largest allocation is its start: every object listed or
 * read, converted, and the first full sync's desired state. Most of it is
 * garbage once the first sync is done, but V8 collects an old generation
 * only when it next needs room, and an idle agent may not for hours: until
 * then that garbage stays resident. One full collection right after the
 * first sync gives it back (~25-40 MiB at 10,000 services).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Logger } from '../log.js';

let gc: (() => void) | undefined;

/** A full garbage collection, now (a pause of tens of milliseconds at 10,000 services). */
export function collectStartupGarbage(log: Logger): void {
  try {
    if (!gc) {
      // Node exposes gc() only with --expose-gc; set it for one new context
      // and take the function from there, as test runners do.
      setFlagsFromString('--expose-gc');
      gc = runInNewContext('gc') as () => void;
      setFlagsFromString('--no-expose-gc');
    }
    const before = process.memoryUsage();
    const t0 = performance.now();
    gc();
    gc();
    const after = process.memoryUsage();
    const mib = (b: number) => Math.round(b / 2 ** 20);
    log.debug(
      {
        ms: Math.round(performance.now() - t0),
        rssMiB: mib(after.rss),
        heapUsedMiB: mib(after.heapUsed),
        freedMiB: mib(before.heapUsed - after.heapUsed),
      },
      'collected the start-up garbage',
    );
  } catch (e) {
    // Only memory is at stake: go on.
    log.debug(`could not collect the start-up garbage: ${(e as Error).message}`);
  }
}
