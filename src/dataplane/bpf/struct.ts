/**
 * A tiny C-struct layout builder: fields in declaration order with natural
 * alignment, as clang lays them out for BPF. Each codec knows its fields'
 * offsets, so a test can compare them with the object's BTF.
 */

export interface Field<T> {
  readonly size: number;
  readonly align: number;
  /** A field that takes no part in the decoded value (padding). */
  readonly pad?: boolean;
  /** Nested struct codec, for the BTF check. */
  readonly nested?: Codec<unknown>;
  /** May be left out: encoded as `dflt` when absent, decoded as absent when it is `dflt`. */
  readonly optional?: boolean;
  readonly dflt?: T;
  read(b: Buffer, off: number): T;
  write(b: Buffer, off: number, v: T): void;
}

type Spec = Record<string, Field<unknown>>;
type PadKeys<S extends Spec> = { [K in keyof S]: S[K] extends { pad: true } ? K : never }[keyof S];
type OptKeys<S extends Spec> = { [K in keyof S]: S[K] extends { optional: true } ? K : never }[keyof S];
export type ValueOf<S extends Spec> = {
  [K in Exclude<keyof S, PadKeys<S> | OptKeys<S>>]: S[K] extends Field<infer T> ? T : never;
} & {
  [K in OptKeys<S>]?: S[K] extends Field<infer T> ? T : never;
};

export interface FieldLayout {
  name: string;
  offset: number;
  size: number;
  nested?: Codec<unknown>;
}

export interface Codec<T> {
  readonly cName: string;
  readonly size: number;
  readonly align: number;
  readonly layout: readonly FieldLayout[];
  encode(v: T): Buffer;
  encodeInto(b: Buffer, off: number, v: T): void;
  decode(b: Buffer, off?: number): T;
}

const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

export function struct<S extends Spec>(cName: string, spec: S): Codec<ValueOf<S>> {
  const layout: FieldLayout[] = [];
  let off = 0;
  let align = 1;
  const entries = Object.entries(spec);
  const offsets: number[] = [];
  for (const [name, f] of entries) {
    off = alignUp(off, f.align);
    offsets.push(off);
    layout.push({ name, offset: off, size: f.size, ...(f.nested ? { nested: f.nested } : {}) });
    off += f.size;
    align = Math.max(align, f.align);
  }
  const size = alignUp(off, align);
  const codec: Codec<ValueOf<S>> = {
    cName,
    size,
    align,
    layout,
    encodeInto(b, base, v) {
      entries.forEach(([name, f], i) => {
        const o = base + (offsets[i] ?? 0);
        if (f.pad) b.fill(0, o, o + f.size);
        else f.write(b, o, (v as Record<string, unknown>)[name]);
      });
    },
    encode(v) {
      const b = Buffer.alloc(size);
      codec.encodeInto(b, 0, v);
      return b;
    },
    decode(b, base = 0) {
      const out: Record<string, unknown> = {};
      entries.forEach(([name, f], i) => {
        if (f.pad) return;
        const v = f.read(b, base + (offsets[i] ?? 0));
        if (!f.optional || v !== f.dflt) out[name] = v;
      });
      return out as ValueOf<S>;
    },
  };
  return codec;
}

export const u8: Field<number> = {
  size: 1,
  align: 1,
  read: (b, o) => b.readUInt8(o),
  write: (b, o, v) => void b.writeUInt8(v, o),
};
export const u16: Field<number> = {
  size: 2,
  align: 2,
  read: (b, o) => b.readUInt16LE(o),
  write: (b, o, v) => void b.writeUInt16LE(v, o),
};
export const u32: Field<number> = {
  size: 4,
  align: 4,
  read: (b, o) => b.readUInt32LE(o),
  write: (b, o, v) => void b.writeUInt32LE(v, o),
};
export const u64: Field<bigint> = {
  size: 8,
  align: 8,
  read: (b, o) => b.readBigUInt64LE(o),
  write: (b, o, v) => void b.writeBigUInt64LE(v, o),
};
/** A 16-bit value in network byte order (ports). */
export const be16: Field<number> = {
  size: 2,
  align: 2,
  read: (b, o) => b.readUInt16BE(o),
  write: (b, o, v) => void b.writeUInt16BE(v, o),
};
/** A 32-bit value in network byte order (an ifindex as an LPM trie compares it). */
export const be32: Field<number> = {
  size: 4,
  align: 4,
  read: (b, o) => b.readUInt32BE(o),
  write: (b, o, v) => void b.writeUInt32BE(v, o),
};
/** An IPv4 address in network byte order, as dotted quad. */
export const ip4: Field<string> = {
  size: 4,
  align: 4,
  read: (b, o) => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`,
  write: (b, o, v) => {
    const parts = v.split('.');
    for (let i = 0; i < 4; i++) b[o + i] = Number(parts[i]);
  },
};
export function pad(n: number): Field<undefined> & { pad: true } {
  return { size: n, align: 1, pad: true, read: () => undefined, write: () => undefined };
}
/** NUL-padded fixed-size string. */
export function chars(n: number): Field<string> {
  return {
    size: n,
    align: 1,
    read: (b, o) => {
      const s = b.subarray(o, o + n);
      const z = s.indexOf(0);
      return s.subarray(0, z < 0 ? n : z).toString('utf8');
    },
    write: (b, o, v) => {
      b.fill(0, o, o + n);
      b.write(v.slice(0, n - 1), o, 'utf8');
    },
  };
}
/** Raw bytes (a byte array whose layout the caller knows). */
export function bytes(n: number): Field<Buffer> {
  return {
    size: n,
    align: 1,
    read: (b, o) => Buffer.from(b.subarray(o, o + n)),
    write: (b, o, v) => {
      b.fill(0, o, o + n);
      v.copy(b, o, 0, Math.min(n, v.length));
    },
  };
}
/**
 * A field that may be left out (one added to a struct that callers already
 * fill in and compare): written as `dflt` when absent, and absent from a
 * decoded value when it holds `dflt`.
 */
export function withDefault<T>(f: Field<T>, dflt: T): Field<T> & { optional: true } {
  return { ...f, optional: true, dflt, write: (b, o, v) => f.write(b, o, v ?? dflt) };
}
export function nested<T>(c: Codec<T>): Field<T> {
  return {
    size: c.size,
    align: c.align,
    nested: c,
    read: (b, o) => c.decode(b, o),
    write: (b, o, v) => c.encodeInto(b, o, v),
  };
}
/** A fixed-size array of one struct (the codec's layout describes one element). */
export function arrayOf<T>(c: Codec<T>, n: number): Field<T[]> {
  return {
    size: c.size * n,
    align: c.align,
    nested: c,
    read: (b, o) => Array.from({ length: n }, (_, i) => c.decode(b, o + i * c.size)),
    write: (b, o, v) => {
      for (let i = 0; i < n; i++) {
        const x = v[i];
        if (x === undefined) b.fill(0, o + i * c.size, o + (i + 1) * c.size);
        else c.encodeInto(b, o + i * c.size, x);
      }
    },
  };
}
/** A fixed-size array of one scalar field. */
export function arrayOfScalar<T>(f: Field<T>, n: number): Field<T[]> {
  return {
    size: f.size * n,
    align: f.align,
    read: (b, o) => Array.from({ length: n }, (_, i) => f.read(b, o + i * f.size)),
    write: (b, o, v) => {
      for (let i = 0; i < n; i++) f.write(b, o + i * f.size, v[i] as T);
    },
  };
}
