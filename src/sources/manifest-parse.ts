/**
 * One manifest file's bytes to the Kubernetes objects it defines, with a
 * bounded cost whatever the bytes are: a file that is not text, a YAML
 * alias bomb, nesting thousands of levels deep, a document too big to hold
 * as a YAML tree, or a `kind: List` full of junk each become a problem
 * named by file and document, never an exception.
 *
 * A YAML file is cut at its `---` lines (which YAML forbids inside any
 * scalar or collection) and each part is parsed on its own, so a file that
 * changed is parsed again only where it changed: parts are cached by a
 * hash of their text. Each object is converted to its domain object when
 * its part is parsed, and comes with a digest of its canonical
 * serialisation, computed then too; the object as written is not kept.
 */
import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import { Composer, Lexer, LineCounter, Parser, isScalar, visit, type CST, type Document } from 'yaml';
import { DEFAULT_SERVICE_POLICY } from '../config/services.js';
import type { Problem } from '../model/problem.js';
import type { ConvertPolicy } from './convert.js';
import { API_VERSIONS, CLUSTER_SCOPED, KINDS, convertObject, type DomainObject, type Kind } from './sink.js';

export interface ParseLimits {
  /** deepest nesting read (YAML collections, or JSON values) */
  maxDepth: number;
  /** YAML tokens one document may have: bounds the parser's memory (~170 bytes a token) */
  maxDocumentTokens: number;
  /** yaml's resource-exhaustion guard: alias expansions per document */
  maxAliasCount: number;
  /** documents read from one file (each costs ~10 µs and some memory even when empty) */
  maxDocuments: number;
}

export const DEFAULT_PARSE_LIMITS: ParseLimits = {
  // Kubernetes objects nest a few dozen levels at most (CRD schemas included).
  maxDepth: 256,
  // About 2 MB of YAML in one document (10,000 Services in one List);
  // larger sets are split into documents (---) or written as JSON.
  maxDocumentTokens: 1_000_000,
  maxAliasCount: 100,
  // 8 MiB of the smallest useful objects (~100 bytes) is about 85,000.
  maxDocuments: 100_000,
};

/**
 * One object as a document defines it, wherever the document is: cached
 * with its part and shared by every version of the file that has it.
 */
export type Item = {
  /** "Kind/namespace/name" */
  id: string;
  /** of the object's JSON serialisation as written: equal digests, equal objects */
  digest: string;
  /** what its conversion found, reported when it is applied */
  problems?: Problem[];
} & (DomainObject | { kind: Kind; value?: undefined }); // value: the domain object, absent when a fatal problem dropped it

/** An item whose object converted. */
export const converted = (i: Item): i is Item & DomainObject => i.value !== undefined;

/** An object of one version of a file: its item, and where the file has it. */
export class ManifestObject {
  constructor(
    readonly item: Item,
    /** the file, as messages name it */
    readonly file: string,
    private readonly doc: number,
    /** its number in a List document; 0: the document itself */
    private readonly listItem: number,
  ) {}

  /** "file.yaml document 2" or "file.yaml document 1 item 3" (made when asked: most are never) */
  get where(): string {
    return `${this.file} document ${this.doc}${this.listItem ? ` item ${this.listItem}` : ''}`;
  }

  get digest(): string {
    return this.item.digest;
  }
}

/** A document (or the whole file, when `document` is absent) that could not be read. */
export interface Broken {
  document?: number;
  /** "is not valid YAML (line 3: ...)"; completes "<file>: document N <reason>" */
  reason: string;
}

export interface Note {
  level: 'error' | 'warn' | 'debug';
  where: string;
  msg: string;
  kind?: string | null;
}

/**
 * The documents of a file's parts by the hash of their text, for its next
 * version. A part that is one document of one object (most are) is kept as
 * that object's item alone.
 */
export type PartCache = Map<string, DocOutcome[] | Item>;

function toCache(docs: DocOutcome[]): DocOutcome[] | Item {
  const d = docs[0];
  if (docs.length !== 1 || !d || d.broken || d.list || d.note || d.items.length !== 1) return docs;
  const item = d.items[0]!;
  return 'id' in item ? item : docs;
}

const fromCache = (c: DocOutcome[] | Item): DocOutcome[] => (Array.isArray(c) ? c : [{ list: false, items: [c] }]);

export interface Parsed {
  /** by "Kind/namespace/name" */
  objects: Map<string, ManifestObject>;
  /** documents read (including empty ones) */
  good: number;
  broken: Broken[];
  /** problems with single objects of readable documents */
  notes: Note[];
  /** objects serialised for their digest (those of cached parts are not) */
  digests: number;
  /** documents parsed (those of cached parts are not) */
  parsedDocuments: number;
  parts: PartCache;
}

/** What one document yields, wherever it is in the file. */
interface DocOutcome {
  /** why it cannot be read; `line` turns a line of its part into a line of the file */
  broken?: (line: (partLine: number) => number) => string;
  /** a List: its items are named "item N" */
  list: boolean;
  /** a problem of the document itself */
  note?: ItemNote;
  items: Array<Item | ItemNote>;
}

interface ItemNote {
  level: 'error' | 'warn' | 'debug';
  /** completes "<where>: " */
  msg: string;
  kind?: string | null;
}

interface Part {
  docs: DocOutcome[];
  digests: number;
  /** stopped at the document budget: more documents follow */
  truncated?: boolean;
}

/** Kinds we know and leave to other parts (or later). */
const KNOWN_OTHER = new Set([
  'Deployment',
  'ConfigMap',
  'Endpoints',
  'DaemonSet',
  'ServiceAccount',
  'ClusterRole',
  'ClusterRoleBinding',
  'CustomResourceDefinition',
]);

class TooBig extends Error {}

/**
 * `rel` names the file in messages; `json`: parse as one JSON value (much
 * faster and smaller than the YAML parser for the same text); `previous`:
 * the parts of the file's last version, reused where the text is the same
 * (they were converted with the same `policy`).
 */
export function parseManifest(
  rel: string,
  bytes: Buffer,
  json: boolean,
  limits: ParseLimits = DEFAULT_PARSE_LIMITS,
  previous?: PartCache,
  policy: ConvertPolicy = DEFAULT_SERVICE_POLICY,
): Parsed {
  const out: Parsed = { objects: new Map(), good: 0, broken: [], notes: [], digests: 0, parsedDocuments: 0, parts: new Map() };
  if (bytes.includes(0)) {
    out.broken.push({ reason: 'is not a text file (it contains NUL bytes)' });
    return out;
  }
  if (!isUtf8(bytes)) {
    out.broken.push({ reason: 'is not UTF-8 text' });
    return out;
  }
  let text = bytes.toString('utf8');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const docs: Array<{ doc: DocOutcome; firstLine: number }> = [];
  if (json) {
    const part = parseJson(text, limits, policy);
    out.digests += part.digests;
    out.parsedDocuments++;
    docs.push({ doc: part.docs[0]!, firstLine: 1 });
  } else {
    let firstUnread: number | undefined;
    for (const { start, end, firstLine } of splitDocuments(text, limits.maxDocuments)) {
      const budget = limits.maxDocuments - docs.length;
      const source = text.slice(start, end);
      const key = createHash('sha1').update(source).digest('base64');
      const cached = out.parts.get(key) ?? previous?.get(key);
      let part: Part;
      if (cached) part = { docs: fromCache(cached), digests: 0 };
      else {
        part = parseYaml(source, limits, budget, policy);
        out.digests += part.digests;
        out.parsedDocuments += part.docs.length;
      }
      // A part cut short by the budget is not kept: elsewhere it could be read whole.
      if (!part.truncated) out.parts.set(key, cached ?? toCache(part.docs));
      for (const doc of part.docs.slice(0, budget)) docs.push({ doc, firstLine });
      if (part.truncated || part.docs.length > budget) {
        firstUnread = firstLine;
        break;
      }
    }
    if (firstUnread !== undefined) {
      const why = `is past the limit of ${limits.maxDocuments} documents in one file: it and the rest of the file are not read`;
      docs.push({ doc: { broken: () => why, list: false, items: [] }, firstLine: firstUnread });
    }
  }
  assemble(rel, docs, out);
  return out;
}

/**
 * The file cut before each `---` line. A part that is only blanks and
 * comments joins the next one, so documents are numbered as a reader
 * counts them. Files with directives (%YAML, %TAG) stay whole: a
 * directive belongs to the document after it.
 */
function splitDocuments(text: string, max: number): Array<{ start: number; end: number; firstLine: number }> {
  if (/^%/m.test(text)) return [{ start: 0, end: text.length, firstLine: 1 }];
  const cuts: number[] = [];
  const marker = /^---(?=[ \t\r\n]|$)/gm;
  // Past `max` parts the rest stays one part: it is not read anyway.
  for (let m = marker.exec(text); m && cuts.length <= max; m = marker.exec(text)) cuts.push(m.index);
  const parts: Array<{ start: number; end: number; firstLine: number }> = [];
  let start = 0;
  let line = 1;
  let counted = 0;
  for (const cut of [...cuts, text.length]) {
    if (cut === start && cut !== text.length) continue;
    if (cut !== text.length && parts.length === 0 && onlyComments(text, start, cut)) continue;
    for (let i = text.indexOf('\n', counted); i !== -1 && i < start; i = text.indexOf('\n', i + 1)) line++;
    counted = start;
    parts.push({ start, end: cut, firstLine: line });
    start = cut;
  }
  return parts;
}

function onlyComments(text: string, start: number, end: number): boolean {
  for (let i = start; i < end;) {
    let j = text.indexOf('\n', i);
    if (j === -1 || j > end) j = end;
    const line = text.slice(i, j).trim();
    if (line !== '' && !line.startsWith('#')) return false;
    i = j + 1;
  }
  return true;
}

function parseJson(text: string, limits: ParseLimits, policy: ConvertPolicy): Part {
  const part: Part = { docs: [], digests: 0 };
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch (e) {
    const reason = `is not valid JSON (${jsonPosition(text, (e as Error).message)})`;
    part.docs.push({ broken: () => reason, list: false, items: [] });
    return part;
  }
  part.docs.push(document(value, limits, part, policy));
  return part;
}

/** JSON.parse's message on one line, with the line number when it gives a position. */
function jsonPosition(text: string, message: string): string {
  const msg = message.replace(/\s+/g, ' ').slice(0, 200);
  const m = /position (\d+)/.exec(msg);
  if (!m) return msg;
  let line = 1;
  const end = Math.min(Number(m[1]), text.length);
  for (let i = text.indexOf('\n'); i !== -1 && i < end; i = text.indexOf('\n', i + 1)) line++;
  return `line ${line}: ${msg}`;
}

/** The documents of one part of a YAML file, at most `budget` of them (then `truncated`). */
function parseYaml(text: string, limits: ParseLimits, budget: number, policy: ConvertPolicy): Part {
  const part: Part = { docs: [], digests: 0 };
  const lines = new LineCounter();
  const lineOf = (offset: number) => lines.linePos(offset).line;
  // Duplicate keys are found below in linear time: yaml's own check
  // compares each key with every earlier one (quadratic in a map's size).
  const composer = new Composer({ uniqueKeys: false });
  try {
    for (const doc of composer.compose(tokens(text, lines, limits), false)) {
      if (part.docs.length >= budget) {
        part.truncated = true;
        break;
      }
      const reason = documentError(doc, lineOf);
      if (reason) {
        part.docs.push({ broken: reason, list: false, items: [] });
        continue;
      }
      let value: unknown;
      try {
        value = doc.toJS({ maxAliasCount: limits.maxAliasCount }) as unknown;
      } catch (e) {
        const msg = (e as Error).message;
        const why = /alias/i.test(msg)
          ? `expands too many aliases (YAML *references; more than ${limits.maxAliasCount}): ${msg}`
          : `cannot be converted (${msg})`;
        part.docs.push({ broken: () => why, list: false, items: [] });
        continue;
      }
      part.docs.push(document(value, limits, part, policy));
    }
  } catch (e) {
    // A limit from tokens(), or the parser failing: the rest of this part is not read.
    const { message, offset } = e as Error & { offset?: number };
    const what = e instanceof TooBig ? message : `cannot be parsed (${String(message).split('\n')[0]})`;
    const at = offset === undefined ? undefined : lineOf(offset);
    part.docs.push({ broken: (line) => (at === undefined ? what : `${what} (line ${line(at)})`), list: false, items: [] });
  }
  if (part.docs.length === 0) part.docs.push({ list: false, items: [] }); // blanks and comments: an empty document
  return part;
}

/** The parser's tokens, stopping at a document nested too deep or too big to hold. */
function* tokens(text: string, lines: LineCounter, limits: ParseLimits): Generator<CST.Token> {
  const parser = new Parser(lines.addNewLine);
  lines.addNewLine(0); // as Parser.parse() does: line 1 starts at 0
  let count = 0;
  for (const lexeme of new Lexer().lex(text)) {
    if (++count > limits.maxDocumentTokens) {
      const mb = Math.max(1, Math.round((limits.maxDocumentTokens * 2) / 1e6));
      throw new TooBig(
        `has more than ${limits.maxDocumentTokens} YAML tokens (about ${mb} MB in one document; split it into documents with ---, or write it as JSON)`,
      );
    }
    for (const token of parser.next(lexeme)) {
      if (token.type === 'document') count = 0;
      yield token;
    }
    if (parser.stack.length > limits.maxDepth) {
      throw Object.assign(new TooBig(`is nested more than ${limits.maxDepth} levels deep`), { offset: parser.offset });
    }
  }
  yield* parser.end();
}

/** The first error of a document, with its line; duplicate keys included. */
function documentError(doc: Document.Parsed, lineOf: (offset: number) => number): DocOutcome['broken'] {
  const e = doc.errors[0];
  if (e) {
    const at = lineOf(e.pos[0]);
    const msg = e.message.split('\n')[0];
    return (line) => `is not valid YAML (line ${line(at)}: ${msg})`;
  }
  let dup: DocOutcome['broken'];
  visit(doc, {
    Map(_, map) {
      const seen = new Set<unknown>();
      for (const pair of map.items) {
        if (!isScalar(pair.key)) continue;
        if (seen.has(pair.key.value)) {
          const key = String(pair.key.value);
          const at = pair.key.range ? lineOf(pair.key.range[0]) : undefined;
          dup = (line) => `is not valid YAML (duplicate key "${key}"${at === undefined ? '' : ` on line ${line(at)}`})`;
          return visit.BREAK;
        }
        seen.add(pair.key.value);
      }
      return undefined;
    },
  });
  return dup;
}

/** A readable document: its object, or the items of its List. */
function document(value: unknown, limits: ParseLimits, part: Part, policy: ConvertPolicy): DocOutcome {
  if (value === null || value === undefined) return { list: false, items: [] };
  if (deeperThan(value, limits.maxDepth)) {
    return { broken: () => `is nested more than ${limits.maxDepth} levels deep`, list: false, items: [] };
  }
  if (isObject(value) && value.kind === 'List') {
    const items = value.items;
    if (items === undefined || items === null) return { list: true, items: [] };
    if (!Array.isArray(items)) {
      return {
        list: true,
        items: [],
        note: { level: 'error', msg: `kind List with items that are not a list (${typeName(items)}); nothing in it is applied` },
      };
    }
    return { list: true, items: items.map((item: unknown) => collect(item, part, policy)) };
  }
  return { list: false, items: [collect(value, part, policy)] };
}

function collect(item: unknown, part: Part, policy: ConvertPolicy): Item | ItemNote {
  if (!isObject(item)) {
    return { level: 'error', msg: `not a Kubernetes object (${typeName(item)}; expected a mapping with kind and metadata); skipped` };
  }
  const kind = (typeof item.kind === 'string' ? item.kind : '') as Kind;
  if (!KINDS.includes(kind)) {
    if (KNOWN_OTHER.has(kind)) return { level: 'debug', kind, msg: `${kind} is not used by the service dataplane; skipped` };
    return { level: 'warn', kind: kind || null, msg: `unknown kind ${kind ? `"${kind}"` : '(missing field kind)'}; skipped` };
  }
  const apiVersion =
    typeof item.apiVersion === 'string' ? item.apiVersion : item.apiVersion === undefined ? '(missing)' : typeName(item.apiVersion);
  if (!API_VERSIONS[kind].includes(apiVersion)) {
    return { level: 'warn', msg: `${kind} apiVersion ${apiVersion} is not ${API_VERSIONS[kind].join(' or ')}; skipped` };
  }
  const meta = isObject(item.metadata) ? item.metadata : {};
  const ns = CLUSTER_SCOPED.has(kind) ? '' : typeof meta.namespace === 'string' ? meta.namespace : 'default';
  const name = typeof meta.name === 'string' ? meta.name : '';
  let json: string;
  try {
    part.digests++;
    json = JSON.stringify(item);
  } catch (e) {
    // a circle or a nesting made of YAML aliases
    return { level: 'error', msg: `${kind} ${ns}/${name} cannot be serialised (${(e as Error).message.split('\n')[0]}); skipped` };
  }
  const digest = createHash('sha1').update(json).digest('base64');
  // Converted from its JSON form, as kubectl would send it: YAML values are
  // slices of the file's text, and one of them kept would keep the whole text.
  const { object, problems } = convertObject(kind, ns ? `${ns}/${name}` : name, JSON.parse(json) as unknown, policy);
  return { id: `${kind}/${ns}/${name}`, digest, ...(object ?? { kind }), ...(problems.length > 0 ? { problems } : {}) };
}

/** Number the documents and name every object and problem by file, document and item. */
function assemble(rel: string, docs: Array<{ doc: DocOutcome; firstLine: number }>, out: Parsed): void {
  let n = 0;
  for (const { doc, firstLine } of docs) {
    n++;
    if (doc.broken) {
      out.broken.push({ document: n, reason: doc.broken((l) => firstLine + l - 1) });
      continue;
    }
    out.good++;
    const here = `${rel} document ${n}`;
    if (doc.note) out.notes.push(note(doc.note, here));
    doc.items.forEach((item, j) => {
      const itemNo = doc.list ? j + 1 : 0;
      if (!('id' in item)) {
        out.notes.push(note(item, itemNo ? `${here} item ${itemNo}` : here));
        return;
      }
      const at = new ManifestObject(item, rel, n, itemNo);
      const first = out.objects.get(item.id);
      if (first) {
        const [kind, ns, name] = item.id.split('/');
        const where = at.where;
        out.notes.push({
          level: 'error',
          where,
          msg: `${where}: ${kind} ${ns}/${name} is defined twice in this file (also ${first.where}); the first is used`,
        });
        return;
      }
      out.objects.set(item.id, at);
    });
  }
}

function note(n: ItemNote, where: string): Note {
  return { level: n.level, where, msg: `${where}: ${n.msg}`, ...(n.kind !== undefined ? { kind: n.kind } : {}) };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return `${typeof v} ${String(v)}`;
  return typeof v;
}

/**
 * Without recursion: the value may be anything JSON.parse accepts. Each
 * object is visited once (YAML aliases share them, and may form circles).
 */
function deeperThan(value: unknown, max: number): boolean {
  const seen = new Set<object>();
  const stack: Array<[unknown, number]> = [[value, 1]];
  for (let top = stack.pop(); top; top = stack.pop()) {
    const [v, depth] = top;
    if (typeof v !== 'object' || v === null || seen.has(v)) continue;
    if (depth > max) return true;
    seen.add(v);
    for (const c of Array.isArray(v) ? v : Object.values(v)) if (typeof c === 'object' && c !== null) stack.push([c, depth + 1]);
  }
  return false;
}
