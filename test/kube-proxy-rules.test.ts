/** The benchmark's kube-proxy rules use kube-proxy's own chain names and load into real iptables/nft. */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { iptablesRules, nftEndpointChange, nftEpChain, nftRules, nftSvcChain, sepChain, svcChain, type BenchService } from '../src/bench/kube-proxy-rules.js';
import { nsPath } from '../src/net/netns.js';
import { tmpNetns } from './helpers/env.js';

const svc1: BenchService = { namespace: 'ns1', name: 'svc1', portName: 'p80', clusterIP: '172.30.0.41', port: 80, protocol: 'TCP', endpoints: [{ ip: '10.180.0.1', port: 80 }] };

t.test('chain names are kube-proxy\'s (values from kube-proxy\'s own tests)', async (t) => {
  t.equal(svcChain(svc1), 'KUBE-SVC-XPGD46QRK7WJZT7O');
  t.equal(nftSvcChain(svc1), 'service-ULMVA6XW-ns1/svc1/tcp/p80');
  t.equal(nftEpChain(svc1, svc1.endpoints[0]!), 'endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80');
  t.match(sepChain(svc1, svc1.endpoints[0]!), /^KUBE-SEP-[A-Z2-7]{16}$/);
});

t.test('rules load into real iptables and nft; statistic probabilities as kube-proxy writes them', async (t) => {
  const ns = tmpNetns(t);
  const svcs: BenchService[] = [svc1, { ...svc1, name: 'svc2', clusterIP: '172.30.0.42', endpoints: [1, 2, 3].map((i) => ({ ip: `10.180.0.${i}`, port: 80 })) }];
  const run = (cmd: string, args: string[], input: string) => spawnSync('nsenter', [`--net=${nsPath(ns)}`, '--', cmd, ...args], { input, encoding: 'utf8' });
  const ipt = iptablesRules(svcs, '10.0.0.0/8');
  t.match(ipt, /-m statistic --mode random --probability 0\.33333333333 -j KUBE-SEP-/);
  t.match(ipt, /-m statistic --mode random --probability 0\.50000000000 -j KUBE-SEP-/);
  t.equal(run('iptables-restore', [], ipt).status, 0, 'iptables-restore accepts it');
  t.equal(run('nft', ['-f', '-'], nftRules(svcs, '10.0.0.0/8')).status, 0, 'nft accepts the full transaction');
  const after = { ...svcs[1]!, endpoints: [{ ip: '10.180.0.1', port: 80 }, { ip: '10.180.0.9', port: 80 }] };
  const r = run('nft', ['-f', '-'], nftEndpointChange(svcs[1]!, after, '10.0.0.0/8'));
  t.equal(r.status, 0, `nft accepts the incremental change ${r.stderr}`);
  const list = run('nft', ['list', 'table', 'ip', 'kube-proxy'], '').stdout;
  t.match(list, /10\.180\.0\.9\/80/);
  t.notMatch(list, /10\.180\.0\.3\/80/, 'removed endpoint chain deleted');
});
