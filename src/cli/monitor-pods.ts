/**
 * `bpfproxy monitor --pod NS/NAME --namespace NS`: pod names to addresses,
 * read from the pinned policy maps the agent writes (read only: nothing the
 * datapath uses is touched).
 *
 * Where names come from: bpfproxy_pol_eps names each local endpoint (a pod
 * on this node, not host-network) "namespace/name", and bpfproxy_ipcache
 * (bpfproxy_ipcache6) carries each endpoint's own /32 (/128) addresses with
 * its endpoint id. Pods on
 * other nodes are in the ipcache by identity (a label set), not by name, so
 * they cannot be resolved here. The agent writes both maps only with
 * --network-policy=on; with it off they are empty.
 *
 * Pods come and go while a monitor runs: refresh() reads the names again and
 * the addresses when they may have changed (see refresh()), and says on
 * stderr what changed for each selector.
 */
import { InvalidArgumentError } from '@commander-js/extra-typings';
import type { DatapathMaps } from '../dataplane/bpf/loader.js';

export type PodNameMaps = Pick<DatapathMaps, 'polEps' | 'ipcache' | 'ipcache6'>;

/** How often the names are read again while a monitor runs. */
export const POD_REFRESH_MS = 2000;
/** The whole ipcache is read at least this often, whatever else says it is needed. */
export const FULL_READ_MS = 60_000;

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

/** --pod: NAMESPACE/NAME, repeatable and comma separated. */
export function podList(v: string, prev: string[] = []): string[] {
  const out = [...prev];
  for (const p of v
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean)) {
    const [ns, name, extra] = p.split('/');
    if (extra !== undefined || !ns || !name || !DNS_LABEL.test(ns) || !DNS_SUBDOMAIN.test(name)) {
      throw new InvalidArgumentError(`--pod: "${p}" is not NAMESPACE/NAME (for example default/web-0)`);
    }
    out.push(p);
  }
  return out;
}

/** --namespace: repeatable and comma separated. */
export function namespaceList(v: string, prev: string[] = []): string[] {
  const out = [...prev];
  for (const ns of v
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean)) {
    if (!DNS_LABEL.test(ns)) throw new InvalidArgumentError(`--namespace: "${ns}" is not a namespace name`);
    out.push(ns);
  }
  return out;
}

/** "namespace/name" of each local endpoint, by endpoint id (bpfproxy_pol_eps: one batch read). */
export function readEndpointNames(maps: PodNameMaps): Map<number, string> {
  const out = new Map<number, string>();
  for (const [k, v] of maps.polEps.entries()) if (v.pod) out.set(k.v, v.pod);
  return out;
}

/**
 * The /32 and /128 addresses of these endpoints (sorted), from a whole read
 * of bpfproxy_ipcache and bpfproxy_ipcache6. The ipcache is an LPM trie, which the kernel reads key
 * by key: tens of ms at 20K prefixes, so PodAddresses does it only when
 * something may have changed.
 */
export function readEndpointAddresses(maps: PodNameMaps, ids: ReadonlySet<number>): Map<number, string[]> {
  const out = new Map<number, string[]>();
  for (const id of ids) out.set(id, []);
  for (const [k, v] of maps.ipcache.entries()) if (v.endpoint && k.prefixlen === 32) out.get(v.endpoint)?.push(k.addr);
  for (const [k, v] of maps.ipcache6.entries()) if (v.endpoint && k.prefixlen === 128) out.get(v.endpoint)?.push(k.addr);
  for (const a of out.values()) a.sort();
  return out;
}

export interface PodSelection {
  pods: readonly string[];
  namespaces: readonly string[];
}

const list = (xs: readonly string[], max = 5): string =>
  xs.length > max ? `${xs.slice(0, max).join(', ')} and ${xs.length - max} more` : xs.join(', ');

const NO_NAMES =
  'the pinned maps name no pod at all: the agent writes the names of this node’s pods only with --network-policy=on ' +
  '(it runs with --network-policy=off, or has not synced policy yet)';
const REMOTE = 'pods on other nodes have no name in this node’s maps: run the monitor on the pod’s node, or use --ip';

/**
 * The addresses of the selected pods, kept current by refresh(). Each
 * selector's state is said once on stderr (through `say`) when first read
 * and again whenever it changes: unknown, its addresses, gone.
 */
export class PodAddresses {
  /** every address of the selected pods; empty while none is known (then nothing matches) */
  addresses: ReadonlySet<string> = new Set();
  private readonly said = new Map<string, string>();
  private readFailed = false;
  /** addresses of the selected endpoints, as of the last whole ipcache read */
  private byEndpoint = new Map<number, string[]>();
  private sig: string | undefined;
  private lastFullRead = 0;
  /** whole ipcache reads so far (tests, figures) */
  fullReads = 0;

  constructor(
    private readonly maps: PodNameMaps,
    private readonly sel: PodSelection,
    private readonly say: (line: string) => void,
  ) {}

  /**
   * Read the names again; returns the (new) address set. A failed read keeps the last set.
   *
   * Each time: the endpoint names (one batch read) and one ipcache lookup per
   * address already resolved, to see it still belongs to its endpoint. The
   * whole ipcache is read only when the selected endpoints changed, one of
   * them has no address yet, an address moved or went, or FULL_READ_MS
   * passed since the last whole read.
   */
  refresh(now = Date.now()): ReadonlySet<string> {
    let names: Map<number, string>;
    try {
      names = readEndpointNames(this.maps);
      const ids = new Set<number>();
      for (const [id, pod] of names) if (this.selects(pod)) ids.add(id);
      const sig = [...ids]
        .sort((a, b) => a - b)
        .map((id) => `${id}=${names.get(id)}`)
        .join(',');
      if (
        sig !== this.sig ||
        now - this.lastFullRead >= FULL_READ_MS ||
        [...ids].some((id) => !this.byEndpoint.get(id)?.length) ||
        !this.stillThere()
      ) {
        this.byEndpoint = readEndpointAddresses(this.maps, ids);
        this.sig = sig;
        this.lastFullRead = now;
        this.fullReads++;
      }
      if (this.readFailed) this.say('reading the pod names works again');
      this.readFailed = false;
    } catch (e) {
      if (!this.readFailed) {
        this.say(
          `cannot read the pod names from ${this.maps.polEps.name} / ${this.maps.ipcache.name} / ${this.maps.ipcache6.name}: ${(e as Error).message}; ` +
            `--pod/--namespace keep matching the addresses last read, and reading is tried again every ${POD_REFRESH_MS / 1000}s`,
        );
      }
      this.readFailed = true;
      return this.addresses;
    }
    const known = new Map<string, string[]>();
    for (const [id, pod] of names) known.set(pod, this.byEndpoint.get(id) ?? []);
    const addresses = new Set<string>();
    for (const pod of this.sel.pods) {
      const a = known.get(pod);
      for (const x of a ?? []) addresses.add(x);
      this.report(`--pod ${pod}`, a ? a.join(', ') || '(no address yet)' : undefined, () => this.unknownPod(pod, known));
    }
    for (const ns of this.sel.namespaces) {
      const pods = [...known.keys()].filter((p) => p.startsWith(`${ns}/`)).sort();
      for (const p of pods) for (const x of known.get(p)!) addresses.add(x);
      this.report(
        `--namespace ${ns}`,
        pods.length
          ? `${pods.length} pod(s) on this node: ${list(
              pods.map((p) => `${p} (${known.get(p)!.join(', ') || 'no address yet'})`),
              10,
            )}`
          : undefined,
        () =>
          `no pod of namespace ${ns} in the pinned maps: ${known.size ? `they name ${known.size} pod(s) of this node; ${REMOTE}` : NO_NAMES}`,
      );
    }
    this.addresses = addresses;
    return addresses;
  }

  private selects(pod: string): boolean {
    return this.sel.pods.includes(pod) || this.sel.namespaces.some((ns) => pod.startsWith(`${ns}/`));
  }

  /** Whether every address read last still carries its endpoint in the ipcache (one lookup each). */
  private stillThere(): boolean {
    for (const [id, addrs] of this.byEndpoint) {
      for (const addr of addrs) {
        const found = addr.includes(':')
          ? this.maps.ipcache6.get({ prefixlen: 128, addr })
          : this.maps.ipcache.get({ prefixlen: 32, addr });
        if (found?.endpoint !== id) return false;
      }
    }
    return true;
  }

  private unknownPod(pod: string, known: Map<string, string[]>): string {
    if (!known.size) return `no pod ${pod}: ${NO_NAMES}`;
    const ns = pod.slice(0, pod.indexOf('/') + 1);
    const same = [...known.keys()].filter((p) => p.startsWith(ns)).sort();
    const names = same.length ? `pods of that namespace here: ${list(same)}` : `pods here: ${list([...known.keys()].sort())}`;
    return `no pod ${pod} among the ${known.size} pod(s) of this node in the pinned maps (${names}); ${REMOTE}`;
  }

  /** Say the selector's state when it changed; `now` undefined: unknown. */
  private report(what: string, now: string | undefined, unknown: () => string): void {
    const key = now ?? '';
    const before = this.said.get(what);
    if (before === key) return;
    const first = before === undefined;
    this.said.set(what, key);
    if (now === undefined) {
      this.say(
        first
          ? `${what}: ${unknown()}; nothing matches it until the agent names it (read again every ${POD_REFRESH_MS / 1000}s)`
          : `${what}: gone from the pinned maps (was ${before}); nothing matches it until it is back`,
      );
    } else {
      this.say(`${what}: ${first ? '' : 'now '}${now}`);
    }
  }
}
