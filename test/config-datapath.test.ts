/**
 * The one derivation: FelixConfiguration objects as an operator writes them
 * to the values the BPF programs are loaded with (rodata) and the sizes the
 * maps are created with, through ConfigController, datapathConfig() and the
 * loader's rodataFor().
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ConfigController } from '../src/config/controller.js';
import { DEFAULT_DATAPATH, datapathConfig, uplinkIfaces } from '../src/config/datapath.js';
import { DEFAULT_CONFIG } from '../src/config/fields.js';
import { rodataFor } from '../src/dataplane/bpf/loader.js';
import { REPO } from './helpers/env.js';
import { captureLogger } from './helpers/log.js';

const YAML = `
apiVersion: crd.projectcalico.org/v1
kind: FelixConfiguration
metadata:
  name: default
spec:
  bpfEnabled: true
  bpfConntrackTimeouts:
    tcpEstablished: 2h
    tcpFinsSeen: Auto
    udpTimeout: 90s
  bpfMapSizeConntrack: 1048576
  bpfMapSizeNATBackend: 131072
---
apiVersion: crd.projectcalico.org/v1
kind: FelixConfiguration
metadata:
  name: node.n1
spec:
  bpfConntrackTimeouts:
    tcpSynSent: 1m30s
    udpTimeout: 250ms
  bpfMapSizeNATFrontend: 4096
`;

const u64 = (b: Buffer | undefined): bigint => b!.readBigUInt64LE();
const SEC = 1_000_000_000n;

t.test('FelixConfiguration YAML to rodata and map sizes', async (t) => {
  const { log } = captureLogger();
  const ctl = new ConfigController(DEFAULT_CONFIG, 'n1', log, () => t.fail('no problems expected'));
  for (const doc of parseAllDocuments(YAML)) {
    const obj = doc.toJS() as { metadata: { name: string } };
    ctl.apply(obj.metadata.name, obj);
  }
  const cfg = ctl.evaluate();
  t.ok(cfg, 'a new config');
  const dp = datapathConfig(cfg!);
  const ro = rodataFor(dp);
  t.equal(u64(ro.cfg_ct_syn_sent_ns), 90n * SEC, 'tcpSynSent from node.n1');
  t.equal(u64(ro.cfg_ct_established_ns), 7200n * SEC, 'tcpEstablished from default');
  t.equal(u64(ro.cfg_ct_fins_seen_ns), 30n * SEC, 'tcpFinsSeen Auto: the default');
  t.equal(u64(ro.cfg_ct_rst_seen_ns), 40n * SEC, 'tcpResetSeen not given: the default');
  t.equal(u64(ro.cfg_ct_udp_ns), 250_000_000n, 'udpTimeout: node.n1 over default, to the nanosecond');
  t.same(dp.mapSizes, { conntrack: 1048576, natFrontend: 4096, natBackend: 131072, natAffinity: 65536, maglev: 131072 });
});

/** `const volatile <type> cfg_x = <value>;` in bpf/lib/config.h */
function compiledDefaults(): Map<string, string> {
  const h = readFileSync(join(REPO, 'bpf', 'lib', 'config.h'), 'utf8');
  return new Map([...h.matchAll(/const volatile\s+\w+\s+(cfg_\w+)(?:\[\w+\])?\s*=\s*([^;]+);/g)].map((m) => [m[1]!, m[2]!.trim()]));
}

t.test("rodataFor writes every setting the programs declare, and Calico's defaults are the compiled-in ones", async (t) => {
  const c = compiledDefaults();
  const ro = rodataFor(DEFAULT_DATAPATH);
  t.same(Object.keys(ro).sort(), [...c.keys()].sort(), 'one value per const volatile in config.h');
  for (const name of ['cfg_ct_syn_sent_ns', 'cfg_ct_established_ns', 'cfg_ct_fins_seen_ns', 'cfg_ct_rst_seen_ns', 'cfg_ct_udp_ns']) {
    const m = /^(\d+)ULL \* NSEC_PER_SEC$/.exec(c.get(name)!);
    t.ok(m, `${name} is written as N seconds in config.h`);
    t.equal(u64(ro[name]), BigInt(m![1]!) * SEC, `${name}: the field table's default`);
  }
  t.equal(ro.cfg_snat_port_min!.readUInt16LE(), Number(c.get('cfg_snat_port_min')));
  t.equal(ro.cfg_snat_port_max!.readUInt16LE(), Number(c.get('cfg_snat_port_max')));
  t.equal(ro.cfg_fib_redirect![0], Number(c.get('cfg_fib_redirect')));
});

t.test('uplinks: bpfDataIfacePattern or bpfL3IfacePattern', async (t) => {
  const only = uplinkIfaces(DEFAULT_CONFIG);
  t.ok(only.test('eth0') && only.test('ens3') && !only.test('wg0') && !only.test('cali123'));
  const both = uplinkIfaces({ ...DEFAULT_CONFIG, dataIfaces: /^eth0$/, l3Ifaces: /^wg\d+$/ });
  t.ok(both.test('eth0') && both.test('wg0') && !both.test('eth1'));
});
