/**
 * The embedded default source: a directory of Kubernetes YAML (or JSON)
 * manifests, multi-document files and `kind: List` included. The directory
 * is polled (and watched, for speed); changed files are re-read and the
 * objects that changed are applied to the store.
 *
 * Work per change is proportional to the change: a watcher names the file
 * that changed (the poll stats every file as a safety net), only files
 * whose bytes changed are read further, only their documents whose text
 * changed are parsed, objects are compared by a digest computed once at
 * parse time, and only the ids a changed file held or holds are merged
 * again. Objects are converted to domain objects as their documents are
 * parsed; only those are kept and delivered. A file's broken documents are reported by number while its
 * good ones apply; objects the file no longer names are kept in force until
 * it reads cleanly (so a typo withdraws nothing). A file that cannot be read
 * at all (too big, not text, unreadable) keeps its last good objects. Each
 * problem costs one log line, once per version of the file.
 */
import { closeSync, constants, fstatSync, openSync, readdirSync, readSync, statSync, watch, type FSWatcher, type Stats } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { createHash } from 'node:crypto';
import type { Clock, Timer } from '../clock.js';
import type { Logger } from '../log.js';
import { DEFAULT_SERVICE_POLICY } from '../config/services.js';
import type { Problem } from '../model/problem.js';
import type { ConvertPolicy } from './convert.js';
import {
  DEFAULT_PARSE_LIMITS,
  converted,
  parseManifest,
  type Broken,
  type ManifestObject,
  type ParseLimits,
  type PartCache,
} from './manifest-parse.js';
import { deliver, withdraw, type Kind, type ObjectSink } from './sink.js';

/** Largest manifest file read (--manifest-max-file-size). */
export const DEFAULT_MAX_FILE_BYTES = 8 * 1024 * 1024;
/** Log lines one version of one file may cost; then one line says how many more. */
const MAX_LINES_PER_FILE = 20;

export interface ManifestSourceOptions {
  /** ms between polls; the directory is also watched */
  pollMs?: number;
  /** larger files are not read: reported, and their last good objects kept */
  maxFileBytes?: number;
  /** parser limits (tests make them small) */
  limits?: Partial<ParseLimits>;
  /** what a Service may claim (node-port range, external IPs, fan-out) */
  policy?: ConvertPolicy;
}

export interface ManifestStats {
  /** file versions parsed (only their changed documents are) */
  filesParsed: number;
  /** documents parsed */
  documentsParsed: number;
  /** objects serialised for their digest (each once, when its document is parsed) */
  objectsDigested: number;
  /** objects applied or withdrawn */
  applied: number;
}

interface FileState {
  /** the path relative to the directory, as messages name it */
  rel: string;
  /** stat of the version last examined; undefined: read it again at the next scan */
  stat: StatKey | undefined;
  /** digest of the bytes last parsed: a touched but unchanged file is not parsed again */
  digest: string | undefined;
  /** the file's objects in force, by "Kind/ns/name" */
  objects: Map<string, ManifestObject>;
  /** its documents as last parsed, reused where their text is unchanged */
  parts: PartCache | undefined;
  /** the read problem last logged, so that each is logged once */
  problem: string | undefined;
}

interface StatKey {
  mtimeMs: number;
  ctimeMs: number;
  size: number;
  ino: number;
}

interface Change {
  path: string;
  before: Map<string, ManifestObject>;
  after: Map<string, ManifestObject>;
}

export function formatProblem(p: Problem, where: string): string {
  return `${where}: ${p.object} field ${p.field}: ${p.message}`;
}

export class ManifestSource {
  readonly stats: ManifestStats = { filesParsed: 0, documentsParsed: 0, objectsDigested: 0, applied: 0 };
  private files = new Map<string, FileState>();
  /** the file defining each id, or the files (in path order) when several do: the first one's object is used */
  private owners = new Map<string, string | string[]>();
  /** what the sink has: the object applied for each id (its digest, its file) */
  private applied = new Map<string, ManifestObject>();
  /** directories that could not be listed, with the message logged */
  private badDirs = new Map<string, string>();
  private timer: Timer | undefined;
  /** one (non-recursive) watcher per directory listed */
  private watchers = new Map<string, FSWatcher>();
  /** files the watchers said changed, read at the next kick */
  private dirty = new Set<string>();
  /** a watcher saw something other than a known file changing */
  private rescan = false;
  private kicked = false;
  private started = false;
  private stopped = false;
  private readonly pollMs: number;
  private readonly maxFileBytes: number;
  private readonly limits: ParseLimits;
  private readonly policy: ConvertPolicy;

  constructor(
    private readonly dir: string,
    private readonly sink: ObjectSink,
    private readonly log: Logger,
    private readonly clock: Clock,
    options: ManifestSourceOptions = {},
  ) {
    this.pollMs = options.pollMs ?? 250;
    this.maxFileBytes = options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
    this.limits = { ...DEFAULT_PARSE_LIMITS, ...options.limits };
    this.policy = options.policy ?? DEFAULT_SERVICE_POLICY;
  }

  /** Read everything once (synchronously), then keep watching. */
  start(): void {
    this.started = true;
    this.scan();
    this.arm();
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
  }

  private arm(): void {
    if (this.stopped) return;
    this.timer = this.clock.after(this.pollMs, () => {
      this.scan();
      this.arm();
    });
  }

  /**
   * A watcher saw a change: read it soon. Events during the wait join it
   * (rescheduling on each would let a stream of events starve the scan).
   */
  private kick(): void {
    if (this.stopped || this.kicked) return;
    this.kicked = true;
    this.timer?.cancel();
    this.timer = this.clock.after(20, () => {
      this.kicked = false;
      if (this.rescan || this.dirty.size === 0) this.scan();
      else this.scanDirty();
      this.arm();
    });
  }

  /**
   * Watch each directory listed, without Node's recursive mode (on Linux
   * it lists a directory again at every event in it). A known file
   * changing is read alone; anything else (a file added, removed or
   * renamed, a ConfigMap volume's ..data swapped) rescans the directory.
   */
  private watchDirs(dirs: string[]): void {
    const keep = new Set(dirs);
    for (const [d, w] of this.watchers) {
      if (keep.has(d)) continue;
      w.close();
      this.watchers.delete(d);
    }
    for (const d of dirs) {
      if (this.watchers.has(d)) continue;
      try {
        const w = watch(d, (event, name) => {
          const p = name ? join(d, name.toString()) : undefined;
          if (event === 'change' && p !== undefined && this.files.has(p)) this.dirty.add(p);
          else this.rescan = true;
          this.kick();
        });
        w.on('error', () => {
          // gone or unwatchable: polling still sees it; the next scan watches again
          w.close();
          if (this.watchers.get(d) === w) this.watchers.delete(d);
        });
        this.watchers.set(d, w);
      } catch {
        // polling alone still applies changes
      }
    }
  }

  /**
   * Manifest files under `dir`. Symbolic links to files are read (as in a
   * ConfigMap volume); links to directories are not followed, so no loop.
   */
  private listFiles(dir: string, out: string[], unlisted: string[], dirs: string[]): void {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch (e) {
      unlisted.push(dir);
      const msg = `cannot read manifest directory ${dir}: ${(e as Error).message}; keeping the objects of the files in it until it can be read`;
      if (this.badDirs.get(dir) !== msg) this.log.error({ dir }, msg);
      this.badDirs.set(dir, msg);
      return;
    }
    dirs.push(dir);
    if (this.badDirs.delete(dir)) this.log.info({ dir }, `manifest directory ${dir} can be read again`);
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const p = join(dir, e.name);
      if (e.isDirectory()) this.listFiles(p, out, unlisted, dirs);
      else if (/\.(ya?ml|json)$/i.test(e.name)) out.push(p);
    }
  }

  /** Re-read what changed and apply the differences. */
  scan(): void {
    this.rescan = false;
    this.dirty.clear();
    const paths: string[] = [];
    const unlisted: string[] = [];
    const dirs: string[] = [];
    this.listFiles(this.dir, paths, unlisted, dirs);
    if (this.started && !this.stopped) this.watchDirs(dirs);
    paths.sort();
    const listed = new Set(paths);
    const changes: Change[] = [];
    for (const [p, f] of this.files) {
      if (listed.has(p) || unlisted.some((d) => p === d || p.startsWith(d + sep))) continue;
      this.files.delete(p);
      if (f.objects.size > 0) changes.push({ path: p, before: f.objects, after: new Map() });
    }
    for (const p of paths) {
      const c = this.examine(p);
      if (c) changes.push(c);
    }
    if (changes.length > 0) this.merge(changes);
  }

  /** Read only the files the watchers named; a file gone since means a full scan. */
  private scanDirty(): void {
    const paths = [...this.dirty].sort();
    this.dirty.clear();
    if (paths.some((p) => !this.files.has(p) || !exists(p))) return this.scan();
    const changes: Change[] = [];
    for (const p of paths) {
      const c = this.examine(p);
      if (c) changes.push(c);
    }
    if (changes.length > 0) this.merge(changes);
  }

  /** Read one file if it changed; its objects' change, if any. */
  private examine(path: string): Change | undefined {
    let f = this.files.get(path);
    if (!f) {
      f = {
        rel: relative(this.dir, path) || path,
        stat: undefined,
        digest: undefined,
        objects: new Map(),
        parts: undefined,
        problem: undefined,
      };
      this.files.set(path, f);
    }
    const rel = f.rel;
    let st: Stats;
    try {
      st = statSync(path);
    } catch (e) {
      this.readProblem(f, rel, `cannot be read (${(e as Error).message})`);
      return undefined;
    }
    if (f.stat && sameStat(f.stat, st)) return undefined;
    if (!st.isFile()) {
      f.stat = statKey(st);
      this.readProblem(f, rel, `is ${st.isDirectory() ? 'a directory' : 'not a regular file'}, not a manifest file`);
      return undefined;
    }
    if (st.size > this.maxFileBytes) {
      f.stat = statKey(st);
      this.readProblem(f, rel, this.tooBig(st.size));
      return undefined;
    }
    let read;
    try {
      read = readBounded(path, this.maxFileBytes);
    } catch (e) {
      // not remembered as examined: read again at the next scan
      this.readProblem(f, rel, `cannot be read (${(e as Error).message})`);
      return undefined;
    }
    if (read.bytes === undefined) {
      f.stat = statKey(read.stat);
      this.readProblem(
        f,
        rel,
        read.stat.isFile() ? this.tooBig(Math.max(read.stat.size, this.maxFileBytes + 1)) : 'is not a regular file, not a manifest file',
      );
      return undefined;
    }
    f.stat = statKey(read.stat);
    if (f.problem !== undefined) {
      f.problem = undefined;
      this.log.info({ file: rel }, `${rel} can be read again`);
    }
    const digest = createHash('sha1').update(read.bytes).digest('base64');
    if (digest === f.digest) return undefined;
    f.digest = digest;
    return this.parse(path, rel, f, read.bytes);
  }

  private tooBig(size: number): string {
    return `is ${size} bytes, over the ${this.maxFileBytes}-byte limit for a manifest file (--manifest-max-file-size); it is not read`;
  }

  /** Log a problem reading a file once (until it changes), keeping its objects. */
  private readProblem(f: FileState, rel: string, what: string): void {
    if (f.problem === what) return;
    f.problem = what;
    this.log.error({ file: rel }, `${rel}: ${what}; ${keeping(f.objects.size)}`);
  }

  private parse(path: string, rel: string, f: FileState, bytes: Buffer): Change | undefined {
    let parsed;
    try {
      parsed = parseManifest(rel, bytes, /\.json$/i.test(path), this.limits, f.parts, this.policy);
    } catch (e) {
      // A bug of ours or of the YAML library must not stop the source.
      this.readProblem(f, rel, `could not be parsed (${(e as Error).message.split('\n')[0]})`);
      return undefined;
    }
    f.parts = parsed.parts;
    this.stats.filesParsed++;
    this.stats.documentsParsed += parsed.parsedDocuments;
    this.stats.objectsDigested += parsed.digests;
    let lines = 0;
    let unsaid = 0;
    const say = (level: 'error' | 'warn' | 'debug', fields: Record<string, unknown>, msg: string) => {
      if (level === 'debug') return this.log.debug(fields, msg);
      if (lines++ < MAX_LINES_PER_FILE) this.log[level](fields, msg);
      else unsaid++;
    };
    const before = f.objects;
    let after = parsed.objects;
    if (parsed.broken.length > 0) {
      // Documents that cannot be read may hold objects the file defined:
      // keep those in force until the file reads cleanly.
      const whole = parsed.good === 0;
      const next = whole
        ? keeping(before.size)
        : 'its other documents are applied; objects it no longer defines are kept until it reads cleanly';
      for (const b of parsed.broken) say('error', { file: rel, document: b.document ?? null }, `${rel}: ${brokenText(b)}; ${next}`);
      after = new Map(parsed.objects);
      for (const [id, o] of before) if (!after.has(id)) after.set(id, o);
    }
    for (const n of parsed.notes) say(n.level, n.kind !== undefined ? { where: n.where, kind: n.kind } : { where: n.where }, n.msg);
    if (unsaid > 0) this.log.error({ file: rel }, `${rel}: ${unsaid} more problems in this file, not logged`);
    f.objects = after;
    return { path, before, after };
  }

  /** Apply what the changed files changed: only their ids are looked at. */
  private merge(changes: Change[]): void {
    const changedFiles = new Set(changes.map((c) => c.path));
    const affected = new Set<string>();
    for (const { path, before, after } of changes) {
      for (const [id, o] of after) {
        const b = before.get(id);
        if (!b) {
          this.own(id, path);
          affected.add(id);
        } else if (b.digest !== o.digest) affected.add(id);
      }
      for (const id of before.keys()) {
        if (after.has(id)) continue;
        this.disown(id, path);
        affected.add(id);
      }
    }
    const removed: string[] = [];
    for (const id of affected) {
      const owned = this.owners.get(id);
      const prev = this.applied.get(id);
      if (!owned) {
        if (prev) removed.push(id);
        continue;
      }
      const owners = typeof owned === 'string' ? [owned] : owned;
      const file = owners[0]!;
      const o = this.files.get(file)!.objects.get(id)!;
      if (!prev || prev.digest !== o.digest) this.apply(id, o, o.where);
      this.applied.set(id, o);
      for (const other of owners.slice(1)) {
        if (prev?.file === o.file && !changedFiles.has(other)) continue;
        const where = this.files.get(other)!.objects.get(id)!.where;
        this.log.error({ where }, `${where}: ${id.replace(/\//, ' ')} is also defined in ${o.where}; that one is used`);
      }
    }
    for (const id of removed) {
      this.applied.delete(id);
      this.apply(id, undefined, 'removed');
    }
  }

  private own(id: string, path: string): void {
    const owners = this.owners.get(id);
    if (owners === undefined) this.owners.set(id, path);
    else if (typeof owners === 'string') this.owners.set(id, [owners, path].sort());
    else {
      owners.push(path);
      owners.sort();
    }
  }

  private disown(id: string, path: string): void {
    const owners = this.owners.get(id);
    if (owners === undefined) return;
    if (typeof owners === 'string') {
      if (owners === path) this.owners.delete(id);
      return;
    }
    const i = owners.indexOf(path);
    if (i >= 0) owners.splice(i, 1);
    if (owners.length === 1) this.owners.set(id, owners[0]!);
    else if (owners.length === 0) this.owners.delete(id);
  }

  /** Deliver an object (or its withdrawal); one that did not convert is only reported, and the last good version stays. */
  private apply(id: string, o: ManifestObject | undefined, where: string): void {
    const [kind, ns, name] = id.split('/') as [Kind, string, string];
    const key = ns ? `${ns}/${name}` : name;
    this.stats.applied++;
    if (!o) return withdraw(this.sink, kind, key, where);
    if (converted(o.item)) deliver(this.sink, key, o.item, where);
    for (const p of o.item.problems ?? []) {
      const msg = formatProblem(p, where);
      if (p.fatal) this.log.error({ where, object: p.object, field: p.field }, `${msg}; object skipped`);
      else this.log.warn({ where, object: p.object, field: p.field }, msg);
    }
  }
}

function keeping(objects: number): string {
  return objects > 0 ? `keeping this file's last good objects (${objects})` : 'nothing from this file is applied';
}

function brokenText(b: Broken): string {
  return b.document === undefined ? b.reason : `document ${b.document} ${b.reason}`;
}

function exists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}

function statKey(st: Stats): StatKey {
  return { mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, size: st.size, ino: st.ino };
}

function sameStat(a: StatKey, st: Stats): boolean {
  return a.mtimeMs === st.mtimeMs && a.ctimeMs === st.ctimeMs && a.size === st.size && a.ino === st.ino;
}

/**
 * At most `max` bytes of a regular file; `bytes` undefined when it is
 * larger (it may have grown since it was stat'ed) or not a regular file.
 * Opened non-blocking: a FIFO put in place of a file cannot hang the agent.
 */
function readBounded(path: string, max: number): { bytes: Buffer | undefined; stat: Stats } {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile() || stat.size > max) return { bytes: undefined, stat };
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const buf = Buffer.allocUnsafe(Math.min(Math.max(stat.size - total, 0) + 1, max + 1 - total, 1 << 20));
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      chunks.push(n === buf.length ? buf : buf.subarray(0, n));
      total += n;
      if (total > max) return { bytes: undefined, stat };
    }
    return { bytes: Buffer.concat(chunks, total), stat };
  } finally {
    closeSync(fd);
  }
}
