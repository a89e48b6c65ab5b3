/**
 * The IPv6 rewrite's checksum (bpf/lib/nat6.h): an address change is folded
 * into the TCP/UDP checksum with a difference computed in the program
 * (csum_diff_addr6()) rather than by bpf_csum_diff(). Many random flows
 * through BPF_PROG_RUN, TCP and UDP, both ways (DNAT to the backend and the
 * reverse), each translated packet's checksum checked against a
 * recomputation; the payloads are random, so checksums of every value come
 * through, 0xffff included. A wrong fold or carry shows as a bad checksum on
 * some of them.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { frame6 } from '../testkit/packet6.js';
import { TCP } from '../testkit/packet.js';
import { be, fe } from './helpers/fixtures.js';
import { progrun6Node } from './helpers/progrun6.js';

const VIP = 'fd00:10:96::20';
const BACKEND = 'fd00:10:244:1::21';

/** A random address in fd00:10:244:1::/64 (this node's pods). */
const podAddr = (): string => {
  const g = randomBytes(8);
  return `fd00:10:244:1:${[0, 2, 4, 6].map((i) => g.readUInt16BE(i).toString(16)).join(':')}`;
};

t.test('IPv6 translation keeps the TCP and UDP checksums valid, both ways, for random flows', async (t) => {
  const n = await progrun6Node(t);
  t.same(
    n.rec.syncService('test/csum', [
      fe('ClusterIP', VIP, 80, 'TCP', [be(BACKEND, 8080)]),
      fe('ClusterIP', VIP, 53, 'UDP', [be(BACKEND, 5353)]),
    ]).problems,
    [],
  );
  let checked = 0;
  const bad: string[] = [];
  for (let i = 0; i < 150; i++) {
    const client = podAddr();
    const sport = 1024 + (randomBytes(2).readUInt16BE(0) % 60000);
    const payload = randomBytes(1 + (i % 40));
    for (const proto of ['tcp', 'udp'] as const) {
      const dport = proto === 'tcp' ? 80 : 53;
      const bport = proto === 'tcp' ? 8080 : 5353;
      const fwd = n.runRaw(
        'fromPod',
        frame6({ src: client, dst: VIP }, { proto, sport, dport, payload, ...(proto === 'tcp' ? { flags: TCP.SYN } : {}) }),
      );
      const back = n.runRaw(
        'fromPod',
        frame6(
          { src: BACKEND, dst: client },
          { proto, sport: bport, dport: sport, payload, ...(proto === 'tcp' ? { flags: TCP.SYN | TCP.ACK } : {}) },
        ),
      );
      for (const [what, r, dst] of [
        ['to the backend', fwd, BACKEND],
        ['back from the VIP', back, client],
      ] as const) {
        checked++;
        if (r.verdict !== 'redirect' || r.out.dst !== dst || !r.out.l4CsumOk)
          bad.push(`${proto} [${client}]:${sport} ${what}: ${r.verdict} ${r.out.dst} csum ${r.out.l4CsumOk}`);
      }
    }
  }
  t.equal(checked, 600);
  t.same(bad, [], 'every translated packet forwarded with a valid checksum');
});
