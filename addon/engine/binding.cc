// SPDX-License-Identifier: Apache-2.0
// The vector engine (addon/engine/*.c) as seen from JavaScript:
//
//   engineCreate({ vector, sessions, ctFd? }) -> Engine
//     setTable(blob)                    parse, check, swap in (RCU); figures of the table
//     setPolicy(blob)                   the same for the NetworkPolicy state (policy.c)
//     requirePolicy(on)                 without a policy loaded, the policy node drops
//     startIo({ ports, queues, frames, ring, xsksFd, zerocopy, busyPollUs })
//     stopIo()                          workers joined, sockets closed (XSKMAP slots freed)
//     stats()                           per node, per reason, sessions, ports
//     trace(n) / traceTake()            record the next n packets' path
//     gc(nowNs?) / clearSessions()
//     runVector(frames, opts)           test entry: the graph on the caller's thread
//     bench(frames, opts)               benchmark entry: native loop, no I/O
//     close()
//   engineRouteGet(ip), engineNeighbours(), engineNeighResolve(ip, ifindex)
//   xdpLinkAttach(ifindex, prog, mode)  a BPF link (closing it detaches)
//
// Errors are thrown as the rest of the addon throws them (common.h).
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <string.h>

#include <string>
#include <vector>

#include "../common.h"
#include "api.h"

namespace bpfproxy {

namespace {

std::string Ip(uint32_t a) {
  char buf[INET_ADDRSTRLEN];
  struct in_addr in;
  in.s_addr = a;
  inet_ntop(AF_INET, &in, buf, sizeof(buf));
  return buf;
}

bool ParseIp(const std::string& s, uint32_t* out) {
  struct in_addr in;
  if (inet_pton(AF_INET, s.c_str(), &in) != 1) return false;
  *out = in.s_addr;
  return true;
}

std::string Mac(const uint8_t* m) {
  char buf[18];
  snprintf(buf, sizeof(buf), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  return buf;
}

enum eng_node NodeNamed(const std::string& s) {
  for (int i = 0; i < ENG_N__MAX; i++)
    if (s == eng_node_names[i]) return static_cast<enum eng_node>(i);
  return ENG_N__MAX;
}

static bool ParseIp6(const std::string& s, uint8_t out[16]) { return inet_pton(AF_INET6, s.c_str(), out) == 1; }

static std::string Ip6(const uint8_t a[16]) {
  char b[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, a, b, sizeof(b));
  return b;
}

static bool Zero16(const uint8_t a[16]) {
  for (int i = 0; i < 16; i++)
    if (a[i]) return false;
  return true;
}

class Engine : public Napi::ObjectWrap<Engine> {
 public:
  static Napi::FunctionReference* ctor;

  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Engine",
                       {
                           InstanceMethod("setTable", &Engine::SetTable),
                           InstanceMethod("setPolicy", &Engine::SetPolicy),
                           InstanceMethod("requirePolicy", &Engine::RequirePolicy),
                           InstanceMethod("startIo", &Engine::StartIo),
                           InstanceMethod("stopIo", &Engine::StopIo),
                           InstanceMethod("stats", &Engine::Stats),
                           InstanceMethod("trace", &Engine::Trace),
                           InstanceMethod("traceTake", &Engine::TraceTake),
                           InstanceMethod("gc", &Engine::Gc),
                           InstanceMethod("clearSessions", &Engine::ClearSessions),
                           InstanceMethod("runVector", &Engine::RunVector),
                           InstanceMethod("bench", &Engine::Bench),
                           InstanceMethod("close", &Engine::Close),
                       });
  }

  explicit Engine(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Engine>(info) {}
  ~Engine() override { Destroy(); }

  void Init(struct eng* e, int ct_fd, int ct6_fd) {
    e_ = e;
    ct_fd_ = ct_fd;
    ct6_fd_ = ct6_fd;
  }

 private:
  struct eng* e_ = nullptr;
  int ct_fd_ = -1;   // owned: dup of the caller's conntrack map fd
  int ct6_fd_ = -1;  // owned: dup of the caller's IPv6 conntrack map fd

  void Destroy() {
    if (e_) eng_destroy(e_);
    e_ = nullptr;
    if (ct_fd_ >= 0) ::close(ct_fd_);
    ct_fd_ = -1;
    if (ct6_fd_ >= 0) ::close(ct6_fd_);
    ct6_fd_ = -1;
  }

  bool Live(Napi::Env env, const char* what) {
    if (e_) return true;
    Throw(env, std::string("engine ") + what, EBADF, "", "the engine is closed");
    return false;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Destroy();
    return info.Env().Undefined();
  }

  Napi::Value SetTable(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Buffer<uint8_t> b;
    char why[256] = "";
    if (!Live(env, "setTable") || !ArgBuffer(info, 0, "table", &b)) return env.Undefined();
    struct eng_table* t = eng_table_parse(b.Data(), b.Length(), why, sizeof(why));
    if (!t) return Throw(env, "engine table", EINVAL, "", why);
    struct eng_table_info ti;
    eng_table_info(t, &ti);
    Napi::Object o = Napi::Object::New(env);
    o.Set("generation", ti.generation);
    o.Set("ports", ti.ports);
    o.Set("frontends", ti.frontends);
    o.Set("backends", ti.backends);
    o.Set("neighbours", ti.neighbours);
    o.Set("bytes", static_cast<double>(ti.bytes));
    if (eng_set_table(e_, t)) {
      eng_table_free(t);
      return Throw(env, "engine table swap", EBUSY, "",
                   "older tables are still held by a worker that has not passed a quiescent point; retry");
    }
    return o;
  }

  static Napi::Object PolicyInfo(Napi::Env env, const struct eng_policy_info& pi) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("generation", pi.generation);
    o.Set("isolated", pi.isolated);
    o.Set("prefixes", pi.prefixes);
    o.Set("endpoints", pi.endpoints);
    o.Set("tables", pi.tables);
    o.Set("entries", pi.entries);
    o.Set("epoch", pi.epoch);
    o.Set("bytes", static_cast<double>(pi.bytes));
    return o;
  }

  Napi::Value SetPolicy(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Buffer<uint8_t> b;
    char why[256] = "";
    if (!Live(env, "setPolicy") || !ArgBuffer(info, 0, "policy", &b)) return env.Undefined();
    struct eng_policy* p = eng_policy_parse(b.Data(), b.Length(), why, sizeof(why));
    if (!p) return Throw(env, "engine policy", EINVAL, "", why);
    if (eng_set_policy(e_, p)) {
      eng_policy_free(p);
      return Throw(env, "engine policy swap", EBUSY, "",
                   "older policies are still held by a worker that has not passed a quiescent point; retry");
    }
    // p is the engine's now (and may be freed by the next swap): report from the stats
    struct eng_stats st;
    eng_stats(e_, &st);
    return PolicyInfo(env, st.policy);
  }

  Napi::Value RequirePolicy(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Live(env, "requirePolicy")) return env.Undefined();
    if (info.Length() < 1 || !info[0].IsBoolean()) {
      ThrowTypeError(env, "requirePolicy: on must be a boolean");
      return env.Undefined();
    }
    eng_require_policy(e_, info[0].As<Napi::Boolean>().Value() ? 1 : 0);
    return env.Undefined();
  }

  Napi::Value StartIo(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o;
    bool present;
    struct eng_io_config c;
    char why[512] = "";
    memset(&c, 0, sizeof(c));
    if (!Live(env, "startIo")) return env.Undefined();
    if (!OptionsObject(info, 0, "startIo", {"ports", "queues", "frames", "ring", "xsksFd", "zerocopy", "busyPollUs"},
                       &o, &present))
      return env.Undefined();
    if (!present || !o.Get("ports").IsArray()) {
      ThrowTypeError(env, "startIo: ports must be an array of { ifindex, queues, xskBase, name }");
      return env.Undefined();
    }
    Napi::Array ports = o.Get("ports").As<Napi::Array>();
    if (ports.Length() > ENG_MAX_PORTS) return Throw(env, "startIo", EINVAL, "", "more than 64 ports");
    c.nports = ports.Length();
    for (uint32_t i = 0; i < c.nports; i++) {
      Napi::Value pv = ports.Get(i);
      if (!pv.IsObject()) {
        ThrowTypeError(env, "startIo: ports[" + std::to_string(i) + "] must be an object");
        return env.Undefined();
      }
      Napi::Object p = pv.As<Napi::Object>();
      bool set;
      std::string name;
      uint32_t base = 0;
      if (!OptU32(p, "startIo", "ifindex", &c.ports[i].ifindex, &set) ||
          !OptU32(p, "startIo", "queues", &c.ports[i].queues, &set) || !OptU32(p, "startIo", "xskBase", &base, &set) ||
          !OptString(p, "startIo", "name", &name, &set))
        return env.Undefined();
      c.ports[i].xsk_base = base;
      snprintf(c.ports[i].name, sizeof(c.ports[i].name), "%s", name.c_str());
    }
    bool set;
    uint32_t xsks = 0, busy = 0;
    std::string zc = "auto";
    if (!OptU32(o, "startIo", "queues", &c.queues, &set) || !OptU32(o, "startIo", "frames", &c.frames, &set) ||
        !OptU32(o, "startIo", "ring", &c.ring, &set) || !OptU32(o, "startIo", "xsksFd", &xsks, &set) ||
        !OptU32(o, "startIo", "busyPollUs", &busy, &set) || !OptString(o, "startIo", "zerocopy", &zc, &set))
      return env.Undefined();
    c.xsks_fd = static_cast<int>(xsks);
    c.busy_poll_us = static_cast<int>(busy);
    c.zerocopy = zc == "on" ? 1 : zc == "off" ? 0 : -1;
    int err = eng_io_start(e_, &c, why, sizeof(why));
    if (err) return Throw(env, "engine AF_XDP start", -err, "", why);
    return Stats(info);
  }

  Napi::Value StopIo(const Napi::CallbackInfo& info) {
    if (e_) eng_io_stop(e_);
    return info.Env().Undefined();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Live(env, "stats")) return env.Undefined();
    struct eng_stats st;
    eng_stats(e_, &st);
    Napi::Object o = Napi::Object::New(env);
    Napi::Array na = Napi::Array::New(env);
    for (int n = 0; n < ENG_N__MAX; n++) {
      Napi::Object x = Napi::Object::New(env);
      x.Set("name", eng_node_names[n]);
      x.Set("calls", static_cast<double>(st.nodes[n].calls));
      x.Set("vectors", static_cast<double>(st.nodes[n].vectors));
      x.Set("packets", static_cast<double>(st.nodes[n].packets));
      x.Set("ns", st.node_ns[n]);
      na.Set(n, x);
    }
    o.Set("nodes", na);
    Napi::Object ro = Napi::Object::New(env);
    for (int r = 1; r < ENG_R__MAX; r++) ro.Set(eng_reason_names[r], static_cast<double>(st.reasons[r]));
    o.Set("reasons", ro);
    Napi::Object so = Napi::Object::New(env);
    so.Set("live", st.sessions_live);
    so.Set("tombstones", st.sessions_tombs);
    so.Set("limit", st.sessions_limit);
    so.Set("slots", static_cast<double>(st.sessions_slots));
    so.Set("bytes", static_cast<double>(st.sessions_bytes));
    so.Set("hugePages", st.sessions_huge != 0);
    o.Set("sessions", so);
    Napi::Object s6 = Napi::Object::New(env);
    s6.Set("live", st.sessions6_live);
    s6.Set("limit", st.sessions6_limit);
    s6.Set("bytes", static_cast<double>(st.sessions6_bytes));
    o.Set("sessions6", s6);
    Napi::Object co = Napi::Object::New(env);
    co.Set("mirrored", st.ct_mirrored != 0);
    co.Set("exported", static_cast<double>(st.ct_exported));
    co.Set("exportErrors", static_cast<double>(st.ct_export_errors));
    co.Set("adopted", static_cast<double>(st.ct_adopted));
    o.Set("conntrack", co);
    if (st.has_table) {
      Napi::Object to = Napi::Object::New(env);
      to.Set("generation", st.table.generation);
      to.Set("frontends", st.table.frontends);
      to.Set("backends", st.table.backends);
      to.Set("neighbours", st.table.neighbours);
      to.Set("bytes", static_cast<double>(st.table.bytes));
      to.Set("swaps", static_cast<double>(st.swaps));
      to.Set("retired", st.retired);
      o.Set("table", to);
    } else {
      o.Set("table", env.Null());
    }
    o.Set("policy", st.has_policy ? Napi::Value(PolicyInfo(env, st.policy)) : Napi::Value(env.Null()));
    o.Set("policyRequired", st.policy_required != 0);
    struct eng_io_port_state ps[ENG_MAX_PORTS];
    uint32_t queues = 0;
    uint32_t np = eng_io_ports(e_, ps, ENG_MAX_PORTS, &queues);
    Napi::Array pa = Napi::Array::New(env);
    for (uint32_t i = 0; i < np; i++) {
      Napi::Object x = Napi::Object::New(env);
      x.Set("ifindex", ps[i].ifindex);
      x.Set("zerocopy", ps[i].zerocopy != 0);
      x.Set("rx", static_cast<double>(ps[i].rx));
      x.Set("tx", static_cast<double>(ps[i].tx));
      x.Set("rxDropped", static_cast<double>(ps[i].rx_dropped));
      x.Set("rxRingFull", static_cast<double>(ps[i].rx_ring_full));
      x.Set("fillRingEmpty", static_cast<double>(ps[i].fill_empty));
      x.Set("txInvalid", static_cast<double>(ps[i].tx_invalid));
      x.Set("txKicks", static_cast<double>(ps[i].tx_kicks));
      Napi::Array rq = Napi::Array::New(env);
      for (uint32_t q = 0; q < queues && q < ENG_IO_QUEUE_STATS; q++) rq.Set(q, static_cast<double>(ps[i].rx_queue[q]));
      x.Set("rxQueues", rq);
      pa.Set(i, x);
    }
    o.Set("ports", pa);
    o.Set("queues", queues);
    o.Set("umemBytes", static_cast<double>(eng_io_umem_bytes(e_)));
    o.Set("vector", st.vector);
    return o;
  }

  Napi::Value Trace(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int64_t n;
    if (!Live(env, "trace") || !ArgInt(info, 0, "count", &n)) return env.Undefined();
    if (n < 0 || n > ENG_TRACE_MAX) return Throw(env, "engine trace", EINVAL, "", "count must be 0-1024");
    eng_trace_arm(e_, static_cast<int32_t>(n));
    return env.Undefined();
  }

  Napi::Value TraceTake(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Live(env, "traceTake")) return env.Undefined();
    std::vector<struct eng_trace_rec> recs(ENG_TRACE_MAX);
    uint32_t n = eng_trace_take(e_, recs.data(), ENG_TRACE_MAX);
    Napi::Array a = Napi::Array::New(env, n);
    for (uint32_t i = 0; i < n; i++) {
      const struct eng_trace_rec& r = recs[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("seq", static_cast<double>(r.seq));
      o.Set("worker", r.worker);
      o.Set("rxPort", r.rx_port);
      Napi::Array path = Napi::Array::New(env, r.npath);
      for (uint32_t k = 0; k < r.npath; k++) path.Set(k, eng_node_names[r.path[k]]);
      o.Set("path", path);
      o.Set("reason", eng_reason_names[r.reason < ENG_R__MAX ? r.reason : 0]);
      o.Set("outPort", r.out_port == 0xff ? Napi::Value(env.Null()) : Napi::Number::New(env, r.out_port));
      o.Set("proto", r.proto);
      if (r.family == 6) {
        auto ep = [](const uint8_t a[16], uint16_t port) { return "[" + Ip6(a) + "]:" + std::to_string(ntohs(port)); };
        o.Set("in", ep(r.in_saddr6, r.in_sport) + " > " + ep(r.in_daddr6, r.in_dport));
        if (r.out_port != 0xff) o.Set("out", ep(r.out_saddr6, r.out_sport) + " > " + ep(r.out_daddr6, r.out_dport));
      } else {
        o.Set("in", Ip(r.in_saddr) + ":" + std::to_string(ntohs(r.in_sport)) + " > " + Ip(r.in_daddr) + ":" +
                        std::to_string(ntohs(r.in_dport)));
        if (r.out_port != 0xff)
          o.Set("out", Ip(r.out_saddr) + ":" + std::to_string(ntohs(r.out_sport)) + " > " + Ip(r.out_daddr) + ":" +
                           std::to_string(ntohs(r.out_dport)));
      }
      o.Set("len", r.len);
      o.Set("session", r.sess_dir == ENG_CT_DIR_FWD ? "forward" : r.sess_dir == ENG_CT_DIR_REPLY ? "reply" : "none");
      a.Set(i, o);
    }
    return a;
  }

  Napi::Value Gc(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Live(env, "gc")) return env.Undefined();
    uint64_t now = eng_now_ns();
    if (info.Length() > 0 && info[0].IsBigInt()) {
      bool lossless;
      now = info[0].As<Napi::BigInt>().Uint64Value(&lossless);
    }
    uint32_t removed = eng_gc(e_, now);
    return Napi::Number::New(env, removed);
  }

  Napi::Value ClearSessions(const Napi::CallbackInfo& info) {
    if (e_) eng_clear_sessions(e_);
    return info.Env().Undefined();
  }

  // frames and options shared by runVector and bench
  bool Frames(const Napi::CallbackInfo& info, const char* fn, std::vector<Napi::Buffer<uint8_t>>* out) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsArray()) {
      ThrowTypeError(env, std::string(fn) + ": frames must be an array of Buffers");
      return false;
    }
    Napi::Array a = info[0].As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value v = a.Get(i);
      if (!v.IsBuffer()) {
        ThrowTypeError(env, std::string(fn) + ": frames[" + std::to_string(i) + "] must be a Buffer");
        return false;
      }
      Napi::Buffer<uint8_t> b = v.As<Napi::Buffer<uint8_t>>();
      if (b.Length() > ENG_FRAME_SIZE) {
        Throw(env, std::string("engine ") + fn, EINVAL, "",
              "frames[" + std::to_string(i) + "] is " + std::to_string(b.Length()) +
                  " bytes, more than a 2048-byte frame");
        return false;
      }
      out->push_back(b);
    }
    return true;
  }

  // runVector(frames, { rxPort?: number | number[], nowNs?: bigint, until?: node name })
  //  -> [{ frame, next, reason, port }] in input order: next is the node the
  //     packet went to last ('output' / 'drop' when the whole graph ran).
  Napi::Value RunVector(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<Napi::Buffer<uint8_t>> frames;
    if (!Live(env, "runVector") || !Frames(info, "runVector", &frames)) return env.Undefined();
    Napi::Object o;
    bool present;
    if (!OptionsObject(info, 1, "runVector", {"rxPort", "nowNs", "until"}, &o, &present)) return env.Undefined();
    std::vector<uint8_t> rx(frames.size(), 0);
    uint64_t now = eng_now_ns();
    enum eng_node until = ENG_N__MAX;
    if (present) {
      Napi::Value rp = o.Get("rxPort");
      if (rp.IsNumber()) {
        for (auto& x : rx) x = static_cast<uint8_t>(rp.As<Napi::Number>().Uint32Value());
      } else if (rp.IsArray()) {
        Napi::Array ra = rp.As<Napi::Array>();
        for (uint32_t i = 0; i < rx.size() && i < ra.Length(); i++)
          rx[i] = static_cast<uint8_t>(ra.Get(i).As<Napi::Number>().Uint32Value());
      }
      Napi::Value nv = o.Get("nowNs");
      if (nv.IsBigInt()) {
        bool lossless;
        now = nv.As<Napi::BigInt>().Uint64Value(&lossless);
      }
      Napi::Value uv = o.Get("until");
      if (uv.IsString()) {
        until = NodeNamed(uv.As<Napi::String>().Utf8Value());
        if (until == ENG_N__MAX)
          return Throw(env, "engine runVector", EINVAL, "", "no node named " + uv.As<Napi::String>().Utf8Value());
      }
    }
    std::vector<uint8_t> mem(frames.size() * ENG_FRAME_SIZE);
    std::vector<uint8_t*> data(frames.size());
    std::vector<uint8_t> next(frames.size()), reason(frames.size()), port(frames.size());
    std::vector<uint16_t> len(frames.size());
    for (size_t i = 0; i < frames.size(); i++) {
      data[i] = &mem[i * ENG_FRAME_SIZE];
      memcpy(data[i], frames[i].Data(), frames[i].Length());
      len[i] = static_cast<uint16_t>(frames[i].Length());
    }
    if (eng_test_run(e_, static_cast<uint32_t>(frames.size()), data.data(), len.data(), rx.data(), now, until,
                     next.data(), reason.data(), port.data()))
      return Throw(env, "engine runVector", ENOENT, "", "no table set");
    Napi::Array out = Napi::Array::New(env, frames.size());
    for (size_t i = 0; i < frames.size(); i++) {
      Napi::Object r = Napi::Object::New(env);
      r.Set("frame", Napi::Buffer<uint8_t>::Copy(env, &mem[i * ENG_FRAME_SIZE], len[i]));
      r.Set("next", eng_node_names[next[i]]);
      r.Set("reason", eng_reason_names[reason[i] < ENG_R__MAX ? reason[i] : 0]);
      r.Set("port", next[i] == ENG_N_OUTPUT ? Napi::Value(Napi::Number::New(env, port[i])) : env.Null());
      out.Set(static_cast<uint32_t>(i), r);
    }
    return out;
  }

  // bench(frames, { vector, rounds, rxPort?, newFlows? }) -> { packets, ns, nsPerPacket, wallNs, outputs, drops }
  // Each round copies the frames into work buffers (not timed) and runs
  // them through the graph vector by vector (timed). newFlows: every packet
  // of every round is a flow never seen (source address and port from a
  // counter); otherwise a warm-up round opens the flows first.
  Napi::Value Bench(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<Napi::Buffer<uint8_t>> frames;
    if (!Live(env, "bench") || !Frames(info, "bench", &frames)) return env.Undefined();
    Napi::Object o;
    bool present, set;
    if (!OptionsObject(info, 1, "bench", {"vector", "rounds", "rxPort", "newFlows"}, &o, &present))
      return env.Undefined();
    uint32_t vec = ENG_VEC_MAX, rounds = 1, rxp = 0;
    bool fresh = false;
    if (present) {
      if (!OptU32(o, "bench", "vector", &vec, &set) || !OptU32(o, "bench", "rounds", &rounds, &set) ||
          !OptU32(o, "bench", "rxPort", &rxp, &set))
        return env.Undefined();
      Napi::Value nf = o.Get("newFlows");
      fresh = nf.IsBoolean() && nf.As<Napi::Boolean>().Value();
    }
    if (vec < 1 || vec > ENG_VEC_MAX) return Throw(env, "engine bench", EINVAL, "", "vector must be 1-256");
    if (rounds < 1 || rounds > 100000) return Throw(env, "engine bench", EINVAL, "", "rounds must be 1-100000");
    if (frames.empty()) return Throw(env, "engine bench", EINVAL, "", "no frames");
    std::vector<const uint8_t*> fp(frames.size());
    std::vector<uint16_t> lens(frames.size());
    for (size_t i = 0; i < frames.size(); i++) {
      fp[i] = frames[i].Data();
      lens[i] = static_cast<uint16_t>(frames[i].Length());
    }
    struct eng_bench_result res;
    std::vector<double> per(rounds);
    if (eng_bench(e_, static_cast<uint32_t>(frames.size()), fp.data(), lens.data(), vec, rounds,
                  static_cast<uint8_t>(rxp), fresh ? 1 : 0, &res, per.data()))
      return Throw(env, "engine bench", ENOENT, "", "no table set");
    Napi::Object r = Napi::Object::New(env);
    r.Set("packets", static_cast<double>(res.packets));
    r.Set("ns", res.ns);
    r.Set("nsPerPacket", res.packets ? res.ns / static_cast<double>(res.packets) : 0.0);
    r.Set("wallNs", res.wall_ns);
    r.Set("outputs", static_cast<double>(res.outputs));
    r.Set("drops", static_cast<double>(res.drops));
    Napi::Float64Array pr = Napi::Float64Array::New(env, rounds);
    for (uint32_t i = 0; i < rounds; i++) pr[i] = per[i];
    r.Set("roundNs", pr);
    return r;
  }
};

Napi::FunctionReference* Engine::ctor = nullptr;

// engineCreate({ vector, sessions, ctFd?, ct6Fd? })
Napi::Value EngineCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o;
  bool present, set;
  struct eng_config c;
  char why[256] = "";
  int64_t ctfd = -1, ct6fd = -1;
  c.vector = 256;
  c.sessions = 65536;
  c.ct_fd = -1;
  c.ct6_fd = -1;
  if (!OptionsObject(info, 0, "engineCreate", {"vector", "sessions", "ctFd", "ct6Fd"}, &o, &present))
    return env.Undefined();
  if (present) {
    if (!OptU32(o, "engineCreate", "vector", &c.vector, &set) ||
        !OptU32(o, "engineCreate", "sessions", &c.sessions, &set))
      return env.Undefined();
    Napi::Value fv = o.Get("ctFd");
    if (fv.IsNumber())
      ctfd = fv.As<Napi::Number>().Int64Value();
    else if (!fv.IsUndefined() && !fv.IsNull()) {
      int64_t fd;
      bool real;
      if (!HandleFd(env, fv, &fd, &real) || !real) {
        ThrowTypeError(env, "engineCreate: ctFd must be a map fd or a MapHandle");
        return env.Undefined();
      }
      ctfd = fd;
    }
    Napi::Value f6 = o.Get("ct6Fd");
    if (f6.IsNumber())
      ct6fd = f6.As<Napi::Number>().Int64Value();
    else if (!f6.IsUndefined() && !f6.IsNull()) {
      int64_t fd;
      bool real;
      if (!HandleFd(env, f6, &fd, &real) || !real) {
        ThrowTypeError(env, "engineCreate: ct6Fd must be a map fd or a MapHandle");
        return env.Undefined();
      }
      ct6fd = fd;
    }
  }
  int owned = -1, owned6 = -1;
  if (ctfd >= 0) {
    owned = fcntl(static_cast<int>(ctfd), F_DUPFD_CLOEXEC, 3);
    if (owned < 0) return Throw(env, "engineCreate: dup conntrack map fd", errno);
  }
  if (ct6fd >= 0) {
    owned6 = fcntl(static_cast<int>(ct6fd), F_DUPFD_CLOEXEC, 3);
    if (owned6 < 0) {
      int err = errno;
      if (owned >= 0) ::close(owned);
      return Throw(env, "engineCreate: dup IPv6 conntrack map fd", err);
    }
  }
  c.ct_fd = owned;
  c.ct6_fd = owned6;
  struct eng* e = eng_create(&c, why, sizeof(why));
  if (!e) {
    if (owned >= 0) ::close(owned);
    if (owned6 >= 0) ::close(owned6);
    return Throw(env, "engineCreate", EINVAL, "", why);
  }
  Napi::Object obj = Engine::ctor->New({});
  Engine::Unwrap(obj)->Init(e, owned, owned6);
  return obj;
}

Napi::Value RouteGet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string s;
  uint32_t dst;
  if (!ArgString(info, 0, "address", &s)) return env.Undefined();
  if (s.find(':') != std::string::npos) {
    uint8_t d6[16];
    if (!ParseIp6(s, d6)) return Throw(env, "route get " + s, EINVAL, "", "not an IPv6 address");
    struct eng_route r;
    int err = eng_route_get6(d6, &r);
    if (err) return Throw(env, "route get " + s, -err);
    Napi::Object o = Napi::Object::New(env);
    o.Set("oif", r.oif);
    o.Set("gateway", Zero16(r.gateway6) ? env.Null() : Napi::Value(Napi::String::New(env, Ip6(r.gateway6))));
    o.Set("prefsrc", Zero16(r.prefsrc6) ? env.Null() : Napi::Value(Napi::String::New(env, Ip6(r.prefsrc6))));
    return o;
  }
  if (!ParseIp(s, &dst)) return Throw(env, "route get " + s, EINVAL, "", "not an IPv4 address");
  struct eng_route r;
  int err = eng_route_get(dst, &r);
  if (err) return Throw(env, "route get " + s, -err);
  Napi::Object o = Napi::Object::New(env);
  o.Set("oif", r.oif);
  o.Set("gateway", r.gateway ? Napi::Value(Napi::String::New(env, Ip(r.gateway))) : env.Null());
  o.Set("prefsrc", r.prefsrc ? Napi::Value(Napi::String::New(env, Ip(r.prefsrc))) : env.Null());
  return o;
}

Napi::Value Neighbours(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<struct eng_neigh_entry> v(65536);
  uint32_t total = 0;
  int n = eng_neigh_dump(v.data(), static_cast<uint32_t>(v.size()), &total);
  if (n < 0) return Throw(env, "neighbour dump", -n);
  Napi::Array a = Napi::Array::New(env, n);
  for (int i = 0; i < n; i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("ip", v[i].family == 6 ? Ip6(v[i].addr6) : Ip(v[i].addr));
    o.Set("ifindex", v[i].ifindex);
    o.Set("state", v[i].state);
    o.Set("mac", v[i].has_mac ? Napi::Value(Napi::String::New(env, Mac(v[i].mac))) : env.Null());
    a.Set(i, o);
  }
  return a;
}

Napi::Value NeighResolve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string s;
  int64_t ifindex;
  uint32_t addr;
  if (!ArgString(info, 0, "address", &s) || !ArgInt(info, 1, "ifindex", &ifindex)) return env.Undefined();
  int err;
  if (s.find(':') != std::string::npos) {
    uint8_t a6[16];
    if (!ParseIp6(s, a6)) return Throw(env, "neighbour resolve " + s, EINVAL, "", "not an IPv6 address");
    err = eng_neigh_resolve6(a6, static_cast<uint32_t>(ifindex));
  } else {
    if (!ParseIp(s, &addr)) return Throw(env, "neighbour resolve " + s, EINVAL, "", "not an IPv4 address");
    err = eng_neigh_resolve(addr, static_cast<uint32_t>(ifindex));
  }
  if (err) return Throw(env, "neighbour resolve " + s + " on ifindex " + std::to_string(ifindex), -err);
  return env.Undefined();
}

// engineLinkInfo(ifindex) -> { mac, rxQueues, mtu } (this thread's namespace)
Napi::Value LinkInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t ifindex;
  if (!ArgInt(info, 0, "ifindex", &ifindex)) return env.Undefined();
  uint8_t mac[6];
  uint32_t rxq, mtu;
  int err = eng_link_info(static_cast<uint32_t>(ifindex), mac, &rxq, &mtu);
  if (err) return Throw(env, "link info of ifindex " + std::to_string(ifindex), -err);
  Napi::Object o = Napi::Object::New(env);
  o.Set("mac", Mac(mac));
  o.Set("rxQueues", rxq);
  o.Set("mtu", mtu);
  return o;
}

// xdpLinkAttach(ifindex, prog, mode: 'native' | 'generic') -> LinkHandle
Napi::Value XdpLinkAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t ifindex, prog;
  std::string mode;
  if (!ArgInt(info, 0, "ifindex", &ifindex) || !ArgFd(info, 1, "prog", &prog) || !ArgString(info, 2, "mode", &mode))
    return env.Undefined();
  if (mode != "native" && mode != "generic") {
    ThrowTypeError(env, "xdpLinkAttach: mode must be 'native' or 'generic'");
    return env.Undefined();
  }
  LIBBPF_OPTS(bpf_link_create_opts, opts);
  opts.flags = mode == "native" ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE;
  std::string op = "attach XDP (" + mode + ") to ifindex " + std::to_string(ifindex);
  int fd = bpf_link_create(static_cast<int>(prog), static_cast<int>(ifindex), BPF_XDP, &opts);
  if (fd < 0) return Throw(env, op, errno);
  return NewLinkHandle(env, Fd(fd), op);
}

}  // namespace

void InitEngine(Napi::Env env, Napi::Object exports) {
  Napi::Function cls = Engine::Define(env);
  Engine::ctor = new Napi::FunctionReference(Napi::Persistent(cls));
  exports.Set("engineCreate", Napi::Function::New(env, EngineCreate, "engineCreate"));
  exports.Set("engineRouteGet", Napi::Function::New(env, RouteGet, "engineRouteGet"));
  exports.Set("engineNeighbours", Napi::Function::New(env, Neighbours, "engineNeighbours"));
  exports.Set("engineNeighResolve", Napi::Function::New(env, NeighResolve, "engineNeighResolve"));
  exports.Set("engineLinkInfo", Napi::Function::New(env, LinkInfo, "engineLinkInfo"));
  exports.Set("xdpLinkAttach", Napi::Function::New(env, XdpLinkAttach, "xdpLinkAttach"));
}

}  // namespace bpfproxy
