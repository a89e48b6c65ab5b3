/** `bpfproxy agent`: serve Services on this node. */
import { SOCKET_LB_SCOPES } from '../dataplane/bpf/sock.js';
import { type Command, Option } from '@commander-js/extra-typings';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../agent/agent.js';
import { DEFAULT_POD_IFACES, TC_ATTACH_MODES, resolveAttachMode } from '../dataplane/bpf/attach.js';
import { LISTEN_DEFAULTS, formatBindAddress, resolveBindAddress, type BindAddress } from '../health/bind-address.js';
import { formatDuration } from '../config/duration.js';
import { configFromFlags } from '../config/flags.js';
import { DEFAULT_DRAIN_TIMEOUT_MS } from '../dataplane/bpf/drain.js';
import {
  DEFAULT_MAX_FRONTENDS_PER_SERVICE,
  DEFAULT_NODE_PORT_RANGE,
  formatPortRange,
  parseCidrList,
  parseNodePortAddresses,
  parsePortRange,
  type ServicePolicy,
} from '../config/services.js';
import { makeLogger } from '../log.js';
import { DEFAULT_MAX_FILE_BYTES } from '../sources/manifests.js';
import {
  bindAddress,
  configOption,
  duration,
  fieldParser,
  flagParser,
  pinDirOption,
  port,
  positiveInt,
  regex,
  stateDirOption,
} from './options.js';
import { INSTALL_ROOT } from '../paths.js';
import { DATAPLANES, DEFAULT_ENGINE_SETTINGS, parseBatch, parseQueues } from '../config/engine.js';

export function addAgentCommand(program: Command): void {
  program
    .command('agent')
    .description('serve Services on this node and keep serving them as they change')
    .option(
      '--manifests <dir>',
      'serve the Service/EndpointSlice/Node/FelixConfiguration YAML in this directory, and enforce its Pod/Namespace/NetworkPolicy YAML',
    )
    .option(
      '--manifest-max-file-size <bytes>',
      'larger manifest files are not read (reported; their last good objects kept)',
      positiveInt('--manifest-max-file-size'),
      DEFAULT_MAX_FILE_BYTES,
    )
    .option('--kubeconfig <path>', 'watch the Kubernetes API with this kubeconfig (default without --manifests: in-cluster config)')
    .option('--node <name>', "this node's name (decides which endpoints are local)", process.env.NODENAME ?? hostname())
    .option(
      '--bpf-enabled <bool>',
      'bpfEnabled: own the dataplane before any FelixConfiguration says so (default: true with --manifests, false with the API, as Calico)',
      fieldParser('bpfEnabled', '--bpf-enabled'),
    )
    .addOption(configOption('--data-ifaces <regex>', 'bpfDataIfacePattern'))
    .addOption(configOption('--l3-ifaces <regex>', 'bpfL3IfacePattern'))
    .addOption(configOption('--external-service-mode <mode>', 'bpfExternalServiceMode'))
    .addOption(configOption('--dsr-optout-cidrs <list>', 'bpfDSROptoutCIDRs'))
    .addOption(
      new Option('--pod-ifaces <regex>', 'pod-facing host interfaces')
        .argParser(regex('--pod-ifaces'))
        .default(new RegExp(DEFAULT_POD_IFACES), JSON.stringify(DEFAULT_POD_IFACES)),
    )
    .addOption(
      new Option(
        '--tc-attach <mode>',
        'how the programs sit on the TC hooks: tcx links (Linux 6.6+, pinned under the pin dir), cls_bpf filters in a clsact qdisc, or auto (tcx where the kernel has it)',
      )
        .choices(TC_ATTACH_MODES)
        .default('auto'),
    )
    .addOption(
      new Option(
        '--dataplane <kind>',
        'bpf: the TC programs serve every frame; afxdp: also the AF_XDP vector engine, taking the service frames it can serve on --afxdp-ifaces (the BPF path stays programmed: the fallback)',
      )
        .choices(DATAPLANES)
        .default(DEFAULT_ENGINE_SETTINGS.dataplane),
    )
    .addOption(
      new Option('--afxdp-ifaces <regex>', 'interfaces the AF_XDP engine takes frames from')
        .argParser(regex('--afxdp-ifaces'))
        .default(undefined, 'the uplinks (bpfDataIfacePattern, bpfL3IfacePattern)'),
    )
    .addOption(
      new Option('--afxdp-queues <n>', 'RX queues per interface the engine takes (one worker thread per queue)')
        .argParser(flagParser('--afxdp-queues', parseQueues))
        .default(DEFAULT_ENGINE_SETTINGS.queues),
    )
    .addOption(
      new Option('--afxdp-batch <n>', 'frames per vector (VPP-style: each graph node runs over the whole vector)')
        .argParser(flagParser('--afxdp-batch', parseBatch))
        .default(DEFAULT_ENGINE_SETTINGS.batch),
    )
    .addOption(pinDirOption())
    .option('--bpf-dir <dir>', 'where the compiled BPF objects are', join(INSTALL_ROOT, 'bpf', '.output'))
    .addOption(configOption('--min-sync-period <duration>', 'bpfKubeProxyMinSyncPeriod'))
    .addOption(
      new Option('--sync-period <duration>', 'full resync interval')
        .argParser(duration('--sync-period'))
        .default(30_000, formatDuration(30_000)),
    )
    .addOption(configOption('--conntrack-timeouts <list>', 'bpfConntrackTimeouts'))
    .addOption(configOption('--map-size-conntrack <n>', 'bpfMapSizeConntrack'))
    .addOption(configOption('--map-size-nat-frontend <n>', 'bpfMapSizeNATFrontend'))
    .addOption(configOption('--map-size-nat-backend <n>', 'bpfMapSizeNATBackend'))
    .addOption(configOption('--map-size-nat-affinity <n>', 'bpfMapSizeNATAffinity'))
    .addOption(
      new Option(
        '--lb-algorithm <algorithm>',
        'how new connections to NodePort, LoadBalancer and external IPs pick their endpoint: at random, or by Maglev consistent hashing ' +
          '(the same endpoint for the same flow on every node); cluster IPs stay random; a Service chooses for itself with the annotation service.bpfproxy.io/lb-algorithm',
      )
        .choices(['random', 'maglev'] as const)
        .default('random' as const),
    )
    .addOption(configOption('--maglev-max-endpoints-per-service <n>', 'bpfMaglevMaxEndpointsPerService'))
    .addOption(configOption('--network-policy <on|off>', 'bpfNetworkPolicy'))
    .addOption(configOption('--xdp-acceleration <mode>', 'bpfXDPAcceleration'))
    .addOption(
      new Option(
        '--socket-lb <scope>',
        "socket-level load balancing (cgroup connect/sendmsg/recvmsg/getpeername hooks): off; host: the hooks on --cgroup-root, only sockets of the node's network namespace (host-network processes) translated; all: pods' sockets too. Which protocols: bpfConnectTimeLoadBalancing",
      )
        .choices(SOCKET_LB_SCOPES)
        .default('off' as const),
    )
    .addOption(configOption('--connect-time-lb <mode>', 'bpfConnectTimeLoadBalancing'))
    .option(
      '--cgroup-root <path>',
      'the cgroup v2 directory the socket hooks attach to (default: /sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host)',
    )
    .addOption(
      new Option(
        '--rollback-drain-timeout <duration>',
        'bpfEnabled=false: how long at most to keep serving the connections bpfproxy carries (new ones go to kube-proxy) before detaching; 0: detach at once',
      )
        .argParser(duration('--rollback-drain-timeout'))
        .default(DEFAULT_DRAIN_TIMEOUT_MS, formatDuration(DEFAULT_DRAIN_TIMEOUT_MS)),
    )
    .option(
      '--service-node-port-range <range>',
      "the API server's --service-node-port-range: nodePort and healthCheckNodePort must fall in it",
      formatPortRange(DEFAULT_NODE_PORT_RANGE),
    )
    .addOption(
      new Option('--external-ip-cidrs <list>', 'comma-separated CIDRs externalIPs and LoadBalancer ingress IPs must fall in').default(
        '',
        "any address but the node's own",
      ),
    )
    .option(
      '--allow-node-address-external-ips',
      "let an externalIP or LoadBalancer IP be one of this node's addresses (it then captures that port of the node: CVE-2020-8554)",
      false,
    )
    .addOption(
      new Option(
        '--nodeport-addresses <list>',
        "kube-proxy's --nodeport-addresses: comma-separated CIDRs; NodePort answers only on the node's addresses inside them; " +
          "\"primary\": only on the node's primary address (its Node object's InternalIP, else the address of the default route's interface)",
      ).default('', 'every address of the node'),
    )
    .option(
      '--max-frontends-per-service <n>',
      'frontends (address x port) one Service may have; the rest is refused with a problem',
      positiveInt('--max-frontends-per-service'),
      DEFAULT_MAX_FRONTENDS_PER_SERVICE,
    )
    .option(
      '--healthz-bind-address <ip[:port]>',
      `kube-proxy's /healthz, served while bpfEnabled; the port is bpfKubeProxyHealthzPort (FelixConfiguration may change it); empty: off (default ${formatBindAddress(LISTEN_DEFAULTS.healthz)})`,
      bindAddress('--healthz-bind-address'),
    )
    .option('--healthz-port <port>', 'the port of --healthz-bind-address (0: off)', port('--healthz-port'))
    .option(
      '--metrics-bind-address <ip[:port]>',
      `Prometheus /metrics; 0.0.0.0:PORT or [::]:PORT for every address; empty: off (default ${formatBindAddress(LISTEN_DEFAULTS.metrics)})`,
      bindAddress('--metrics-bind-address'),
    )
    .option('--metrics-port <port>', 'the port of --metrics-bind-address (0: off)', port('--metrics-port'))
    .option(
      '--health-bind-address <ip[:port]>',
      `the agent's /liveness and /readiness; empty: off (default ${formatBindAddress(LISTEN_DEFAULTS.health)})`,
      bindAddress('--health-bind-address'),
    )
    .option('--health-port <port>', 'the port of --health-bind-address (0: off)', port('--health-port'))
    .addOption(stateDirOption())
    .option('--log-level <level>', 'trace, debug, info, warn, error', 'info')
    .action(async (o) => {
      const log = makeLogger(o.logLevel);
      const fail: (msg: string) => never = (msg) => {
        log.fatal(msg);
        process.exit(2);
      };
      if (o.manifests && o.kubeconfig) fail('use --manifests or --kubeconfig, not both');
      const tcAttach = o.tcAttach;
      try {
        resolveAttachMode(tcAttach);
      } catch (e) {
        fail((e as Error).message);
      }
      let healthz: BindAddress | undefined;
      let metrics: BindAddress | undefined;
      let health: BindAddress | undefined;
      try {
        healthz = resolveBindAddress(
          '--healthz-bind-address',
          o.healthzBindAddress,
          '--healthz-port',
          o.healthzPort,
          LISTEN_DEFAULTS.healthz,
        );
        metrics = resolveBindAddress(
          '--metrics-bind-address',
          o.metricsBindAddress,
          '--metrics-port',
          o.metricsPort,
          LISTEN_DEFAULTS.metrics,
        );
        health = resolveBindAddress('--health-bind-address', o.healthBindAddress, '--health-port', o.healthPort, LISTEN_DEFAULTS.health);
      } catch (e) {
        fail((e as Error).message);
      }
      let services: ServicePolicy | undefined;
      try {
        const externalIPCidrs = parseCidrList(o.externalIpCidrs);
        const nodePortAddresses = parseNodePortAddresses(o.nodeportAddresses);
        services = {
          nodePortRange: parsePortRange(o.serviceNodePortRange),
          ...(externalIPCidrs ? { externalIPCidrs } : {}),
          allowNodeAddressExternalIPs: !!o.allowNodeAddressExternalIps,
          maxFrontendsPerService: o.maxFrontendsPerService,
          ...(nodePortAddresses.kind !== 'all' ? { nodePortAddresses } : {}),
        };
      } catch (e) {
        fail(`--service-node-port-range / --external-ip-cidrs / --nodeport-addresses: ${(e as Error).message}`);
      }
      const base = configFromFlags({
        bpfEnabled: o.bpfEnabled ?? !!o.manifests,
        bpfDataIfacePattern: o.dataIfaces,
        bpfL3IfacePattern: o.l3Ifaces,
        bpfKubeProxyMinSyncPeriod: o.minSyncPeriod,
        bpfConntrackTimeouts: o.conntrackTimeouts,
        bpfMapSizeConntrack: o.mapSizeConntrack,
        bpfMapSizeNATFrontend: o.mapSizeNatFrontend,
        bpfMapSizeNATBackend: o.mapSizeNatBackend,
        bpfMapSizeNATAffinity: o.mapSizeNatAffinity,
        bpfKubeProxyHealthzPort: healthz?.port,
        bpfMaglevMaxEndpointsPerService: o.maglevMaxEndpointsPerService,
        bpfNetworkPolicy: o.networkPolicy,
        bpfXDPAcceleration: o.xdpAcceleration,
        bpfConnectTimeLoadBalancing: o.connectTimeLb,
      });
      if (o.dataplane === 'afxdp' && base.xdpAcceleration !== 'Off') {
        fail(
          `--xdp-acceleration ${base.xdpAcceleration.toLowerCase()} cannot run with --dataplane afxdp: an interface has one XDP hook, and the AF_XDP engine's program (bpfproxy_xdp_afxdp) takes it; choose one (--xdp-acceleration off, or --dataplane bpf)`,
        );
      }
      let agent: Agent;
      try {
        agent = await Agent.start(
          {
            source: o.manifests
              ? { kind: 'manifests', dir: o.manifests, maxFileBytes: o.manifestMaxFileSize }
              : { kind: 'kubernetes', ...(o.kubeconfig ? { kubeconfig: o.kubeconfig } : {}) },
            nodeName: o.node,
            podIfaces: o.podIfaces,
            tcAttach,
            pinDir: o.pinDir,
            bpfDir: o.bpfDir,
            base,
            syncPeriodMs: o.syncPeriod,
            metricsPort: metrics?.port ?? 0,
            metricsHost: metrics?.host,
            healthPort: health?.port ?? 0,
            healthHost: health?.host,
            healthzHost: healthz?.host ?? null,
            stateDir: o.stateDir,
            rollbackDrainMs: o.rollbackDrainTimeout,
            services,
            lbAlgorithm: o.lbAlgorithm,
            socketLb: { scope: o.socketLb, ...(o.cgroupRoot ? { cgroupRoot: o.cgroupRoot } : {}) },
            engine: { dataplane: o.dataplane, ifaces: o.afxdpIfaces ?? null, queues: o.afxdpQueues, batch: o.afxdpBatch },
          },
          log,
        );
      } catch (e) {
        log.fatal({ err: e }, `agent could not start: ${(e as Error).message}`);
        process.exit(1);
      }
      const shutdown = (sig: string) => {
        log.info(
          { signal: sig },
          agent.enabled ? 'stopping; the dataplane keeps serving (run "bpfproxy cleanup" to remove it)' : 'stopping',
        );
        agent.stop();
        process.exit(0);
      };
      process.on('SIGTERM', () => shutdown('SIGTERM'));
      process.on('SIGINT', () => shutdown('SIGINT'));
    });
}
