/**
 * HTTP plumbing for the test API server: request bodies with a size
 * limit, decoding by Content-Type (400 for what cannot be read, 415 for
 * formats it does not take), response negotiation by Accept (JSON, YAML,
 * Table), and Status replies.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { parse as parseYaml, stringify as yamlStringify } from 'yaml';
import { ApiError, badRequest, notAcceptable, tooLarge, unsupportedMediaType } from './errors.js';
import { decodeProtobuf, PROTOBUF } from './protobuf.js';

export type Obj = Record<string, unknown>;

/** The real server's limit on request bodies. */
export const MAX_BODY = 3 * 1024 * 1024;

export function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (d: Buffer) => {
      size += d.length;
      if (size > MAX_BODY) {
        reject(tooLarge(MAX_BODY));
        req.resume();
        return;
      }
      chunks.push(d);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export const mediaType = (header: string | undefined): string => (header ?? '').split(';')[0]!.trim().toLowerCase();

const preview = (body: Buffer): string => body.subarray(0, 40).toString('hex');

/** Parses JSON; 400 with the parser's complaint and the first bytes, as the real server reports. */
export function parseJson(body: Buffer, what: string): unknown {
  try {
    return JSON.parse(body.toString('utf8')) as unknown;
  } catch (e) {
    throw badRequest(`${what}: couldn't get version/kind; json parse error: ${(e as Error).message} (${preview(body)})`);
  }
}

export function parseYamlBody(body: Buffer, what: string): unknown {
  try {
    return parseYaml(body.toString('utf8')) as unknown;
  } catch (e) {
    throw badRequest(`${what}: error converting YAML to JSON: ${(e as Error).message.split('\n')[0]}`);
  }
}

const OBJECT_TYPES = ['application/json', 'application/yaml', PROTOBUF];

/** An object body (create, update, delete options) in JSON, YAML or (a few kinds) protobuf. */
export function decodeObject(body: Buffer, contentType: string | undefined, what: string): Obj {
  const type = mediaType(contentType);
  let v: unknown;
  if (type === 'application/json') v = parseJson(body, what);
  else if (type === 'application/yaml') v = parseYamlBody(body, what);
  else if (type === PROTOBUF) v = decodeProtobuf(body);
  else throw unsupportedMediaType(contentType ?? '', OBJECT_TYPES);
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw badRequest(`${what}: Object 'Kind' is missing in '${body.subarray(0, 200).toString('utf8')}' (the body must be a JSON object)`);
  return v as Obj;
}

export type Output = { kind: 'json' } | { kind: 'yaml' } | { kind: 'table'; version: 'v1' | 'v1beta1' };

/** Picks the response format from Accept; 406 when the client takes nothing we write. */
export function negotiate(accept: string | undefined, tableAllowed: boolean): Output {
  if (!accept) return { kind: 'json' };
  let sawJson = false;
  let sawYaml = false;
  for (const part of accept.split(',')) {
    const [type, ...params] = part.split(';').map((s) => s.trim());
    const p = Object.fromEntries(params.map((x) => x.split('=').map((s) => s.trim()) as [string, string]));
    const t = (type ?? '').toLowerCase();
    if (p.as === 'Table' && tableAllowed && (t === 'application/json' || t === '*/*') && (p.g === 'meta.k8s.io' || p.g === undefined)) {
      return { kind: 'table', version: p.v === 'v1beta1' ? 'v1beta1' : 'v1' };
    }
    if (p.as) continue; // some other transformation (PartialObjectMetadata...): not offered
    if (t === 'application/json' || t === '*/*' || t === 'application/*' || t === '') sawJson = true;
    if (t === 'application/yaml') sawYaml = true;
  }
  if (sawJson) return { kind: 'json' };
  if (sawYaml) return { kind: 'yaml' };
  const onlyTransformations = accept.split(',').every((s) => /;\s*as=/.test(s));
  if (onlyTransformations) return { kind: 'json' };
  throw notAcceptable(
    `only the following media types are accepted: application/json, application/yaml, application/json;as=Table;v=v1;g=meta.k8s.io (asked for: ${accept})`,
  );
}

export function send(
  resp: ServerResponse,
  code: number,
  body: unknown,
  out: Output = { kind: 'json' },
  headers: Record<string, string> = {},
): void {
  if (resp.headersSent || resp.destroyed) return;
  const yaml = out.kind === 'yaml';
  const text = yaml ? yamlStringify(body) : JSON.stringify(body);
  resp.writeHead(code, {
    'Content-Type': yaml ? 'application/yaml' : 'application/json',
    'Cache-Control': 'no-cache, private',
    ...headers,
  });
  resp.end(text);
}

export function sendError(resp: ServerResponse, err: unknown): void {
  const e =
    err instanceof ApiError
      ? err
      : new ApiError(500, 'InternalError', `Internal error occurred: ${(err as Error)?.message ?? String(err)}`);
  if (resp.headersSent) {
    // a watch already streaming: end it with an ERROR event, as the real server does
    if (!resp.destroyed) resp.end(`${JSON.stringify({ type: 'ERROR', object: e.status() })}\n`);
    return;
  }
  send(resp, e.code, e.status());
}
