/**
 * meta.k8s.io/v1 Table output, what `kubectl get` asks for
 * (Accept: application/json;as=Table;v=v1;g=meta.k8s.io): column
 * definitions and one row of cells per object, computed by the server as
 * the real one does (ages included).
 */

import { text } from './util.js';

type Obj = Record<string, unknown>;

export interface Column {
  name: string;
  type: 'string' | 'integer' | 'number' | 'boolean' | 'date';
  format?: string;
  description: string;
  priority: number;
}

export interface Printer {
  columns: Column[];
  cells(obj: Obj, now: number): unknown[];
}

/** k8s.io/apimachinery/pkg/util/duration.HumanDuration */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < -1) return '<invalid>';
  if (seconds < 0) return '0s';
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) return seconds % 60 === 0 ? `${minutes}m` : `${minutes}m${seconds % 60}s`;
  if (minutes < 180) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 8) return minutes % 60 === 0 ? `${hours}h` : `${hours}h${minutes % 60}m`;
  if (hours < 48) return `${hours}h`;
  if (hours < 24 * 8) return hours % 24 === 0 ? `${Math.floor(hours / 24)}d` : `${Math.floor(hours / 24)}d${hours % 24}h`;
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24)}d`;
  if (hours < 24 * 365 * 8) {
    const dy = Math.floor(hours / 24) % 365;
    return dy === 0 ? `${Math.floor(hours / 24 / 365)}y` : `${Math.floor(hours / 24 / 365)}y${dy}d`;
  }
  return `${Math.floor(hours / 24 / 365)}y`;
}

export const get = (o: unknown, ...path: string[]): unknown => {
  let cur = o;
  for (const p of path) cur = cur && typeof cur === 'object' ? (cur as Obj)[p] : undefined;
  return cur;
};
const str = (v: unknown, dflt = '<none>'): string => (v === undefined || v === null || v === '' ? dflt : text(v));
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

export function age(obj: Obj, now: number): string {
  const ts = get(obj, 'metadata', 'creationTimestamp');
  return typeof ts === 'string' ? humanDuration(now - Date.parse(ts)) : '<unknown>';
}
const since = (ts: unknown, now: number): string => (typeof ts === 'string' && ts ? humanDuration(now - Date.parse(ts)) : '<unknown>');

const NAME: Column = { name: 'Name', type: 'string', format: 'name', description: 'Name must be unique within a namespace.', priority: 0 };
const AGE: Column = {
  name: 'Age',
  type: 'string',
  description: 'CreationTimestamp is a timestamp representing the server time when this object was created.',
  priority: 0,
};
const col = (name: string, description: string, priority = 0, type: Column['type'] = 'string'): Column => ({
  name,
  type,
  description,
  priority,
});
const name = (o: Obj): unknown => get(o, 'metadata', 'name');
const selectorText = (m: unknown): string => {
  const e = m && typeof m === 'object' ? Object.entries(m as Obj) : [];
  return e.length ? e.map(([k, v]) => `${k}=${text(v)}`).join(',') : '<none>';
};

export const defaultPrinter: Printer = { columns: [NAME, AGE], cells: (o, now) => [name(o), age(o, now)] };

export const createdAtPrinter: Printer = {
  columns: [
    NAME,
    {
      name: 'Created At',
      type: 'date',
      description: 'CreationTimestamp is a timestamp representing the server time when this object was created.',
      priority: 0,
    },
  ],
  cells: (o) => [name(o), text(get(o, 'metadata', 'creationTimestamp') ?? '')],
};

export const namespacePrinter: Printer = {
  columns: [NAME, col('Status', 'The status of the namespace'), AGE],
  cells: (o, now) => [name(o), str(get(o, 'status', 'phase'), ''), age(o, now)],
};

function serviceExternalIP(o: Obj): string {
  const type = get(o, 'spec', 'type') ?? 'ClusterIP';
  const externalIPs = arr(get(o, 'spec', 'externalIPs')).map(String);
  if (type === 'ExternalName') return str(get(o, 'spec', 'externalName'));
  if (type === 'LoadBalancer') {
    const lb = arr(get(o, 'status', 'loadBalancer', 'ingress')).map((i) => text(get(i, 'ip') ?? get(i, 'hostname') ?? ''));
    const all = [...lb, ...externalIPs].filter(Boolean);
    return all.length ? all.join(',') : '<pending>';
  }
  return externalIPs.length ? externalIPs.join(',') : '<none>';
}

export const servicePrinter: Printer = {
  columns: [
    NAME,
    col('Type', 'The type of the service.'),
    col('Cluster-IP', 'The cluster IP of the service.'),
    col('External-IP', 'The external IP of the service.'),
    col('Port(s)', 'The ports of the service.'),
    AGE,
    col('Selector', 'The selector of the service.', 1),
  ],
  cells: (o, now) => {
    const ports = arr(get(o, 'spec', 'ports')).map(
      (p) => `${text(get(p, 'port'))}${get(p, 'nodePort') ? `:${text(get(p, 'nodePort'))}` : ''}/${text(get(p, 'protocol') ?? 'TCP')}`,
    );
    return [
      name(o),
      str(get(o, 'spec', 'type'), 'ClusterIP'),
      str(get(o, 'spec', 'clusterIP')),
      serviceExternalIP(o),
      ports.length ? ports.join(',') : '<none>',
      age(o, now),
      selectorText(get(o, 'spec', 'selector')),
    ];
  },
};

export const endpointSlicePrinter: Printer = {
  columns: [
    NAME,
    col('AddressType', 'The address type of the endpoint slice.'),
    col('Ports', 'The ports of the endpoint slice.'),
    col('Endpoints', 'The endpoints of the endpoint slice.'),
    AGE,
  ],
  cells: (o, now) => {
    const ports = arr(get(o, 'ports')).map((p) => (get(p, 'port') === undefined ? '<unset>' : text(get(p, 'port'))));
    const addrs = arr(get(o, 'endpoints')).flatMap((e) => arr(get(e, 'addresses')).map(String));
    const eps =
      addrs.length === 0 ? '<none>' : addrs.length > 3 ? `${addrs.slice(0, 3).join(',')} + ${addrs.length - 3} more...` : addrs.join(',');
    return [name(o), str(get(o, 'addressType')), ports.length ? ports.join(',') : '<unset>', eps, age(o, now)];
  },
};

export const nodePrinter: Printer = {
  columns: [
    NAME,
    col('Status', 'The status of the node'),
    col('Roles', 'The roles of the node'),
    AGE,
    col('Version', 'Kubelet Version reported by the node.'),
    col('Internal-IP', 'List of internal IPs.', 1),
    col('External-IP', 'List of external IPs.', 1),
    col('OS-Image', 'OS Image reported by the node.', 1),
    col('Kernel-Version', 'Kernel Version reported by the node.', 1),
    col('Container-Runtime', 'Container Runtime Version reported by the node.', 1),
  ],
  cells: (o, now) => {
    const ready = arr(get(o, 'status', 'conditions')).find((c) => get(c, 'type') === 'Ready');
    let status = ready
      ? get(ready, 'status') === 'True'
        ? 'Ready'
        : get(ready, 'status') === 'False'
          ? 'NotReady'
          : 'Unknown'
      : 'Unknown';
    if (get(o, 'spec', 'unschedulable') === true) status += ',SchedulingDisabled';
    const labels = (get(o, 'metadata', 'labels') ?? {}) as Obj;
    const roles = Object.keys(labels)
      .filter((k) => k.startsWith('node-role.kubernetes.io/'))
      .map((k) => k.slice('node-role.kubernetes.io/'.length));
    const addr = (t: string): string =>
      str(
        arr(get(o, 'status', 'addresses'))
          .filter((a) => get(a, 'type') === t)
          .map((a) => text(get(a, 'address')))
          .join(','),
      );
    const info = (k: string): string => str(get(o, 'status', 'nodeInfo', k), '<unknown>');
    return [
      name(o),
      status,
      roles.length ? roles.sort().join(',') : '<none>',
      age(o, now),
      str(get(o, 'status', 'nodeInfo', 'kubeletVersion'), ''),
      addr('InternalIP'),
      addr('ExternalIP'),
      info('osImage'),
      info('kernelVersion'),
      info('containerRuntimeVersion'),
    ];
  },
};

export const podPrinter: Printer = {
  columns: [
    NAME,
    col('Ready', 'The aggregate readiness state of this pod for accepting traffic.'),
    col('Status', 'The aggregate status of the containers in this pod.'),
    col(
      'Restarts',
      'The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.',
    ),
    AGE,
    col('IP', 'IP address allocated to the pod. Routable at least within the cluster.', 1),
    col('Node', 'Name of the node where the pod is running.', 1),
  ],
  cells: (o, now) => {
    const containers = arr(get(o, 'spec', 'containers'));
    const statuses = arr(get(o, 'status', 'containerStatuses'));
    const ready = statuses.filter((s) => get(s, 'ready') === true).length;
    const restarts = statuses.reduce<number>((n, s) => n + Number(get(s, 'restartCount') ?? 0), 0);
    return [
      name(o),
      `${ready}/${containers.length}`,
      str(get(o, 'status', 'reason') ?? get(o, 'status', 'phase'), 'Unknown'),
      restarts,
      age(o, now),
      str(get(o, 'status', 'podIP')),
      str(get(o, 'spec', 'nodeName')),
    ];
  },
};

/** Events in their core/v1 form (events.k8s.io/v1 events are printed after conversion). */
export const eventPrinter: Printer = {
  columns: [
    col('Last Seen', 'Time when this Event was last observed.'),
    col('Type', 'Type of this event (Normal, Warning), new types could be added in the future.'),
    col(
      'Reason',
      "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    col('Object', 'The object that this event is about.'),
    col('Subobject', 'The subobject that this event is about.', 1),
    col('Source', 'The component reporting this event.', 1),
    col('Message', 'A human-readable description of the status of this operation.'),
    col('First Seen', 'The time at which the event was first recorded.', 1),
    col('Count', 'The number of times this event has occurred.', 1),
    { ...NAME, priority: 1 },
  ],
  cells: (o, now) => {
    const last = get(o, 'series', 'lastObservedTime') ?? get(o, 'lastTimestamp') ?? get(o, 'eventTime');
    const first = get(o, 'firstTimestamp') ?? get(o, 'eventTime');
    const kind = text(get(o, 'involvedObject', 'kind') ?? '').toLowerCase();
    const source = [get(o, 'source', 'component') ?? get(o, 'reportingComponent'), get(o, 'source', 'host') ?? get(o, 'reportingInstance')]
      .filter(Boolean)
      .join(', ');
    return [
      since(last, now),
      str(get(o, 'type'), ''),
      str(get(o, 'reason'), ''),
      `${kind}/${text(get(o, 'involvedObject', 'name') ?? '')}`,
      str(get(o, 'involvedObject', 'fieldPath'), ''),
      source,
      str(get(o, 'message'), ''),
      since(first, now),
      Number(get(o, 'count') ?? get(o, 'series', 'count') ?? 1),
      name(o),
    ];
  },
};

export const daemonSetPrinter: Printer = {
  columns: [
    NAME,
    col('Desired', 'The desired number of pods.', 0, 'integer'),
    col('Current', 'The current number of pods.', 0, 'integer'),
    col('Ready', 'The number of pods ready.', 0, 'integer'),
    col('Up-to-date', 'The number of pods updated.', 0, 'integer'),
    col('Available', 'The number of pods available.', 0, 'integer'),
    col('Node Selector', 'The node selector of the daemon set.'),
    AGE,
    col('Containers', 'Names of each container in the template.', 1),
    col('Images', 'Images referenced by each container in the template.', 1),
    col('Selector', 'Label selector for pods.', 1),
  ],
  cells: (o, now) => {
    const n = (k: string): number => Number(get(o, 'status', k) ?? 0);
    const containers = arr(get(o, 'spec', 'template', 'spec', 'containers'));
    const sel = get(o, 'spec', 'selector', 'matchLabels');
    return [
      name(o),
      n('desiredNumberScheduled'),
      n('currentNumberScheduled'),
      n('numberReady'),
      n('updatedNumberScheduled'),
      n('numberAvailable'),
      selectorText(get(o, 'spec', 'template', 'spec', 'nodeSelector')),
      age(o, now),
      containers.map((c) => text(get(c, 'name'))).join(','),
      containers.map((c) => text(get(c, 'image'))).join(','),
      selectorText(sel),
    ];
  },
};

export const configMapPrinter: Printer = {
  columns: [NAME, col('Data', 'Data contains the configuration data.', 0, 'integer'), AGE],
  cells: (o, now) => [name(o), Object.keys(get(o, 'data') ?? {}).length + Object.keys(get(o, 'binaryData') ?? {}).length, age(o, now)],
};

export const serviceAccountPrinter: Printer = {
  columns: [
    NAME,
    col(
      'Secrets',
      'Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.',
      0,
      'integer',
    ),
    AGE,
  ],
  cells: (o, now) => [name(o), arr(get(o, 'secrets')).length, age(o, now)],
};

export const clusterRoleBindingPrinter: Printer = {
  columns: [
    NAME,
    col('Role', 'RoleRef is the reference to the role.'),
    AGE,
    col('Users', 'Users in the binding.', 1),
    col('Groups', 'Groups in the binding.', 1),
    col('ServiceAccounts', 'ServiceAccounts in the binding.', 1),
  ],
  cells: (o, now) => {
    const subjects = arr(get(o, 'subjects'));
    const of = (k: string): string =>
      subjects
        .filter((s) => get(s, 'kind') === k)
        .map((s) => (k === 'ServiceAccount' ? `${text(get(s, 'namespace'))}/${text(get(s, 'name'))}` : text(get(s, 'name'))))
        .join(', ');
    return [
      name(o),
      `${text(get(o, 'roleRef', 'kind'))}/${text(get(o, 'roleRef', 'name'))}`,
      age(o, now),
      of('User'),
      of('Group'),
      of('ServiceAccount'),
    ];
  },
};

/** A CRD's additionalPrinterColumns (simple JSONPath `.a.b`), then Age, as the real server builds them. */
export function crdPrinter(
  columns: Array<{ name: string; type?: string; jsonPath: string; description?: string; priority?: number }>,
): Printer {
  if (!columns.length) return defaultPrinter;
  const defs: Column[] = [
    NAME,
    ...columns.map((c) => ({
      name: c.name,
      type: (['integer', 'number', 'boolean', 'date'].includes(c.type ?? '') ? c.type : 'string') as Column['type'],
      description: c.description ?? '',
      priority: c.priority ?? 0,
    })),
  ];
  const hasAge = columns.some((c) => c.jsonPath === '.metadata.creationTimestamp');
  return {
    columns: hasAge ? defs : [...defs, AGE],
    cells: (o, now) => {
      const cells: unknown[] = [name(o)];
      for (const c of columns) {
        const v = get(o, ...c.jsonPath.replace(/^\./, '').split('.'));
        cells.push(c.type === 'date' ? since(v, now) : v === undefined ? null : typeof v === 'object' ? JSON.stringify(v) : v);
      }
      if (!hasAge) cells.push(age(o, now));
      return cells;
    },
  };
}

export type IncludeObject = 'None' | 'Metadata' | 'Object';

/** One Table over `objects` (each given as served and as printed). */
export function table(
  printer: Printer,
  rows: Array<{ served: Obj; printed: Obj }>,
  listMeta: Obj,
  include: IncludeObject,
  noHeaders = false,
): Obj {
  const now = Date.now();
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: listMeta,
    ...(noHeaders ? {} : { columnDefinitions: printer.columns }),
    rows: rows.map(({ served, printed }) => ({
      cells: printer.cells(printed, now),
      ...(include === 'None'
        ? {}
        : {
            object:
              include === 'Object' ? served : { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: served.metadata },
          }),
    })),
  };
}
