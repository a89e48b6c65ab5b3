/**
 * API errors as the real API server writes them: an HTTP code and a
 * meta/v1 Status body whose reason, message and details kubectl and
 * client libraries read (kubectl prints `Error from server (<reason>): <message>`).
 */

export interface StatusCause {
  reason: string;
  message: string;
  field?: string;
}

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  uid?: string;
  causes?: StatusCause[];
  retryAfterSeconds?: number;
}

export interface Status {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure' | 'Success';
  message?: string;
  reason?: string;
  details?: StatusDetails;
  code: number;
}

export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: StatusDetails,
  ) {
    super(message);
  }

  status(): Status {
    return {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: this.message,
      reason: this.reason,
      ...(this.details ? { details: this.details } : {}),
      code: this.code,
    };
  }
}

/** group-qualified resource as the real server names it in messages: `services`, `daemonsets.apps`. */
export interface Qualified {
  group: string;
  plural: string;
  kind: string;
}

const qualified = (r: Qualified): string => (r.group ? `${r.plural}.${r.group}` : r.plural);

export const notFound = (r: Qualified, name: string): ApiError =>
  new ApiError(404, 'NotFound', `${qualified(r)} "${name}" not found`, { name, group: r.group, kind: r.plural });

export const alreadyExists = (r: Qualified, name: string): ApiError =>
  new ApiError(409, 'AlreadyExists', `${qualified(r)} "${name}" already exists`, { name, group: r.group, kind: r.plural });

export const conflict = (r: Qualified, name: string, why: string): ApiError =>
  new ApiError(409, 'Conflict', `Operation cannot be fulfilled on ${qualified(r)} "${name}": ${why}`, {
    name,
    group: r.group,
    kind: r.plural,
  });

export const staleVersion = (r: Qualified, name: string): ApiError =>
  conflict(r, name, 'the object has been modified; please apply your changes to the latest version and try again');

export const badRequest = (message: string, causes?: StatusCause[]): ApiError =>
  new ApiError(400, 'BadRequest', message, causes ? { causes } : undefined);

export const methodNotAllowed = (message: string): ApiError => new ApiError(405, 'MethodNotAllowed', message);

export const notAcceptable = (message: string): ApiError => new ApiError(406, 'NotAcceptable', message);

export const unsupportedMediaType = (contentType: string, accepted: string[]): ApiError =>
  new ApiError(
    415,
    'UnsupportedMediaType',
    `the body of the request was in an unknown format (${contentType || 'no Content-Type'}) - accepted media types include: ${accepted.join(', ')}`,
  );

export const gone = (message = 'too old resource version'): ApiError => new ApiError(410, 'Expired', message);

export const tooLarge = (limit: number): ApiError =>
  new ApiError(413, 'RequestEntityTooLarge', `Request entity too large: limit is ${limit}`);

/** One invalid field, as apimachinery's field.Error renders it. */
export interface FieldError {
  type:
    | 'FieldValueRequired'
    | 'FieldValueInvalid'
    | 'FieldValueNotSupported'
    | 'FieldValueTypeInvalid'
    | 'FieldValueForbidden'
    | 'FieldValueDuplicate'
    | 'FieldValueTooLong';
  field: string;
  detail: string;
  value?: unknown;
  supported?: string[];
}

const show = (v: unknown): string => (typeof v === 'string' ? JSON.stringify(v) : (JSON.stringify(v) ?? 'null'));

export function fieldErrorMessage(e: FieldError): string {
  switch (e.type) {
    case 'FieldValueRequired':
      return `Required value${e.detail ? `: ${e.detail}` : ''}`;
    case 'FieldValueNotSupported':
      return `Unsupported value: ${show(e.value)}${e.supported ? `: supported values: ${e.supported.map((s) => JSON.stringify(s)).join(', ')}` : ''}`;
    case 'FieldValueForbidden':
      return `Forbidden: ${e.detail}`;
    case 'FieldValueDuplicate':
      return `Duplicate value: ${show(e.value)}`;
    case 'FieldValueTooLong':
      return `Too long: ${e.detail}`;
    case 'FieldValueTypeInvalid':
    case 'FieldValueInvalid':
      return `Invalid value: ${show(e.value)}${e.detail ? `: ${e.detail}` : ''}`;
  }
}

/** 422 Invalid: `<Kind> "<name>" is invalid: <field>: <message>, ...` with one cause per field. */
export function invalid(r: Qualified, name: string, errors: FieldError[]): ApiError {
  const kindName = r.group ? `${r.kind}.${r.group}` : r.kind;
  const parts = errors.map((e) => `${e.field}: ${fieldErrorMessage(e)}`);
  const summary = parts.length === 1 ? parts[0] : `[${parts.join(', ')}]`;
  return new ApiError(422, 'Invalid', `${kindName} "${name}" is invalid: ${summary}`, {
    name,
    group: r.group,
    kind: r.kind,
    causes: errors.map((e) => ({ reason: e.type, message: fieldErrorMessage(e), field: e.field })),
  });
}

export const internalError = (message: string): ApiError =>
  new ApiError(500, 'InternalError', `Internal error occurred: ${message}`, { causes: [{ reason: 'UnexpectedServerResponse', message }] });
