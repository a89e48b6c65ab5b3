/** Option parsers and options shared by the commands: values as a user writes them. */
import { InvalidArgumentError, Option } from '@commander-js/extra-typings';
import { DEFAULT_STATE_DIR } from '../agent/lock.js';
import { parseBindAddress, type BindSpec } from '../health/bind-address.js';
import { parseDuration } from '../dataplane/bpf/config.js';

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
/** A duration in ms as a user writes it on the command line: 1s, 30s, 5m, 250ms. */
export const formatMs = (ms: number): string =>
  ms % 3_600_000 === 0 ? `${ms / 3_600_000}h` : ms % 60_000 === 0 ? `${ms / 60_000}m` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
export const duration =
  (what: string) =>
  (v: string): number => {
    try {
      return parseDuration(v, what) * 1000;
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  };

export const pinDirOption = () => new Option('--pin-dir <path>', 'where the maps are pinned').default(DEFAULT_PIN_DIR);
export const outputOption = () => new Option('-o, --output <format>', 'table or json').choices(['table', 'json']).default('table');

export const bool =
  (what: string) =>
  (v: string): boolean => {
    if (v === 'true') return true;
    if (v === 'false') return false;
    throw new InvalidArgumentError(`${what} must be true or false`);
  };
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
