/**
 * `bpfproxy agent --xdp-acceleration` end to end in a namespace of the
 * test's own: the XDP program goes onto the data interface with the TC
 * program, `bpfproxy status` shows it and its mode, it outlives the agent
 * (pinned) and the next agent adopts the same link, `off` takes it away,
 * `bpfproxy cleanup` removes it, FelixConfiguration bpfXDPAcceleration
 * turns it on, moves it and turns it off live, and --dataplane afxdp is
 * refused with it.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ip } from '../testkit/netns.js';
import { tmpNetns, tmpPinDir } from './helpers/env.js';
import { cliIn, startAgentIn, tmpDir } from './helpers/agent-proc.js';

const manifest = `apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: { name: web, namespace: shop }
    spec: { type: NodePort, clusterIP: 10.96.0.10, ports: [{ name: http, port: 80, nodePort: 30080 }], selector: { a: b } }
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: { name: web-1, namespace: shop, labels: { kubernetes.io/service-name: web } }
    addressType: IPv4
    ports: [{ name: http, port: 8080 }]
    endpoints: [{ addresses: [10.0.0.1], nodeName: n1 }]
`;

interface XdpRow {
  iface: string;
  mode: string;
  linkId: number;
  live: boolean;
}

t.test('--xdp-acceleration through the agent', async (t) => {
  const ns = tmpNetns(t);
  ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'peer0');
  ip(ns, 'link', 'set', 'eth0', 'up');
  ip(ns, 'link', 'set', 'peer0', 'up');
  ip(ns, 'addr', 'add', '192.0.2.1/24', 'dev', 'eth0');
  const manifests = tmpDir(t, 'bpfproxy-xdp-');
  writeFileSync(join(manifests, 'web.yaml'), manifest);
  const state = tmpDir(t, 'bpfproxy-state-');
  const pinDir = tmpPinDir(t);
  const common = [
    '--manifests',
    manifests,
    '--node',
    'n1',
    '--bpf-enabled',
    'true',
    '--data-ifaces',
    '^eth0$',
    '--pod-ifaces',
    '^nothing$',
    '--state-dir',
    state,
    '--pin-dir',
    pinDir,
    '--healthz-bind-address',
    '',
    '--metrics-bind-address',
    '',
    '--health-bind-address',
    '',
  ];
  const xdpRows = (): XdpRow[] => {
    const r = cliIn(ns, ['status', '--pin-dir', pinDir, '-o', 'json']);
    t.equal(r.status, 0, r.stderr);
    return (JSON.parse(r.stdout) as { xdp: XdpRow[] }).xdp;
  };
  const kernelXdp = (): number | undefined =>
    (JSON.parse(ip(ns, '-d', '-j', 'link', 'show', 'eth0')) as Array<{ xdp?: { prog?: { id: number } } }>)[0]?.xdp?.prog?.id;
  const waitRows = async (n: number, mode?: string): Promise<XdpRow[]> => {
    for (const until = Date.now() + 10_000; Date.now() < until;) {
      const rows = xdpRows();
      if (rows.length === n && (!mode || rows.every((r) => r.mode === mode))) return rows;
      await new Promise((r) => setTimeout(r, 200));
    }
    return xdpRows();
  };

  const a = await startAgentIn(t, ns, [...common, '--xdp-acceleration', 'native']);
  const rows = await waitRows(1);
  t.match(rows, [{ iface: 'eth0', mode: 'native', live: true }], 'status: XDP on eth0, native');
  t.ok(kernelXdp(), 'the kernel shows an XDP program on eth0');
  a.child.kill('SIGTERM');
  t.equal(await a.exited, 0);
  t.match(xdpRows(), [{ iface: 'eth0', mode: 'native', linkId: rows[0]!.linkId }], 'still there after the agent stopped (pinned)');

  const b = await startAgentIn(t, ns, [...common, '--xdp-acceleration', 'native']);
  t.match(await waitRows(1), [{ iface: 'eth0', mode: 'native', linkId: rows[0]!.linkId }], 'the next agent adopted the same link');
  b.child.kill('SIGTERM');
  t.equal(await b.exited, 0);

  const c = await startAgentIn(t, ns, [...common, '--xdp-acceleration', 'off']);
  t.same(await waitRows(0), [], 'off: the XDP link is gone');
  t.equal(kernelXdp(), undefined, 'nothing on eth0');
  c.child.kill('SIGTERM');
  t.equal(await c.exited, 0);

  const d = await startAgentIn(t, ns, [...common, '--xdp-acceleration', 'generic']);
  t.match(await waitRows(1), [{ iface: 'eth0', mode: 'generic' }], 'generic');
  d.child.kill('SIGTERM');
  t.equal(await d.exited, 0);
  const cl = cliIn(ns, ['cleanup', '--pin-dir', pinDir, '--state-dir', state]);
  t.equal(cl.status, 0, cl.stderr);
  t.match(cl.stdout, /detached XDP acceleration from 1 interface\(s\) \(eth0\)/);
  t.equal(kernelXdp(), undefined, 'cleanup removed it');

  // live: FelixConfiguration node.n1 turns it on and off under a running agent
  const felix = (v: string) =>
    writeFileSync(
      join(manifests, 'felix.yaml'),
      `apiVersion: crd.projectcalico.org/v1\nkind: FelixConfiguration\nmetadata: { name: node.n1 }\nspec: { bpfEnabled: true, bpfXDPAcceleration: ${v} }\n`,
    );
  const e = await startAgentIn(t, ns, [...common, '--xdp-acceleration', 'off']);
  t.same(await waitRows(0), [], 'started off');
  felix('Native');
  t.match(await waitRows(1, 'native'), [{ iface: 'eth0', mode: 'native' }], 'bpfXDPAcceleration: Native applied live');
  felix('Generic');
  t.match(await waitRows(1, 'generic'), [{ iface: 'eth0', mode: 'generic' }], 'Generic: moved live');
  await new Promise((r) => setTimeout(r, 1500));
  t.match(xdpRows(), [{ iface: 'eth0', mode: 'generic' }], 'and stays generic');
  felix('Off');
  t.same(await waitRows(0), [], 'Off: detached live');
  e.child.kill('SIGTERM');
  t.equal(await e.exited, 0);

  const r = cliIn(ns, ['agent', ...common, '--xdp-acceleration', 'native', '--dataplane', 'afxdp'], 30_000);
  t.not(r.status, 0, 'refused with --dataplane afxdp');
  t.match(r.stdout + r.stderr, /--xdp-acceleration native cannot run with --dataplane afxdp/);
});
