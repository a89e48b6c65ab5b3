/**
 * The embedded default source: a directory of Kubernetes YAML (or JSON)
 * manifests, multi-document files and `kind: List` included. The directory
 * is polled (and watched, for speed); changed files are re-read and the
 * objects that changed are applied to the store. A file that no longer
 * parses keeps its last good objects in force, with an error naming it.
 */
import { readdirSync, readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import { join, relative } from 'node:path';
import { createHash } from 'node:crypto';
import { Composer, Parser } from 'yaml';
import type { Clock, Timer } from '../clock.js';
import type { Logger } from '../log.js';
import type { Problem } from './convert.js';
import { API_VERSIONS, CLUSTER_SCOPED, KINDS, type Kind, type ObjectSink } from './sink.js';

interface FileState {
  mtimeMs: number;
  size: number;
  /** digest of the text: a touched but unchanged file is not re-applied */
  digest: string;
  /** objects by "Kind/ns/name", with their place in the file */
  objects: Map<string, { obj: unknown; where: string }>;
}

/** Kinds we know and leave to other parts (or later). */
const KNOWN_OTHER = new Set(['NetworkPolicy', 'Namespace', 'Pod', 'Deployment', 'ConfigMap', 'Endpoints', 'DaemonSet', 'ServiceAccount',
  'ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition']);

export function formatProblem(p: Problem, where: string): string {
  return `${where}: ${p.object} field ${p.field}: ${p.message}`;
}

export class ManifestSource {
  private files = new Map<string, FileState>();
  /** winning source of each object */
  private current = new Map<string, { obj: unknown; where: string }>();
  private timer: Timer | undefined;
  private watcher: FSWatcher | undefined;
  private stopped = false;

  constructor(
    private readonly dir: string,
    private readonly sink: ObjectSink,
    private readonly log: Logger,
    private readonly clock: Clock,
    private readonly pollMs = 250,
  ) {}

  /** Read everything once (synchronously), then keep watching. */
  start(): void {
    this.scan();
    try {
      this.watcher = watch(this.dir, { recursive: true }, () => this.kick());
      this.watcher.on('error', () => undefined);
    } catch {
      // polling alone still applies changes
    }
    this.arm();
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.watcher?.close();
  }

  private arm(): void {
    if (this.stopped) return;
    this.timer = this.clock.after(this.pollMs, () => {
      this.scan();
      this.arm();
    });
  }

  private kick(): void {
    if (this.stopped) return;
    this.timer?.cancel();
    this.timer = this.clock.after(20, () => {
      this.scan();
      this.arm();
    });
  }

  private listFiles(dir: string, out: string[] = []): string[] {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch (e) {
      this.log.error({ dir }, `cannot read manifest directory ${dir}: ${(e as Error).message}`);
      return out;
    }
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const p = join(dir, e.name);
      if (e.isDirectory()) this.listFiles(p, out);
      else if (/\.(ya?ml|json)$/i.test(e.name)) out.push(p);
    }
    return out.sort();
  }

  /** Re-read what changed and apply the differences. */
  scan(): void {
    const paths = this.listFiles(this.dir);
    let changed = false;
    const seen = new Set(paths);
    for (const p of [...this.files.keys()]) {
      if (!seen.has(p)) {
        this.files.delete(p);
        changed = true;
      }
    }
    for (const p of paths) {
      let st;
      try {
        st = statSync(p);
      } catch {
        continue;
      }
      const old = this.files.get(p);
      if (old && old.mtimeMs === st.mtimeMs && old.size === st.size) continue;
      let text: string;
      try {
        text = readFileSync(p, 'utf8');
      } catch {
        continue;
      }
      const digest = createHash('sha1').update(text).digest('base64');
      if (old && old.digest === digest) {
        old.mtimeMs = st.mtimeMs;
        old.size = st.size;
        continue;
      }
      const objects = this.parse(p, text);
      const objs = objects ?? old?.objects ?? new Map();
      this.files.set(p, { mtimeMs: st.mtimeMs, size: st.size, digest, objects: objs });
      changed = true;
    }
    if (changed) this.reconcile();
  }

  private parse(path: string, text: string): FileState['objects'] | undefined {
    const rel = relative(this.dir, path) || path;
    // One document at a time: a big file never sits in memory as one AST.
    const out: FileState['objects'] = new Map();
    let broken = false;
    let i = -1;
    for (const doc of new Composer({ prettyErrors: true }).compose(new Parser().parse(text), true)) {
      i++;
      if (doc.errors.length > 0) {
        broken = true;
        const e = doc.errors[0]!;
        this.log.error(
          { file: rel, document: i + 1 },
          `${rel}: document ${i + 1} is not valid YAML (${e.message.split('\n')[0]}); keeping this file's last good objects`,
        );
        continue;
      }
      const obj = doc.toJS() as unknown;
      if (obj === null || obj === undefined) continue;
      const items = (obj as { kind?: unknown }).kind === 'List' ? ((obj as { items?: unknown[] }).items ?? []) : [obj];
      items.forEach((item, j) => {
        const where = items.length > 1 || (obj as { kind?: unknown }).kind === 'List' ? `${rel} document ${i + 1} item ${j + 1}` : `${rel} document ${i + 1}`;
        this.collect(item, where, out);
      });
    }
    return broken ? undefined : out;
  }

  private collect(item: unknown, where: string, out: FileState['objects']): void {
    if (typeof item !== 'object' || item === null || Array.isArray(item)) {
      this.log.error({ where }, `${where}: not a Kubernetes object (expected a mapping with kind and metadata)`);
      return;
    }
    const o = item as { kind?: unknown; apiVersion?: unknown; metadata?: { name?: unknown; namespace?: unknown } };
    const kind = (typeof o.kind === 'string' ? o.kind : '') as Kind;
    if (!KINDS.includes(kind)) {
      if (KNOWN_OTHER.has(kind)) this.log.debug({ where, kind }, `${where}: ${kind} is not used by the service dataplane; skipped`);
      else this.log.warn({ where, kind: kind || null }, `${where}: unknown kind ${kind ? `"${kind}"` : '(missing field kind)'}; skipped`);
      return;
    }
    if (!API_VERSIONS[kind].includes(String(o.apiVersion))) {
      this.log.warn({ where }, `${where}: ${kind} apiVersion ${String(o.apiVersion)} is not ${API_VERSIONS[kind].join(' or ')}; skipped`);
      return;
    }
    const ns = CLUSTER_SCOPED.has(kind) ? '' : typeof o.metadata?.namespace === 'string' ? o.metadata.namespace : 'default';
    const name = typeof o.metadata?.name === 'string' ? o.metadata.name : '';
    const id = `${kind}/${ns}/${name}`;
    if (out.has(id)) {
      this.log.error({ where }, `${where}: ${kind} ${ns}/${name} is defined twice in this file (also ${out.get(id)!.where}); the first is used`);
      return;
    }
    out.set(id, { obj: item, where });
  }

  /** Merge all files (first file wins on duplicates) and apply what changed. */
  private reconcile(): void {
    const next = new Map<string, { obj: unknown; where: string }>();
    for (const [, f] of [...this.files.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
      for (const [id, v] of f.objects) {
        const prev = next.get(id);
        if (prev) {
          if (this.current.get(id)?.where !== v.where) {
            this.log.error({ where: v.where }, `${v.where}: ${id.replace(/\//, ' ')} is also defined in ${prev.where}; that one is used`);
          }
          continue;
        }
        next.set(id, v);
      }
    }
    for (const [id, v] of next) {
      const cur = this.current.get(id);
      if (cur && JSON.stringify(cur.obj) === JSON.stringify(v.obj)) continue;
      this.apply(id, v.obj, v.where);
    }
    for (const id of this.current.keys()) if (!next.has(id)) this.apply(id, undefined, 'removed');
    this.current = next;
  }

  private apply(id: string, obj: unknown, where: string): void {
    const [kind, ns, name] = id.split('/') as [Kind, string, string];
    const key = ns ? `${ns}/${name}` : name;
    const problems = this.sink.apply(kind, key, obj, where);
    for (const p of problems) {
      const msg = formatProblem(p, where);
      if (p.fatal) this.log.error({ where, object: p.object, field: p.field }, `${msg}; object skipped`);
      else this.log.warn({ where, object: p.object, field: p.field }, msg);
    }
  }
}
