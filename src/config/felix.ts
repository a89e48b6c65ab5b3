/**
 * Calico's FelixConfiguration to Config. The cluster-wide `default` is
 * overlaid by the per-node `node.<nodename>`, field by field, each field
 * through its row in fields.ts. A config with an invalid value is refused
 * whole, each problem naming its object and field; the last good config
 * stays in force.
 */
import type { Config } from './config.js';
import { UNSUPPORTED_FIELDS, fieldNamed } from './fields.js';

export interface ConfigProblem {
  /** "default" or "node.<name>" */
  object: string;
  /** "spec.bpfConntrackTimeouts.tcpEstablished" */
  field: string;
  message: string;
}

export interface ConfigResult {
  config?: Config;
  problems: ConfigProblem[];
  /** fields present that bpfproxy ignores */
  ignored: string[];
}

type Spec = Record<string, unknown>;

/** Apply one spec's fields over a config; problems are collected, not thrown. */
function overlay(base: Config, spec: Spec, object: string, problems: ConfigProblem[], ignored: string[]): Config {
  const c = { ...base };
  for (const [name, v] of Object.entries(spec)) {
    if (v === null || v === undefined) continue;
    const f = fieldNamed(name);
    if (!f) {
      if (name.startsWith('bpf'))
        ignored.push(UNSUPPORTED_FIELDS.has(name) ? `${name} (not supported by bpfproxy yet)` : `${name} (unknown)`);
      continue;
    }
    for (const i of f.apply(c, v)) problems.push({ object, field: `spec.${name}${i.path}`, message: i.message });
  }
  return c;
}

/**
 * The effective config for a node: base (defaults and command-line
 * settings) <- FelixConfiguration `default` <- `node.<nodeName>`.
 */
export function effectiveConfig(base: Config, defaultSpec: Spec | undefined, nodeSpec: Spec | undefined, nodeName: string): ConfigResult {
  const problems: ConfigProblem[] = [];
  const ignored: string[] = [];
  let c = base;
  if (defaultSpec) c = overlay(c, defaultSpec, 'default', problems, ignored);
  if (nodeSpec) c = overlay(c, nodeSpec, `node.${nodeName}`, problems, ignored);
  return problems.length ? { problems, ignored } : { config: c, problems, ignored };
}

/** What bpfproxy cannot honour in this config, said plainly (every field it reads is honoured today). */
export function unsupported(_c: Config): string[] {
  return [];
}
