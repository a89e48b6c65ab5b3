/**
 * Holds the FelixConfiguration objects that concern this node (`default`
 * and `node.<nodeName>`) and turns them into the effective Config.
 * An invalid config is refused whole and reported; the last good one stays.
 */
import type { Logger } from '../log.js';
import { configChange } from './change.js';
import type { Config } from './config.js';
import { effectiveConfig, type ConfigProblem } from './felix.js';

export class ConfigController {
  private readonly specs = new Map<string, Record<string, unknown>>();
  private current: Config;
  private readonly saidIgnored = new Set<string>();
  private lastProblems = '';

  constructor(
    private readonly base: Config,
    private readonly nodeName: string,
    private readonly log: Logger,
    private readonly onInvalid: (problems: ConfigProblem[]) => void,
  ) {
    this.current = base;
  }

  get config(): Config {
    return this.current;
  }

  /** Record a FelixConfiguration (undefined: deleted). True when it concerns this node. */
  apply(name: string, obj: unknown): boolean {
    if (name !== 'default' && name !== `node.${this.nodeName}`) return false;
    const spec = (obj as { spec?: unknown } | undefined)?.spec;
    if (obj === undefined) this.specs.delete(name);
    else this.specs.set(name, spec && typeof spec === 'object' && !Array.isArray(spec) ? (spec as Record<string, unknown>) : {});
    return true;
  }

  /** Recompute; returns the new config when it changed. */
  evaluate(): Config | undefined {
    const r = effectiveConfig(this.base, this.specs.get('default'), this.specs.get(`node.${this.nodeName}`), this.nodeName);
    for (const f of r.ignored) {
      if (this.saidIgnored.has(f)) continue;
      this.saidIgnored.add(f);
      this.log.info({ field: f }, `FelixConfiguration field ${f} is ignored`);
    }
    if (!r.config) {
      const text = JSON.stringify(r.problems);
      if (text !== this.lastProblems) {
        this.lastProblems = text;
        for (const p of r.problems) {
          this.log.error(
            { felixConfiguration: p.object, field: p.field },
            `FelixConfiguration ${p.object} field ${p.field}: ${p.message}; the configuration is refused and the last good one stays in force`,
          );
        }
        this.onInvalid(r.problems);
      }
      return undefined;
    }
    this.lastProblems = '';
    if (configChange(this.current, r.config).class === 'nothing') return undefined;
    this.current = r.config;
    return r.config;
  }
}
