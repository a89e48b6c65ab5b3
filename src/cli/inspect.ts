/** `bpfproxy services|conntrack|status`: what the maps and hooks hold, for an operator. */
import { readSockLinks, readSockStats } from '../dataplane/bpf/sock.js';
import { type Command } from '@commander-js/extra-typings';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { attachedHere, type Attachment } from '../dataplane/bpf/attach.js';
import { conntrackViews, mapFills, reasonViews, serviceViews } from '../dataplane/bpf/inspect.js';
import { MAP_NAMES, openPinnedMaps, type DatapathMaps } from '../dataplane/bpf/loader.js';
import { modeNow, type Mode } from '../dataplane/bpf/drain.js';

const MODE_TEXT: Record<Exclude<Mode, 'serve'>, string> = {
  drain:
    'draining (bpfEnabled=false): connections through bpfproxy are served until they end or the drain time is up, new ones go to the kernel (kube-proxy); the agent then detaches',
  standby: "standby (taking over): attached, every packet passes untouched until the agent has adopted the kernel's flows",
};
import { pinDirOption, outputOption } from './options.js';
import { table } from './table.js';

function withMaps<T>(pinDir: string, fn: (m: DatapathMaps) => T): T {
  let pinned;
  try {
    pinned = openPinnedMaps(pinDir);
  } catch (e) {
    process.stderr.write(`bpfproxy: ${(e as Error).message}\n`);
    process.exit(1);
  }
  try {
    return fn(pinned.maps);
  } finally {
    pinned.close();
  }
}

export function addServicesCommand(program: Command): void {
  program
    .command('services')
    .description('each frontend and its backends, as programmed in the maps')
    .addOption(pinDirOption())
    .addOption(outputOption())
    .action((o) =>
      withMaps(o.pinDir, (m) => {
        const v = serviceViews(m);
        if (o.output === 'json') return console.log(JSON.stringify(v, null, 2));
        console.log(
          table(
            ['SERVICE PORT', 'FRONTEND', 'KIND', 'POLICY', 'BACKENDS'],
            v.map((s) => [
              s.servicePort,
              s.frontend,
              s.kind,
              [...s.policies, ...(s.affinityTimeout ? [`affinity ${s.affinityTimeout}s`] : [])].join(' ') || '-',
              s.backends.length ? s.backends.map((b) => `${b.addr}${b.local ? ' (local)' : ''}`).join(', ') : '(none: rejects)',
            ]),
          ),
        );
      }),
    );
}

export function addConntrackCommand(program: Command): void {
  program
    .command('conntrack')
    .description('conntrack entries of service flows')
    .addOption(pinDirOption())
    .addOption(outputOption())
    .option('--service <name>', 'only this service (namespace/name, or namespace/name:port/PROTO)')
    .option('--ip <addr>', 'only flows with this address on either side')
    .option('--proto <proto>', 'tcp or udp')
    .action((o) =>
      withMaps(o.pinDir, (m) => {
        let v = conntrackViews(m);
        if (o.service) v = v.filter((c) => c.service === o.service || c.service.startsWith(`${o.service}:`));
        if (o.ip) v = v.filter((c) => [c.from, c.to, c.natFrom, c.natTo].some((a) => a.startsWith(`${o.ip}:`)));
        if (o.proto) v = v.filter((c) => c.proto === String(o.proto).toUpperCase());
        if (o.output === 'json') return console.log(JSON.stringify(v, null, 2));
        console.log(
          table(
            ['PROTO', 'DIR', 'FLOW', 'TRANSLATED TO', 'STATE', 'FLAGS', 'SERVICE', 'EXPIRES'],
            v.map((c) => [
              c.proto,
              c.dir,
              `${c.from} -> ${c.to}`,
              `${c.natFrom} -> ${c.natTo}`,
              c.state,
              c.flags.join(',') || '-',
              c.service || '-',
              `${c.expiresInS}s`,
            ]),
          ),
        );
        console.log(`${v.length} entries`);
      }),
    );
}

/** Whether any of the datapath's maps is pinned under pinDir (none: the dataplane is off). */
const anyMapPinned = (pinDir: string): boolean => Object.values(MAP_NAMES).some((n) => existsSync(join(pinDir, n)));

const hookLabel = (a: Attachment): string => `${a.hook === 'tcx' ? 'tcx' : 'tc'} ${a.direction}`;

/** The socket hooks pinned under pinDir and their counters (numbers as text: JSON has no bigint). */
function socketLbView(pinDir: string, m: DatapathMaps) {
  return {
    hooks: readSockLinks(pinDir).links.map((l) => ({ hook: l.hook, cgroupId: String(l.cgroupId), progId: l.progId, linkId: l.linkId })),
    counters: Object.fromEntries(Object.entries(readSockStats(m)).map(([k, v]) => [k, String(v)])),
  };
}

export function addStatusCommand(program: Command): void {
  program
    .command('status')
    .description(
      'attached interfaces (in this network namespace), map fill levels, drops by reason; with the dataplane off (no maps pinned) still what is attached',
    )
    .addOption(pinDirOption())
    .addOption(outputOption())
    .action((o) => {
      const interfaces = attachedHere(o.pinDir);
      const printInterfaces = () => {
        console.log('Interfaces');
        console.log(
          interfaces.length
            ? table(
                ['IFACE', 'IFINDEX', 'HOOK', 'PROGRAM', 'PROG ID', 'LINK'],
                interfaces.map((i) => [
                  i.iface,
                  String(i.ifindex),
                  hookLabel(i),
                  i.program,
                  String(i.progId),
                  i.hook === 'tcx' ? `${i.linkId}${i.pinned === false ? ' (not pinned here)' : ''}` : '-',
                ]),
              )
            : '  (none attached in this network namespace)',
        );
      };
      if (!anyMapPinned(o.pinDir)) {
        // bpfEnabled=false (or never enabled, or cleaned up): nothing to read
        // in the maps, but what is attached still matters (a rollback to
        // confirm, leftovers to find).
        const note = `no maps are pinned under ${o.pinDir}: the bpfproxy dataplane is off here (bpfEnabled=false, cleaned up, or no agent ran with --pin-dir ${o.pinDir})`;
        const leftover = interfaces.length
          ? `${interfaces.length} bpfproxy program(s) are still attached although the maps are gone: leftovers; "bpfproxy cleanup --pin-dir ${o.pinDir}" removes ours`
          : undefined;
        if (o.output === 'json') {
          console.log(
            JSON.stringify(
              { dataplane: 'off', note, ...(leftover ? { warning: leftover } : {}), interfaces, maps: null, reasons: null },
              null,
              2,
            ),
          );
          return;
        }
        printInterfaces();
        console.log(`\nMaps\n  (none: ${note})`);
        if (leftover) console.log(`\nWarning: ${leftover}`);
        return;
      }
      withMaps(o.pinDir, (m) => {
        const socketLb = socketLbView(o.pinDir, m);
        const s = { dataplane: 'on', mode: modeNow(m), interfaces, socketLb, maps: mapFills(m), reasons: reasonViews(m) };
        if (o.output === 'json') return console.log(JSON.stringify(s, null, 2));
        if (s.mode !== 'serve') console.log(`Mode: ${MODE_TEXT[s.mode]}\n`);
        printInterfaces();
        console.log('\nSocket load balancing (cgroup hooks)');
        console.log(
          socketLb.hooks.length
            ? table(
                ['HOOK', 'CGROUP ID', 'PROG ID', 'LINK'],
                socketLb.hooks.map((h) => [
                  h.hook,
                  h.cgroupId === '0' ? '0 (cgroup gone)' : h.cgroupId,
                  String(h.progId),
                  String(h.linkId),
                ]),
              ) +
                '\n  ' +
                Object.entries(socketLb.counters)
                  .map(([k, v]) => `${k} ${v}`)
                  .join(', ')
            : '  (off: no socket hooks pinned under this pin dir; --socket-lb host|all attaches them)',
        );
        console.log('\nMaps');
        console.log(
          table(
            ['MAP', 'ENTRIES', 'MAX', 'FILL'],
            s.maps.map((f) => [f.map, String(f.entries), String(f.maxEntries), `${f.percent}%`]),
          ),
        );
        console.log('\nPackets not simply passed, by reason');
        console.log(
          table(
            ['REASON', 'VERDICT', 'PACKETS', 'BYTES', 'MEANING'],
            s.reasons.map((r) => [r.reason, r.verdict, String(r.packets), String(r.bytes), r.help]),
          ),
        );
      });
    });
}
