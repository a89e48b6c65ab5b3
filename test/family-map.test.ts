/**
 * The IPv4 -> IPv6 address mapping the conformance tables run IPv6 with
 * (test/helpers/family.ts): classes kept, CIDR containment kept, leading
 * zeros kept as IPv6 writes them, objects mapped as a whole.
 */
import t from 'tap';
import { cidr6Contains, parseCidr6Masked } from '../src/model/addresses.js';
import { cidrTo6, epIp, epKey, mapObject, nodePortSpecIn, to6 } from './helpers/family.js';

t.test('addresses keep their class', async (t) => {
  t.equal(to6('10.0.0.2'), 'fd00:10::a00:2', 'pod');
  t.equal(to6('172.30.0.41'), 'fd00:172::ac1e:29', 'cluster IP');
  t.equal(to6('192.168.0.2'), '2001:db8:192::c0a8:2', 'node');
  t.equal(to6('203.0.113.2'), '2001:db8:ff::cb00:7102', 'external client');
  t.equal(to6('127.0.0.1'), '::1', 'loopback');
  t.equal(to6('172.30.0.041'), 'fd00:0172:0000:0000:0000:0000:ac1e:0029', 'leading zeros: every group written out');
  t.throws(() => to6('10.0.0.256'), /octet above 255/);
  t.throws(() => to6('fd00::1'), /not an IPv4 address/);
});

t.test('CIDRs keep what they contain', async (t) => {
  const c = parseCidr6Masked(cidrTo6('203.0.113.0/25'))!;
  t.equal(c.bits, 121);
  t.ok(cidr6Contains(c, to6('203.0.113.2')), 'the accepted client is inside');
  t.notOk(cidr6Contains(c, to6('203.0.113.130')), 'the blocked client is outside');
  t.notOk(
    cidr6Contains(parseCidr6Masked('2001:db8::/64')!, to6('192.168.0.2')),
    "2001:db8::/64 (the tables' foreign CIDR) holds no node address",
  );
  t.equal(cidrTo6('127.0.0.0/8'), '::1/128');
  t.equal(nodePortSpecIn('ipv6', '192.168.0.0/24, 2001:db8::/64'), '2001:db8:192::c0a8:0/120,2001:db8::/64');
  t.equal(nodePortSpecIn('ipv4', '192.168.0.0/24'), '192.168.0.0/24', 'IPv4 unchanged');
});

t.test('objects and endpoints', async (t) => {
  const o = mapObject({
    addressType: 'IPv4',
    spec: { clusterIP: '172.30.0.41', loadBalancerSourceRanges: [' 203.0.113.0/25'], ports: [{ name: 'p80', port: 80 }] },
    endpoints: [{ addresses: ['10.180.0.1'] }],
  });
  t.same(o, {
    addressType: 'IPv6',
    spec: { clusterIP: 'fd00:172::ac1e:29', loadBalancerSourceRanges: [' 2001:db8:ff::cb00:7100/121'], ports: [{ name: 'p80', port: 80 }] },
    endpoints: [{ addresses: ['fd00:10::ab4:1'] }],
  });
  t.equal(epKey('fd00::1', 80), '[fd00::1]:80');
  t.equal(epKey('10.0.0.1', 80), '10.0.0.1:80');
  t.equal(epIp('[fd00::1]:80'), 'fd00::1');
  t.equal(epIp('10.0.0.1:80'), '10.0.0.1');
});
