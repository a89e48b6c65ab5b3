/**
 * The endpoints of one EndpointSlice, packed: a node holds 100,000 of
 * them. As objects (an object, an address array, an address string each)
 * they took ~150 bytes apiece; packed, one string per slice holds 4 bytes
 * an address and 4 an endpoint, and node names are listed once per slice.
 * Reading them makes SliceEndpoint objects, which are short-lived.
 *
 * Layout, one Latin-1 character a byte, per endpoint: address count
 * (1-100), flags (ready, serving, terminating, hinted, IPv6), node index + 1 (two
 * bytes, big-endian; 0: no node name), when hinted the index of its
 * topology hints (two bytes; each distinct set of hints is listed once per
 * slice), then each address: IPv4 in 4 bytes, IPv6 (flag 16) in 16.
 */
import { ipv6Bytes, readIpv6 } from '../net/ip6.js';
import type { SliceEndpoint } from './types.js';

const READY = 1;
const SERVING = 2;
const TERMINATING = 4;
const HINTED = 8;
/** the endpoint's addresses are IPv6 (16 bytes each; an addressType: IPv6 slice) */
const IPV6 = 16;
/** Largest number of addresses one endpoint may have (the API server's bound). */
const MAX_ADDRESSES = 100;
/** Distinct node names one slice may name (a slice has at most 1,000 endpoints). */
const MAX_NODES = 0xffff;

/** One endpoint's topology hints (either list may be absent, never empty). */
interface Hints {
  zones?: readonly string[];
  nodes?: readonly string[];
}

/** Shared by every slice without hints (most): no array of its own. */
const NO_HINTS: readonly Hints[] = [];

const sameList = (a: readonly string[] | undefined, b: readonly string[] | undefined): boolean =>
  a === b || (a !== undefined && b !== undefined && a.length === b.length && a.every((x, i) => x === b[i]));

function ipv4Bytes(ip: string, out: number[]): void {
  const p = ip.split('.');
  if (p.length !== 4) throw new Error(`Endpoints: ${JSON.stringify(ip)} is not an IPv4 address`);
  for (const x of p) {
    const n = Number(x);
    if (!Number.isInteger(n) || n < 0 || n > 255 || x === '') throw new Error(`Endpoints: ${JSON.stringify(ip)} is not an IPv4 address`);
    out.push(n);
  }
}

export class Endpoints implements Iterable<SliceEndpoint> {
  private constructor(
    private readonly packed: string,
    private readonly nodes: readonly string[],
    /** how many endpoints */
    readonly length: number,
    /** the distinct topology hints of this slice's endpoints */
    private readonly hints: readonly Hints[] = NO_HINTS,
  ) {}

  static readonly none = new Endpoints('', [], 0);

  /** Whether any endpoint carries a topology hint (zone or node). */
  get hinted(): boolean {
    return this.hints.length > 0;
  }

  /** Pack endpoints: IPv4 or IPv6 addresses (1 to 100 each, one family per endpoint), as the converter validated them. */
  static of(eps: Iterable<SliceEndpoint>): Endpoints {
    const bytes: number[] = [];
    const nodes: string[] = [];
    const nodeIndex = new Map<string, number>();
    const hints: Hints[] = [];
    const hintIndex = new Map<string, number>();
    let n = 0;
    for (const e of eps) {
      const count = e.addresses.length;
      if (count < 1 || count > MAX_ADDRESSES) throw new Error(`Endpoints: an endpoint has ${count} addresses (1 to ${MAX_ADDRESSES})`);
      let node = 0;
      if (e.nodeName !== undefined) {
        let i = nodeIndex.get(e.nodeName);
        if (i === undefined) {
          if (nodes.length >= MAX_NODES) throw new Error(`Endpoints: more than ${MAX_NODES} node names in one slice`);
          i = nodes.push(e.nodeName) - 1;
          nodeIndex.set(e.nodeName, i);
        }
        node = i + 1;
      }
      const zones = e.zoneHints?.length ? e.zoneHints : undefined;
      const nodeHints = e.nodeHints?.length ? e.nodeHints : undefined;
      const hinted = zones !== undefined || nodeHints !== undefined;
      const v6 = e.addresses[0]!.includes(':');
      const flags =
        (e.ready ? READY : 0) | (e.serving ? SERVING : 0) | (e.terminating ? TERMINATING : 0) | (hinted ? HINTED : 0) | (v6 ? IPV6 : 0);
      bytes.push(count, flags, node >> 8, node & 0xff);
      if (hinted) {
        const key = JSON.stringify([zones ?? [], nodeHints ?? []]);
        let h = hintIndex.get(key);
        if (h === undefined) {
          // at most one set per endpoint: 1,000 a slice, far below 0xffff
          h = hints.push({ ...(zones ? { zones: [...zones] } : {}), ...(nodeHints ? { nodes: [...nodeHints] } : {}) }) - 1;
          hintIndex.set(key, h);
        }
        bytes.push(h >> 8, h & 0xff);
      }
      for (const a of e.addresses) {
        if (a.includes(':') !== v6) throw new Error(`Endpoints: ${JSON.stringify(a)} is not of the family of the endpoint's first address`);
        if (v6) bytes.push(...ipv6Bytes(a));
        else ipv4Bytes(a, bytes);
      }
      n++;
    }
    if (n === 0) return Endpoints.none;
    let packed = '';
    for (let i = 0; i < bytes.length; i += 8192) packed += String.fromCharCode(...bytes.slice(i, i + 8192));
    return new Endpoints(packed, nodes, n, hints.length > 0 ? hints : NO_HINTS);
  }

  *[Symbol.iterator](): Iterator<SliceEndpoint> {
    const s = this.packed;
    for (let at = 0; at < s.length;) {
      const count = s.charCodeAt(at);
      const flags = s.charCodeAt(at + 1);
      const node = (s.charCodeAt(at + 2) << 8) | s.charCodeAt(at + 3);
      at += 4;
      let hints: Hints | undefined;
      if (flags & HINTED) {
        hints = this.hints[(s.charCodeAt(at) << 8) | s.charCodeAt(at + 1)];
        at += 2;
      }
      const addresses: string[] = new Array<string>(count);
      if (flags & IPV6) {
        const b = Buffer.alloc(16);
        for (let i = 0; i < count; i++, at += 16) {
          for (let j = 0; j < 16; j++) b[j] = s.charCodeAt(at + j);
          addresses[i] = readIpv6(b);
        }
      } else {
        for (let i = 0; i < count; i++, at += 4) {
          addresses[i] = `${s.charCodeAt(at)}.${s.charCodeAt(at + 1)}.${s.charCodeAt(at + 2)}.${s.charCodeAt(at + 3)}`;
        }
      }
      const ready = (flags & READY) !== 0;
      const serving = (flags & SERVING) !== 0;
      const terminating = (flags & TERMINATING) !== 0;
      const e: SliceEndpoint = node
        ? { addresses, ready, serving, terminating, nodeName: this.nodes[node - 1]! }
        : { addresses, ready, serving, terminating };
      if (hints?.zones) e.zoneHints = hints.zones;
      if (hints?.nodes) e.nodeHints = hints.nodes;
      yield e;
    }
  }

  toArray(): SliceEndpoint[] {
    return [...this];
  }

  /** As a list of endpoints (logs, JSON output, test diffs). */
  toJSON(): SliceEndpoint[] {
    return this.toArray();
  }

  equals(o: Endpoints): boolean {
    return (
      this.packed === o.packed &&
      sameList(this.nodes, o.nodes) &&
      this.hints.length === o.hints.length &&
      this.hints.every((h, i) => sameList(h.zones, o.hints[i]!.zones) && sameList(h.nodes, o.hints[i]!.nodes))
    );
  }
}
