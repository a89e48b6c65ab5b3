/**
 * The agent's configuration as the rest of bpfproxy reads it: domain units
 * (ms, counts, compiled patterns, closed enums), not the FelixConfiguration's
 * strings. fields.ts says where each value comes from and its default.
 */

/**
 * How external traffic reaches an endpoint on another node: Tunnel and DSR
 * are Calico's (client address kept, bpf/lib/tunnel.h); SNAT is
 * kube-proxy's behaviour (the endpoint sees this node's address), a
 * bpfproxy value.
 */
export type ExternalServiceMode = 'Tunnel' | 'DSR' | 'SNAT';
/** bpfConnectTimeLoadBalancing: which sockets socket-level LB translates, where --socket-lb turns it on */
export type ConnectTimeLb = 'TCP' | 'Enabled' | 'Disabled';
export type BpfLogLevel = 'Off' | 'Info' | 'Debug';
export type NetworkPolicyMode = 'on' | 'off';
/** XDP acceleration of external service traffic on data interfaces (bpf/xdp_data.c). */
export type XdpAcceleration = 'Off' | 'Native' | 'Generic';

/**
 * Conntrack entry lifetimes, ms, under Calico's bpfConntrackTimeouts keys.
 * Calico's other keys (creationGracePeriod, genericTimeout, icmpTimeout) are
 * checked but have nothing to set in this datapath.
 */
export interface ConntrackTimeouts {
  tcpSynSent: number;
  tcpEstablished: number;
  tcpFinsSeen: number;
  tcpResetSeen: number;
  udpTimeout: number;
}

/** Entries each BPF map is created with. */
export interface MapSizes {
  conntrack: number;
  natFrontend: number;
  natBackend: number;
  natAffinity: number;
}

export interface Config {
  /** bpfEnabled: bpfproxy owns the service dataplane */
  enabled: boolean;
  /** bpfDataIfacePattern: uplinks where NodePort, LoadBalancer and external IPs arrive */
  dataIfaces: RegExp;
  /** bpfL3IfacePattern: extra L3/tunnel devices treated as uplinks; null: none */
  l3Ifaces: RegExp | null;
  /** bpfExternalServiceMode */
  externalServiceMode: ExternalServiceMode;
  /** bpfDSROptoutCIDRs: clients kept on Tunnel when the mode is DSR ("a.b.c.d/n") */
  dsrOptoutCIDRs: string[];
  /** bpfKubeProxyIptablesCleanupEnabled: remove kube-proxy's iptables rules on takeover */
  kubeProxyIptablesCleanup: boolean;
  /** bpfKubeProxyMinSyncPeriod, ms */
  minSyncPeriodMs: number;
  /** bpfConntrackTimeouts, ms */
  conntrack: ConntrackTimeouts;
  /** bpfMapSizeConntrack, bpfMapSizeNATFrontend, bpfMapSizeNATBackend, bpfMapSizeNATAffinity */
  mapSizes: MapSizes;
  /** bpfLogLevel */
  logLevel: BpfLogLevel;
  /** bpfKubeProxyHealthzPort: kube-proxy's /healthz */
  healthzPort: number;
  /** bpfMaglevMaxEndpointsPerService: Maglev tables grow with the endpoint count up to this many */
  maglevMaxEndpointsPerService: number;
  /** bpfNetworkPolicy (--network-policy): enforce Kubernetes NetworkPolicy on this node's pods */
  networkPolicy: NetworkPolicyMode;
  /** bpfXDPAcceleration (bpfproxy's own field): XDP on data interfaces, in which mode */
  xdpAcceleration: XdpAcceleration;
  /** bpfConnectTimeLoadBalancing: TCP, or TCP and UDP (Enabled), or neither (Disabled); only where --socket-lb attaches the hooks */
  connectTimeLb: ConnectTimeLb;
}
