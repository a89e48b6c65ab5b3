/** TC programs that are not ours, compiled from a few lines of C, for coexistence and error tests. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { native } from '../../src/native/index.js';

/**
 * Compile one SEC("tc") program, `name`, whose body is `body`, to an object
 * file (path returned; `out` names it, default <name>.o in a temporary dir
 * removed when the test ends).
 */
export function compileTcProgram(t: Test, name: string, body: string, out?: string): string {
  const dir = mkdtempSync(join(tmpdir(), `bpfproxy-${name}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const src = join(dir, `${name}.c`);
  writeFileSync(
    src,
    `#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("tc") int ${name}(struct __sk_buff *skb) { ${body} }
char LICENSE[] SEC("license") = "GPL";
`,
  );
  const obj = out ?? join(dir, `${name}.o`);
  const arch = execFileSync('uname', ['-m'], { encoding: 'utf8' }).trim();
  execFileSync('clang', ['-O2', '-g', '-target', 'bpf', `-I/usr/include/${arch}-linux-gnu`, '-c', src, '-o', obj]);
  return obj;
}

/**
 * `foreign_next`: passes every packet on to whatever comes next
 * (TC_ACT_UNSPEC; for tcx, TCX_NEXT). Returns its fd, closed when the test ends.
 */
export async function foreignProgram(t: Test): Promise<number> {
  const obj = await native().loadObject(compileTcProgram(t, 'foreign_next', 'return -1;'));
  t.teardown(() => obj.close());
  return obj.programs()[0]!.fd;
}
