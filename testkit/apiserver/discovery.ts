/**
 * What clients read before they act: /version, legacy discovery (/api,
 * /apis, /apis/<group>, /api/v1, /apis/<group>/<version>), aggregated
 * discovery (apidiscovery.k8s.io/v2, what kubectl 1.27+ asks for first) and
 * the OpenAPI v3 documents (/openapi/v3, /openapi/v3/<path>) from which
 * kubectl learns that PATCH takes fieldValidation (so `kubectl apply`
 * validates on the server) and how lists merge.
 */
import { createHash } from 'node:crypto';
import { apiVersionOf, builtinSchemas, type Obj, type Registry, type ResourceType } from './registry.js';
import { toOpenAPIV3, type Schema } from './schema.js';

export const SERVER_VERSION = {
  major: '1',
  minor: '32',
  gitVersion: 'v1.32.0+bpfproxy-test',
  gitCommit: '0000000000000000000000000000000000000000',
  gitTreeState: 'clean',
  buildDate: '2025-01-01T00:00:00Z',
  goVersion: 'go1.23.0',
  compiler: 'gc',
  platform: 'linux/amd64',
};

export const AGGREGATED_V2 = 'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList';

const VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];
const subVerbs = (sub: string): string[] => (sub === 'log' ? ['get'] : ['get', 'patch', 'update']);

/** The group's versions, newest first as the server prefers them. */
function versionsOf(registry: Registry, group: string): string[] {
  return (registry.groups().get(group) ?? []).slice().sort().reverse();
}

const sortedGroups = (registry: Registry): string[] => [...registry.groups().keys()].filter((g) => g !== '').sort();

export function apiVersions(serverAddress: string): Obj {
  return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }] };
}

function apiGroupOf(registry: Registry, group: string): Obj {
  const versions = versionsOf(registry, group).map((v) => ({ groupVersion: `${group}/${v}`, version: v }));
  return { name: group, versions, preferredVersion: versions[0] };
}

export function apiGroup(registry: Registry, group: string): Obj | undefined {
  if (!registry.groups().has(group) || group === '') return undefined;
  return { kind: 'APIGroup', apiVersion: 'v1', ...apiGroupOf(registry, group) };
}

export function apiGroupList(registry: Registry): Obj {
  return { kind: 'APIGroupList', apiVersion: 'v1', groups: sortedGroups(registry).map((g) => apiGroupOf(registry, g)) };
}

const resourcesOf = (registry: Registry, group: string, version: string): ResourceType[] =>
  registry
    .all()
    .filter((r) => r.group === group && r.version === version)
    .sort((a, b) => (a.plural < b.plural ? -1 : 1));

export function apiResourceList(registry: Registry, group: string, version: string): Obj | undefined {
  const rs = resourcesOf(registry, group, version);
  if (!rs.length) return undefined;
  const resources: Obj[] = [];
  for (const r of rs) {
    resources.push({
      name: r.plural,
      singularName: r.singular,
      namespaced: r.namespaced,
      kind: r.kind,
      verbs: VERBS,
      ...(r.shortNames.length ? { shortNames: r.shortNames } : {}),
      ...(r.categories.length ? { categories: r.categories } : {}),
      storageVersionHash: hash(`${r.group}/${r.version}/${r.kind}`).slice(0, 11),
    });
    for (const sub of r.subresources) {
      resources.push({
        name: `${r.plural}/${sub}`,
        singularName: '',
        namespaced: r.namespaced,
        kind: sub === 'log' ? 'Pod' : r.kind,
        verbs: subVerbs(sub),
      });
    }
  }
  return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: apiVersionOf({ group, version }), resources };
}

function discoveryGroup(registry: Registry, group: string): Obj {
  return {
    metadata: group ? { name: group, creationTimestamp: null } : { creationTimestamp: null },
    versions: versionsOf(registry, group).map((version) => ({
      version,
      freshness: 'Current',
      resources: resourcesOf(registry, group, version).map((r) => ({
        resource: r.plural,
        responseKind: { group, version, kind: r.kind },
        scope: r.namespaced ? 'Namespaced' : 'Cluster',
        singularResource: r.singular,
        verbs: VERBS,
        ...(r.shortNames.length ? { shortNames: r.shortNames } : {}),
        ...(r.categories.length ? { categories: r.categories } : {}),
        ...(r.subresources.length
          ? {
              subresources: r.subresources.map((sub) => ({
                subresource: sub,
                responseKind: { group, version, kind: sub === 'log' ? 'Pod' : r.kind },
                verbs: subVerbs(sub),
              })),
            }
          : {}),
      })),
    })),
  };
}

/** apidiscovery.k8s.io/v2 APIGroupDiscoveryList for /api (core only) or /apis (all groups). */
export function aggregated(registry: Registry, legacy: boolean): Obj {
  const groups = legacy ? [''] : sortedGroups(registry);
  return {
    kind: 'APIGroupDiscoveryList',
    apiVersion: 'apidiscovery.k8s.io/v2',
    metadata: {},
    items: groups.map((g) => discoveryGroup(registry, g)),
  };
}

// ---------------------------------------------------------------------------
// OpenAPI v3

const hash = (s: string): string => createHash('sha512').update(s).digest('hex').slice(0, 128).toUpperCase();

const gvPath = (group: string, version: string): string => (group ? `apis/${group}/${version}` : `api/${version}`);

const param = (name: string, description: string, schema: Obj = { type: 'string' }): Obj => ({
  name,
  in: 'query',
  description,
  schema,
  uniqueItems: true,
});
const P = {
  dryRun: param(
    'dryRun',
    'When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed',
  ),
  fieldManager: param('fieldManager', 'fieldManager is a name associated with the actor or entity that is making these changes.'),
  fieldValidation: param(
    'fieldValidation',
    'fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn, Strict.',
  ),
  force: param(
    'force',
    'Force is going to "force" Apply requests. It means user will re-acquire conflicting fields owned by other people.',
    { type: 'boolean' },
  ),
  labelSelector: param('labelSelector', 'A selector to restrict the list of returned objects by their labels.'),
  fieldSelector: param('fieldSelector', 'A selector to restrict the list of returned objects by their fields.'),
  limit: param('limit', 'limit is a maximum number of responses to return for a list call.', { type: 'integer' }),
  continue: param('continue', 'The continue option should be set when retrieving more results from the server.'),
  resourceVersion: param('resourceVersion', 'resourceVersion sets a constraint on what resource versions a request may be served from.'),
  watch: param(
    'watch',
    'Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.',
    { type: 'boolean' },
  ),
  allowWatchBookmarks: param('allowWatchBookmarks', 'allowWatchBookmarks requests watch events with type "BOOKMARK".', { type: 'boolean' }),
  timeoutSeconds: param('timeoutSeconds', 'Timeout for the list/watch call.', { type: 'integer' }),
};
const pathParam = (name: string): Obj => ({
  name,
  in: 'path',
  required: true,
  description: `${name} of the resource`,
  schema: { type: 'string' },
  uniqueItems: true,
});

const json = (schema: Obj): Obj => ({ 'application/json': { schema }, 'application/yaml': { schema } });

function operations(r: ResourceType, ref: Obj, listRef: Obj): Record<string, Obj> {
  const gvk = { group: r.group, version: r.version, kind: r.kind };
  const op = (action: string, id: string, extra: Obj): Obj => ({
    operationId: id,
    'x-kubernetes-action': action,
    'x-kubernetes-group-version-kind': gvk,
    responses: { '200': { description: 'OK', content: json(ref) } },
    ...extra,
  });
  const patchTypes = [
    'application/apply-patch+yaml',
    'application/json-patch+json',
    'application/merge-patch+json',
    ...(r.custom ? [] : ['application/strategic-merge-patch+json']),
  ];
  const ns = r.namespaced ? [pathParam('namespace')] : [];
  const base = `${r.group ? `/apis/${r.group}` : '/api'}/${r.version}${r.namespaced ? '/namespaces/{namespace}' : ''}/${r.plural}`;
  const K = r.kind;
  const out: Record<string, Obj> = {
    [base]: {
      parameters: ns,
      get: {
        ...op('list', `list${K}`, {
          parameters: [
            P.labelSelector,
            P.fieldSelector,
            P.limit,
            P.continue,
            P.resourceVersion,
            P.watch,
            P.allowWatchBookmarks,
            P.timeoutSeconds,
          ],
        }),
        responses: { '200': { description: 'OK', content: json(listRef) } },
      },
      post: op('post', `create${K}`, {
        parameters: [P.dryRun, P.fieldManager, P.fieldValidation],
        requestBody: { content: { '*/*': { schema: ref } }, required: true },
        responses: { '201': { description: 'Created', content: json(ref) } },
      }),
      delete: op('deletecollection', `deletecollection${K}`, { parameters: [P.labelSelector, P.fieldSelector, P.dryRun] }),
    },
    [`${base}/{name}`]: {
      parameters: [pathParam('name'), ...ns],
      get: op('get', `read${K}`, {}),
      put: op('put', `replace${K}`, {
        parameters: [P.dryRun, P.fieldManager, P.fieldValidation],
        requestBody: { content: { '*/*': { schema: ref } }, required: true },
      }),
      patch: op('patch', `patch${K}`, {
        parameters: [P.dryRun, P.fieldManager, P.fieldValidation, P.force],
        requestBody: { content: Object.fromEntries(patchTypes.map((t) => [t, { schema: { type: 'object' } }])), required: true },
      }),
      delete: op('delete', `delete${K}`, { parameters: [P.dryRun] }),
    },
  };
  if (r.subresources.includes('status')) {
    out[`${base}/{name}/status`] = {
      parameters: [pathParam('name'), ...ns],
      get: op('get', `read${K}Status`, {}),
      put: op('put', `replace${K}Status`, {
        parameters: [P.dryRun, P.fieldManager, P.fieldValidation],
        requestBody: { content: { '*/*': { schema: ref } }, required: true },
      }),
      patch: op('patch', `patch${K}Status`, {
        parameters: [P.dryRun, P.fieldManager, P.fieldValidation, P.force],
        requestBody: { content: Object.fromEntries(patchTypes.map((t) => [t, { schema: { type: 'object' } }])), required: true },
      }),
    };
  }
  return out;
}

/** Collects every named definition reachable from `s`. */
function collectRefs(s: Schema | undefined, into: Map<string, Schema>): void {
  if (!s) return;
  if (s.ref) {
    if (into.has(s.ref)) return;
    const def = builtinSchemas.defs.get(s.ref);
    if (!def) return;
    into.set(s.ref, def);
    collectRefs(def, into);
    return;
  }
  for (const p of Object.values(s.properties ?? {})) collectRefs(p, into);
  collectRefs(s.additionalProperties, into);
  collectRefs(s.items, into);
}

/** The OpenAPI v3 document of one group/version. */
export function openapiDocument(registry: Registry, group: string, version: string): Obj | undefined {
  const rs = resourcesOf(registry, group, version);
  if (!rs.length) return undefined;
  const defs = new Map<string, Schema>();
  const schemas: Obj = {};
  const paths: Obj = {};
  for (const r of rs) {
    collectRefs(r.schema, defs);
    const gvk = [{ group: r.group, version: r.version, kind: r.kind }];
    // each kind gets a component named after its GVK, carrying the GVK extension kubectl looks for
    const name = `${r.group ? r.group.split('.').reverse().join('.') : 'io.k8s.api.core'}.${r.version}.${r.kind}`;
    const root = r.schema.ref ? builtinSchemas.defs.get(r.schema.ref)! : r.schema;
    schemas[name] = { ...toOpenAPIV3(root), 'x-kubernetes-group-version-kind': gvk };
    schemas[`${name}List`] = {
      type: 'object',
      required: ['items'],
      properties: {
        apiVersion: { type: 'string' },
        kind: { type: 'string' },
        metadata: { type: 'object' },
        items: { type: 'array', items: { $ref: `#/components/schemas/${name}` } },
      },
      'x-kubernetes-group-version-kind': [{ group: r.group, version: r.version, kind: r.listKind }],
    };
    Object.assign(paths, operations(r, { $ref: `#/components/schemas/${name}` }, { $ref: `#/components/schemas/${name}List` }));
  }
  for (const [n, d] of defs) schemas[n] = toOpenAPIV3(d);
  return { openapi: '3.0.0', info: { title: 'Kubernetes', version: SERVER_VERSION.gitVersion }, paths, components: { schemas } };
}

/** /openapi/v3: every group/version document, with a content hash in its URL. */
export function openapiRoot(registry: Registry, docs: (group: string, version: string) => string): Obj {
  const paths: Obj = {};
  for (const [group, versions] of registry.groups()) {
    for (const v of versions)
      paths[gvPath(group, v)] = { serverRelativeURL: `/openapi/v3/${gvPath(group, v)}?hash=${hash(docs(group, v))}` };
  }
  return { paths };
}

/** group and version of an /openapi/v3/<path>, if it names one */
export function parseOpenapiPath(rest: string): { group: string; version: string } | undefined {
  let m = /^api\/([^/]+)$/.exec(rest);
  if (m) return { group: '', version: m[1]! };
  m = /^apis\/([^/]+)\/([^/]+)$/.exec(rest);
  if (m) return { group: m[1]!, version: m[2]! };
  return undefined;
}
