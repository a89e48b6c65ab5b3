/**
 * Taking over from kube-proxy removes exactly kube-proxy's rules: checked
 * with real iptables and nft in a namespace that also holds unrelated rules
 * and kubelet's chains.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { cleanupKubeProxy, cleanupScript } from '../src/dataplane/kube-proxy-cleanup.js';
import { kubeProxyRules } from '../src/dataplane/bpf/drain.js';
import { nsPath } from '../testkit/netns.js';
import { inNetns, tmpNetns } from './helpers/env.js';

/** What kube-proxy's iptables mode writes (abridged), next to rules that are not its own. */
const IPTABLES = `*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-SVC-TCOU7JCQXEZGVUNU - [0:0]
:KUBE-SEP-IT2ZTR26TO4XFPTO - [0:0]
:KUBE-EXT-TCOU7JCQXEZGVUNU - [0:0]
:MY-CHAIN - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -s 10.1.0.0/16 -j MASQUERADE
-A PREROUTING -j MY-CHAIN
-A MY-CHAIN -p tcp -m tcp --dport 9999 -j RETURN
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MASQUERADE
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-TCOU7JCQXEZGVUNU
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-NODEPORTS -p tcp -m comment --comment "default/web:http" -m tcp --dport 30080 -j KUBE-EXT-TCOU7JCQXEZGVUNU
-A KUBE-EXT-TCOU7JCQXEZGVUNU -j KUBE-MARK-MASQ
-A KUBE-EXT-TCOU7JCQXEZGVUNU -j KUBE-SVC-TCOU7JCQXEZGVUNU
-A KUBE-SVC-TCOU7JCQXEZGVUNU -m comment --comment "default/web:http -> 10.244.1.11:8080" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-IT2ZTR26TO4XFPTO
-A KUBE-SEP-IT2ZTR26TO4XFPTO -s 10.244.1.11/32 -m comment --comment "default/web:http" -j KUBE-MARK-MASQ
-A KUBE-SEP-IT2ZTR26TO4XFPTO -p tcp -m comment --comment "default/web:http" -m tcp -j DNAT --to-destination 10.244.1.11:8080
COMMIT
*filter
:KUBE-FORWARD - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
-A INPUT -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A INPUT -j KUBE-FIREWALL
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
COMMIT
`;

const NFT = `table ip kube-proxy {
  map service-ips {
    type ipv4_addr . inet_proto . inet_service : verdict
  }
  chain services {
    ip daddr . meta l4proto . th dport vmap @service-ips
  }
  chain nat-prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    jump services
  }
}
table ip6 kube-proxy {
  chain services {
  }
}
table inet mine {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 2222 accept
  }
}
`;

function inNs(ns: string, cmd: string, args: string[], input?: string): string {
  const r = spawnSync('nsenter', [`--net=${nsPath(ns)}`, '--', cmd, ...args], { encoding: 'utf8', input });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

t.test('the restore script deletes kube-proxy chains and the jumps into them, nothing else', async (t) => {
  const { script, removed } = cleanupScript(IPTABLES);
  t.same(removed.sort(), [
    'filter/KUBE-FORWARD',
    'filter/KUBE-PROXY-FIREWALL',
    'nat/KUBE-EXT-TCOU7JCQXEZGVUNU',
    'nat/KUBE-MARK-MASQ',
    'nat/KUBE-NODEPORTS',
    'nat/KUBE-POSTROUTING',
    'nat/KUBE-SEP-IT2ZTR26TO4XFPTO',
    'nat/KUBE-SERVICES',
    'nat/KUBE-SVC-TCOU7JCQXEZGVUNU',
  ]);
  t.notMatch(script, /KUBE-FIREWALL|KUBE-KUBELET-CANARY|MY-CHAIN|MASQUERADE|dport 22/, "kubelet's and unrelated rules are not in it");
});

t.test('real iptables and nft in a namespace', async (t) => {
  const ns = tmpNetns(t);
  t.same(inNetns(ns, kubeProxyRules), { iptables: false, nftables: false }, 'no kube-proxy rules at first');
  inNs(ns, 'iptables-restore', [], IPTABLES);
  inNs(ns, 'nft', ['-f', '-'], NFT);
  t.same(inNetns(ns, kubeProxyRules), { iptables: true, nftables: true }, "kube-proxy's rules are seen (iptables and nftables)");
  // flows kube-proxy's rules NAT'd: the kernel keeps carrying them after the rules go
  const ct = (proto: string, sport: string) =>
    inNs(ns, 'conntrack', [
      '-I',
      '-p',
      proto,
      '-s',
      '10.244.1.13',
      '-d',
      '10.96.0.10',
      '--sport',
      sport,
      '--dport',
      '80',
      ...(proto === 'tcp' ? ['--state', 'ESTABLISHED'] : []),
      '-t',
      '300',
      '-r',
      '10.244.1.11',
      '-q',
      '10.244.1.13',
      '--reply-port-src',
      '8080',
      '--reply-port-dst',
      sport,
    ]);
  ct('tcp', '40000');
  ct('udp', '40001');
  const flows = () =>
    inNs(ns, 'conntrack', ['-L'])
      .split('\n')
      .filter((l) => l.includes('src='))
      .map((l) => l.replace(/^(\w+\s+\d+\s+)\d+/, '$1'))
      .sort();
  const before = flows();
  t.equal(before.length, 2);
  const res = inNetns(ns, () => cleanupKubeProxy());
  t.same(flows(), before, "the kernel's conntrack is not flushed: established flows keep their NAT");
  t.same(inNetns(ns, kubeProxyRules), { iptables: false, nftables: false }, 'gone after the cleanup');
  t.same(res.errors, []);
  t.equal(res.iptables.length, 9, 'nine kube-proxy chains removed');
  t.same(res.nftables.sort(), ['ip kube-proxy', 'ip6 kube-proxy']);
  const after = inNs(ns, 'iptables-save', []);
  t.notMatch(
    after,
    /KUBE-(SERVICES|POSTROUTING|MARK-MASQ|NODEPORTS|SVC-|SEP-|EXT-|FORWARD|PROXY-FIREWALL)/,
    'no kube-proxy chain or jump left',
  );
  for (const keep of [
    ':KUBE-FIREWALL',
    ':KUBE-KUBELET-CANARY',
    '-A INPUT -j KUBE-FIREWALL',
    ':MY-CHAIN',
    '-A PREROUTING -j MY-CHAIN',
    '-A MY-CHAIN -p tcp -m tcp --dport 9999 -j RETURN',
    '-A POSTROUTING -s 10.1.0.0/16 -j MASQUERADE',
    '-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT',
    'block incoming localnet connections',
  ]) {
    t.ok(after.includes(keep), `kept: ${keep}`);
  }
  const tables = inNs(ns, 'nft', ['list', 'tables']);
  t.notMatch(tables, /kube-proxy/);
  t.match(tables, /table inet mine/, 'unrelated nft table kept');
  t.same(
    inNetns(ns, () => cleanupKubeProxy()),
    { iptables: [], nftables: [], errors: [] },
    'running again finds nothing to do',
  );
});
