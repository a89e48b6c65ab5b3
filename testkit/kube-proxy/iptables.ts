/**
 * The iptables commands kube-proxy's iptables mode runs, in one network
 * namespace (or the caller's own): the monitor's canary chains, the jumps
 * from the built-in chains (EnsureChain/EnsureRule), `iptables-save -t nat`
 * for the stale-chain cleanup, `iptables-restore --noflush --counters`, and
 * `kube-proxy --cleanup` (CleanupLeftovers). Shared by the benchmark's
 * kube-proxy variant and the lab's kube-proxy stand-in.
 */
import { spawnSync } from 'node:child_process';
import { nsPath } from '../netns.js';
import { CANARY_CHAIN, CANARY_TABLES, IPTABLES_RESTORE_ARGS, IPTABLES_WAIT_ARGS, JUMP_CHAINS, natChainsFromSave } from './rules.js';

/** Chains kube-proxy's iptables mode owns, besides its per-service ones (KUBE-SVC/SVL/EXT/FW/SEP-*). */
const OWN_CHAINS = new Set([
  'KUBE-SERVICES',
  'KUBE-EXTERNAL-SERVICES',
  'KUBE-FORWARD',
  'KUBE-NODEPORTS',
  'KUBE-PROXY-FIREWALL',
  'KUBE-POSTROUTING',
  'KUBE-MARK-MASQ',
  CANARY_CHAIN,
]);
/** kube-proxy's chains, as `kube-proxy --cleanup` removes them; kubelet's (KUBE-FIREWALL, KUBE-KUBELET-CANARY) stay. */
export const isKubeProxyOwnChain = (c: string): boolean => OWN_CHAINS.has(c) || /^KUBE-(SVC|SVL|EXT|FW|SEP)-/.test(c);

/**
 * An iptables command that ran past its time limit and was killed (SIGKILL).
 * iptables-nft sends a restore to the kernel as one transaction at its end,
 * so a restore killed before then changed nothing.
 */
export class IptablesTimeout extends Error {
  constructor(
    readonly command: string,
    readonly limitMs: number,
    label: string,
  ) {
    super(`${label}: ${command} did not finish in ${limitMs / 1000} s and was killed; nothing it was writing was applied`);
    this.name = 'IptablesTimeout';
  }
}

export interface CleanupOutcome {
  /** "table/chain" removed */
  removed: string[];
  /** rules of other chains that jumped into them, removed */
  jumps: number;
}

export class KubeProxyTables {
  /**
   * @param ns the network namespace (under /run/netns) to run in; undefined:
   *   the caller's own (a process already started in the node's namespace)
   * @param label how errors name this kube-proxy (and what happens next)
   * @param timeoutMs kill any one command that runs longer (IptablesTimeout); unset: no limit
   */
  constructor(
    readonly ns: string | undefined,
    private readonly label = ns ? `kube-proxy iptables in netns ${ns}` : 'kube-proxy iptables',
    readonly timeoutMs?: number,
  ) {}

  run(cmd: string, args: readonly string[], input?: string, okStatus: readonly number[] = [0]): { status: number; stdout: string } {
    const full = this.ns ? ['nsenter', `--net=${nsPath(this.ns)}`, '--', cmd, ...args] : [cmd, ...args];
    // nsenter execs the command, so the kill reaches iptables itself
    const limit = this.timeoutMs ? { timeout: this.timeoutMs, killSignal: 'SIGKILL' as const } : {};
    const r = spawnSync(full[0]!, full.slice(1), { input, encoding: 'utf8', maxBuffer: 1 << 30, ...limit });
    if (this.timeoutMs && r.error?.message.includes('ETIMEDOUT'))
      throw new IptablesTimeout(`${cmd} ${args.join(' ')}`, this.timeoutMs, this.label);
    const status = r.status ?? -1;
    if (!okStatus.includes(status)) {
      throw new Error(`${this.label}: ${cmd} ${args.join(' ')} exited ${status}: ${(r.stderr || r.error?.message || '').slice(0, 500)}`);
    }
    return { status, stdout: r.stdout };
  }

  /** kube-proxy's iptables.Monitor start: the canary chain in mangle, nat and filter. */
  startMonitor(): void {
    for (const t of CANARY_TABLES) this.run('iptables', [...IPTABLES_WAIT_ARGS, '-N', CANARY_CHAIN, '-t', t], undefined, [0, 1]);
  }

  /** The monitor's check (every syncPeriod): is the canary still in mangle? Gone means someone flushed the tables. */
  canaryPresent(): boolean {
    return this.run('iptables', [...IPTABLES_WAIT_ARGS, '-S', CANARY_CHAIN, '-t', CANARY_TABLES[0]], undefined, [0, 1]).status === 0;
  }

  /** EnsureChain and EnsureRule(Prepend) for every jump, as a full sync does. */
  ensureJumps(): void {
    for (const j of JUMP_CHAINS) {
      this.run('iptables', [...IPTABLES_WAIT_ARGS, '-N', j.chain, '-t', j.table], undefined, [0, 1]);
      const exists = this.run('iptables', [...IPTABLES_WAIT_ARGS, '-C', j.from, '-t', j.table, ...j.args], undefined, [0, 1]).status === 0;
      if (!exists) this.run('iptables', [...IPTABLES_WAIT_ARGS, '-I', j.from, '-t', j.table, ...j.args]);
    }
  }

  /** The nat table's chains (`iptables-save -t nat`), for the stale-chain cleanup. */
  natChains(): Set<string> {
    return natChainsFromSave(this.run('iptables-save', ['-t', 'nat']).stdout);
  }

  restore(input: string): void {
    this.run('iptables-restore', IPTABLES_RESTORE_ARGS, input);
  }

  /**
   * `kube-proxy --cleanup` (CleanupLeftovers): the jumps into kube-proxy's
   * chains go, then its chains in every table are flushed and deleted, in one
   * restore per table. Kubelet's chains and everyone else's rules stay.
   * Conntrack is not touched: connections already translated keep working.
   */
  cleanup(): CleanupOutcome {
    const out: CleanupOutcome = { removed: [], jumps: 0 };
    for (const table of ['filter', 'nat', 'mangle']) {
      const save = this.run('iptables-save', ['-t', table], undefined, [0, 1]).stdout;
      const chains: string[] = [];
      const jumps: string[] = [];
      for (const line of save.split('\n')) {
        if (line.startsWith(':')) {
          const c = line.slice(1).split(' ')[0]!;
          if (isKubeProxyOwnChain(c)) chains.push(c);
        } else if (line.startsWith('-A ')) {
          const from = line.split(' ')[1]!;
          const to = / -[jg] (\S+)/.exec(line)?.[1];
          if (!isKubeProxyOwnChain(from) && to && isKubeProxyOwnChain(to)) jumps.push(`-D ${line.slice(3)}`);
        }
      }
      if (!chains.length && !jumps.length) continue;
      const input = [`*${table}`, ...jumps, ...chains.map((c) => `:${c} - [0:0]`), ...chains.map((c) => `-X ${c}`), 'COMMIT', ''].join(
        '\n',
      );
      this.run('iptables-restore', ['-w', '5', '--noflush'], input);
      out.removed.push(...chains.map((c) => `${table}/${c}`));
      out.jumps += jumps.length;
    }
    return out;
  }
}
