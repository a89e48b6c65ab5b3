/**
 * Socket-level load balancing of native IPv6 sockets (bpf/sock.c, the *6
 * hooks with lib/lb6.h's maps): the cases both families share
 * (test/helpers/socklb.ts, its header says the topology, the cgroup and the
 * bounds), with the IPv4 addresses mapped by test/helpers/family.ts.
 * IPv4 and v4-mapped addresses on IPv6 sockets: test/socklb.test.ts.
 */
import { sockLbCases } from './helpers/socklb.js';

sockLbCases('ipv6');
