/**
 * What a source found wrong with an object it read, field by field. The
 * sources report problems (logs, Events) and deliver only what converted.
 */
export interface Problem {
  /** "Service default/web" */
  object: string;
  /** "spec.ports[1].port" */
  field: string;
  message: string;
  /** false: the field was skipped and the rest of the object applied */
  fatal: boolean;
}

/** A conversion's outcome: the domain object (none when a fatal problem dropped it) and the problems found. */
export interface Converted<T> {
  value?: T;
  problems: Problem[];
}
