/**
 * The NetworkPolicy compiler: the cluster's Pods, Namespaces and
 * NetworkPolicies (domain objects) and this node's name and addresses in,
 * a CompiledPolicy (compiled.ts) out.
 *
 * Identities: see identities.ts (pods by namespace, labels, named ports and
 * deepest policy prefix; policy prefixes; WORLD; HOST).
 *
 * Entries. For each local endpoint (a pod on this node, not host-network,
 * with an address) and direction: isolated when a policy with that
 * policy type selects it; entries = the union of the rules of those
 * policies, each rule expanded to {peer identity (IDENTITY_ANY when the rule
 * names no peers), protocol (PROTO_ANY without ports), port prefix}. A
 * named port resolves per destination: on ingress against the endpoint's own
 * container ports, on egress against each peer identity's (so one rule can
 * mean different numbers for different peers; a rule naming a port with
 * every destination expands over the pod identities that have it). An
 * isolated ingress also gets an allow from each host identity (NODE_RULE_ID):
 * the node reaches its pods (probes) whatever the policies.
 *
 * Incremental. The compiler keeps its state between compilations and works
 * on what changed: inputs are compared with the previous ones (by reference,
 * then structurally), selector results are cached per distinct selector and
 * updated per changed identity, rules are expanded once per distinct
 * (direction, peers, ports) however many policies share them, and only the
 * endpoints whose policies or expansions changed get their tables rebuilt
 * (merged from the expansions' sorted entry lists, once per set of
 * policies); an unchanged endpoint keeps its very objects, so diffCompiled
 * skips it. Ids are stable: an identity keeps its id while its key stays
 * (and a pod whose key changes hands its old id on when it was the only
 * member), an endpoint while its pod stays local, a rule while its policy
 * keeps it; seed() takes them over from a previous compilation (after a
 * restart, read back from the pinned maps).
 */
import {
  IDENTITY_ANY,
  IDENTITY_WORLD,
  IDENTITY_WORLD6,
  NODE_RULE_ID,
  NODE_RULE_POLICY,
  PROTO_ANY,
  type CompiledPolicy,
  type EndpointPolicy,
  type IdentityEntry,
  type PolicyDirection,
  type PolicyRuleEntry,
  type PolicyRuleRef,
} from './compiled.js';
import { changesDecisions, diffCompiled, sameEntryList, type PolicyDiff } from './diff.js';
import { IdPool } from './ids.js';
import { IdentityTable, identPrefixes, namedPortsOf, portsKey, type Ident } from './identities.js';
import { mergeRuns, portSpecs, PROTO_NUMBER, type PortSpec } from './tables.js';
import { sameData } from './equal.js';
import { hostPrefixText, prefixWithin, WORLD6_PREFIX, WORLD_PREFIX, type Prefix } from './prefix.js';
import { selectorKey, selectorMatches } from './selector.js';
import {
  NAMESPACE_NAME_LABEL,
  podKey,
  policyKey,
  type LabelSelector,
  type Labels,
  type Namespace,
  type NetworkPolicy,
  type Pod,
  type PolicyPeer,
  type PolicyRule,
} from './types.js';

export interface NodeInfo {
  name: string;
  /** This node's IPv4 and IPv6 addresses: traffic from them to local pods is always allowed (the group of the first IPv4 one and that of the first IPv6 one are HOST). */
  addresses: readonly string[];
}

export interface PolicyInputs {
  pods: Iterable<Pod>;
  namespaces: Iterable<Namespace>;
  policies: Iterable<NetworkPolicy>;
  node: NodeInfo;
}

export interface CompileResult {
  compiled: CompiledPolicy;
  /** From the previous compilation (or the seed) to this one. */
  diff: PolicyDiff;
  /** Inputs the compiler had to decide about (two pods claiming one address): for logs. */
  notes: string[];
  /** Milliseconds per phase (namespaces, policies, pods, addresses, selectors, rules, tables, diff): for logs and metrics. */
  timings: Record<string, number>;
}

/** The identities one distinct peer (selector or ipBlock) matches, shared by every rule naming it. */
interface PeerSet {
  key: string;
  kind: 'pods' | 'ipBlock' | 'allPods';
  /** pods without namespaceSelector: the policy's namespace. */
  scopeNs?: string;
  nsSel?: NsSel;
  podSel?: LabelSelector;
  cidr?: Prefix;
  except?: Prefix[];
  members: Set<Ident>;
  /** The expansions naming it. */
  users: Set<Expansion>;
  /** Members not computed yet (created in this compilation). */
  fresh: boolean;
}

/** A distinct namespaceSelector and the namespaces it matches. */
interface NsSel {
  key: string;
  sel: LabelSelector;
  namespaces: Set<string>;
  peerSets: Set<PeerSet>;
}

/**
 * What a rule means in entries, shared by every rule of every policy with
 * the same direction, peers and ports (policies made from one template
 * share it): entries with fixed numbers, and ingress named ports left for
 * each endpoint to resolve.
 */
interface Expansion {
  key: string;
  direction: PolicyDirection;
  peers: 'any' | PeerSet[];
  /** The pod identities a named egress port resolves over when the rule names no peers. */
  allPods?: PeerSet;
  ports: PortSpec[];
  fixed: Array<{ peer: number; proto: number; port: number; portPrefixLen: number }>;
  named: Array<{ peer: number; proto: number; name: string }>;
  rules: Set<RuleState>;
  /** Not expanded yet. */
  fresh: boolean;
}

interface RuleState {
  id: number;
  policy: PolicyState;
  direction: PolicyDirection;
  index: number;
  exp: Expansion;
}

interface PolicyState {
  key: string;
  /** selectorKey of its podSelector: policies of one namespace with one selector select alike. */
  selKey: string;
  seq: number;
  policy: NetworkPolicy;
  /** The compilation that last saw it in the inputs. */
  seen: number;
  rules: RuleState[];
  selected: Set<EndpointState>;
  prefixes: string[];
}

interface PodState {
  key: string;
  pod: Pod;
  local: boolean;
  seen: number;
}

interface EndpointState {
  id: number;
  ps: PodState;
  policies: Set<PolicyState>;
  out?: EndpointPolicy;
  namedSig: string;
}

export class PolicyCompiler {
  // --- inputs as last compiled
  private node: NodeInfo = { name: '', addresses: [] };
  private readonly pods = new Map<string, PodState>();
  private readonly namespaces = new Map<string, Namespace>();
  private readonly policies = new Map<string, PolicyState>();
  /** namespace → selectorKey → policies */
  private readonly policiesByNs = new Map<string, Map<string, Set<PolicyState>>>();
  private policySeq = 0;
  private stamp = 0;

  // --- addresses and their identities
  private readonly ids: IdentityTable<PodState>;

  // --- selectors
  private readonly peerSets = new Map<string, PeerSet>();
  private readonly peerSetsByScope = new Map<string, Set<PeerSet>>();
  private readonly nsSels = new Map<string, NsSel>();
  private readonly ipBlockSets = new Set<PeerSet>();
  private allPodsSet: PeerSet | undefined;

  // --- endpoints and rules
  private readonly endpoints = new Map<string, EndpointState>();
  private readonly endpointsByNs = new Map<string, Set<EndpointState>>();
  private readonly endpointIds = new IdPool(1);
  private readonly ruleIds = new IdPool(NODE_RULE_ID + 1);
  private readonly rules = new Map<number, RuleState>();
  private readonly expansions = new Map<string, Expansion>();

  // --- output
  private readonly entries = new Map<string, IdentityEntry>();
  private last: CompiledPolicy | undefined;
  private compiled = false;
  private ruleRefs: PolicyRuleRef[] = [];
  private rulesChanged = true;
  /** An endpoint came or went. */
  private endpointSetChanged = false;

  // --- per compilation
  private dirtyExps = new Set<Expansion>();
  private dirtyEndpoints = new Set<EndpointState>();
  private dirtyPods = new Set<PodState>();

  constructor() {
    this.ids = new IdentityTable<PodState>({
      dropped: (id) => {
        for (const ps of [...id.sets]) this.leave(ps as PeerSet, id);
      },
      namespaceSeen: (ns) => {
        // A namespace known only through its pods: namespace selectors learn of it.
        if (this.namespaces.has(ns)) return;
        for (const s of this.nsSels.values()) if (selectorMatches(s.sel, this.nsLabels(ns))) s.namespaces.add(ns);
      },
    });
    this.entries.set(WORLD_PREFIX.text, { prefix: WORLD_PREFIX.text, identity: IDENTITY_WORLD });
    this.entries.set(WORLD6_PREFIX.text, { prefix: WORLD6_PREFIX.text, identity: IDENTITY_WORLD6 });
  }

  /**
   * Take ids over from a previous compilation (read back from pinned maps
   * after a restart): an address keeps its identity, a pod its endpoint id,
   * a rule its id, when the same thing is compiled again; the first
   * compile's diff is against `prev`. Call before the first compile.
   */
  seed(prev: CompiledPolicy): void {
    if (this.compiled) throw new Error('PolicyCompiler.seed: the compiler has compiled already; seed a new one');
    this.ids.seed(prev.identities);
    for (const ep of prev.endpoints) {
      // By pod, and by address (what pinned maps tell for sure).
      if (ep.pod) this.endpointIds.seed(ep.pod, ep.id);
      for (const a of ep.addresses) this.endpointIds.seed(`addr:${a}`, ep.id);
    }
    for (const r of prev.rules) if (r.id !== NODE_RULE_ID) this.ruleIds.seed(`${r.policy}|${r.direction}|${r.index}`, r.id);
    this.last = prev;
  }

  /** Compile the cluster as it is now. */
  compile(inputs: PolicyInputs): CompileResult {
    const timings: Record<string, number> = {};
    let t0 = performance.now();
    const phase = (name: string) => {
      const t1 = performance.now();
      timings[name] = t1 - t0;
      t0 = t1;
    };
    this.applyNamespaces(inputs.namespaces);
    phase('namespaces');
    this.applyPolicies(inputs.policies);
    phase('policies');
    this.applyNode(inputs.node);
    this.applyPods(inputs.pods);
    phase('pods');
    this.refreshAddresses();
    phase('addresses');
    this.settlePeerSets();
    phase('selectors');
    this.settleRules();
    phase('rules');
    const compiled = this.output();
    phase('tables');
    const diff = diffCompiled(this.last, compiled);
    phase('diff');
    if (!this.last || changesDecisions(diff)) {
      compiled.generation = this.last && this.last.generation < 0xffffffff ? this.last.generation + 1 : 1;
      diff.generation.to = compiled.generation;
    }
    this.compiled = true;
    const notes = this.ids.notes;
    this.endpointIds.dropSeeds();
    this.ruleIds.dropSeeds();
    this.ids.endCompile();
    this.endpointIds.flush();
    this.ruleIds.flush();
    this.dirtyExps = new Set();
    this.dirtyEndpoints = new Set();
    this.dirtyPods = new Set();
    this.last = compiled;
    return { compiled, diff, notes, timings };
  }

  /** Sizes, for metrics and logs. */
  stats(): { identities: number; endpoints: number; entries: number; rules: number; policies: number; selectors: number } {
    let entries = 0;
    for (const ep of this.endpoints.values()) entries += ep.out?.entries.length ?? 0;
    return {
      identities: this.ids.size,
      endpoints: this.endpoints.size,
      entries,
      rules: this.rules.size,
      policies: this.policies.size,
      selectors: this.peerSets.size,
    };
  }

  // ---------------------------------------------------------------------------
  // Namespaces

  private nsLabels(ns: string): Labels {
    return this.namespaces.get(ns)?.labels ?? { [NAMESPACE_NAME_LABEL]: ns };
  }

  private applyNamespaces(list: Iterable<Namespace>): void {
    const next = new Map<string, Namespace>();
    for (const n of list) next.set(n.name, n);
    const changed: string[] = [];
    for (const [name, n] of next) {
      const o = this.namespaces.get(name);
      if (o === n) continue;
      if (!o || !sameData(o.labels, n.labels)) changed.push(name);
      this.namespaces.set(name, n);
    }
    for (const name of this.namespaces.keys()) {
      if (!next.has(name)) {
        this.namespaces.delete(name);
        changed.push(name);
      }
    }
    for (const ns of changed) this.namespaceLabelsChanged(ns);
  }

  /** A namespace's labels changed (or it came or went): re-evaluate the namespace selectors for it. */
  private namespaceLabelsChanged(ns: string): void {
    const labels = this.nsLabels(ns);
    const idents = [...this.ids.podIdentsIn(ns, undefined)];
    for (const s of this.nsSels.values()) {
      const now = selectorMatches(s.sel, labels);
      if (now === s.namespaces.has(ns)) continue;
      if (now) s.namespaces.add(ns);
      else s.namespaces.delete(ns);
      if (idents.length === 0) continue;
      for (const ps of s.peerSets) {
        if (ps.fresh) continue;
        for (const id of idents) {
          if (now && (!ps.podSel || selectorMatches(ps.podSel, id.labels))) this.join(ps, id);
          else if (!now) this.leave(ps, id);
        }
      }
    }
  }

  // ---------------------------------------------------------------------------
  // Policies

  /** Inputs are compared by reference first: a source that keeps unchanged objects makes this a walk over the list. */
  private applyPolicies(list: Iterable<NetworkPolicy>): void {
    const stamp = ++this.stamp;
    const added = new Map<string, NetworkPolicy>();
    for (const p of list) {
      const key = policyKey(p);
      const st = this.policies.get(key);
      if (st?.seen === stamp || added.has(key)) continue; // a key twice: the first counts
      if (st && (st.policy === p || sameData(p, st.policy))) {
        st.policy = p;
        st.seen = stamp;
        continue;
      }
      if (st) this.removePolicy(st, true);
      added.set(key, p);
    }
    for (const st of this.policies.values()) if (st.seen !== stamp) this.removePolicy(st, false);
    for (const [key, p] of added) this.addPolicy(key, p, stamp);
    for (const id of this.reusableRuleIds.values()) this.ruleIds.release(id);
    this.reusableRuleIds.clear();
  }

  /** A changed policy's rules keep their ids when the new version has them at the same index. */
  private readonly reusableRuleIds = new Map<string, number>();

  private removePolicy(st: PolicyState, changed: boolean): void {
    this.policies.delete(st.key);
    const group = this.policiesByNs.get(st.policy.namespace);
    group?.get(st.selKey)?.delete(st);
    if (group?.get(st.selKey)?.size === 0) group.delete(st.selKey);
    for (const r of st.rules) {
      this.rules.delete(r.id);
      if (changed) this.reusableRuleIds.set(`${st.key}|${r.direction}|${r.index}`, r.id);
      else this.ruleIds.release(r.id);
      const e = r.exp;
      e.rules.delete(r);
      if (e.rules.size === 0) {
        this.expansions.delete(e.key);
        this.dirtyExps.delete(e);
        for (const ps of e.peers === 'any' ? [] : e.peers) this.unuse(ps, e);
        if (e.allPods) this.unuse(e.allPods, e);
      }
    }
    if (st.rules.length) this.rulesChanged = true;
    for (const ep of st.selected) {
      ep.policies.delete(st);
      this.dirtyEndpoints.add(ep);
    }
    for (const t of st.prefixes) this.ids.unrefPrefix(t);
  }

  private addPolicy(key: string, policy: NetworkPolicy, stamp: number): void {
    const selKey = selectorKey(policy.podSelector);
    const st: PolicyState = { key, selKey, seq: ++this.policySeq, policy, rules: [], selected: new Set(), prefixes: [], seen: stamp };
    this.policies.set(key, st);
    let byNs = this.policiesByNs.get(policy.namespace);
    if (!byNs) this.policiesByNs.set(policy.namespace, (byNs = new Map<string, Set<PolicyState>>()));
    let group = byNs.get(selKey);
    if (!group) byNs.set(selKey, (group = new Set()));
    const sibling = group.values().next().value;
    group.add(st);
    const dirs: Array<[PolicyDirection, readonly PolicyRule[]]> = [];
    if (policy.ingressIsolation) dirs.push(['ingress', policy.ingress]);
    if (policy.egressIsolation) dirs.push(['egress', policy.egress]);
    for (const [direction, rules] of dirs) {
      for (const rule of rules) {
        const owner = `${key}|${direction}|${rule.index}`;
        const reuse = this.reusableRuleIds.get(owner);
        this.reusableRuleIds.delete(owner);
        const r: RuleState = {
          id: reuse ?? this.ruleIds.take([owner]),
          policy: st,
          direction,
          index: rule.index,
          exp: this.expansionFor(direction, rule, policy.namespace),
        };
        r.exp.rules.add(r);
        st.rules.push(r);
        this.rules.set(r.id, r);
        this.rulesChanged = true;
      }
    }
    for (const [, rules] of dirs) {
      for (const rule of rules) {
        if (rule.peers === 'any') continue;
        for (const p of rule.peers) {
          if (p.kind !== 'ipBlock') continue;
          for (const t of [p.cidr, ...p.except]) {
            st.prefixes.push(t);
            this.ids.refPrefix(t);
          }
        }
      }
    }
    // Which local endpoints it selects: those a policy with the same selector selects, or a look at each.
    const selected = sibling
      ? sibling.selected
      : [...(this.endpointsByNs.get(policy.namespace) ?? [])].filter((ep) => selectorMatches(policy.podSelector, ep.ps.pod.labels));
    for (const ep of selected) {
      st.selected.add(ep);
      ep.policies.add(st);
      this.dirtyEndpoints.add(ep);
    }
  }

  private expansionFor(direction: PolicyDirection, rule: PolicyRule, ns: string): Expansion {
    const ports = portSpecs(rule);
    const sets = rule.peers === 'any' ? 'any' : [...new Set(rule.peers.map((p) => this.peerSetFor(p, ns)))];
    const key = `${direction}|${
      sets === 'any'
        ? '*'
        : sets
            .map((ps) => ps.key)
            .sort()
            .join('\u0002')
    }|${JSON.stringify(ports)}`;
    let e = this.expansions.get(key);
    if (e) return e;
    e = { key, direction, peers: sets, ports, fixed: [], named: [], rules: new Set(), fresh: true };
    for (const ps of sets === 'any' ? [] : sets) ps.users.add(e);
    if (sets === 'any' && direction === 'egress' && ports.some((p) => p.name !== undefined)) {
      e.allPods = this.allPods();
      e.allPods.users.add(e);
    }
    this.expansions.set(key, e);
    this.dirtyExps.add(e);
    return e;
  }

  // ---------------------------------------------------------------------------
  // Peer sets

  private peerSetFor(peer: PolicyPeer, ns: string): PeerSet {
    let key: string;
    if (peer.kind === 'ipBlock') key = `ip:${peer.cidr}-${[...peer.except].sort().join(',')}`;
    else {
      const scope = peer.namespaceSelector ? `nsSel:${selectorKey(peer.namespaceSelector)}` : `ns:${ns}`;
      key = `pods:${scope}|${peer.podSelector ? selectorKey(peer.podSelector) : '*'}`;
    }
    let ps = this.peerSets.get(key);
    if (ps) return ps;
    ps = { key, kind: peer.kind, members: new Set(), users: new Set(), fresh: true };
    if (peer.kind === 'ipBlock') {
      ps.cidr = this.ids.prefixObj(peer.cidr);
      ps.except = peer.except.map((e) => this.ids.prefixObj(e));
      this.ipBlockSets.add(ps);
    } else {
      if (peer.podSelector && peer.podSelector.requirements.length > 0) ps.podSel = peer.podSelector;
      if (peer.namespaceSelector) {
        const nk = selectorKey(peer.namespaceSelector);
        let s = this.nsSels.get(nk);
        if (!s) {
          s = { key: nk, sel: peer.namespaceSelector, namespaces: new Set(), peerSets: new Set() };
          for (const n of this.allNamespaceNames()) if (selectorMatches(s.sel, this.nsLabels(n))) s.namespaces.add(n);
          this.nsSels.set(nk, s);
        }
        s.peerSets.add(ps);
        ps.nsSel = s;
      } else {
        ps.scopeNs = ns;
        let set = this.peerSetsByScope.get(ns);
        if (!set) this.peerSetsByScope.set(ns, (set = new Set()));
        set.add(ps);
      }
    }
    this.peerSets.set(key, ps);
    return ps;
  }

  /** Namespaces with objects or with pod identities (a pod's namespace object may not be known). */
  private allNamespaceNames(): Set<string> {
    return new Set([...this.namespaces.keys(), ...this.ids.namespacesWithPods()]);
  }

  private allPods(): PeerSet {
    if (!this.allPodsSet) {
      this.allPodsSet = { key: 'allPods', kind: 'allPods', members: new Set(), users: new Set(), fresh: true };
      this.peerSets.set('allPods', this.allPodsSet);
    }
    return this.allPodsSet;
  }

  private unuse(ps: PeerSet, e: Expansion): void {
    ps.users.delete(e);
    if (ps.users.size > 0) return;
    this.peerSets.delete(ps.key);
    for (const id of ps.members) id.sets.delete(ps);
    ps.members.clear();
    if (ps.kind === 'ipBlock') this.ipBlockSets.delete(ps);
    else if (ps.kind === 'allPods') this.allPodsSet = undefined;
    else if (ps.nsSel) {
      ps.nsSel.peerSets.delete(ps);
      if (ps.nsSel.peerSets.size === 0) this.nsSels.delete(ps.nsSel.key);
    } else this.peerSetsByScope.get(ps.scopeNs!)?.delete(ps);
  }

  private matchesPeer(ps: PeerSet, id: Ident): boolean {
    switch (ps.kind) {
      case 'ipBlock':
        // A block holds an identity's addresses of its family alike (HOST: one prefix per family).
        return identPrefixes(id).some((p) => prefixWithin(p, ps.cidr!) && !ps.except!.some((e) => prefixWithin(p, e)));
      case 'allPods':
        return id.kind === 'pod';
      case 'pods':
        if (id.kind !== 'pod') return false;
        if (ps.nsSel ? !ps.nsSel.namespaces.has(id.namespace) : id.namespace !== ps.scopeNs) return false;
        return !ps.podSel || selectorMatches(ps.podSel, id.labels);
    }
  }

  private join(ps: PeerSet, id: Ident): void {
    if (ps.members.has(id)) return;
    ps.members.add(id);
    id.sets.add(ps);
    for (const e of ps.users) this.dirtyExps.add(e);
  }

  private leave(ps: PeerSet, id: Ident): void {
    if (!ps.members.delete(id)) return;
    id.sets.delete(ps);
    for (const e of ps.users) this.dirtyExps.add(e);
  }

  /** New peer sets get their members; new identities join the existing sets they match. */
  private settlePeerSets(): void {
    const computed = new Set<PeerSet>();
    for (const ps of this.peerSets.values()) {
      if (!ps.fresh) continue;
      ps.fresh = false;
      computed.add(ps);
      let cands: Iterable<Ident>;
      if (ps.kind === 'ipBlock') cands = this.ids.identsWithin(ps.cidr!);
      else if (ps.kind === 'allPods') cands = [...this.ids.idents.values()];
      else if (ps.scopeNs !== undefined) cands = this.ids.podIdentsIn(ps.scopeNs, ps.podSel);
      else cands = [...ps.nsSel!.namespaces].flatMap((n) => [...this.ids.podIdentsIn(n, ps.podSel)]);
      for (const id of cands) if (this.matchesPeer(ps, id)) this.join(ps, id);
    }
    // Sets computed just now have seen every identity already.
    const consider = (ps: PeerSet, id: Ident) => {
      if (!computed.has(ps) && this.matchesPeer(ps, id)) this.join(ps, id);
    };
    for (const id of this.ids.identsAdded) {
      if (!id.alive) continue;
      for (const ps of this.ipBlockSets) consider(ps, id);
      if (id.kind !== 'pod') continue;
      if (this.allPodsSet) consider(this.allPodsSet, id);
      for (const ps of this.peerSetsByScope.get(id.namespace) ?? []) consider(ps, id);
      for (const s of this.nsSels.values()) {
        if (!s.namespaces.has(id.namespace)) continue;
        for (const ps of s.peerSets) consider(ps, id);
      }
    }
  }

  // ---------------------------------------------------------------------------
  // Node and pods

  private applyNode(node: NodeInfo): void {
    if (node.name !== this.node.name) {
      // Which pods are local changes: every pod is re-examined.
      for (const ps of this.pods.values()) {
        ps.local = ps.pod.nodeName === node.name && ps.pod.nodeName !== '' && !ps.pod.hostNetwork;
        this.dirtyPods.add(ps);
      }
    }
    this.ids.setNodeAddresses(node.addresses);
    this.node = { name: node.name, addresses: [...node.addresses] };
  }

  private applyPods(list: Iterable<Pod>): void {
    const stamp = ++this.stamp;
    for (const pod of list) {
      const key = podKey(pod);
      const st = this.pods.get(key);
      if (st?.seen === stamp) continue; // a key twice: the first counts
      if (st && (st.pod === pod || sameData(st.pod, pod))) {
        st.pod = pod;
        st.seen = stamp;
        continue;
      }
      if (st) this.ids.unclaim(st);
      const ps: PodState = { key, pod, local: pod.nodeName === this.node.name && pod.nodeName !== '' && !pod.hostNetwork, seen: stamp };
      this.pods.set(key, ps);
      this.ids.claim(ps);
      this.dirtyPods.add(ps);
      if (st) this.dirtyPods.delete(st);
    }
    for (const [key, st] of this.pods) {
      if (st.seen === stamp) continue;
      this.pods.delete(key);
      this.ids.unclaim(st);
      this.dirtyPods.delete(st);
      this.dropEndpoint(key);
    }
  }

  // ---------------------------------------------------------------------------
  // Endpoints

  private dropEndpoint(key: string): void {
    const ep = this.endpoints.get(key);
    if (!ep) return;
    this.endpoints.delete(key);
    this.endpointsByNs.get(ep.ps.pod.namespace)?.delete(ep);
    for (const st of ep.policies) st.selected.delete(ep);
    this.endpointIds.release(ep.id);
    this.dirtyEndpoints.delete(ep);
    this.endpointSetChanged = true;
    for (const a of ep.out?.addresses ?? []) this.ids.dirtyPrefixes.add(hostPrefixText(a));
  }

  /** Addresses, owners and identities settle; endpoints follow the pods whose addresses changed hands. */
  private refreshAddresses(): void {
    const { touched, hostsChanged } = this.ids.refresh(this.dirtyPods);
    // Every isolated table has an entry per host identity.
    if (hostsChanged) for (const ep of this.endpoints.values()) this.dirtyEndpoints.add(ep);
    for (const ps of touched) if (this.pods.get(ps.key) === ps) this.refreshEndpoint(ps);
  }

  /** A pod changed, came, or its addresses changed hands: (re)make its endpoint. */
  private refreshEndpoint(ps: PodState): void {
    const addrs = ps.local ? this.ids.ownedAddresses(ps) : [];
    const ep = this.endpoints.get(ps.key);
    if (addrs.length === 0) return this.dropEndpoint(ps.key);
    if (ep && ep.ps === ps && !this.dirtyPods.has(ps)) {
      this.dirtyEndpoints.add(ep);
      for (const a of addrs) this.ids.dirtyPrefixes.add(hostPrefixText(a));
      return;
    }
    let st = ep;
    if (!st) {
      st = { id: this.endpointIds.take([ps.key, ...addrs.map((a) => `addr:${a}`)]), ps, policies: new Set(), namedSig: '' };
      this.endpoints.set(ps.key, st);
      let byNs = this.endpointsByNs.get(ps.pod.namespace);
      if (!byNs) this.endpointsByNs.set(ps.pod.namespace, (byNs = new Set()));
      byNs.add(st);
    }
    st.ps = ps;
    st.namedSig = portsKey(namedPortsOf(ps.pod.containerPorts));
    for (const pol of st.policies) pol.selected.delete(st);
    st.policies.clear();
    for (const group of this.policiesByNs.get(ps.pod.namespace)?.values() ?? []) {
      const first = group.values().next().value;
      if (!first || !selectorMatches(first.policy.podSelector, ps.pod.labels)) continue;
      for (const pol of group) {
        st.policies.add(pol);
        pol.selected.add(st);
      }
    }
    this.dirtyEndpoints.add(st);
    for (const a of addrs) this.ids.dirtyPrefixes.add(hostPrefixText(a));
    for (const a of st.out?.addresses ?? []) this.ids.dirtyPrefixes.add(hostPrefixText(a));
  }

  /** Re-expand what changed; endpoints using an expansion whose entries came out different get their tables rebuilt. */
  private settleRules(): void {
    for (const e of this.dirtyExps) {
      if (!this.expand(e)) continue;
      for (const r of e.rules) for (const ep of r.policy.selected) this.dirtyEndpoints.add(ep);
    }
  }

  /**
   * An expansion's entries with fixed numbers, and its ingress named ports
   * left for each endpoint to resolve, in a canonical order. Whether they changed.
   */
  private expand(r: Expansion): boolean {
    const fixed: Expansion['fixed'] = [];
    const named: Expansion['named'] = [];
    const peerIds: number[] = [];
    const members = new Set<Ident>();
    if (r.peers === 'any') peerIds.push(IDENTITY_ANY);
    else {
      for (const ps of r.peers) for (const id of ps.members) members.add(id);
      for (const id of members) peerIds.push(id.id);
    }
    for (const spec of r.ports) {
      if (spec.name !== undefined) {
        if (r.direction === 'ingress') {
          for (const peer of peerIds) named.push({ peer, proto: spec.proto, name: spec.name });
          continue;
        }
        // Egress: the number is the destination's.
        const dests = r.peers === 'any' ? (r.allPods?.members ?? new Set<Ident>()) : members;
        for (const id of dests) {
          for (const cp of id.namedPorts) {
            if (cp.name === spec.name && PROTO_NUMBER[cp.protocol] === spec.proto) {
              fixed.push({ peer: id.id, proto: spec.proto, port: cp.port, portPrefixLen: 16 });
            }
          }
        }
        continue;
      }
      for (const peer of peerIds) {
        if (spec.ranges === undefined) fixed.push({ peer, proto: spec.proto, port: 0, portPrefixLen: 0 });
        else for (const rg of spec.ranges) fixed.push({ peer, proto: spec.proto, port: rg.port, portPrefixLen: rg.prefixLen });
      }
    }
    fixed.sort((a, b) => a.peer - b.peer || a.proto - b.proto || a.port - b.port || a.portPrefixLen - b.portPrefixLen);
    named.sort((a, b) => a.peer - b.peer || a.proto - b.proto || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const changed = r.fresh || !sameData(r.fixed, fixed) || !sameData(r.named, named);
    r.fresh = false;
    // Unchanged lists stay the same objects: tables are assembled from them by reference.
    if (changed) {
      r.fixed = fixed;
      r.named = named;
    }
    return changed;
  }

  private buildEntries(
    ep: EndpointState,
    cache: Map<string, PolicyRuleEntry[]>,
  ): { entries: PolicyRuleEntry[]; ingress: boolean; egress: boolean } {
    const pols = [...ep.policies].sort((a, b) => a.seq - b.seq);
    const ingress = pols.some((p) => p.policy.ingressIsolation);
    const egress = pols.some((p) => p.policy.egressIsolation);
    const needsPorts = pols.some((p) => p.rules.some((r) => r.exp.named.length > 0));
    const groupKey = `${pols.map((p) => p.seq).join(',')}|${needsPorts ? ep.namedSig : ''}`;
    let entries = cache.get(groupKey);
    if (entries) return { entries, ingress, egress };
    entries = [];
    for (const direction of ['ingress', 'egress'] as const) {
      // Each distinct expansion once, with the lowest id of the rules using it.
      const runs = new Map<Expansion['fixed'], number>();
      const extra: Array<Expansion['fixed'][number] & { ruleId: number }> = [];
      for (const p of pols) {
        for (const r of p.rules) {
          if (r.direction !== direction) continue;
          const o = runs.get(r.exp.fixed);
          if (o === undefined || r.id < o) runs.set(r.exp.fixed, r.id);
          for (const n of r.exp.named) {
            for (const cp of ep.ps.pod.containerPorts) {
              if (cp.name === n.name && PROTO_NUMBER[cp.protocol] === n.proto) {
                extra.push({ peer: n.peer, proto: n.proto, port: cp.port, portPrefixLen: 16, ruleId: r.id });
              }
            }
          }
        }
      }
      if (direction === 'ingress' && ingress) {
        for (const a of this.ids.nodeAddrs) {
          const h = this.ids.addrIdent.get(a);
          if (h) extra.push({ peer: h.id, proto: PROTO_ANY, port: 0, portPrefixLen: 0, ruleId: NODE_RULE_ID });
        }
      }
      mergeRuns(
        direction,
        [...runs].map(([list, ruleId]) => ({ list, ruleId })),
        extra,
        entries,
      );
    }
    cache.set(groupKey, entries);
    return { entries, ingress, egress };
  }

  // ---------------------------------------------------------------------------
  // Output

  private output(): CompiledPolicy {
    // After a seed, nothing of `last` was made here: everything is rebuilt.
    const last = this.compiled ? this.last : undefined;
    const cache = new Map<string, PolicyRuleEntry[]>();
    const sameMemo = new Map<readonly PolicyRuleEntry[], Map<readonly PolicyRuleEntry[], boolean>>();
    const sameEntryLists = (a: readonly PolicyRuleEntry[], b: readonly PolicyRuleEntry[]): boolean => {
      let m = sameMemo.get(a);
      if (!m) sameMemo.set(a, (m = new Map<readonly PolicyRuleEntry[], boolean>()));
      let r = m.get(b);
      if (r === undefined) m.set(b, (r = sameEntryList(a, b)));
      return r;
    };
    let endpointsChanged = !last || this.endpointSetChanged;
    this.endpointSetChanged = false;
    for (const ep of this.dirtyEndpoints) {
      if (this.endpoints.get(ep.ps.key) !== ep) continue;
      const { entries, ingress, egress } = this.buildEntries(ep, cache);
      const addresses = this.ids.ownedAddresses(ep.ps);
      const o = ep.out;
      const same =
        o &&
        o.id === ep.id &&
        o.ingressIsolated === ingress &&
        o.egressIsolated === egress &&
        o.addresses.length === addresses.length &&
        o.addresses.every((a, i) => a === addresses[i]);
      const sameEntries = o !== undefined && sameEntryLists(o.entries, entries);
      if (same && sameEntries) continue;
      ep.out = {
        id: ep.id,
        pod: ep.ps.key,
        addresses,
        ingressIsolated: ingress,
        egressIsolated: egress,
        entries: sameEntries ? o.entries : entries,
      };
      endpointsChanged = true;
    }
    // Identity prefixes whose mapping may have changed.
    let identitiesChanged = !last;
    const endpointOf = (owner: PodState) => this.endpoints.get(owner.key)?.id;
    for (const t of this.ids.dirtyPrefixes) {
      const e = this.ids.entryFor(t, endpointOf);
      const o = this.entries.get(t);
      if (!e) {
        if (o) {
          this.entries.delete(t);
          identitiesChanged = true;
        }
        continue;
      }
      if (o && o.identity === e.identity && o.endpoint === e.endpoint) continue;
      this.entries.set(t, e);
      identitiesChanged = true;
    }
    if (this.rulesChanged) {
      this.ruleRefs = [
        { id: NODE_RULE_ID, policy: NODE_RULE_POLICY, direction: 'ingress', index: 0 },
        ...[...this.rules.values()]
          .sort((a, b) => a.id - b.id)
          .map((r) => ({ id: r.id, policy: r.policy.key, direction: r.direction, index: r.index })),
      ];
    }
    const draft: CompiledPolicy = {
      generation: this.last?.generation ?? 0,
      identities: identitiesChanged || !last ? [...this.entries.values()] : last.identities,
      endpoints: endpointsChanged || !last ? [...this.endpoints.values()].map((ep) => ep.out!).sort((a, b) => a.id - b.id) : last.endpoints,
      rules: this.rulesChanged || !last ? this.ruleRefs : last.rules,
    };
    this.rulesChanged = false;
    return draft;
  }
}

/** Compile once, without keeping state (tests, `bpfproxy trace` over a snapshot). */
export function compilePolicy(inputs: PolicyInputs, seed?: CompiledPolicy): CompileResult {
  const c = new PolicyCompiler();
  if (seed) c.seed(seed);
  return c.compile(inputs);
}
