/** Scaffolding for tests: namespaces and pin dirs that are always removed. */
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';
import { addNetns, delNetns, uniqueTag } from '../../testkit/netns.js';
import { native } from '../../src/native/index.js';
import { loadDatapath, type Datapath } from '../../src/dataplane/bpf/loader.js';
import { DEFAULT_DATAPATH, type DatapathConfig } from '../../src/config/datapath.js';
import { ensureBpffs } from '../../src/dataplane/bpf/bpffs.js';
import { DEFAULT_STATE_DIR, statePaths } from '../../src/agent/lock.js';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const BPF_DIR = join(REPO, 'bpf', '.output');

/** A fresh namespace, deleted when the test ends (pass or fail). */
export function tmpNetns(t: Test, prefix = 'bpxt'): string {
  const name = `${prefix}-${uniqueTag()}`;
  addNetns(name);
  t.teardown(() => delNetns(name));
  return name;
}

/** A pin dir on bpffs, removed when the test ends. */
export function tmpPinDir(t: Test): string {
  ensureBpffs('/sys/fs/bpf');
  const dir = `/sys/fs/bpf/bpxt-${uniqueTag()}`;
  t.teardown(() => {
    rmSync(dir, { recursive: true, force: true });
    // an in-process agent's record of the qdiscs it created (default state dir)
    rmSync(statePaths(DEFAULT_STATE_DIR, dir).qdiscs, { force: true });
    // and an agent's topology display file (bpfproxy services)
    rmSync(statePaths(DEFAULT_STATE_DIR, dir).topology, { force: true });
  });
  return dir;
}

export async function tmpDatapath(t: Test, cfg: Partial<DatapathConfig> = {}): Promise<Datapath> {
  const dp = await loadDatapath(BPF_DIR, tmpPinDir(t), { ...DEFAULT_DATAPATH, ...cfg });
  t.teardown(() => dp.close());
  return dp;
}

/** Run fn with this thread in the namespace (sockets and BPF_PROG_RUN follow). */
export function inNetns<T>(ns: string, fn: () => T): T {
  const prev = native().enterNetns(`/run/netns/${ns}`);
  try {
    return fn();
  } finally {
    native().restoreNetns(prev);
  }
}
