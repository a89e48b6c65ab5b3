/**
 * The thin adapter to @kubernetes/client-node: how to reach the API server,
 * how each resource is listed and watched, and how Events are written.
 * Everything else (informers, conversion, policy) is ours.
 */
import { CoreV1Api, CustomObjectsApi, DiscoveryV1Api, KubeConfig, Watch } from '@kubernetes/client-node';
import { hostname } from 'node:os';
import type { KubeObject, ListPage, ResourceClient, WatchEvent, WatchHandle } from './informer.js';

/**
 * --kubeconfig, else in-cluster. In-cluster, KUBERNETES_SERVICE_HOST/PORT
 * come from the environment: the kubernetes-services-endpoint ConfigMap,
 * mounted as env (as Calico does), wins over the defaults kubelet injects,
 * so the agent reaches the API server without the `kubernetes` ClusterIP it
 * serves itself.
 */
export function loadKubeConfig(kubeconfig?: string): KubeConfig {
  const kc = new KubeConfig();
  if (kubeconfig) kc.loadFromFile(kubeconfig);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  if (!kc.getCurrentCluster()) throw new Error('no Kubernetes cluster configured (use --kubeconfig or run in a pod)');
  return kc;
}

type Lister = (o: {
  limit: number;
  _continue?: string;
}) => Promise<{ items: unknown[]; metadata?: { resourceVersion?: string; _continue?: string } }>;

/**
 * Objects as the API server sent them: client-node's typed lists turn
 * date-time fields (metadata.creationTimestamp...) into Date objects, where
 * watches and our converters see the wire's RFC 3339 strings.
 */
function wireForm(v: unknown): unknown {
  if (v instanceof Date) return v.toISOString().replace(/\.000Z$/, 'Z');
  if (Array.isArray(v)) return v.map(wireForm);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, wireForm(x)]));
  return v;
}

function resource(kc: KubeConfig, name: string, path: string, lister: Lister): ResourceClient {
  const watcher = new Watch(kc);
  return {
    name,
    async list({ limit, continue: cont }): Promise<ListPage> {
      const r = await lister({ limit, ...(cont ? { _continue: cont } : {}) });
      return {
        items: r.items.map(wireForm) as KubeObject[],
        resourceVersion: r.metadata?.resourceVersion ?? '',
        ...(r.metadata?._continue ? { continue: r.metadata._continue } : {}),
      };
    },
    async watch(resourceVersion, onEvent: (e: WatchEvent) => void, onDone): Promise<WatchHandle> {
      const ctrl = await watcher.watch(
        path,
        { resourceVersion, allowWatchBookmarks: true },
        (type: string, object: KubeObject) => onEvent({ type, object }),
        onDone,
      );
      return { stop: () => ctrl.abort() };
    },
  };
}

export const FELIX_GROUP = 'crd.projectcalico.org';
export const FELIX_VERSION = 'v1';
export const FELIX_PLURAL = 'felixconfigurations';

export interface KubeClients {
  services: ResourceClient;
  endpointSlices: ResourceClient;
  nodes: ResourceClient;
  felixConfigurations: ResourceClient;
  events: EventRecorder;
  server: string;
}

export function kubeClients(kc: KubeConfig, component = 'bpfproxy'): KubeClients {
  const core = kc.makeApiClient(CoreV1Api);
  const disc = kc.makeApiClient(DiscoveryV1Api);
  const custom = kc.makeApiClient(CustomObjectsApi);
  return {
    services: resource(kc, 'services', '/api/v1/services', (o) => core.listServiceForAllNamespaces(o)),
    endpointSlices: resource(kc, 'endpointslices', '/apis/discovery.k8s.io/v1/endpointslices', (o) =>
      disc.listEndpointSliceForAllNamespaces(o),
    ),
    nodes: resource(kc, 'nodes', '/api/v1/nodes', (o) => core.listNode(o)),
    felixConfigurations: resource(
      kc,
      'felixconfigurations',
      `/apis/${FELIX_GROUP}/${FELIX_VERSION}/${FELIX_PLURAL}`,
      (o) =>
        custom.listClusterCustomObject({ group: FELIX_GROUP, version: FELIX_VERSION, plural: FELIX_PLURAL, ...o }) as ReturnType<Lister>,
    ),
    events: new EventRecorder(core, component),
    server: kc.getCurrentCluster()!.server,
  };
}

export interface InvolvedObject {
  apiVersion: string;
  kind: string;
  name: string;
  namespace?: string;
}

/** Kubernetes Events, so `kubectl describe` shows what we refused and why. */
export class EventRecorder {
  private readonly host = hostname();

  constructor(
    private readonly core: CoreV1Api,
    private readonly component: string,
  ) {}

  async record(obj: InvolvedObject, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const namespace = obj.namespace ?? 'default';
    const now = new Date();
    await this.core.createNamespacedEvent({
      namespace,
      body: {
        metadata: { generateName: `${obj.name}.`, namespace },
        involvedObject: {
          apiVersion: obj.apiVersion,
          kind: obj.kind,
          name: obj.name,
          ...(obj.namespace ? { namespace: obj.namespace } : {}),
        },
        type,
        reason,
        message,
        source: { component: this.component, host: this.host },
        reportingComponent: this.component,
        reportingInstance: this.host,
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      },
    });
  }
}
