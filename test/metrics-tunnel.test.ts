/** The tunnel's metrics (per external mode) from a datapath snapshot. */
import t from 'tap';
import { Metrics } from '../src/metrics.js';

t.test('external mode and tunnel counters are exported per mode', async (t) => {
  const m = new Metrics();
  m.setSnapshot(async () => ({
    maps: [],
    reasons: [],
    conntrackEntries: 0,
    tunnel: {
      mode: 'DSR',
      local: '192.0.2.11',
      newFlows: { SNAT: 3, Tunnel: 5, DSR: 7 },
      newFromTunnel: 2,
      moved: 4,
      midflow: 6,
      packets: { encap: 100, decap: 40, dsrReply: 9 },
      bytes: { encap: 150_000, decap: 4_000, dsrReply: 900 },
    },
  }));
  const body = await m.scrape();
  for (const line of [
    'bpfproxy_external_mode{mode="DSR"} 1',
    'bpfproxy_external_mode{mode="Tunnel"} 0',
    'bpfproxy_external_mode{mode="SNAT"} 0',
    'bpfproxy_external_remote_flows_total{mode="SNAT"} 3',
    'bpfproxy_external_remote_flows_total{mode="Tunnel"} 5',
    'bpfproxy_external_remote_flows_total{mode="DSR"} 7',
    'bpfproxy_tunnel_packets_total{direction="encap"} 100',
    'bpfproxy_tunnel_packets_total{direction="decap"} 40',
    'bpfproxy_tunnel_packets_total{direction="dsr_reply"} 9',
    'bpfproxy_tunnel_bytes_total{direction="encap"} 150000',
    'bpfproxy_tunnel_flows_from_remote_total 2',
    'bpfproxy_tunnel_flows_moved_total 4',
    'bpfproxy_maglev_midflow_flows_total 6',
  ]) {
    t.ok(body.includes(line), line);
  }
});
