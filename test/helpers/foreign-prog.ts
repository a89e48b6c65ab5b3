/** A TC program that is not ours, for coexistence tests. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { native } from '../../src/native/index.js';

/**
 * `foreign_next`: passes every packet on to whatever comes next
 * (TC_ACT_UNSPEC; for tcx, TCX_NEXT). Returns its fd, closed when the test ends.
 */
export async function foreignProgram(t: Test): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-foreign-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(
    join(dir, 'foreign.c'),
    `#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("tc") int foreign_next(struct __sk_buff *skb) { return -1; }
char LICENSE[] SEC("license") = "GPL";
`,
  );
  const arch = execFileSync('uname', ['-m'], { encoding: 'utf8' }).trim();
  execFileSync('clang', [
    '-O2',
    '-g',
    '-target',
    'bpf',
    `-I/usr/include/${arch}-linux-gnu`,
    '-c',
    join(dir, 'foreign.c'),
    '-o',
    join(dir, 'foreign.o'),
  ]);
  const obj = await native().loadObject(join(dir, 'foreign.o'));
  t.teardown(() => obj.close());
  return obj.programs()[0]!.fd;
}
