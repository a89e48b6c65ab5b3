/**
 * Taking over from kube-proxy (Calico's bpfKubeProxyIptablesCleanupEnabled):
 * remove the chains kube-proxy's iptables mode writes and the `kube-proxy`
 * nftables tables of its nftables mode. Nothing else is touched: not
 * kubelet's KUBE-FIREWALL / KUBE-KUBELET-CANARY / KUBE-IPTABLES-HINT, not
 * any other chain, rule or table.
 */
import { spawnSync } from 'node:child_process';
import type { Logger } from '../log.js';

/** Chains kube-proxy (iptables mode) creates. */
const KP_CHAINS = new Set([
  'KUBE-SERVICES',
  'KUBE-EXTERNAL-SERVICES',
  'KUBE-NODEPORTS',
  'KUBE-POSTROUTING',
  'KUBE-MARK-MASQ',
  'KUBE-FORWARD',
  'KUBE-PROXY-FIREWALL',
  'KUBE-PROXY-CANARY',
  'KUBE-LOAD-BALANCER',
  'KUBE-MARK-DROP-PROXY',
]);
const KP_PREFIXES = ['KUBE-SVC-', 'KUBE-SEP-', 'KUBE-FW-', 'KUBE-XLB-', 'KUBE-SVL-', 'KUBE-EXT-'];

export const isKubeProxyChain = (c: string): boolean => KP_CHAINS.has(c) || KP_PREFIXES.some((p) => c.startsWith(p));

export interface CleanupResult {
  /** "nat/KUBE-SERVICES" etc., per family */
  iptables: string[];
  nftables: string[];
  errors: string[];
}

function run(cmd: string, args: string[], input?: string): { ok: boolean; out: string; err: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input });
  return { ok: r.status === 0, out: r.stdout ?? '', err: (r.stderr || r.error?.message || '').trim() };
}

/** The restore script that removes kube-proxy's chains from one iptables-save dump. */
export function cleanupScript(dump: string): { script: string; removed: string[] } {
  const tables = new Map<string, { chains: string[]; jumps: string[] }>();
  let table = '';
  for (const line of dump.split('\n')) {
    if (line.startsWith('*')) {
      table = line.slice(1).trim();
      tables.set(table, { chains: [], jumps: [] });
      continue;
    }
    const t = tables.get(table);
    if (!t) continue;
    if (line.startsWith(':')) {
      const chain = line.slice(1).split(' ')[0]!;
      if (isKubeProxyChain(chain)) t.chains.push(chain);
    } else if (line.startsWith('-A ')) {
      const chain = line.split(' ')[1]!;
      const target = / -[jg] (\S+)/.exec(line)?.[1];
      // rules in other chains that lead into kube-proxy's chains
      if (!isKubeProxyChain(chain) && target && isKubeProxyChain(target)) t.jumps.push(`-D ${line.slice(3)}`);
    }
  }
  let script = '';
  const removed: string[] = [];
  for (const [name, t] of tables) {
    if (!t.chains.length && !t.jumps.length) continue;
    script += `*${name}\n`;
    for (const j of t.jumps) script += `${j}\n`;
    for (const c of t.chains) script += `:${c} - [0:0]\n`; // flushes it (--noflush restore)
    for (const c of t.chains) script += `-X ${c}\n`;
    script += 'COMMIT\n';
    removed.push(...t.chains.map((c) => `${name}/${c}`));
  }
  return { script, removed };
}

export function cleanupKubeProxy(log?: Logger): CleanupResult {
  const res: CleanupResult = { iptables: [], nftables: [], errors: [] };
  for (const [save, restore, fam] of [
    ['iptables-save', 'iptables-restore', 'ipv4'],
    ['ip6tables-save', 'ip6tables-restore', 'ipv6'],
  ] as const) {
    const dump = run(save, []);
    if (!dump.ok) continue; // no iptables here: nothing of kube-proxy's either
    const { script, removed } = cleanupScript(dump.out);
    if (!script) continue;
    const r = run(restore, ['--noflush'], script);
    if (r.ok) res.iptables.push(...removed.map((c) => `${fam} ${c}`));
    else res.errors.push(`${restore}: ${r.err}`);
  }
  const tables = run('nft', ['list', 'tables']);
  if (tables.ok) {
    for (const line of tables.out.split('\n')) {
      const m = /^table (ip|ip6|inet) kube-proxy$/.exec(line.trim());
      if (!m) continue;
      const r = run('nft', ['delete', 'table', m[1]!, 'kube-proxy']);
      if (r.ok) res.nftables.push(`${m[1]} kube-proxy`);
      else res.errors.push(`nft delete table ${m[1]} kube-proxy: ${r.err}`);
    }
  }
  if (res.iptables.length || res.nftables.length) {
    log?.info(
      { iptables: res.iptables.length, nftables: res.nftables },
      `removed kube-proxy's rules: ${res.iptables.length} iptables chain(s), ${res.nftables.length} nftables table(s)`,
    );
  }
  for (const e of res.errors) log?.error(`kube-proxy cleanup: ${e}`);
  return res;
}
