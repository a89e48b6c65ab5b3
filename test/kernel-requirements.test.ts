/**
 * What bpfproxy asks of the kernel, read from what it really uses, against
 * the table in bpf/KERNEL_REQUIREMENTS.md:
 *  - from the compiled object (bpf/.output/bpfproxy.o): the helpers it
 *    calls, instruction-set features (JMP32, loops, calls), CO-RE
 *    relocations;
 *  - from the object once loaded: program types, map types, map flags,
 *    global data;
 *  - from the BPF sources: helper and map flags, __sk_buff fields read;
 *  - from the addon (addon/*.cc): the libbpf calls (bpf(2) commands,
 *    netlink), the netlink families it opens and the attach points the
 *    agent uses.
 * Fails when something used is not in the table, or needs a kernel newer
 * than the table's minimum without a fallback named for older ones.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { BPF_OBJECT } from '../src/dataplane/bpf/loader.js';
import { native } from '../src/native/index.js';
import { BPF_ATOMIC, BPF_CALL, BPF_JMP, BPF_JMP32, BPF_STX, cls, loopEdges, readBpfElf } from './helpers/bpf-elf.js';
import { BPF_DIR, REPO, tmpDatapath } from './helpers/env.js';

const DOC = join(REPO, 'bpf', 'KERNEL_REQUIREMENTS.md');

interface Row {
  kind: string;
  name: string;
  since: string;
  fallback: string;
}
interface Use {
  kind: string;
  name: string;
  where: string;
}

/** "5.15" -> [5, 15]; "≤4.19" (first version not pinned down, at most this) -> [4, 19]. */
function version(s: string): [number, number] {
  const m = /^(?:≤\s*)?(\d+)\.(\d+)$/.exec(s.trim());
  if (!m) throw new Error(`${DOC}: "${s}" is not a kernel version (5.15, or ≤4.19 when only a bound is known)`);
  return [Number(m[1]), Number(m[2])];
}
const newer = (a: [number, number], b: [number, number]) => a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]);
const bare = (cell: string) => cell.trim().replace(/^`|`$/g, '');

function readTable(): { minimum: string; rows: Row[] } {
  const text = readFileSync(DOC, 'utf8');
  const min = /^Minimum kernel: \*\*(\d+\.\d+)\*\*/m.exec(text);
  if (!min) throw new Error(`${DOC}: no "Minimum kernel: **X.Y**" line`);
  const rows: Row[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('|') || /^\|\s*(Kind|-)/.test(line)) continue;
    const cells = line.split('|').slice(1, -1);
    if (cells.length !== 5) throw new Error(`${DOC}: table row needs 5 cells (kind, name, since, fallback, source): ${line}`);
    const [kind, name, since, fallback] = cells.map(bare) as [string, string, string, string];
    version(since);
    rows.push({ kind, name, since, fallback });
  }
  return { minimum: min[1]!, rows };
}

/** Helper ids -> names, from libbpf's bpf_helper_defs.h (as the object was built against). */
function helperNames(): Map<number, string> {
  const path = ['/usr/include/bpf/bpf_helper_defs.h', '/usr/local/include/bpf/bpf_helper_defs.h'].find(existsSync);
  if (!path) throw new Error('bpf_helper_defs.h not found (libbpf-dev): needed to name the helpers the object calls');
  const names = new Map<number, string>();
  for (const m of readFileSync(path, 'utf8').matchAll(/\(\s*\*\s*(?:const\s+)?(bpf_\w+)\s*\)\s*\([^;]*?\)\s*=\s*\(void \*\)\s*(\d+);/gs)) {
    names.set(Number(m[2]), m[1]!);
  }
  return names;
}

function fromObject(path: string): Use[] {
  const elf = readBpfElf(readFileSync(path), path);
  const helpers = helperNames();
  const uses: Use[] = [];
  const where = relative(REPO, path);
  for (const { section, insns } of elf.code) {
    for (const i of insns) {
      const c = cls(i.code);
      const op = i.code & 0xf0;
      if (c === BPF_JMP && op === BPF_CALL) {
        if (i.src === 0) uses.push({ kind: 'helper', name: helpers.get(i.imm) ?? `helper #${i.imm}`, where: `${where} ${section}` });
        else if (i.src === 1) uses.push({ kind: 'insn', name: 'bpf-to-bpf calls', where: `${where} ${section}` });
        else uses.push({ kind: 'insn', name: 'kfunc calls', where: `${where} ${section}` });
        continue;
      }
      if (c === BPF_JMP32) uses.push({ kind: 'insn', name: 'JMP32', where: `${where} ${section}` });
      if (c === BPF_STX && (i.code & 0xe0) === BPF_ATOMIC) {
        uses.push({ kind: 'insn', name: i.imm === 0 ? 'atomic add' : 'atomic fetch/xchg/cmpxchg', where: `${where} ${section}` });
      }
    }
  }
  for (const { section, insns } of elf.code) {
    for (const e of loopEdges(insns))
      uses.push({ kind: 'insn', name: 'bounded loops', where: `${where} ${section} +${e.from} -> +${e.to}` });
  }
  if (elf.coreRelocations > 0)
    uses.push({ kind: 'feature', name: 'CO-RE relocations', where: `${where}: ${elf.coreRelocations} in .BTF.ext` });
  return uses;
}

const MAP_FLAGS: Record<number, string> = {
  0x1: 'BPF_F_NO_PREALLOC',
  0x2: 'BPF_F_NO_COMMON_LRU',
  0x4: 'BPF_F_NUMA_NODE',
  0x8: 'BPF_F_RDONLY',
  0x10: 'BPF_F_WRONLY',
  0x20: 'BPF_F_STACK_BUILD_ID',
  0x40: 'BPF_F_ZERO_SEED',
  0x80: 'BPF_F_RDONLY_PROG',
  0x100: 'BPF_F_WRONLY_PROG',
  0x200: 'BPF_F_CLONE',
  0x400: 'BPF_F_MMAPABLE',
  0x800: 'BPF_F_PRESERVE_ELEMS',
  0x1000: 'BPF_F_INNER_MAP',
};

const bpftoolShow = (what: 'map' | 'prog', id: number): { type: string } =>
  JSON.parse(execFileSync('bpftool', ['-j', what, 'show', 'id', String(id)], { encoding: 'utf8' })) as { type: string };

function filesUnder(dir: string, ext: RegExp, skip: RegExp = /^$/): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && ext.test(e.name))
    .map((e) => join(e.parentPath, e.name))
    .filter((p) => !skip.test(relative(REPO, p)));
}

function fromSources(): Use[] {
  const uses: Use[] = [];
  // bpf/include/ defines the names; the programs are where they are used.
  for (const f of filesUnder(join(REPO, 'bpf'), /\.(c|h)$/, /^bpf\/(include|\.output)\//)) {
    const src = readFileSync(f, 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '');
    const where = relative(REPO, f);
    for (const m of src.matchAll(/\bBPF_(F_\w+|FIB_LOOKUP_\w+|ADJ_ROOM_\w+|ANY|NOEXIST|EXIST)\b/g))
      uses.push({ kind: 'flag', name: m[0], where });
    for (const m of src.matchAll(/\bskb->(\w+)/g)) uses.push({ kind: 'ctx', name: `__sk_buff.${m[1]}`, where });
  }
  for (const f of filesUnder(join(REPO, 'addon'), /\.(cc|h)$/)) {
    const src = readFileSync(f, 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '');
    const where = relative(REPO, f);
    // libbpf's low-level API: one bpf(2) command or netlink request each
    // (bpf_object__* and the like only drive the object loaded above).
    for (const m of src.matchAll(/\b(bpf_(?!object__|program__|map__|link__|prog_linfo__|btf__)\w+)\s*\(/g))
      uses.push({ kind: 'libbpf', name: m[1]!, where });
    for (const m of src.matchAll(/\b(BPF_TCX_\w+|BPF_TC_(?:INGRESS|EGRESS)|BPF_XDP\w*|XDP_FLAGS_\w+)\b/g))
      uses.push({ kind: 'attach', name: m[1]!, where });
    // maps the addon makes itself (the monitors' ring buffers)
    for (const m of src.matchAll(/\bbpf_map_create\(\s*(BPF_MAP_TYPE_\w+)/g)) uses.push({ kind: 'map', name: m[1]!, where });
    // netlink families the addon opens sockets of
    for (const m of src.matchAll(/\bNETLINK_(?!ADD_|DROP_|F_)[A-Z]+\b/g)) uses.push({ kind: 'netlink', name: m[0], where });
  }
  return uses;
}

t.test('everything used from the kernel is in bpf/KERNEL_REQUIREMENTS.md, within the minimum or with a fallback', async (t) => {
  const { minimum, rows } = readTable();
  const min = version(minimum);
  const objPath = join(BPF_DIR, BPF_OBJECT);
  const uses = [...fromObject(objPath), ...fromSources()];

  const dp = await tmpDatapath(t);
  for (const obj of dp.objects) {
    for (const p of obj.programs()) {
      uses.push({
        kind: 'program',
        name: `BPF_PROG_TYPE_${bpftoolShow('prog', native().progInfo(p.fd).id).type.toUpperCase()}`,
        where: `${BPF_OBJECT} ${p.name}`,
      });
    }
    for (const m of obj.maps()) {
      const info = native().mapInfo(m.fd);
      uses.push({ kind: 'map', name: `BPF_MAP_TYPE_${bpftoolShow('map', info.id).type.toUpperCase()}`, where: `${BPF_OBJECT} ${m.name}` });
      for (let bit = 1; bit <= info.flags; bit <<= 1) {
        if (info.flags & bit)
          uses.push({ kind: 'flag', name: MAP_FLAGS[bit] ?? `map_flags 0x${bit.toString(16)}`, where: `${BPF_OBJECT} ${m.name}` });
      }
      if (/\.(rodata|data|bss)$/.test(m.name)) uses.push({ kind: 'feature', name: 'global data', where: `${BPF_OBJECT} ${m.name}` });
    }
  }

  // Every distinct use once, with every place it was seen.
  const seen = new Map<string, Use & { places: Set<string> }>();
  for (const u of uses) {
    const k = `${u.kind}\0${u.name}`;
    const have = seen.get(k) ?? { ...u, places: new Set<string>() };
    have.places.add(u.where);
    seen.set(k, have);
  }
  t.ok(seen.size > 20, `${seen.size} distinct kernel features found in use (a reader that finds nothing is broken)`);
  for (const kind of ['helper', 'program', 'map', 'flag', 'ctx', 'libbpf', 'attach', 'netlink']) {
    t.ok(
      [...seen.values()].some((u) => u.kind === kind),
      `some use of kind "${kind}" is found`,
    );
  }

  let needs: [number, number] = [0, 0];
  for (const u of seen.values()) {
    const places = [...u.places].slice(0, 3).join('; ') + (u.places.size > 3 ? `; +${u.places.size - 3} more` : '');
    const row = rows.find((r) => r.kind === u.kind && r.name === u.name);
    if (!row) {
      t.fail(`${u.kind} ${u.name} (used in ${places}) is not in ${relative(REPO, DOC)}: add a row with the first kernel that has it`);
      continue;
    }
    const v = version(row.since);
    if (newer(v, min)) {
      t.ok(
        row.fallback.length > 0,
        `${u.kind} ${u.name} needs ${row.since}, newer than the minimum ${minimum}: fallback "${row.fallback}"`,
      );
    } else {
      t.pass(`${u.kind} ${u.name}: ${row.since}`);
      if (newer(v, needs)) needs = v;
    }
  }
  t.comment(`newest kernel needed without a fallback: ${needs.join('.')} (minimum stated: ${minimum})`);
  const unused = rows.filter((r) => !seen.has(`${r.kind}\0${r.name}`));
  if (unused.length) t.comment(`listed, not used now: ${unused.map((r) => `${r.kind} ${r.name}`).join(', ')}`);
  t.equal(minimum, '5.15', 'the minimum is the oldest kernel we support (AKS Ubuntu 5.15; EKS AL2023 is 6.1)');
});

t.test("the object has no CO-RE relocations: it loads without the kernel's BTF", async (t) => {
  const path = join(BPF_DIR, BPF_OBJECT);
  t.equal(
    readBpfElf(readFileSync(path), path).coreRelocations,
    0,
    'no relocation against kernel types (bpf/include/uapi.h has no preserve_access_index; a vmlinux.h would bring hundreds)',
  );
});
