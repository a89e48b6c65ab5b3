/** Option parsers and options shared by the commands: values as a user writes them. */
import { InvalidArgumentError, Option } from '@commander-js/extra-typings';
import { DEFAULT_STATE_DIR } from '../agent/lock.js';
import { parseBindAddress, type BindSpec } from '../health/bind-address.js';
import { parseDuration } from '../config/duration.js';
import { FIELDS, type FelixField, type FieldValue } from '../config/fields.js';
import { formatDefault, parseFlag } from '../config/flags.js';

export const DEFAULT_PIN_DIR = '/sys/fs/bpf/bpfproxy';

export const regex =
  (what: string) =>
  (v: string): RegExp => {
    try {
      return new RegExp(v);
    } catch (e) {
      throw new InvalidArgumentError(`${what}: ${(e as Error).message}`);
    }
  };
export const positiveInt =
  (what: string) =>
  (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`${what} must be a positive whole number`);
    return n;
  };
/** A duration flag to ms, with the parser FelixConfiguration's durations use. */
export const duration =
  (what: string) =>
  (v: string): number => {
    try {
      return parseDuration(v);
    } catch (e) {
      throw new InvalidArgumentError(`${what}: ${(e as Error).message}`);
    }
  };

/** A flag parsed by a config/ parser that throws an Error naming the flag. */
export const flagParser =
  <T>(flag: string, parse: (flag: string, v: string) => T) =>
  (v: string): T => {
    try {
      return parse(flag, v);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  };

/** The parser of a flag that sets a FelixConfiguration field: the field's own (config/flags.ts). */
export const fieldParser =
  <K extends FelixField>(field: K, flag: string) =>
  (v: string): FieldValue<K> => {
    try {
      return parseFlag(field, flag, v);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  };

/**
 * An option that sets a FelixConfiguration field ("--map-size-conntrack <n>"
 * for bpfMapSizeConntrack): the field's parser, Calico's default written as
 * a user writes it, and the field's name in the help.
 */
export function configOption<U extends string, K extends FelixField>(usage: U, field: K) {
  const flag = usage.split(' ')[0]!;
  const def: FieldValue<K> = FIELDS[field].default;
  return new Option(usage, `${field}: ${FIELDS[field].help}`).argParser(fieldParser(field, flag)).default(def, formatDefault(field));
}

export const pinDirOption = () => new Option('--pin-dir <path>', 'where the maps are pinned').default(DEFAULT_PIN_DIR);
export const outputOption = () => new Option('-o, --output <format>', 'table or json').choices(['table', 'json']).default('table');

export const port =
  (what: string) =>
  (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || !Number.isInteger(n) || n < 0 || n > 65535)
      throw new InvalidArgumentError(`${what} must be a port number (0 turns it off)`);
    return n;
  };
export const bindAddress =
  (what: string) =>
  (v: string): BindSpec => {
    try {
      return parseBindAddress(what, v);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  };
export const stateDirOption = () =>
  new Option(
    '--state-dir <dir>',
    "where the pin dir's lock and the record of the clsact qdiscs we created are kept (a hostPath in Kubernetes)",
  ).default(DEFAULT_STATE_DIR);
