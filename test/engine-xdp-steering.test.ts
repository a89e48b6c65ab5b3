/**
 * The engine's XDP program (bpf/xdp_afxdp.c) through BPF_PROG_RUN, with the
 * engine's AF_XDP socket bound to the slot and after it is gone:
 *  - with a socket: frames of a steered frontend, and ICMP errors quoting a
 *    flow of it, are redirected to the socket; everything else passes;
 *  - with no socket bound (engine stopped, crashed, restarting): the same
 *    frames pass to the kernel path (XDP_PASS), so nothing is blackholed.
 */
import t from 'tap';
import { ip } from '../testkit/netns.js';
import { frame, icmpErrorFrame } from '../testkit/packet.js';
import { frame6, icmp6ErrorFrame } from '../testkit/packet6.js';
import { native } from '../src/native/index.js';
import { loadDatapath } from '../src/dataplane/bpf/loader.js';
import { BpfReconciler } from '../src/dataplane/bpf/reconciler.js';
import { DEFAULT_DATAPATH } from '../src/config/datapath.js';
import { XdpSteering } from '../src/dataplane/afxdp/xdp.js';
import { createEngine } from '../src/dataplane/afxdp/native.js';
import { encodeTable } from '../src/dataplane/afxdp/table.js';
import { table } from './helpers/engine.js';
import { BPF_DIR, inNetns, tmpNetns, tmpPinDir } from './helpers/env.js';
import { captureLogger } from './helpers/log.js';

const XDP_PASS = 2;
const XDP_REDIRECT = 4;
const NODE = '10.79.1.1';
const CLIENT = '10.79.1.2';
const NODE6 = 'fd00:79::1';
const CLIENT6 = 'fd00:79::2';
const LB6 = 'fd00:79:100::10';

t.test('steered frames go to the bound socket; with none bound they pass to the kernel', async (t) => {
  const ns = tmpNetns(t, 'bpxxs');
  ip(ns, 'link', 'add', 'x0', 'type', 'veth', 'peer', 'name', 'x1');
  ip(ns, 'addr', 'add', `${NODE}/24`, 'dev', 'x0');
  ip(ns, 'link', 'set', 'x0', 'up');
  ip(ns, 'link', 'set', 'x1', 'up');
  const ifindex = inNetns(
    ns,
    () =>
      native()
        .interfaces()
        .find((i) => i.name === 'x0')!.index,
  );
  const pinDir = tmpPinDir(t);
  const dp = await loadDatapath(BPF_DIR, pinDir, DEFAULT_DATAPATH);
  t.teardown(() => dp.close());
  new BpfReconciler(dp.maps).setNodeAddresses([NODE, NODE6]);
  const steering = await XdpSteering.load(BPF_DIR, pinDir, DEFAULT_DATAPATH, captureLogger().log);
  t.teardown(() => steering.close());
  steering.setPort(ifindex, 0, 1);
  steering.setSnatPorts(15000, 19999);
  steering.setFrontends([
    { addr: '0.0.0.0', port: 30080, proto: 17 },
    { addr: '::', port: 30080, proto: 17 },
    { addr: LB6, port: 80, proto: 6 },
  ]);

  const ctx = Buffer.alloc(24); // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
  const run = (f: Buffer): number =>
    inNetns(ns, () => {
      ctx.writeUInt32LE(0, 0);
      ctx.writeUInt32LE(f.length, 4);
      ctx.writeUInt32LE(ifindex, 12);
      return native().progTestRun(steering.programFd, f, { ctx }).retval;
    });
  const toNodePort = frame({ src: CLIENT, dst: NODE }, { proto: 'udp', sport: 40000, dport: 30080, payload: Buffer.from('x') });
  const elsewhere = frame({ src: CLIENT, dst: NODE }, { proto: 'udp', sport: 40000, dport: 30081, payload: Buffer.from('x') });
  // the client's port unreachable about a reply of the NodePort's flow (quoted: node:30080 -> client:40000)
  const replyQuoted = frame({ src: NODE, dst: CLIENT }, { proto: 'udp', sport: 30080, dport: 40000, payload: Buffer.from('y') }).subarray(
    14,
  );
  const icmpAbout = icmpErrorFrame({ src: CLIENT, dst: NODE }, 3, 3, replyQuoted);
  const icmpEcho = icmpErrorFrame({ src: CLIENT, dst: NODE }, 8, 0, replyQuoted);
  const otherQuoted = frame({ src: NODE, dst: CLIENT }, { proto: 'udp', sport: 30081, dport: 40000 }).subarray(14);
  const icmpOther = icmpErrorFrame({ src: CLIENT, dst: NODE }, 3, 3, otherQuoted);

  const u6 = (dst: string, dport: number, more = {}) =>
    frame6({ src: CLIENT6, dst, ...more }, { proto: 'udp', sport: 40000, dport, payload: Buffer.from('x') });
  const v6 = {
    nodePort: u6(NODE6, 30080),
    lb: frame6({ src: CLIENT6, dst: LB6 }, { proto: 'tcp', sport: 40000, dport: 80, flags: 2 }),
    nodePortElsewhere: u6('fd00:79::99', 30080),
    otherPort: u6(NODE6, 30081),
    hopByHop: u6(NODE6, 30080, { ext: [{ type: 'hop' }] }),
    fragment: u6(NODE6, 30080, { ext: [{ type: 'frag', offset: 0, more: true }] }),
    ns: frame6({ src: CLIENT6, dst: NODE6 }, { proto: 'icmp6', type: 135, code: 0, body: Buffer.alloc(20) }),
    error: icmp6ErrorFrame({ src: CLIENT6, dst: NODE6 }, 1, 4, u6(CLIENT6, 40000).subarray(14)),
    snatReply: frame6({ src: 'fd00:10:244:2::2', dst: NODE6 }, { proto: 'udp', sport: 8080, dport: 15001, payload: Buffer.from('r') }),
  };
  t.equal(run(toNodePort), XDP_PASS, 'no socket bound yet: a steered frame passes');
  t.equal(run(v6.nodePort), XDP_PASS, 'no socket bound yet: a steered IPv6 frame passes');

  const engine = createEngine({ vector: 64, sessions: 1024 });
  t.teardown(() => engine.close());
  engine.setTable(encodeTable(table({ ports: [{ ifindex, name: 'x0', mac: '02:00:00:00:0a:01', pod: false }], neighbours: [] })));
  inNetns(ns, () =>
    engine.startIo({
      ports: [{ ifindex, queues: 1, xskBase: 0, name: 'x0' }],
      queues: 1,
      frames: 1024,
      ring: 512,
      xsksFd: steering.xsksFd,
    }),
  );
  let stopped = false;
  t.teardown(() => {
    if (!stopped) engine.stopIo();
  });
  t.equal(run(toNodePort), XDP_REDIRECT, 'socket bound: the NodePort frame goes to the engine');
  t.equal(run(icmpAbout), XDP_REDIRECT, 'an ICMP error quoting a flow of the NodePort goes to the engine');
  t.equal(run(elsewhere), XDP_PASS, 'a port the engine does not serve passes');
  t.equal(run(icmpOther), XDP_PASS, 'an ICMP error about anything else passes');
  t.equal(run(icmpEcho), XDP_PASS, 'ICMP that is not an error passes');

  t.equal(run(v6.nodePort), XDP_REDIRECT, 'IPv6: a NodePort frame to a node IPv6 address goes to the engine');
  t.equal(run(v6.lb), XDP_REDIRECT, 'IPv6: a frame to a steered IPv6 frontend goes to the engine');
  t.equal(run(v6.nodePortElsewhere), XDP_PASS, "IPv6: the NodePort on an address that is not the node's passes");
  t.equal(run(v6.otherPort), XDP_PASS, 'IPv6: a port the engine does not serve passes');
  t.equal(run(v6.hopByHop), XDP_PASS, 'IPv6: an extension header passes (the kernel path walks it)');
  t.equal(run(v6.fragment), XDP_PASS, 'IPv6: a fragment passes');
  t.equal(run(v6.ns), XDP_PASS, 'IPv6: neighbour discovery passes');
  t.equal(run(v6.error), XDP_PASS, 'IPv6: ICMPv6 errors pass');
  t.equal(run(v6.snatReply), XDP_PASS, "IPv6: to the engine's SNAT range but no reply entry in bpfproxy_ct6: passes");
  const ctKey = { saddr: 'fd00:10:244:2::2', daddr: NODE6, sport: 8080, dport: 15001, proto: 17 };
  dp.maps.ct6.set(ctKey, {
    expiresNs: 1n << 62n,
    createdNs: 0n,
    natSaddr: NODE6,
    natDaddr: CLIENT6,
    natSport: 30080,
    natDport: 40000,
    dir: 2,
    state: 0,
    flags: 1,
    svcId: 1,
    polGen: 0,
  });
  t.equal(
    run(v6.snatReply),
    XDP_REDIRECT,
    "IPv6: a reply of one of the engine's SNAT'd flows (reply entry in bpfproxy_ct6) goes to the engine",
  );

  engine.stopIo();
  stopped = true;
  t.equal(run(toNodePort), XDP_PASS, 'engine stopped, XDP still attached: the NodePort frame passes to the kernel path');
  t.equal(run(icmpAbout), XDP_PASS, 'and so does the ICMP error');
  t.equal(run(v6.nodePort), XDP_PASS, 'and the IPv6 NodePort frame');
});
