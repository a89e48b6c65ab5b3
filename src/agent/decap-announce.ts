/**
 * Tells the cluster whether this node's bpfproxy decapsulates the tunnel
 * (bpfExternalServiceMode Tunnel/DSR): the DECAP_ANNOTATION on its own Node
 * object (src/model/tunnel.ts), set while the programs are attached, removed
 * when the agent hands the dataplane back (bpfEnabled false). Other nodes
 * tunnel only to nodes that carry it and SNAT to the rest, so nodes running
 * an older bpfproxy, or kube-proxy, keep being reached during a rollout.
 * A failed write is retried every RETRY_MS until it succeeds or is
 * superseded; the last wish wins.
 */
import { release } from 'node:os';
import type { Logger } from '../log.js';
import { DECAP_ANNOTATION, DECAP_FORMAT, DECAP_FORMAT6 } from '../model/tunnel.js';

/**
 * Whether this kernel decapsulates an IPv6 packet from IPv4 VXLAN in BPF
 * (bpf_skb_adjust_room's BPF_F_ADJ_ROOM_DECAP_L3_IPV6, 6.3): read from the
 * release. A distribution kernel with the flag backported reads as without
 * it: its node only misses IPv6 tunnelling (other nodes SNAT IPv6 flows to
 * its endpoints), never the reverse.
 */
export function kernelDecaps6(rel = release()): boolean {
  const m = /^(\d+)\.(\d+)/.exec(rel);
  if (!m) return false;
  const [maj, min] = [Number(m[1]), Number(m[2])];
  return maj > 6 || (maj === 6 && min >= 3);
}

/** The annotation's value: our format, and the IPv6 one where the kernel can. */
export const decapValue = (ipv6 = kernelDecaps6()): string => (ipv6 ? `${DECAP_FORMAT},${DECAP_FORMAT6}` : DECAP_FORMAT);

export const DECAP_RETRY_MS = 30_000;

export type AnnotateNode = (name: string, annotations: Record<string, string | null>) => Promise<void>;

export class DecapAnnouncer {
  private want: boolean | undefined;
  private said: boolean | undefined;
  private running = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly annotate: AnnotateNode,
    private readonly node: string,
    private readonly log: Logger,
    private readonly retryMs = DECAP_RETRY_MS,
    private readonly value = decapValue(),
  ) {}

  /** Say whether this node decapsulates (true: its programs are attached). */
  set(on: boolean): void {
    this.want = on;
    void this.run();
  }

  /** Resolves once what was last set is written (tests). */
  async settled(): Promise<void> {
    while (!this.stopped && (this.running || this.want !== this.said)) await new Promise((r) => setTimeout(r, 20));
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  private async run(): Promise<void> {
    if (this.running || this.stopped) return;
    this.running = true;
    try {
      while (!this.stopped && this.want !== undefined && this.want !== this.said) {
        const on = this.want;
        try {
          await this.annotate(this.node, { [DECAP_ANNOTATION]: on ? this.value : null });
          this.said = on;
          this.log.info(
            { node: this.node, annotation: DECAP_ANNOTATION, value: on ? this.value : null },
            on
              ? `Node ${this.node} annotated ${DECAP_ANNOTATION}=${this.value}: other nodes may tunnel external flows to its endpoints` +
                  (this.value.includes(DECAP_FORMAT6) ? ' (IPv6 ones included)' : ` (IPv4 only: kernel ${release()} is older than 6.3)`)
              : `annotation ${DECAP_ANNOTATION} removed from Node ${this.node}: other nodes SNAT external flows to its endpoints`,
          );
        } catch (e) {
          this.log.warn(
            { node: this.node, annotation: DECAP_ANNOTATION, err: (e as Error).message },
            `could not ${on ? 'set' : 'remove'} annotation ${DECAP_ANNOTATION} on Node ${this.node} (can the agent patch nodes? see manifests/rbac.yaml): ` +
              `${on ? 'other nodes keep SNATing' : 'other nodes may still tunnel'} external flows to endpoints here; retrying in ${this.retryMs / 1000} s`,
          );
          this.timer = setTimeout(() => void this.run(), this.retryMs);
          this.timer.unref();
          return;
        }
      }
    } finally {
      this.running = false;
    }
  }
}
