/**
 * The node's primary IPv4 address when no Node object names it (manifests
 * source, or the Node not seen yet): the address of the interface the
 * default route leaves by, as a host's "main" address is commonly taken.
 * kube-proxy itself falls back to no NodePort address at all there; we say
 * which one we took (agent/runtime.ts logs it).
 */
import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';

/**
 * The interface of the default route in /proc/net/route text (the main
 * table), the lowest metric winning; undefined when there is none.
 */
export function defaultRouteIface(procNetRoute: string): string | undefined {
  let best: { iface: string; metric: number } | undefined;
  for (const line of procNetRoute.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const [iface, dest, , flags, , , metric, mask] = f;
    const up = (parseInt(flags!, 16) & 0x1) !== 0; // RTF_UP
    if (dest !== '00000000' || mask !== '00000000' || !up) continue;
    const m = Number(metric);
    if (!best || m < best.metric) best = { iface: iface!, metric: m };
  }
  return best?.iface;
}

/** The first IPv4 address of the default route's interface, and the interface; undefined when there is no default route. */
export function defaultRouteAddress(
  read: () => string = () => readFileSync('/proc/net/route', 'utf8'),
): { address: string; iface: string } | undefined {
  let text: string;
  try {
    text = read();
  } catch {
    return undefined;
  }
  const iface = defaultRouteIface(text);
  if (!iface) return undefined;
  const a = (networkInterfaces()[iface] ?? []).find((x) => x.family === 'IPv4' && !x.internal);
  return a ? { address: a.address, iface } : undefined;
}
