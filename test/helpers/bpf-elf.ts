/**
 * Just enough ELF to read a compiled BPF object (64-bit, little endian): its
 * sections, the instructions of its code sections, and how many CO-RE
 * relocations .BTF.ext carries. For tests that list what the object asks
 * of the kernel.
 */

const SHF_EXECINSTR = 0x4n;
const BTF_EXT_MAGIC = 0xeb9f;

export interface ElfSection {
  name: string;
  flags: bigint;
  offset: number;
  size: number;
}

export interface BpfInsn {
  /** byte offset in its section */
  at: number;
  code: number;
  dst: number;
  src: number;
  off: number;
  imm: number;
}

export interface BpfElf {
  sections: ElfSection[];
  /** Sections holding code (SHF_EXECINSTR), with their instructions. */
  code: Array<{ section: string; insns: BpfInsn[] }>;
  /** CO-RE relocation records in .BTF.ext (each needs the kernel's BTF at load). */
  coreRelocations: number;
}

export function readBpfElf(b: Buffer, what = 'object'): BpfElf {
  if (b.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${what}: not an ELF file`);
  if (b[4] !== 2 || b[5] !== 1) throw new Error(`${what}: not a 64-bit little-endian ELF (bpfel); this reader knows no other`);
  const shoff = Number(b.readBigUInt64LE(0x28));
  const shentsize = b.readUInt16LE(0x3a);
  const shnum = b.readUInt16LE(0x3c);
  const shstrndx = b.readUInt16LE(0x3e);
  const raw = Array.from({ length: shnum }, (_, i) => {
    const o = shoff + i * shentsize;
    return {
      nameOff: b.readUInt32LE(o),
      flags: b.readBigUInt64LE(o + 8),
      offset: Number(b.readBigUInt64LE(o + 24)),
      size: Number(b.readBigUInt64LE(o + 32)),
    };
  });
  const strtab = raw[shstrndx]!;
  const str = (off: number) => {
    const start = strtab.offset + off;
    return b.toString('latin1', start, b.indexOf(0, start));
  };
  const sections = raw.map((s) => ({ name: str(s.nameOff), flags: s.flags, offset: s.offset, size: s.size }));
  const code = sections
    .filter((s) => (s.flags & SHF_EXECINSTR) !== 0n && s.size > 0)
    .map((s) => ({ section: s.name, insns: decode(b.subarray(s.offset, s.offset + s.size)) }));
  const ext = sections.find((s) => s.name === '.BTF.ext');
  return { sections, code, coreRelocations: ext ? coreRelocations(b.subarray(ext.offset, ext.offset + ext.size), what) : 0 };
}

function decode(text: Buffer): BpfInsn[] {
  const out: BpfInsn[] = [];
  for (let at = 0; at + 8 <= text.length; at += 8) {
    const code = text[at]!;
    const regs = text[at + 1]!;
    out.push({ at, code, dst: regs & 0xf, src: regs >> 4, off: text.readInt16LE(at + 2), imm: text.readInt32LE(at + 4) });
    if (code === 0x18) at += 8; // BPF_LD | BPF_IMM | BPF_DW: two slots
  }
  return out;
}

function coreRelocations(ext: Buffer, what: string): number {
  if (ext.readUInt16LE(0) !== BTF_EXT_MAGIC) throw new Error(`${what}: .BTF.ext has a bad magic`);
  const hdrLen = ext.readUInt32LE(4);
  if (hdrLen < 32) return 0; // no CO-RE part in the header at all
  const off = hdrLen + ext.readUInt32LE(24);
  const len = ext.readUInt32LE(28);
  if (len === 0) return 0;
  const recSize = ext.readUInt32LE(off);
  let n = 0;
  for (let p = off + 4; p < off + len;) {
    const count = ext.readUInt32LE(p + 4);
    n += count;
    p += 8 + count * recSize;
  }
  return n;
}

// Opcode fields (include/uapi/linux/bpf_common.h, bpf.h).
export const cls = (code: number) => code & 0x07;
export const BPF_STX = 0x03;
export const BPF_JMP = 0x05;
export const BPF_JMP32 = 0x06;
export const BPF_CALL = 0x80;
export const BPF_EXIT = 0x90;
export const BPF_ATOMIC = 0xc0;

/**
 * Jumps that close a loop (back edges of the control-flow graph, found by
 * depth-first search as the verifier's check_cfg does): what kernels
 * before 5.3 reject. A jump backwards in the code is not one by itself:
 * the compiler often lays a shared tail out before the code that jumps to it.
 */
export function loopEdges(insns: BpfInsn[]): Array<{ from: number; to: number }> {
  const index = new Map(insns.map((x, i) => [x.at, i]));
  const succ = (i: number): number[] => {
    const x = insns[i]!;
    const c = cls(x.code);
    const op = x.code & 0xf0;
    const next = i + 1 < insns.length ? [i + 1] : [];
    if (c !== BPF_JMP && c !== BPF_JMP32) return next;
    if (op === BPF_EXIT) return [];
    if (op === BPF_CALL) return next;
    const to = index.get(x.at + 8 * (x.off + 1));
    if (to === undefined) throw new Error(`jump at +${x.at} lands outside its section`);
    return op === 0x00 ? [to] : [...next, to]; // BPF_JA: unconditional
  };
  const state = new Uint8Array(insns.length); // 0 new, 1 on the DFS path, 2 done
  const edges: Array<{ from: number; to: number }> = [];
  for (let root = 0; root < insns.length; root++) {
    if (state[root]) continue;
    const stack: Array<{ i: number; next: number[] }> = [{ i: root, next: succ(root) }];
    state[root] = 1;
    while (stack.length) {
      const top = stack[stack.length - 1]!;
      const n = top.next.shift();
      if (n === undefined) {
        state[top.i] = 2;
        stack.pop();
      } else if (state[n] === 1) {
        edges.push({ from: insns[top.i]!.at, to: insns[n]!.at });
      } else if (state[n] === 0) {
        state[n] = 1;
        stack.push({ i: n, next: succ(n) });
      }
    }
  }
  return edges;
}
