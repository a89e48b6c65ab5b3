/**
 * bpf/include/uapi.h, the kernel ABI vendored so the object builds without
 * the build host's BTF, against the kernel's own uapi headers
 * (linux-libc-dev): every constant has the kernel's value, every field of
 * every struct sits at the kernel's bit offset with the kernel's width.
 *
 * Ours is compiled for BPF (its BTF gives names, offsets, widths, values);
 * the kernel's headers are compiled for the host (they pull in libc, which
 * has no BPF target) into a program that prints the same, on a 64-bit
 * little-endian host: the layout a BPF program sees.
 */
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { endianness, tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './helpers/env.js';

const HEADER = join(REPO, 'bpf', 'include', 'uapi.h');
const KERNEL_HEADERS = [
  'linux/types.h',
  'linux/bpf.h',
  'linux/if_ether.h',
  'linux/in.h',
  'linux/ip.h',
  'linux/tcp.h',
  'linux/udp.h',
  'linux/icmp.h',
  'linux/pkt_cls.h',
  'asm-generic/errno-base.h',
];

interface BtfMember {
  name: string;
  type_id: number;
  bits_offset: number;
  bitfield_size?: number;
}
interface BtfType {
  id: number;
  kind: string;
  name?: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: BtfMember[];
  values?: Array<{ name: string; val: string }>;
}
/** A leaf field by its C path (anonymous members flattened); reserved ones (__*) are left out:
 * their names change across kernel versions. */
interface Field {
  path: string;
  bitOff: number;
  bits: number;
  bitfield: boolean;
}

/** Names the header defines: macros (not function-like), enum members, structs. */
function namesIn(header: string): { constants: string[]; structs: string[] } {
  const src = header.replace(/\/\*[\s\S]*?\*\//g, '');
  const macros = [...src.matchAll(/^#define\s+(\w+)(?!\()\s+\S/gm)].map((m) => m[1]!).filter((n) => !n.endsWith('_H'));
  const members = [...src.matchAll(/\benum\s*\w*\s*\{([^}]*)\}/g)].flatMap((e) => [...e[1]!.matchAll(/(\w+)\s*=/g)].map((m) => m[1]!));
  const structs = [...src.matchAll(/^struct (\w+) \{/gm)].map((m) => m[1]!);
  return { constants: [...macros, ...members], structs };
}

/** Our side: compile a probe of the header for BPF and read its BTF. */
function ours(dir: string, constants: string[], structs: string[]) {
  const c = join(dir, 'ours.c');
  writeFileSync(
    c,
    [
      '#include "include/uapi.h"',
      // one enum each: one wide value would make every value of a shared enum 64-bit unsigned
      ...constants.map((n) => `enum probe_${n} { P_${n} = (${n}) }; enum probe_${n} use_${n};`),
      ...structs.map((s) => `struct ${s} probe_${s};`),
    ].join('\n'),
  );
  execFileSync('clang', ['-g', '-O2', '-target', 'bpf', `-I${join(REPO, 'bpf')}`, '-c', c, '-o', join(dir, 'ours.o')]);
  // enum values quoted: bpftool prints them as raw 64-bit numbers, past what a double holds
  const json = execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', join(dir, 'ours.o')], { encoding: 'utf8' }).replace(
    /"val":\s*(-?\d+)/g,
    '"val":"$1"',
  );
  const btf = JSON.parse(json) as { types: BtfType[] };
  const byId = new Map(btf.types.map((x) => [x.id, x]));
  const strip = (id: number): BtfType => {
    const x = byId.get(id)!;
    return ['TYPEDEF', 'CONST', 'VOLATILE', 'RESTRICT'].includes(x.kind) ? strip(x.type_id!) : x;
  };
  const bytes = (id: number): number => {
    const x = strip(id);
    if (x.kind === 'PTR') return 8;
    if (x.kind === 'ARRAY') return bytes(x.type_id!) * x.nr_elems!;
    return x.size!;
  };
  const flatten = (st: BtfType, prefix: string, base: number, out: Field[]) => {
    for (const m of st.members ?? []) {
      const x = strip(m.type_id);
      const off = base + m.bits_offset;
      const named = m.name && m.name !== '(anon)'; // bpftool's name for an anonymous member
      if (x.kind === 'STRUCT' || x.kind === 'UNION') flatten(x, named ? `${prefix}${m.name}.` : prefix, off, out);
      else if (named && !m.name.startsWith('__'))
        out.push({ path: prefix + m.name, bitOff: off, bits: m.bitfield_size || bytes(m.type_id) * 8, bitfield: !!m.bitfield_size });
    }
    return out;
  };
  const values = new Map(
    constants.map((n) => {
      const e = btf.types.find((x) => (x.kind === 'ENUM' || x.kind === 'ENUM64') && x.name === `probe_${n}`)!;
      // as the kernel's side prints it: (long long)
      return [n, BigInt.asIntN(64, BigInt(e.values![0]!.val))];
    }),
  );
  const layouts = new Map(
    structs.map((s) => {
      const st = btf.types.find((x) => x.kind === 'STRUCT' && x.name === s)!;
      return [s, { size: st.size!, fields: flatten(st, '', 0, []) }];
    }),
  );
  return { values, layouts };
}

/**
 * The kernel's side: a host program over the kernel's headers that prints
 * each constant, and where each field's bits are (the field set to all
 * ones in a zeroed struct). Lines the headers cannot compile (a name they
 * do not have) are dropped and reported as missing.
 */
function theirs(dir: string, constants: string[], layouts: Map<string, { size: number; fields: Field[] }>) {
  type Item = { key: string; line: string };
  let items: Item[] = [
    ...constants.map((n) => ({ key: `const ${n}`, line: `printf("const ${n} %lld\\n", (long long)(${n}));` })),
    ...[...layouts].flatMap(([s, l]) => [
      { key: `size ${s}`, line: `printf("size ${s} %zu\\n", sizeof(struct ${s}));` },
      ...l.fields.map((f) => ({
        key: `field ${s}.${f.path}`,
        line: `{ struct ${s} v; memset(&v, 0, sizeof v); ${f.bitfield ? `v.${f.path} = ~0` : `memset(&v.${f.path}, 0xff, sizeof v.${f.path})`}; span("${s}.${f.path}", &v, sizeof v); }`,
      })),
    ]),
  ];
  const missing: string[] = [];
  const c = join(dir, 'theirs.c');
  for (let round = 0; round < 5; round++) {
    const head = [
      '#include <stdio.h>',
      '#include <string.h>',
      ...KERNEL_HEADERS.map((h) => `#include <${h}>`),
      'static void span(const char *n, const void *v, size_t len) {',
      '  const unsigned char *p = v; int first = -1, last = -1;',
      '  for (size_t i = 0; i < len * 8; i++) if (p[i / 8] & (1u << (i % 8))) { if (first < 0) first = (int)i; last = (int)i; }',
      '  printf("field %s %d %d\\n", n, first, last - first + 1);',
      '}',
      'int main(void) {',
    ];
    writeFileSync(c, [...head, ...items.map((i) => i.line), 'return 0; }'].join('\n'));
    const cc = spawnSync('cc', ['-w', '-o', join(dir, 'theirs'), c], { encoding: 'utf8' });
    if (cc.status === 0) break;
    const bad = new Set([...cc.stderr.matchAll(/theirs\.c:(\d+):\d+: (?:fatal )?error/g)].map((m) => Number(m[1]) - head.length - 1));
    if (bad.size === 0 || [...bad].some((i) => i < 0 || i >= items.length))
      throw new Error(`the kernel's headers do not compile:\n${cc.stderr}`);
    missing.push(...items.filter((_, i) => bad.has(i)).map((i) => i.key));
    items = items.filter((_, i) => !bad.has(i));
  }
  const out = execFileSync(join(dir, 'theirs'), { encoding: 'utf8' });
  const got = new Map<string, bigint[]>();
  for (const line of out.trim().split('\n')) {
    const [kind, name, ...nums] = line.split(' ');
    got.set(`${kind} ${name}`, nums.map(BigInt));
  }
  return { got, missing };
}

t.test(
  "bpf/include/uapi.h matches the kernel's uapi headers",
  { skip: endianness() !== 'LE' && 'the layout comparison runs on little-endian hosts only' },
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-uapi-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const { constants, structs } = namesIn(readFileSync(HEADER, 'utf8'));
    t.ok(constants.length > 30 && structs.length >= 7, `${constants.length} constants and ${structs.length} structs found in the header`);
    const o = ours(dir, constants, structs);
    const k = theirs(dir, constants, o.layouts);

    for (const n of constants) {
      const v = k.got.get(`const ${n}`);
      if (v) t.equal(o.values.get(n), v[0], `${n} = ${v[0]}`);
    }
    for (const [s, l] of o.layouts) {
      const size = k.got.get(`size ${s}`);
      if (size)
        t.ok(
          BigInt(l.size) <= size[0]!,
          `struct ${s}: ${l.size} bytes, the kernel's ${size[0]}${BigInt(l.size) < size[0]! ? ' (ours stops after the last field read)' : ''}`,
        );
      for (const f of l.fields) {
        const v = k.got.get(`field ${s}.${f.path}`);
        if (!v) continue;
        t.same([BigInt(f.bitOff), BigInt(f.bits)], v, `${s}.${f.path}: bits ${f.bitOff}..${f.bitOff + f.bits - 1}`);
      }
    }
    // A name older headers lack is not an error of ours; anything else is.
    const tolerated = /^const BPF_FIB_(LOOKUP|LKUP_RET)_\w+$/;
    const unexplained = k.missing.filter((m) => !tolerated.test(m));
    t.same(unexplained, [], "everything else in the header exists in the kernel's headers");
    if (k.missing.length) t.comment(`not in this host's kernel headers (older than the names): ${k.missing.join(', ')}`);
  },
);
