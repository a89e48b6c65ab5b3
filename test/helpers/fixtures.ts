/** Frontend fixtures for datapath tests. */
import type { Backend, Frontend, FrontendKind, Protocol } from '../../src/model/types.js';

export const be = (ip: string, port: number, local = true): Backend => ({ ip, port, local });

export function fe(
  kind: FrontendKind,
  ip: string,
  port: number,
  protocol: Protocol,
  backends: Backend[],
  opts: Partial<Pick<Frontend, 'externalLocal' | 'internalLocal' | 'affinityTimeout' | 'servicePort'>> = {},
): Frontend {
  return {
    kind,
    ip,
    port,
    protocol,
    servicePort: opts.servicePort ?? `test/svc-${ip}-${port}:p/${protocol}`,
    externalLocal: opts.externalLocal ?? false,
    internalLocal: opts.internalLocal ?? false,
    affinityTimeout: opts.affinityTimeout ?? 0,
    clusterBackends: backends,
    localBackends: backends.filter((b) => b.local),
  };
}
