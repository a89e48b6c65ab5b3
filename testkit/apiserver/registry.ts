/**
 * The resources the test API server serves: built-in kinds (declared here,
 * their schemas from the client-node models) and custom resources, which
 * appear when their CustomResourceDefinition is created and go away with
 * it. Storage, discovery, OpenAPI and tables are generic over these
 * descriptions; only defaulting and validation that the real server does
 * per kind live in kinds.ts.
 */
import { type FieldError } from './errors.js';
import { fromModel, fromOpenAPIV3, Schemas, type Schema } from './schema.js';
import { pathGetter, type FieldGetter } from './selectors.js';
import { crdPrinter, defaultPrinter, type Printer } from './table.js';
import { text } from './util.js';
import type { NameRule } from './validate.js';

export type Obj = Record<string, unknown>;

/** What a kind's hooks can ask of the server. */
export interface HookContext {
  /** objects of another resource (by storage key) */
  list(storageKey: string): Obj[];
  now: string;
}

export interface ResourceType {
  group: string;
  version: string;
  kind: string;
  listKind: string;
  plural: string;
  singular: string;
  shortNames: string[];
  categories: string[];
  namespaced: boolean;
  /** subresources served: status (writes to the main resource keep status), log (pods) */
  subresources: string[];
  schema: Schema;
  nameRule: NameRule;
  /** custom resource: no strategic merge patch, schema errors are 422 */
  custom: boolean;
  /** resources sharing one storage (core and events.k8s.io Events) name the same key */
  storageKey: string;
  /** conversions between this version and the stored form */
  toStorage?(o: Obj): Obj;
  fromStorage?(o: Obj): Obj;
  printer: Printer;
  /** printed from the stored form (events.k8s.io Events print as core Events) */
  printStored?: boolean;
  fieldSelectors: Record<string, FieldGetter>;
  /** metadata.generation counts spec changes */
  generation: boolean;
  prepareCreate?(o: Obj, ctx: HookContext): void;
  prepareUpdate?(next: Obj, old: Obj, ctx: HookContext): void;
  validate?(o: Obj, old: Obj | undefined): FieldError[];
}

export const apiVersionOf = (r: Pick<ResourceType, 'group' | 'version'>): string => (r.group ? `${r.group}/${r.version}` : r.version);
export const gvKey = (group: string, version: string, plural: string): string => `${group}/${version}/${plural}`;

/** Schemas of every built-in kind, shared by all servers (they never change). */
export const builtinSchemas = new Schemas();

export const META_FIELDS: Record<string, FieldGetter> = {
  'metadata.name': pathGetter('metadata.name'),
  'metadata.namespace': (o) => text((o.metadata as Obj | undefined)?.namespace),
};

export interface BuiltinSpec extends Partial<Omit<ResourceType, 'schema'>> {
  group: string;
  version: string;
  kind: string;
  plural: string;
  namespaced: boolean;
  model: string;
}

export function builtin(spec: BuiltinSpec): ResourceType {
  const { model, ...rest } = spec;
  return {
    listKind: `${spec.kind}List`,
    singular: spec.kind.toLowerCase(),
    shortNames: [],
    categories: [],
    subresources: [],
    nameRule: 'subdomain',
    custom: false,
    storageKey: `${spec.group}/${spec.plural}`,
    printer: defaultPrinter,
    generation: false,
    ...rest,
    fieldSelectors: { ...META_FIELDS, ...spec.fieldSelectors },
    schema: fromModel(builtinSchemas, model),
  };
}

/** The resources a CRD defines: one per served version. */
export function fromCrd(crd: Obj): ResourceType[] {
  const spec = (crd.spec ?? {}) as Obj;
  const names = (spec.names ?? {}) as Obj;
  const group = String(spec.group);
  const versions = (Array.isArray(spec.versions) ? spec.versions : []) as Obj[];
  return versions
    .filter((v) => v.served !== false)
    .map((v) => {
      const root = fromOpenAPIV3((v.schema as Obj | undefined)?.openAPIV3Schema as Obj | undefined);
      // metadata is the server's, whatever the CRD says about it
      const schema: Schema = {
        ...root,
        type: 'object',
        properties: { ...root.properties, apiVersion: { type: 'string' }, kind: { type: 'string' }, metadata: { ref: 'V1ObjectMeta' } },
      };
      const sub = (v.subresources ?? {}) as Obj;
      const plural = String(names.plural);
      const columns = (Array.isArray(v.additionalPrinterColumns) ? v.additionalPrinterColumns : []) as Array<{
        name: string;
        type?: string;
        jsonPath: string;
        description?: string;
        priority?: number;
      }>;
      return {
        group,
        version: String(v.name),
        kind: String(names.kind),
        listKind: text(names.listKind) || `${text(names.kind)}List`,
        plural,
        singular: text(names.singular) || text(names.kind).toLowerCase(),
        shortNames: (names.shortNames as string[] | undefined) ?? [],
        categories: (names.categories as string[] | undefined) ?? [],
        namespaced: spec.scope === 'Namespaced',
        subresources: 'status' in sub ? ['status'] : [],
        schema,
        nameRule: 'subdomain',
        custom: true,
        storageKey: `${group}/${plural}`,
        printer: crdPrinter(columns),
        fieldSelectors: { ...META_FIELDS },
        generation: true,
      } satisfies ResourceType;
    });
}

/** The resources being served, by group/version/plural. */
export class Registry {
  private readonly byGvr = new Map<string, ResourceType>();

  add(r: ResourceType): void {
    this.byGvr.set(gvKey(r.group, r.version, r.plural), r);
  }

  remove(group: string, plural: string): ResourceType[] {
    const gone = [...this.byGvr.values()].filter((r) => r.group === group && r.plural === plural);
    for (const r of gone) this.byGvr.delete(gvKey(r.group, r.version, r.plural));
    return gone;
  }

  get(group: string, version: string, plural: string): ResourceType | undefined {
    return this.byGvr.get(gvKey(group, version, plural));
  }

  all(): ResourceType[] {
    return [...this.byGvr.values()];
  }

  /** The resource for a plural name (`services`) or group/plural (`events.k8s.io/events`); the core group wins ties. */
  byName(name: string): ResourceType | undefined {
    const slash = name.lastIndexOf('/');
    const group = slash >= 0 ? name.slice(0, slash) : undefined;
    const plural = slash >= 0 ? name.slice(slash + 1) : name;
    const matches = this.all().filter((r) => r.plural === plural && (group === undefined || r.group === group));
    return matches.find((r) => r.group === '') ?? matches[0];
  }

  groups(): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const r of this.all()) {
      const vs = out.get(r.group) ?? [];
      if (!vs.includes(r.version)) vs.push(r.version);
      out.set(r.group, vs);
    }
    return out;
  }
}
