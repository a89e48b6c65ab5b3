/**
 * Every codec mirrors its struct in bpf/lib/types.h: same size, same field
 * offsets, as the compiled object's BTF says; and every map's key/value size
 * in the loaded object matches the codec the agent uses for it.
 */
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import * as c from '../src/dataplane/bpf/codecs.js';
import * as c6 from '../src/dataplane/bpf/codecs6.js';
import { REASONS } from '../src/dataplane/bpf/reasons.js';
import type { Codec } from '../src/dataplane/bpf/struct.js';
import { BPF_OBJECT } from '../src/dataplane/bpf/loader.js';
import { BPF_DIR, tmpDatapath } from './helpers/env.js';

interface BtfType {
  id: number;
  kind: string;
  name?: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: Array<{ name: string; type_id: number; bits_offset: number }>;
  values?: Array<{ name: string; val: number }>;
}

const btf = JSON.parse(execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', join(BPF_DIR, BPF_OBJECT)], { encoding: 'utf8' })) as {
  types: BtfType[];
};
const byId = new Map(btf.types.map((x) => [x.id, x]));
const snake = (s: string) => s.replace(/[A-Z]/g, (m) => `_${m.toLowerCase()}`);

function sizeOf(id: number): number {
  const ty = byId.get(id)!;
  if (ty.size !== undefined) return ty.size;
  if (ty.kind === 'ARRAY') {
    const a = ty as unknown as { type_id: number; nr_elems: number };
    return sizeOf(a.type_id) * a.nr_elems;
  }
  return sizeOf(ty.type_id!);
}

function check(t: Test, codec: Codec<unknown>): void {
  const st = btf.types.find((x) => x.kind === 'STRUCT' && x.name === codec.cName);
  if (!st) {
    t.fail(`struct ${codec.cName} not in BTF`);
    return;
  }
  t.equal(codec.size, st.size, `${codec.cName}: size`);
  t.same(
    codec.layout.map((f) => snake(f.name)),
    st.members!.map((m) => m.name),
    `${codec.cName}: same fields, same order`,
  );
  for (const f of codec.layout) {
    const m: { name: string; type_id: number; bits_offset: number } | undefined = st.members!.find((x) => x.name === snake(f.name));
    if (!m) continue;
    t.equal(f.offset, m.bits_offset / 8, `${codec.cName}.${m.name}: offset`);
    t.equal(f.size, sizeOf(m.type_id), `${codec.cName}.${m.name}: size`);
    if (f.nested) check(t, f.nested);
  }
}

t.test('codecs match the BTF of types.h', async (t) => {
  for (const codec of [
    c.feKey,
    c.feValue,
    c.slotKey,
    c.maglevKey,
    c.maglevChunk,
    c.backend,
    c.affinityKey,
    c.affinityValue,
    c.nodeIpKey,
    c.podIfKey,
    c.podSrcKey,
    c.podAddr,
    c.lbSrcKey,
    c.svcName,
    c.ctKey,
    c.ctValue,
    c.reasonCounter,
    c.monitorEvent,
    c.monitorSlot,
    c.monitorCtl,
    c.traceStep,
    c.traceBuf,
    c.ipcacheKey,
    c.ipcacheValue,
    c.polKey,
    c.polValue,
    c.polState,
    c.ruleHits,
    c.polRuleName,
    c.polEpName,
    c.modeValue,
    c.tunEpKey,
    c.tunEp,
    c.dsrOptoutKey,
    c.tunCfg,
    c.ctTun,
    c.sockRevKey,
    c.sockRevValue,
    c6.fe6Key,
    c6.backend6,
    c6.affinity6Key,
    c6.affinity6Value,
    c6.nodeIp6Key,
    c6.lbSrc6Key,
    c6.podSrc6Key,
    c6.ipcache6Key,
    c6.ct6Key,
    c6.ct6Value,
    c6.sockRev6Key,
    c6.sockRev6Value,
  ]) {
    check(t, codec);
  }
});

t.test('map key and value sizes match the codecs the agent uses', async (t) => {
  const dp = await tmpDatapath(t);
  const byName = new Map(dp.objects[0]!.maps().map((m) => [m.name, m]));
  for (const m of Object.values(dp.maps)) {
    const info = byName.get(m.name);
    t.ok(info, `${m.name} exists`);
    t.equal(m.key.size, info!.keySize, `${m.name}: key size`);
    t.equal(m.value.size, info!.valueSize, `${m.name}: value size`);
  }
});

t.test('enums and flags: the TypeScript copies match the BTF enums of the object', async (t) => {
  const enumOf = (name: string): Record<string, number> => {
    const e = btf.types.find((x) => x.kind === 'ENUM' && x.name === name);
    if (!e) throw new Error(`enum ${name} not in BTF (is it in bpfproxy_enums_btf?)`);
    return Object.fromEntries(e.values!.map((v) => [v.name, v.val]));
  };
  // REASON_FOO_BAR <-> 'foo-bar', same value as the index in REASONS
  const reasons = Object.entries(enumOf('reason')).filter(([n]) => !n.startsWith('__'));
  t.same(
    reasons.map(([n, v]) => [
      n
        .replace(/^REASON_/, '')
        .toLowerCase()
        .replace(/_/g, '-'),
      v,
    ]),
    REASONS.map((r, i) => [r.name, i]),
    'enum reason and REASONS: same names, same order',
  );
  t.equal(enumOf('reason').__REASON_MAX, REASONS.length, 'as many counters as reasons');
  const same = (cEnum: string, prefix: RegExp, ts: Record<string, number>) => {
    const fromBtf = Object.fromEntries(Object.entries(enumOf(cEnum)).map(([n, v]) => [n.replace(prefix, ''), v]));
    t.same(ts, fromBtf, `${cEnum} matches its TypeScript copy`);
  };
  same('fe_flags', /^FE_F_/, c.FeFlags);
  same('backend_flags', /^BE_F_/, c.BackendFlags);
  same('ct_dir', /^CT_DIR_/, c.CtDir);
  same('ct_state_bits', /^CT_S_/, c.CtState);
  same('ct_flags', /^CT_F_/, c.CtFlags);
  same('ext_mode', /^EXT_M_/, c.ExtMode);
  same('tun_role', /^TUN_R_/, c.TunRole);
  same('tun_counter', /^TUN_C_/, c.TunCounter);
  same('maglev_table', /^MAGLEV_T_/, c.MaglevTable);
  same('monitor_type', /^MON_/, c.MonType);
  same('monitor_hook', /^MON_HOOK_/, c.MonHook);
  same('monitor_close', /^MON_CLOSE_/, c.MonClose);
  same('monitor_verdict', /^MON_VERDICT_/, c.MonVerdict);
  same('monitor_direction', /^MON_DIR_/, c.MonDirection);
  same('trace_kind', /^TRACE_/, c.TraceKind);
  same('ipcache_flags', /^IPC_F_/, c.IpcacheFlags);
  same('pol_identity', /^IDENTITY_/, c.PolIdentity);
  same('pol_dir', /^POL_DIR_/, c.PolDir);
  same('pol_verdict', /^POL_/, c.PolVerdict);
  same('mode_flags', /^MODE_F_/, c.ModeFlags);
  same('node_ip_flags', /^NODE_IP_F_/, c.NodeIpFlags);
  same(
    'sock_stat',
    /^SOCK_STAT_/,
    Object.fromEntries([...Object.entries(c.SockStat), ['__SOCK_STAT_MAX', Object.keys(c.SockStat).length]]),
  );
});
