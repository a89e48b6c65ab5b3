/**
 * Kubernetes objects (from YAML manifests or the API) to domain types.
 * Validation is as fine-grained as it can be: a bad port drops that port, a
 * bad IP that IP, and only an object whose identity or shape is broken is
 * dropped whole. Every problem is reported with the object and the field.
 */
import { z } from 'zod';
import { isIPv4, isIPv6 } from '../net/ip.js';
import type { EndpointSlice, Protocol, Service, ServicePort, SliceEndpoint, TrafficPolicy } from '../model/types.js';

export interface Problem {
  /** "Service default/web" */
  object: string;
  /** "spec.ports[1].port" */
  field: string;
  message: string;
  /** false: the field was skipped and the rest of the object applied */
  fatal: boolean;
}

export interface Converted<T> {
  value?: T;
  problems: Problem[];
}

const Meta = z.looseObject({
  name: z.string().min(1),
  namespace: z.string().min(1).optional(),
  labels: z.record(z.string(), z.string()).optional(),
});

const PortNumber = z.number().int().min(1).max(65535);
const ServiceShape = z.looseObject({
  metadata: Meta,
  spec: z
    .looseObject({
      type: z.enum(['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName']).optional(),
      clusterIP: z.string().optional(),
      clusterIPs: z.array(z.string()).optional(),
      externalIPs: z.array(z.string()).optional(),
      ports: z.array(z.unknown()).optional(),
      selector: z.record(z.string(), z.string()).nullable().optional(),
      sessionAffinity: z.enum(['None', 'ClientIP']).optional(),
      sessionAffinityConfig: z
        .looseObject({
          clientIP: z.looseObject({ timeoutSeconds: z.number().int().min(1).max(86400).optional() }).optional(),
        })
        .optional(),
      externalTrafficPolicy: z.enum(['Cluster', 'Local']).optional(),
      healthCheckNodePort: PortNumber.optional(),
      internalTrafficPolicy: z.enum(['Cluster', 'Local']).optional(),
    })
    .optional(),
  status: z
    .looseObject({
      loadBalancer: z
        .looseObject({ ingress: z.array(z.looseObject({ ip: z.string().optional() })).optional() })
        .optional(),
    })
    .optional(),
});

const PortShape = z.looseObject({
  name: z.string().optional(),
  protocol: z.enum(['TCP', 'UDP', 'SCTP']).optional(),
  port: PortNumber,
  targetPort: z.union([PortNumber, z.string().min(1)]).optional(),
  nodePort: PortNumber.optional(),
});

const SliceShape = z.looseObject({
  metadata: Meta,
  addressType: z.enum(['IPv4', 'IPv6', 'FQDN']),
  ports: z
    .array(
      z.looseObject({
        name: z.string().optional(),
        port: PortNumber.optional(),
        protocol: z.enum(['TCP', 'UDP', 'SCTP']).optional(),
      }),
    )
    .nullable()
    .optional(),
  endpoints: z.array(z.unknown()).nullable().optional(),
});

const EndpointShape = z.looseObject({
  addresses: z.array(z.string()).min(1),
  conditions: z
    .looseObject({
      ready: z.boolean().nullable().optional(),
      serving: z.boolean().nullable().optional(),
      terminating: z.boolean().nullable().optional(),
    })
    .optional(),
  nodeName: z.string().optional(),
});

function pathOf(prefix: string, path: ReadonlyArray<PropertyKey>): string {
  let s = prefix;
  for (const p of path) s += typeof p === 'number' ? `[${p}]` : s ? `.${String(p)}` : String(p);
  return s;
}

function zodProblems(object: string, prefix: string, err: z.ZodError, fatal: boolean): Problem[] {
  return err.issues.map((i) => ({ object, field: pathOf(prefix, i.path) || '(object)', message: i.message, fatal }));
}

function objectName(kind: string, o: unknown): string {
  const m = (o as { metadata?: { name?: unknown; namespace?: unknown } })?.metadata;
  const ns = typeof m?.namespace === 'string' ? m.namespace : 'default';
  const name = typeof m?.name === 'string' ? m.name : '<unnamed>';
  return `${kind} ${ns}/${name}`;
}

/** A v1 Service. */
export function toService(o: unknown): Converted<Service> {
  const object = objectName('Service', o);
  const r = ServiceShape.safeParse(o);
  if (!r.success) return { problems: zodProblems(object, '', r.error, true) };
  const problems: Problem[] = [];
  const warn = (field: string, message: string) => problems.push({ object, field, message, fatal: false });
  const { metadata, spec = {}, status } = r.data;
  const type = spec.type ?? 'ClusterIP';

  const clusterIPs: string[] = [];
  const ipsField = spec.clusterIPs ? 'spec.clusterIPs' : 'spec.clusterIP';
  const rawIPs = spec.clusterIPs ?? (spec.clusterIP ? [spec.clusterIP] : []);
  rawIPs.forEach((ip, i) => {
    if (ip === 'None' || ip === '') return;
    if (isIPv4(ip)) clusterIPs.push(ip);
    else if (!isIPv6(ip)) warn(spec.clusterIPs ? `${ipsField}[${i}]` : ipsField, `"${ip}" is not an IP address`);
  });
  const ipList = (list: string[] | undefined, field: string): string[] => {
    const out: string[] = [];
    (list ?? []).forEach((ip, i) => {
      if (isIPv4(ip)) out.push(ip);
      else if (!isIPv6(ip)) warn(`${field}[${i}]`, `"${ip}" is not an IP address`);
    });
    return out;
  };
  const externalIPs = ipList(spec.externalIPs, 'spec.externalIPs');
  const lbIPs: string[] = [];
  (status?.loadBalancer?.ingress ?? []).forEach((ing, i) => {
    if (ing.ip === undefined) return; // hostname-only ingress (e.g. AWS ELB): nothing to match on
    if (isIPv4(ing.ip)) lbIPs.push(ing.ip);
    else if (!isIPv6(ing.ip)) warn(`status.loadBalancer.ingress[${i}].ip`, `"${ing.ip}" is not an IP address`);
  });

  const ports: ServicePort[] = [];
  const seen = new Map<string, number>();
  const names = new Map<string, number>();
  (spec.ports ?? []).forEach((raw, i) => {
    const pr = PortShape.safeParse(raw);
    if (!pr.success) {
      for (const p of zodProblems(object, `spec.ports[${i}]`, pr.error, false)) {
        problems.push({ ...p, message: `${p.message}; port skipped` });
      }
      return;
    }
    const p = pr.data;
    const protocol = p.protocol ?? 'TCP';
    if (protocol === 'SCTP') {
      warn(`spec.ports[${i}].protocol`, 'SCTP is not supported by bpfproxy yet; port skipped');
      return;
    }
    const key = `${p.port}/${protocol}`;
    if (seen.has(key)) {
      warn(`spec.ports[${i}].port`, `duplicate of spec.ports[${seen.get(key)}] (${key}); port skipped`);
      return;
    }
    const name = p.name ?? '';
    if (names.has(name)) {
      warn(`spec.ports[${i}].name`, `duplicate port name "${name}" (also spec.ports[${names.get(name)}]); port skipped`);
      return;
    }
    if (p.nodePort !== undefined && type !== 'NodePort' && type !== 'LoadBalancer') {
      warn(`spec.ports[${i}].nodePort`, `ignored for type ${type}`);
    }
    seen.set(key, i);
    names.set(name, i);
    ports.push({
      name,
      protocol: protocol as Protocol,
      port: p.port,
      targetPort: p.targetPort ?? p.port,
      ...(p.nodePort !== undefined && (type === 'NodePort' || type === 'LoadBalancer') ? { nodePort: p.nodePort } : {}),
    });
  });

  const hasSelector = !!spec.selector && Object.keys(spec.selector).length > 0;
  const affinity = spec.sessionAffinity === 'ClientIP' ? (spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? 10800) : 0;
  return {
    value: {
      namespace: metadata.namespace ?? 'default',
      name: metadata.name,
      type,
      clusterIPs: type === 'ExternalName' ? [] : clusterIPs,
      externalIPs,
      loadBalancerIPs: lbIPs,
      ports,
      affinityTimeout: affinity,
      externalTrafficPolicy: (spec.externalTrafficPolicy ?? 'Cluster') as TrafficPolicy,
      internalTrafficPolicy: (spec.internalTrafficPolicy ?? 'Cluster') as TrafficPolicy,
      hasSelector,
      ...(spec.healthCheckNodePort && type === 'LoadBalancer' && spec.externalTrafficPolicy === 'Local'
        ? { healthCheckNodePort: spec.healthCheckNodePort } : {}),
    },
    problems,
  };
}

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

/** A discovery.k8s.io/v1 EndpointSlice. IPv6 and FQDN slices yield nothing (yet). */
export function toEndpointSlice(o: unknown): Converted<EndpointSlice> {
  const object = objectName('EndpointSlice', o);
  const r = SliceShape.safeParse(o);
  if (!r.success) return { problems: zodProblems(object, '', r.error, true) };
  const problems: Problem[] = [];
  const { metadata } = r.data;
  const serviceName = metadata.labels?.[SERVICE_NAME_LABEL];
  if (!serviceName) {
    return {
      problems: [{ object, field: `metadata.labels["${SERVICE_NAME_LABEL}"]`, message: 'missing: the slice belongs to no service', fatal: true }],
    };
  }
  const base = { namespace: metadata.namespace ?? 'default', name: metadata.name, serviceName };
  if (r.data.addressType !== 'IPv4') return { value: { ...base, ports: [], endpoints: [] }, problems };

  const ports: EndpointSlice['ports'] = [];
  (r.data.ports ?? []).forEach((p, i) => {
    if (p.port === undefined) {
      problems.push({ object, field: `ports[${i}].port`, message: 'missing; port skipped', fatal: false });
      return;
    }
    if ((p.protocol ?? 'TCP') === 'SCTP') return;
    ports.push({ name: p.name ?? '', port: p.port, protocol: (p.protocol ?? 'TCP') as Protocol });
  });
  const endpoints: SliceEndpoint[] = [];
  (r.data.endpoints ?? []).forEach((raw, i) => {
    const er = EndpointShape.safeParse(raw);
    if (!er.success) {
      for (const p of zodProblems(object, `endpoints[${i}]`, er.error, false)) {
        problems.push({ ...p, message: `${p.message}; endpoint skipped` });
      }
      return;
    }
    const addresses = er.data.addresses.filter((a, j) => {
      if (isIPv4(a)) return true;
      problems.push({ object, field: `endpoints[${i}].addresses[${j}]`, message: `"${a}" is not an IPv4 address; skipped`, fatal: false });
      return false;
    });
    if (addresses.length === 0) return;
    const c = er.data.conditions ?? {};
    const ready = c.ready ?? true;
    endpoints.push({
      addresses,
      ready,
      serving: c.serving ?? ready,
      terminating: c.terminating ?? false,
      ...(er.data.nodeName ? { nodeName: er.data.nodeName } : {}),
    });
  });
  return { value: { ...base, ports, endpoints }, problems };
}
