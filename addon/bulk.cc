// SPDX-License-Identifier: Apache-2.0
// Bulk map work off the JS thread. Each call dups the map fd on the JS
// thread (so closing the map meanwhile cannot hand the worker someone
// else's fd), runs on a thread of its own at a lower priority than the
// event loop (BulkWorker) and resolves a Promise:
//
//   ctGc(fd, { batch?, nowNs? })      conntrack GC pass (pair rule, see below),
//                                     counting what is left (open connections too)
//   ctFlush(fd, proto, rules)         delete conntrack entries of removed backends
// Both take bpfproxy_ct (struct ct_key/ct_value) or bpfproxy_ct6 (struct
// ct6_key/ct6_value, bpf/lib/types6.h), told apart by the map's key size.
//   mapCount(fds)                     entries in each map
//
// Conntrack semantics (bpf/lib/conntrack.h): a connection is two entries of
// one plain hash, CT_DIR_FWD keyed by the client's tuple and CT_DIR_REPLY
// keyed by the backend's reply tuple; each entry's peer key is the reverse
// of its NAT rewrite. An entry goes only when it is expired
// (expires_ns < CLOCK_MONOTONIC now, the clock bpf_ktime_get_ns reads) and
// its peer is expired or absent: both halves of a dead connection go
// together, the quiet half of a live one stays.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/types.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "common.h"

#include "../bpf/lib/types.h"
#include "../bpf/lib/types6.h"

namespace bpfproxy {

static_assert(sizeof(struct ct_key) == 16, "struct ct_key layout (bpf/lib/types.h)");
static_assert(sizeof(struct ct_value) == 64, "struct ct_value layout (bpf/lib/types.h)");
static_assert(sizeof(struct ct6_key) == 40, "struct ct6_key layout (bpf/lib/types6.h)");
static_assert(sizeof(struct ct6_value) == 88, "struct ct6_value layout (bpf/lib/types6.h)");
static_assert(sizeof(struct ct_key) != sizeof(struct ct6_key), "the families are told apart by key size");

namespace {

constexpr uint8_t kDirFwd = CT_DIR_FWD;

uint64_t MonotonicNow() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + ts.tv_nsec;
}

bool Unsupported(int e) { return e == EINVAL || e == ENOTSUP || e == EOPNOTSUPP || e == 524 /* ENOTSUPP */; }

// The outcome of a step that can fail: errno and what was being done.
struct Failure {
  int err = 0;
  std::string op;
  void set(const std::string& what, int e) {
    op = what;
    err = e ? e : EIO;
  }
  explicit operator bool() const { return err != 0; }
};

// Reads every entry of a map, batch by batch (BPF_MAP_LOOKUP_BATCH), and
// hands each batch to fn(keys, values, n). Map types without batch lookup
// are walked key by key (get_next_key); with keysOnly the values are not
// read then (fn gets values == nullptr). Returns whether batches were used.
template <typename Fn>
bool ScanMap(int fd, size_t klen, size_t vlen, uint32_t batch, uint32_t maxEntries, bool keysOnly,
             const std::string& what, Failure* fail, Fn fn) {
  if (batch < 1) batch = 1;
  std::vector<uint8_t> token(std::max<size_t>(klen, 8)), next(std::max<size_t>(klen, 8));
  std::vector<uint8_t> kb(klen * batch), vb(vlen * batch);
  bool first = true;
  for (;;) {
    __u32 count = batch;
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    int err =
        bpf_map_lookup_batch(fd, first ? nullptr : token.data(), next.data(), kb.data(), vb.data(), &count, &opts);
    int e = err ? errno : 0;
    if (err && first && count == 0 && Unsupported(e)) break;  // walk key by key below
    if (err && e == ENOSPC && count == 0 && batch < (1u << 20)) {
      // one hash bucket holds more entries than a batch: read it whole
      batch *= 2;
      kb.resize(klen * batch);
      vb.resize(vlen * batch);
      continue;
    }
    if (err && e != ENOENT) {
      fail->set(what + ": lookup batch", e);
      return true;
    }
    if (count) fn(kb.data(), vb.data(), count);
    if (err) return true;  // ENOENT: that was the last batch
    token.swap(next);
    first = false;
  }
  // Key by key. A key deleted under us restarts the walk at the first key,
  // so the walk is bounded: entries may be missed or seen twice then.
  std::vector<uint8_t> k(klen), nk(klen), v(vlen);
  const void* cur = nullptr;
  uint64_t limit = 2ull * maxEntries + 16;
  for (uint64_t steps = 0; steps < limit; steps++) {
    if (bpf_map_get_next_key(fd, cur, nk.data())) {
      if (errno != ENOENT) fail->set(what + ": next key", errno);
      break;
    }
    if (keysOnly) {
      fn(nk.data(), nullptr, 1);
    } else if (bpf_map_lookup_elem(fd, nk.data(), v.data()) == 0) {
      fn(nk.data(), v.data(), 1);
    } else if (errno != ENOENT) {
      fail->set(what + ": lookup", errno);
      break;
    }
    k.swap(nk);
    cur = k.data();
  }
  return false;
}

// Deletes keys (klen bytes each) with BPF_MAP_DELETE_BATCH; keys already
// gone are skipped. Falls back to one delete per key where the map type has
// no batch delete (*batched turns false). Returns how many this call removed.
uint64_t DeleteKeys(int fd, const uint8_t* keys, size_t n, size_t klen, bool* batched, const std::string& what,
                    Failure* fail) {
  uint64_t deleted = 0;
  size_t i = 0;
  while (i < n && *batched) {
    __u32 count = n - i;
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    if (bpf_map_delete_batch(fd, keys + i * klen, &count, &opts) == 0) {
      deleted += count;
      i = n;
      break;
    }
    int e = errno;
    if (e == ENOENT) {  // stopped at a key someone else removed: skip it
      deleted += count;
      i += count + 1;
      continue;
    }
    if (count == 0 && Unsupported(e)) {
      *batched = false;
      break;
    }
    fail->set(what + ": delete batch", e);
    return deleted;
  }
  for (; i < n; i++) {
    if (bpf_map_delete_elem(fd, keys + i * klen) == 0) {
      deleted++;
    } else if (errno != ENOENT) {
      fail->set(what + ": delete", errno);
      return deleted;
    }
  }
  return deleted;
}

bool MapInfoOf(int fd, struct bpf_map_info* mi, const std::string& what, Failure* fail) {
  memset(mi, 0, sizeof(*mi));
  __u32 len = sizeof(*mi);
  if (bpf_obj_get_info_by_fd(fd, mi, &len)) {
    fail->set(what + ": map info", errno);
    return false;
  }
  return true;
}

// Which conntrack layout the map has: 4 (struct ct_key/ct_value), 6
// (struct ct6_key/ct6_value), or 0 (neither: *fail says so).
int CtFamily(const struct bpf_map_info& mi, const std::string& what, Failure* fail) {
  if (mi.key_size == sizeof(struct ct_key) && mi.value_size == sizeof(struct ct_value)) return 4;
  if (mi.key_size == sizeof(struct ct6_key) && mi.value_size == sizeof(struct ct6_value)) return 6;
  fail->set(what + ": map " + mi.name + " has key size " + std::to_string(mi.key_size) + " and value size " +
                std::to_string(mi.value_size) + ", not the " + std::to_string(sizeof(struct ct_key)) + "/" +
                std::to_string(sizeof(struct ct_value)) + " of struct ct_key/ct_value nor the " +
                std::to_string(sizeof(struct ct6_key)) + "/" + std::to_string(sizeof(struct ct6_value)) +
                " of struct ct6_key/ct6_value",
            EINVAL);
  return 0;
}

void PeerKey(const struct ct_key& k, const struct ct_value& v, struct ct_key* r) {
  memset(r, 0, sizeof(*r));
  r->saddr = v.nat_daddr;
  r->daddr = v.nat_saddr;
  r->sport = v.nat_dport;
  r->dport = v.nat_sport;
  r->proto = k.proto;
}

void PeerKey(const struct ct6_key& k, const struct ct6_value& v, struct ct6_key* r) {
  memset(r, 0, sizeof(*r));
  r->saddr = v.nat_daddr;
  r->daddr = v.nat_saddr;
  r->sport = v.nat_dport;
  r->dport = v.nat_sport;
  r->proto = k.proto;
}

// The deadline of every entry of the first read, by key (all 16 bytes, as
// the kernel compares them): open addressing, the key and its deadline in
// one slot, so a lookup costs one cache miss.
template <typename K>
class Deadlines {
 public:
  struct Slot {
    K key;
    uint64_t expires;
    uint64_t used;
  };
  static_assert(sizeof(K) != sizeof(struct ct_key) || sizeof(Slot) == 32, "two IPv4 slots a cache line");
  static_assert(sizeof(K) % 8 == 0, "keys hash in 8-byte words");

  explicit Deadlines(size_t expected) {
    size_t cap = 16;
    while (cap < expected * 2) cap <<= 1;
    mask_ = cap - 1;
    slots_.assign(cap, Slot{});
  }

  // Record (or update) a key's deadline.
  void put(const K& k, uint64_t expires) {
    size_t s = Hash(k) & mask_;
    while (slots_[s].used && memcmp(&slots_[s].key, &k, sizeof(k)) != 0) s = (s + 1) & mask_;
    if (!slots_[s].used) {
      if (++size_ * 10 > slots_.size() * 9) return grow(k, expires);
      slots_[s].key = k;
      slots_[s].used = 1;
    }
    slots_[s].expires = expires;
  }

  // The slot of a key, or nullptr.
  Slot* find(const K& k) {
    size_t s = Hash(k) & mask_;
    while (slots_[s].used) {
      if (memcmp(&slots_[s].key, &k, sizeof(k)) == 0) return &slots_[s];
      s = (s + 1) & mask_;
    }
    return nullptr;
  }

 private:
  // More entries than expected (the map grew under the read): double.
  void grow(const K& k, uint64_t expires) {
    std::vector<Slot> old;
    old.swap(slots_);
    mask_ = old.size() * 2 - 1;
    slots_.assign(old.size() * 2, Slot{});
    size_ = 0;
    for (const Slot& o : old)
      if (o.used) put(o.key, o.expires);
    put(k, expires);
  }
  static uint64_t Hash(const K& k) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(&k);
    uint64_t a, b;
    memcpy(&a, p, 8);
    memcpy(&b, p + 8, 8);
    uint64_t h = a * 0x9e3779b97f4a7c15ull ^ (b + 0x632be59bd9b4e019ull) * 0xc2b2ae3d27d4eb4full;
    for (size_t off = 16; off < sizeof(K); off += 8) {  // IPv6 keys: the other words folded in
      uint64_t w;
      memcpy(&w, p + off, 8);
      h = (h ^ (h >> 29)) * 0xbf58476d1ce4e5b9ull + w;
    }
    return h ^ (h >> 31);
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

// Nice value of the threads that do bulk work: below the event loop's
// thread, which then wins the CPU whenever it wakes (a sync, a health
// check, a scrape), yet not so low that a busy node starves the GC.
constexpr int kBulkNice = 10;

// A Promise-returning worker. Work() runs on a thread of its own, made
// nicer than the rest of the agent (a libuv pool thread waits for it: the
// pool's threads are shared and keep their priority); it reports through
// fail_, result() builds the value in OnOK.
class BulkWorker : public Napi::AsyncWorker {
 public:
  BulkWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() final {
    std::thread t([this]() {
      // best effort: the work is the same at any priority
      setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), kBulkNice);
      Work();
    });
    t.join();
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (fail_) {
      deferred_.Reject(MakeError(env, fail_.op, fail_.err).Value());
      return;
    }
    deferred_.Resolve(result(env));
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 protected:
  virtual void Work() = 0;
  virtual Napi::Value result(Napi::Env env) = 0;
  Failure fail_;

 private:
  Napi::Promise::Deferred deferred_;
};

// CPU time of this thread (user and kernel), ms: what the work cost,
// however busy the machine was.
double ThreadCpuMs() {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// ---- ctGc -----------------------------------------------------------------

class CtGcWorker : public BulkWorker {
 public:
  CtGcWorker(Napi::Env env, Fd fd, uint32_t batch, uint64_t now)
      : BulkWorker(env), fd_(std::move(fd)), batch_(batch), now_(now) {}

  // Two batched reads. The first learns every entry's deadline (a peer can
  // be anywhere in the map). The second judges each batch on what it reads
  // now (the peer on the latest read of it) and deletes that batch's dead
  // right after: an entry a new flow over the same tuple brought back since
  // the first read is seen alive, and an entry goes within about one batch
  // of being read, not a whole map's read later.
  void Work() override {
    const std::string what = "conntrack GC";
    struct bpf_map_info mi;
    if (!MapInfoOf(fd_.get(), &mi, what, &fail_)) return;
    int family = CtFamily(mi, what, &fail_);
    if (family == 4) Run<struct ct_key, struct ct_value>(mi, what);
    if (family == 6) Run<struct ct6_key, struct ct6_value>(mi, what);
  }

  template <typename K, typename V>
  void Run(const struct bpf_map_info& mi, const std::string& what) {
    auto t0 = std::chrono::steady_clock::now();
    double cpu0 = ThreadCpuMs();
    if (!now_) now_ = MonotonicNow();
    // IPv4: room for a full map from the start (no rehash on a full node).
    // IPv6: usually a small share of the flows, so the table starts small
    // and doubles as entries come (a pass over an idle bpfproxy_ct6 does not
    // allocate for its 512K entries every 10 s).
    Deadlines<K> deadlines(sizeof(K) == sizeof(struct ct_key) ? mi.max_entries
                                                              : std::min<uint32_t>(mi.max_entries, 4096));
    batchedLookup_ = ScanMap(fd_.get(), sizeof(K), sizeof(V), batch_, mi.max_entries, false, what, &fail_,
                             [&](const uint8_t* k, const uint8_t* v, uint32_t n) {
                               auto* kk = reinterpret_cast<const K*>(k);
                               auto* vv = reinterpret_cast<const V*>(v);
                               for (uint32_t i = 0; i < n; i++) deadlines.put(kk[i], vv[i].expires_ns);
                             });
    if (fail_) return;
    scanMs_ = MsSince(t0);

    bool batchedDelete = true;
    std::vector<K> del;
    std::chrono::steady_clock::duration deleteT{};
    // The dead of one batch are deleted when the next batch has been read
    // (or at the end): never the key a key-by-key walk stands on.
    auto flush = [&]() {
      if (del.empty() || fail_) return;
      auto td = std::chrono::steady_clock::now();
      deleted_ += DeleteKeys(fd_.get(), reinterpret_cast<const uint8_t*>(del.data()), del.size(), sizeof(K),
                             &batchedDelete, what, &fail_);
      deleteT += std::chrono::steady_clock::now() - td;
      del.clear();
    };
    std::vector<typename Deadlines<K>::Slot*> at;  // each entry of a batch in the first read, or nullptr
    auto t1 = std::chrono::steady_clock::now();
    ScanMap(fd_.get(), sizeof(K), sizeof(V), batch_, mi.max_entries, false, what, &fail_,
            [&](const uint8_t* k, const uint8_t* v, uint32_t n) {
              flush();
              if (fail_) return;
              auto* kk = reinterpret_cast<const K*>(k);
              auto* vv = reinterpret_cast<const V*>(v);
              // this read is the latest word on these entries
              at.resize(n);
              for (uint32_t i = 0; i < n; i++) {
                typename Deadlines<K>::Slot* x = at[i] = deadlines.find(kk[i]);
                if (!x) continue;  // created since the first read
                if (x->expires < now_ && vv[i].expires_ns >= now_) refreshed_++;
                x->expires = vv[i].expires_ns;
              }
              for (uint32_t i = 0; i < n; i++) {
                scanned_++;
                if (Dead(deadlines, at[i], kk[i], vv[i]))
                  del.push_back(kk[i]);
                else
                  Count(kk[i].proto, vv[i]);
              }
            });
    flush();
    if (fail_) return;
    batchedDelete_ = batchedDelete;
    deleteMs_ = std::chrono::duration<double, std::milli>(deleteT).count();
    judgeMs_ = MsSince(t1) - deleteMs_;
    ms_ = MsSince(t0);
    cpuMs_ = ThreadCpuMs() - cpu0;
  }

 protected:
  Napi::Value result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("scanned", Napi::Number::New(env, static_cast<double>(scanned_)));
    o.Set("expired", Napi::Number::New(env, static_cast<double>(deleted_)));
    o.Set("live", Napi::Number::New(env, static_cast<double>(scanned_ - deleted_)));
    o.Set("refreshed", Napi::Number::New(env, static_cast<double>(refreshed_)));
    Napi::Object by = Napi::Object::New(env);
    by.Set("tcp", Napi::Number::New(env, static_cast<double>(liveTcp_)));
    by.Set("udp", Napi::Number::New(env, static_cast<double>(liveUdp_)));
    by.Set("other", Napi::Number::New(env, static_cast<double>(liveOther_)));
    o.Set("liveByProto", by);
    o.Set("open", Napi::Number::New(env, static_cast<double>(open_)));
    o.Set("nowNs", Napi::BigInt::New(env, now_));
    o.Set("ms", Napi::Number::New(env, ms_));
    o.Set("cpuMs", Napi::Number::New(env, cpuMs_));
    o.Set("scanMs", Napi::Number::New(env, scanMs_));
    o.Set("judgeMs", Napi::Number::New(env, judgeMs_));
    o.Set("deleteMs", Napi::Number::New(env, deleteMs_));
    o.Set("batchedLookup", Napi::Boolean::New(env, batchedLookup_));
    o.Set("batchedDelete", Napi::Boolean::New(env, batchedDelete_));
    return o;
  }

 private:
  // Expired, and the peer expired or absent (its latest known deadline).
  // x: the entry's slot from the first read.
  template <typename K, typename V>
  bool Dead(Deadlines<K>& deadlines, const typename Deadlines<K>::Slot* x, const K& k, const V& v) const {
    if (v.expires_ns >= now_) return false;
    if (!x) return false;  // not in the first read: judged by the next pass
    K pk;
    PeerKey(k, v, &pk);
    const typename Deadlines<K>::Slot* p = deadlines.find(pk);
    return !p || p->expires < now_;  // else the other direction is alive
  }
  // A live entry, by protocol; a forward entry of a flow not closed (no
  // RST, not FINs both ways) is one open connection (what a rollback drain
  // waits for).
  template <typename V>
  void Count(uint8_t proto, const V& v) {
    const uint8_t fins = CT_S_FIN_FWD | CT_S_FIN_REPLY;
    if (v.dir == kDirFwd && !(v.state & CT_S_RST) && (v.state & fins) != fins) open_++;
    if (proto == 6)
      liveTcp_++;
    else if (proto == 17)
      liveUdp_++;
    else
      liveOther_++;
  }

  Fd fd_;
  uint32_t batch_;
  uint64_t now_;
  uint64_t scanned_ = 0, deleted_ = 0, refreshed_ = 0;
  uint64_t liveTcp_ = 0, liveUdp_ = 0, liveOther_ = 0, open_ = 0;
  double ms_ = 0, cpuMs_ = 0, scanMs_ = 0, judgeMs_ = 0, deleteMs_ = 0;
  bool batchedLookup_ = true, batchedDelete_ = true;
};

// ---- ctFlush --------------------------------------------------------------

// One rule, as the caller packs it for bpfproxy_ct (12 bytes): svc_id (host
// order), backend address and port (network order), any (1: every backend
// of svc_id). For bpfproxy_ct6 the same with a 16-byte address (24 bytes).
struct FlushRule {
  uint32_t svc_id;
  uint32_t addr;
  uint16_t port;
  uint8_t any;
  uint8_t pad;
};
static_assert(sizeof(FlushRule) == 12, "flush rule layout (src/dataplane/bpf/conntrack-gc.ts)");
struct FlushRule6 {
  uint32_t svc_id;
  uint8_t addr[16];
  uint16_t port;
  uint8_t any;
  uint8_t pad;
};
static_assert(sizeof(FlushRule6) == 24, "IPv6 flush rule layout (src/dataplane/bpf/conntrack-gc.ts)");

using Addr6 = std::array<uint8_t, 16>;

Addr6 ToAddr6(const void* p) {
  Addr6 a;
  memcpy(a.data(), p, a.size());
  return a;
}

// The backend an entry leads to: where a FWD entry rewrites to; the source
// of a REPLY entry.
std::tuple<uint32_t, uint16_t> BackendOf(const struct ct_key& k, const struct ct_value& v) {
  return v.dir == kDirFwd ? std::make_tuple(v.nat_daddr, v.nat_dport) : std::make_tuple(k.saddr, k.sport);
}
std::tuple<Addr6, uint16_t> BackendOf(const struct ct6_key& k, const struct ct6_value& v) {
  return v.dir == kDirFwd ? std::make_tuple(ToAddr6(&v.nat_daddr), v.nat_dport)
                          : std::make_tuple(ToAddr6(&k.saddr), k.sport);
}

class CtFlushWorker : public BulkWorker {
 public:
  CtFlushWorker(Napi::Env env, Fd fd, uint8_t proto, std::vector<uint8_t> rules)
      : BulkWorker(env), fd_(std::move(fd)), proto_(proto), rules_(std::move(rules)) {}

  void Work() override {
    const std::string what = "conntrack flush of removed endpoints";
    struct bpf_map_info mi;
    if (!MapInfoOf(fd_.get(), &mi, what, &fail_)) return;
    int family = CtFamily(mi, what, &fail_);
    if (family == 4) {
      std::vector<std::tuple<uint32_t, uint32_t, uint16_t>> backends;
      if (!Rules<FlushRule>(mi, what, [&](const FlushRule& r) { backends.emplace_back(r.svc_id, r.addr, r.port); }))
        return;
      Run<struct ct_key, struct ct_value>(mi, what, backends);
    } else if (family == 6) {
      std::vector<std::tuple<uint32_t, Addr6, uint16_t>> backends;
      if (!Rules<FlushRule6>(mi, what,
                             [&](const FlushRule6& r) { backends.emplace_back(r.svc_id, ToAddr6(r.addr), r.port); }))
        return;
      Run<struct ct6_key, struct ct6_value>(mi, what, backends);
    }
  }

 protected:
  Napi::Value result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("scanned", Napi::Number::New(env, static_cast<double>(scanned_)));
    o.Set("deleted", Napi::Number::New(env, static_cast<double>(deleted_)));
    o.Set("ms", Napi::Number::New(env, ms_));
    o.Set("cpuMs", Napi::Number::New(env, cpuMs_));
    return o;
  }

 private:
  // The caller's rules as records R (the map's family): "any" rules into
  // anySvc_, the others to each(rule). False (and *fail_) when the bytes
  // are not whole records.
  template <typename R, typename Each>
  bool Rules(const struct bpf_map_info& mi, const std::string& what, Each each) {
    if (rules_.size() % sizeof(R)) {
      fail_.set(what + ": map " + mi.name + " takes rules of " + std::to_string(sizeof(R)) + " bytes, got " +
                    std::to_string(rules_.size()) + " bytes",
                EINVAL);
      return false;
    }
    for (size_t off = 0; off < rules_.size(); off += sizeof(R)) {
      R r;
      memcpy(&r, rules_.data() + off, sizeof(R));
      if (r.any)
        anySvc_.push_back(r.svc_id);
      else
        each(r);
    }
    std::sort(anySvc_.begin(), anySvc_.end());
    return true;
  }

  template <typename K, typename V, typename B>
  void Run(const struct bpf_map_info& mi, const std::string& what, std::vector<B>& backends) {
    auto t0 = std::chrono::steady_clock::now();
    double cpu0 = ThreadCpuMs();
    std::sort(backends.begin(), backends.end());
    std::vector<K> del;
    ScanMap(fd_.get(), sizeof(K), sizeof(V), 4096, mi.max_entries, false, what, &fail_,
            [&](const uint8_t* k, const uint8_t* v, uint32_t n) {
              auto* kk = reinterpret_cast<const K*>(k);
              auto* vv = reinterpret_cast<const V*>(v);
              for (uint32_t i = 0; i < n; i++) {
                scanned_++;
                if (kk[i].proto != proto_) continue;
                uint32_t svc = vv[i].svc_id;
                if (std::binary_search(anySvc_.begin(), anySvc_.end(), svc) ||
                    std::binary_search(backends.begin(), backends.end(),
                                       std::tuple_cat(std::make_tuple(svc), BackendOf(kk[i], vv[i]))))
                  del.push_back(kk[i]);
              }
            });
    if (fail_) return;
    bool batched = true;
    deleted_ = DeleteKeys(fd_.get(), reinterpret_cast<const uint8_t*>(del.data()), del.size(), sizeof(K), &batched,
                          what, &fail_);
    ms_ = MsSince(t0);
    cpuMs_ = ThreadCpuMs() - cpu0;
  }

  Fd fd_;
  uint8_t proto_;
  std::vector<uint8_t> rules_;
  std::vector<uint32_t> anySvc_;
  uint64_t scanned_ = 0, deleted_ = 0;
  double ms_ = 0, cpuMs_ = 0;
};

// ---- mapCount -------------------------------------------------------------

bool IsArrayType(uint32_t t) {
  return t == BPF_MAP_TYPE_ARRAY || t == BPF_MAP_TYPE_PERCPU_ARRAY || t == BPF_MAP_TYPE_PROG_ARRAY ||
         t == BPF_MAP_TYPE_PERF_EVENT_ARRAY || t == BPF_MAP_TYPE_CGROUP_ARRAY || t == BPF_MAP_TYPE_ARRAY_OF_MAPS;
}

bool IsPerCpu(uint32_t t) {
  return t == BPF_MAP_TYPE_PERCPU_HASH || t == BPF_MAP_TYPE_LRU_PERCPU_HASH || t == BPF_MAP_TYPE_PERCPU_ARRAY ||
         t == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

class MapCountWorker : public BulkWorker {
 public:
  MapCountWorker(Napi::Env env, std::vector<Fd> fds) : BulkWorker(env), fds_(std::move(fds)) {}

  void Work() override {
    auto t0 = std::chrono::steady_clock::now();
    int cpus = libbpf_num_possible_cpus();
    for (size_t m = 0; m < fds_.size(); m++) {
      struct bpf_map_info mi;
      std::string what = "count entries of map fd #" + std::to_string(m);
      if (!MapInfoOf(fds_[m].get(), &mi, what, &fail_)) return;
      what = std::string("count entries of ") + mi.name;
      if (IsArrayType(mi.type)) {  // every index exists
        counts_.push_back(mi.max_entries);
        continue;
      }
      size_t vlen = mi.value_size;
      if (IsPerCpu(mi.type)) vlen = ((vlen + 7) / 8) * 8 * (cpus > 0 ? cpus : 1);
      uint64_t n = 0;
      ScanMap(fds_[m].get(), mi.key_size, vlen, 4096, mi.max_entries, true, what, &fail_,
              [&](const uint8_t*, const uint8_t*, uint32_t c) { n += c; });
      if (fail_) return;
      counts_.push_back(n);
    }
    ms_ = MsSince(t0);
  }

 protected:
  Napi::Value result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    Napi::Array a = Napi::Array::New(env, counts_.size());
    for (size_t i = 0; i < counts_.size(); i++) a.Set(i, Napi::Number::New(env, static_cast<double>(counts_[i])));
    o.Set("counts", a);
    o.Set("ms", Napi::Number::New(env, ms_));
    return o;
  }

 private:
  std::vector<Fd> fds_;
  std::vector<uint64_t> counts_;
  double ms_ = 0;
};

// ---- JS entry points ------------------------------------------------------

// A private copy of the caller's fd for the worker, or a rejected Promise.
bool DupFd(Napi::Env env, int64_t fd, const std::string& op, Fd* out, Napi::Value* rejected) {
  int d = fd >= 0 ? fcntl(static_cast<int>(fd), F_DUPFD_CLOEXEC, 0) : -1;
  if (d < 0) {
    auto def = Napi::Promise::Deferred::New(env);
    def.Reject(MakeError(env, op + ": map fd " + std::to_string(fd), fd >= 0 ? errno : EBADF).Value());
    *rejected = def.Promise();
    return false;
  }
  *out = Fd(d);
  return true;
}

// ctGc(fd, { batch?, nowNs? }) -> Promise<CtGcResult>
Napi::Value CtGc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  if (!ArgInt(info, 0, "fd", &fd)) return env.Undefined();
  uint32_t batch = 4096;
  uint64_t now = 0;
  if (info.Length() > 1 && info[1].IsObject()) {
    Napi::Object o = info[1].As<Napi::Object>();
    if (o.Has("batch") && o.Get("batch").IsNumber())
      batch = std::max<uint32_t>(1, o.Get("batch").As<Napi::Number>().Uint32Value());
    if (o.Has("nowNs") && o.Get("nowNs").IsBigInt()) {
      bool lossless;
      now = o.Get("nowNs").As<Napi::BigInt>().Uint64Value(&lossless);
    }
  }
  Fd dup;
  Napi::Value rejected;
  if (!DupFd(env, fd, "conntrack GC", &dup, &rejected)) return rejected;
  auto* w = new CtGcWorker(env, std::move(dup), batch, now);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// ctFlush(fd, proto, rules: Buffer of 12-byte FlushRule (bpfproxy_ct) or 24-byte FlushRule6 (bpfproxy_ct6))
//   -> Promise<{scanned, deleted, ms}>
Napi::Value CtFlush(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd, proto;
  Napi::Buffer<uint8_t> rules;
  if (!ArgInt(info, 0, "fd", &fd) || !ArgInt(info, 1, "proto", &proto) || !ArgBuffer(info, 2, "rules", &rules))
    return env.Undefined();
  if (rules.Length() % sizeof(FlushRule)) {
    Napi::TypeError::New(
        env, "rules must be a Buffer of 12-byte records (bpfproxy_ct) or 24-byte records (bpfproxy_ct6), got " +
                 std::to_string(rules.Length()) + " bytes")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::vector<uint8_t> rs(rules.Data(), rules.Data() + rules.Length());
  Fd dup;
  Napi::Value rejected;
  if (!DupFd(env, fd, "conntrack flush of removed endpoints", &dup, &rejected)) return rejected;
  auto* w = new CtFlushWorker(env, std::move(dup), static_cast<uint8_t>(proto), std::move(rs));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// mapCount(fds: number[]) -> Promise<{ counts: number[], ms }>
Napi::Value MapCount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) {
    Napi::TypeError::New(env, "argument 0 (fds) must be an array of numbers").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array a = info[0].As<Napi::Array>();
  std::vector<Fd> fds;
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value v = a.Get(i);
    if (!v.IsNumber()) {
      Napi::TypeError::New(env, "fds[" + std::to_string(i) + "] is not a number").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Fd dup;
    Napi::Value rejected;
    if (!DupFd(env, v.As<Napi::Number>().Int64Value(), "count entries", &dup, &rejected)) return rejected;
    fds.push_back(std::move(dup));
  }
  auto* w = new MapCountWorker(env, std::move(fds));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void InitBulk(Napi::Env env, Napi::Object exports) {
  exports.Set("ctGc", Napi::Function::New(env, CtGc));
  exports.Set("ctFlush", Napi::Function::New(env, CtFlush));
  exports.Set("mapCount", Napi::Function::New(env, MapCount));
}

}  // namespace bpfproxy
