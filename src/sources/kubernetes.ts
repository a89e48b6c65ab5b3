/**
 * The Kubernetes source: one informer per kind (Services, EndpointSlices,
 * Nodes, FelixConfigurations, and for NetworkPolicy Pods, Namespaces and
 * NetworkPolicies) delivering into the same sink as the manifest
 * directory. Each object is converted as it arrives and only its domain
 * object is delivered; nothing keeps the object as the API sent it (the
 * informers keep a resourceVersion per key). Problems with an object are
 * logged and, for objects in the cluster, written as Events on that object.
 */
import type { Clock } from '../clock.js';
import { DEFAULT_SERVICE_POLICY } from '../config/services.js';
import type { KubeClients } from '../k8s/client.js';
import { Informer, type KubeObject, type ResourceClient } from '../k8s/informer.js';
import type { Logger } from '../log.js';
import type { ConvertPolicy } from './convert.js';
import { formatProblem } from './manifests.js';
import { convertObject, deliver, POLICY_KINDS, withdraw, type Kind, type ObjectSink } from './sink.js';

const API: Record<Kind, string> = {
  Service: 'v1',
  EndpointSlice: 'discovery.k8s.io/v1',
  Node: 'v1',
  FelixConfiguration: 'crd.projectcalico.org/v1',
  Pod: 'v1',
  Namespace: 'v1',
  NetworkPolicy: 'networking.k8s.io/v1',
};

export class KubeSource {
  readonly informers: Record<Kind, Informer>;
  /** the problems last reported for each object that has any */
  private readonly reported = new Map<string, string>();

  constructor(
    clients: KubeClients,
    private readonly sink: ObjectSink,
    private readonly log: Logger,
    clock: Clock,
    /** what a Service may claim (node-port range, external IPs, fan-out) */
    private readonly policy: ConvertPolicy = DEFAULT_SERVICE_POLICY,
  ) {
    const mk = (kind: Kind, rc: ResourceClient) =>
      new Informer(
        rc,
        {
          upsert: (key, obj) => this.deliver(kind, key, obj),
          remove: (key) => this.deliver(kind, key, undefined),
        },
        log,
        clock,
      );
    this.informers = {
      Service: mk('Service', clients.services),
      EndpointSlice: mk('EndpointSlice', clients.endpointSlices),
      Node: mk('Node', clients.nodes),
      FelixConfiguration: mk('FelixConfiguration', clients.felixConfigurations),
      Pod: mk('Pod', clients.pods),
      Namespace: mk('Namespace', clients.namespaces),
      NetworkPolicy: mk('NetworkPolicy', clients.networkPolicies),
    };
    this.events = clients.events;
  }

  private readonly events: KubeClients['events'];

  start(): void {
    for (const i of Object.values(this.informers)) i.start();
  }

  stop(): void {
    for (const i of Object.values(this.informers)) i.stop();
  }

  /** Pods, Namespaces and NetworkPolicies all listed: the first policy sync may run. */
  async policySynced(): Promise<void> {
    await Promise.all(POLICY_KINDS.map((k) => this.informers[k].waitSynced()));
  }

  /** Services and EndpointSlices both listed: the first sync may run. */
  async servicesSynced(): Promise<void> {
    await Promise.all([this.informers.Service.waitSynced(), this.informers.EndpointSlice.waitSynced()]);
  }

  private deliver(kind: Kind, key: string, obj: KubeObject | undefined): void {
    const where = `${kind} ${key}`;
    if (!obj) {
      withdraw(this.sink, kind, key, where);
      this.reported.delete(where);
      return;
    }
    // A broken object is not delivered: the last good version stays in force.
    const { object, problems } = convertObject(kind, key, obj, this.policy);
    if (object) deliver(this.sink, key, object, where);
    const text = problems.map((p) => formatProblem(p, 'API')).join('\n');
    if (!text) {
      this.reported.delete(where);
      return;
    }
    if (this.reported.get(where) === text) return;
    this.reported.set(where, text);
    for (const p of problems) {
      const msg = `${p.object} field ${p.field}: ${p.message}${p.fatal ? '; object skipped' : ''}`;
      if (p.fatal) this.log.error({ object: p.object, field: p.field }, msg);
      else this.log.warn({ object: p.object, field: p.field }, msg);
    }
    const [ns, name] = key.includes('/') ? (key.split('/') as [string, string]) : [undefined, key];
    this.events
      .record(
        { apiVersion: API[kind], kind, name, ...(ns ? { namespace: ns } : {}) },
        'Warning',
        'BpfproxyInvalidField',
        problems
          .map((p) => `field ${p.field}: ${p.message}`)
          .join('; ')
          .slice(0, 1000),
      )
      .catch((e: Error) => this.log.debug(`could not write an Event for ${where}: ${e.message}`));
  }
}
