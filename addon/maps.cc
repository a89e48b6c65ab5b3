// SPDX-License-Identifier: Apache-2.0
// Map and program fds: handles that own them (MapHandle, ProgHandle),
// single-element map ops, key iteration, batch ops, pinned objects, program
// test runs. Keys and values are opaque Buffers; the TypeScript codecs give
// them meaning.
//
// Every map op checks each Buffer against the map's key and value sizes
// before the kernel sees it (the kernel reads and writes exactly those
// sizes, whatever the Buffer's length): a mismatch is EINVAL naming the
// operation, the map and both sizes. Per-CPU maps take values of
// round_up(value_size, 8) * possible CPUs bytes. The sizes come from the
// MapHandle (read once when it was opened) or, for a plain fd, from
// bpf_map_get_info_by_fd on each call.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <vector>

#include "common.h"

namespace bpfproxy {

// ---------------------------------------------------------------- handles

// What kind of BPF object an fd is, as the kernel names its anon inode.
static std::string FdKind(int fd) {
  char link[64], target[128];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, target, sizeof(target) - 1);
  if (n < 0) return fcntl(fd, F_GETFD) < 0 ? "" : "?";  // "?": open, but no /proc to tell
  target[n] = 0;
  std::string t(target);
  if (t == "anon_inode:bpf-map") return "map";
  if (t == "anon_inode:bpf-prog") return "prog";
  if (t == "anon_inode:bpf_link") return "link";
  return t;
}

// The kernel fills whichever info struct the fd's kind has, whatever the
// caller asked for: check the kind first. Throws and returns false if not.
static bool CheckFdKind(Napi::Env env, int64_t fd, const char* kind, const std::string& op) {
  if (fd < 0 || fd > INT_MAX) {
    Throw(env, op, EBADF, "", fd == -1 ? "fd -1: a closed handle?" : "");
    return false;
  }
  std::string is = FdKind(static_cast<int>(fd));
  if (is == kind || is == "?") return true;
  if (is.empty()) {
    Throw(env, op, EBADF);
    return false;
  }
  Throw(env, op, EINVAL, "",
        "fd " + std::to_string(fd) + " is " + (is == "map" || is == "prog" || is == "link" ? "a BPF " + is : is) +
            ", not a BPF " + kind);
  return false;
}

struct MapMeta {
  std::string name;
  uint32_t id = 0, type = 0, key_size = 0, value_size = 0, max_entries = 0, flags = 0;
  bool percpu = false;
  uint32_t cpus = 0;       // possible CPUs, per-CPU maps only
  uint64_t value_len = 0;  // bytes of one value in a user-space buffer
};

static bool IsPerCpu(uint32_t type) {
  return type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_ARRAY ||
         type == BPF_MAP_TYPE_LRU_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

// Sizes of the map behind fd; on failure returns a negative errno.
static int ReadMapMeta(int fd, MapMeta* m) {
  struct bpf_map_info mi = {};
  __u32 len = sizeof(mi);
  if (bpf_obj_get_info_by_fd(fd, &mi, &len)) return -errno;
  m->id = mi.id;
  m->type = mi.type;
  m->key_size = mi.key_size;
  m->value_size = mi.value_size;
  m->max_entries = mi.max_entries;
  m->flags = mi.map_flags;
  m->percpu = IsPerCpu(mi.type);
  m->value_len = mi.value_size;
  if (m->percpu) {
    int n = libbpf_num_possible_cpus();
    if (n < 0) return n;
    m->cpus = n;
    m->value_len = ((static_cast<uint64_t>(mi.value_size) + 7) / 8) * 8 * n;
  }
  if (m->name.empty()) m->name = mi.name;
  return 0;
}

struct HandleInit {
  Fd fd;
  MapMeta map;
  struct bpf_prog_info prog = {};
  struct bpf_link_info link = {};
};

// Type tags (N-API 8) mark the objects the addon made, so an object that
// only shares a handle's prototype is never unwrapped as one.
static const napi_type_tag kMapTag = {0x6270667072787931ULL, 0x6d61702d68616e64ULL};
static const napi_type_tag kProgTag = {0x6270667072787931ULL, 0x70726f672d68616eULL};
static const napi_type_tag kLinkTag = {0x6270667072787931ULL, 0x6c696e6b2d68616eULL};

template <typename T>
static T* Tagged(Napi::Env env, Napi::Value v, const napi_type_tag& tag) {
  if (!v.IsObject()) return nullptr;
  bool is = false;
  if (napi_check_object_type_tag(env, v, &tag, &is) != napi_ok || !is) return nullptr;
  void* p = nullptr;
  if (napi_unwrap(env, v, &p) != napi_ok) return nullptr;
  return static_cast<T*>(p);
}

// The part every handle shares: it owns one fd (closed by close(), or by the
// destructor when the handle is collected), reports it and whether it is
// closed, and can only be made natively, tagged with its kind.
template <typename T>
class FdHandle : public Napi::ObjectWrap<T> {
 public:
  int fd() const { return fd_.get(); }

 protected:
  FdHandle(const Napi::CallbackInfo& info, const char* made_by, const napi_type_tag* tag) : Napi::ObjectWrap<T>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) {
      ThrowTypeError(info.Env(),
                     std::string("a ") + T::kName + " comes from " + made_by + ", it cannot be made from JS");
      return;
    }
    if (napi_type_tag_object(info.Env(), info.This(), tag) != napi_ok) {
      ThrowTypeError(info.Env(), std::string("cannot tag a ") + T::kName);
      return;
    }
    init_ = info[0].As<Napi::External<HandleInit>>().Data();
    fd_ = std::move(init_->fd);
  }

  Napi::Value GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_.get()); }
  Napi::Value Closed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), fd_.get() < 0); }
  Napi::Value Close(const Napi::CallbackInfo& info) {
    fd_.reset();
    return info.Env().Undefined();
  }

  HandleInit* init_ = nullptr;  // valid during the constructor only
  Fd fd_;
};

class MapHandle : public FdHandle<MapHandle> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    (void)exports;  // not exported: handles come from objGet and friends
    Napi::Function f = DefineClass(env, "MapHandle",
                                   {
                                       InstanceAccessor<&MapHandle::Kind>("kind"),
                                       // the shared part (FdHandle): the runtime overloads take base members
                                       InstanceAccessor("fd", &MapHandle::GetFd, nullptr),
                                       InstanceAccessor("closed", &MapHandle::Closed, nullptr),
                                       InstanceAccessor<&MapHandle::Name>("name"),
                                       InstanceAccessor<&MapHandle::Id>("id"),
                                       InstanceAccessor<&MapHandle::Type>("type"),
                                       InstanceAccessor<&MapHandle::KeySize>("keySize"),
                                       InstanceAccessor<&MapHandle::ValueSize>("valueSize"),
                                       InstanceAccessor<&MapHandle::ValueLen>("valueLen"),
                                       InstanceAccessor<&MapHandle::MaxEntries>("maxEntries"),
                                       InstanceAccessor<&MapHandle::Flags>("flags"),
                                       InstanceMethod("close", &MapHandle::Close),
                                   });
    Data(env)->map_handle = Napi::Persistent(f);
  }

  static constexpr const char* kName = "MapHandle";

  explicit MapHandle(const Napi::CallbackInfo& info) : FdHandle<MapHandle>(info, "objGet()", &kMapTag) {
    if (init_) meta_ = init_->map;
  }

  const MapMeta& meta() const { return meta_; }

 private:
  Napi::Value Kind(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), "map"); }
  Napi::Value Name(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), meta_.name); }
  Napi::Value Id(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), meta_.id); }
  Napi::Value Type(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), meta_.type); }
  Napi::Value KeySize(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), meta_.key_size); }
  Napi::Value ValueSize(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), meta_.value_size); }
  Napi::Value ValueLen(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(meta_.value_len));
  }
  Napi::Value MaxEntries(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), meta_.max_entries); }
  Napi::Value Flags(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), meta_.flags); }

  MapMeta meta_;
};

class ProgHandle : public FdHandle<ProgHandle> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    (void)exports;
    Napi::Function f = DefineClass(env, "ProgHandle",
                                   {
                                       InstanceAccessor<&ProgHandle::Kind>("kind"),
                                       // the shared part (FdHandle): the runtime overloads take base members
                                       InstanceAccessor("fd", &ProgHandle::GetFd, nullptr),
                                       InstanceAccessor("closed", &ProgHandle::Closed, nullptr),
                                       InstanceAccessor<&ProgHandle::Name>("name"),
                                       InstanceAccessor<&ProgHandle::Id>("id"),
                                       InstanceAccessor<&ProgHandle::Type>("type"),
                                       InstanceAccessor<&ProgHandle::Tag>("tag"),
                                       InstanceMethod("close", &ProgHandle::Close),
                                   });
    Data(env)->prog_handle = Napi::Persistent(f);
  }

  static constexpr const char* kName = "ProgHandle";

  explicit ProgHandle(const Napi::CallbackInfo& info) : FdHandle<ProgHandle>(info, "progById()", &kProgTag) {
    if (init_) pi_ = init_->prog;
  }

 private:
  Napi::Value Kind(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), "prog"); }
  Napi::Value Name(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), pi_.name); }
  Napi::Value Id(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), pi_.id); }
  Napi::Value Type(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), pi_.type); }
  Napi::Value Tag(const Napi::CallbackInfo& info) {
    char tag[BPF_TAG_SIZE * 2 + 1];
    for (int i = 0; i < BPF_TAG_SIZE; i++) snprintf(tag + 2 * i, 3, "%02x", pi_.tag[i]);
    return Napi::String::New(info.Env(), tag);
  }

  struct bpf_prog_info pi_ = {};
};

class LinkHandle : public FdHandle<LinkHandle> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    (void)exports;
    Napi::Function f = DefineClass(env, "LinkHandle",
                                   {
                                       InstanceAccessor<&LinkHandle::Kind>("kind"),
                                       // the shared part (FdHandle): the runtime overloads take base members
                                       InstanceAccessor("fd", &LinkHandle::GetFd, nullptr),
                                       InstanceAccessor("closed", &LinkHandle::Closed, nullptr),
                                       InstanceAccessor<&LinkHandle::Id>("id"),
                                       InstanceMethod("close", &LinkHandle::Close),
                                   });
    Data(env)->link_handle = Napi::Persistent(f);
  }

  static constexpr const char* kName = "LinkHandle";

  explicit LinkHandle(const Napi::CallbackInfo& info)
      : FdHandle<LinkHandle>(info, "tcxAttach(), linkOpen() or linkById()", &kLinkTag) {
    if (init_) id_ = init_->link.id;
  }

 private:
  Napi::Value Kind(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), "link"); }
  Napi::Value Id(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), id_); }

  uint32_t id_ = 0;
};

Napi::Value NewMapHandle(Napi::Env env, Fd fd, const std::string& name, const std::string& op) {
  HandleInit init;
  init.map.name = name;
  int err = ReadMapMeta(fd.get(), &init.map);
  if (err) return Throw(env, op, err);  // fd closes on return
  init.fd = std::move(fd);
  Napi::Object h = Data(env)->map_handle.New({Napi::External<HandleInit>::New(env, &init)});
  return h;  // on failure init.fd still owns the fd and closes it
}

Napi::Value NewProgHandle(Napi::Env env, Fd fd, const std::string& op) {
  HandleInit init;
  __u32 len = sizeof(init.prog);
  if (bpf_obj_get_info_by_fd(fd.get(), &init.prog, &len)) return Throw(env, op, errno);
  init.fd = std::move(fd);
  return Data(env)->prog_handle.New({Napi::External<HandleInit>::New(env, &init)});
}

// Whether fd is a BPF link (its anon inode says so).
static bool IsBpfLink(int fd) {
  char path[64], target[64];
  snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(path, target, sizeof(target) - 1);
  if (n < 0) return false;
  target[n] = '\0';
  // "bpf_link" for a link we created, "bpf-link" for one opened by id or pin.
  return strcmp(target, "anon_inode:bpf_link") == 0 || strcmp(target, "anon_inode:bpf-link") == 0;
}

Napi::Value NewLinkHandle(Napi::Env env, Fd fd, const std::string& op) {
  HandleInit init;
  if (!IsBpfLink(fd.get())) return Throw(env, op + ": not a BPF link", EINVAL);
  __u32 len = sizeof(init.link);
  if (bpf_obj_get_info_by_fd(fd.get(), &init.link, &len)) return Throw(env, op, errno);
  init.fd = std::move(fd);
  return Data(env)->link_handle.New({Napi::External<HandleInit>::New(env, &init)});
}

bool HandleFd(Napi::Env env, Napi::Value v, int64_t* fd, bool* real) {
  *real = false;
  if (!v.IsObject()) return false;
  AddonData* d = Data(env);
  if (MapHandle* h = Tagged<MapHandle>(env, v, kMapTag)) {
    *fd = h->fd();
    *real = true;
    return true;
  }
  if (ProgHandle* h = Tagged<ProgHandle>(env, v, kProgTag)) {
    *fd = h->fd();
    *real = true;
    return true;
  }
  if (LinkHandle* h = Tagged<LinkHandle>(env, v, kLinkTag)) {
    *fd = h->fd();
    *real = true;
    return true;
  }
  Napi::Object o = v.As<Napi::Object>();
  return o.InstanceOf(d->map_handle.Value()) || o.InstanceOf(d->prog_handle.Value()) ||
         o.InstanceOf(d->link_handle.Value());
}

// ---------------------------------------------------------------- map args

// The map an op works on: a MapHandle (sizes known) or a plain fd (sizes
// read now). op() names the operation and the map, for errors only.
struct MapRef {
  int fd = -1;
  const MapMeta* meta = nullptr;
  MapMeta own;  // a plain fd's sizes
  const char* what = "";
  std::string op() const { return std::string(what) + " " + meta->name; }
};

static bool ArgMap(const Napi::CallbackInfo& info, const char* what, MapRef* m) {
  Napi::Env env = info.Env();
  m->what = what;
  if (info.Length() > 0 && info[0].IsObject()) {
    MapHandle* h = Tagged<MapHandle>(env, info[0], kMapTag);
    if (!h && info[0].As<Napi::Object>().InstanceOf(Data(env)->map_handle.Value())) {
      ThrowTypeError(env, "argument 0 (map) is not a MapHandle made by the addon");
      return false;
    }
    if (h) {
      m->meta = &h->meta();
      if (h->fd() < 0) {
        Throw(env, m->op(), EBADF, "", "the map's handle was closed");
        return false;
      }
      m->fd = h->fd();
      return true;
    }
  }
  int64_t fd;
  if (!ArgFd(info, 0, "map", &fd)) return false;
  const std::string by_fd = std::string(what) + " fd " + std::to_string(fd);
  if (!CheckFdKind(env, fd, "map", by_fd)) return false;
  m->fd = static_cast<int>(fd);
  int err = ReadMapMeta(m->fd, &m->own);
  if (err) {
    Throw(env, by_fd, err);
    return false;
  }
  m->meta = &m->own;
  return true;
}

static std::string Bytes(uint64_t n) { return std::to_string(n) + (n == 1 ? " byte" : " bytes"); }

static std::string ValueSizeText(const MapMeta& m) {
  if (!m.percpu) return Bytes(m.value_len);
  return Bytes(m.value_len) + " (a per-CPU map: " + Bytes(m.value_size) + " rounded up to 8, times " +
         std::to_string(m.cpus) + " possible CPUs)";
}

static bool SizeMismatch(Napi::Env env, const MapRef& m, const std::string& detail) {
  Throw(env, m.op(), EINVAL, "", detail);
  return false;
}

static bool CheckKey(Napi::Env env, const MapRef& m, size_t len) {
  if (len == m.meta->key_size) return true;
  return SizeMismatch(env, m, "key is " + Bytes(len) + "; the map's keys are " + Bytes(m.meta->key_size));
}

static bool CheckValue(Napi::Env env, const MapRef& m, size_t len) {
  if (len == m.meta->value_len) return true;
  return SizeMismatch(env, m, "value is " + Bytes(len) + "; the map's values are " + ValueSizeText(*m.meta));
}

// An optional length argument (keyLen / valueLen of the older calls): when
// given it must be what the map has.
static bool CheckLenArg(const Napi::CallbackInfo& info, size_t i, const char* what, const MapRef& m, bool key) {
  if (info.Length() <= i || info[i].IsUndefined()) return true;
  int64_t n;
  if (!ArgInt(info, i, what, &n)) return false;
  uint64_t want = key ? m.meta->key_size : m.meta->value_len;
  if (n >= 0 && static_cast<uint64_t>(n) == want) return true;
  return SizeMismatch(info.Env(), m,
                      std::string(what) + " is " + std::to_string(n) + "; the map's " +
                          (key ? "keys are " + Bytes(want) : "values are " + ValueSizeText(*m.meta)));
}

static bool OptFlags(const Napi::CallbackInfo& info, size_t i, int64_t* flags) {
  if (info.Length() <= i || info[i].IsUndefined()) return true;
  return ArgInt(info, i, "flags", flags);
}

// count elements of `size` bytes must fill `len` exactly.
static bool CheckBatch(Napi::Env env, const MapRef& m, int64_t count, size_t len, uint64_t size, const char* what,
                       const std::string& size_text) {
  if (count < 0 || count > UINT32_MAX)
    return SizeMismatch(env, m, "count " + std::to_string(count) + " is out of range");
  if (static_cast<uint64_t>(count) * size == len) return true;
  return SizeMismatch(env, m,
                      std::string(what) + " are " + Bytes(len) + " for " + std::to_string(count) +
                          " entries; the map's " + what + " are " + size_text + " each, so " +
                          Bytes(static_cast<uint64_t>(count) * size));
}

// ---------------------------------------------------------------- map ops

// mapLookup(map, key, valueLen?) -> Buffer | null
static Napi::Value MapLookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MapRef m;
  Napi::Buffer<uint8_t> key;
  if (!ArgMap(info, "map lookup", &m) || !ArgBuffer(info, 1, "key", &key) || !CheckKey(env, m, key.Length()) ||
      !CheckLenArg(info, 2, "valueLen", m, false))
    return env.Undefined();
  auto out = Napi::Buffer<uint8_t>::New(env, m.meta->value_len);
  if (bpf_map_lookup_elem(m.fd, key.Data(), out.Data())) {
    if (errno == ENOENT) return env.Null();
    return Throw(env, m.op(), errno);
  }
  return out;
}

// mapUpdate(map, key, value, flags?)
static Napi::Value MapUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MapRef m;
  int64_t flags = BPF_ANY;
  Napi::Buffer<uint8_t> key, value;
  if (!ArgMap(info, "map update", &m) || !ArgBuffer(info, 1, "key", &key) || !ArgBuffer(info, 2, "value", &value) ||
      !OptFlags(info, 3, &flags) || !CheckKey(env, m, key.Length()) || !CheckValue(env, m, value.Length()))
    return env.Undefined();
  if (bpf_map_update_elem(m.fd, key.Data(), value.Data(), flags)) return Throw(env, m.op(), errno);
  return env.Undefined();
}

// mapDelete(map, key) -> true when deleted, false when the key was not there.
static Napi::Value MapDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MapRef m;
  Napi::Buffer<uint8_t> key;
  if (!ArgMap(info, "map delete", &m) || !ArgBuffer(info, 1, "key", &key) || !CheckKey(env, m, key.Length()))
    return env.Undefined();
  if (bpf_map_delete_elem(m.fd, key.Data())) {
    if (errno == ENOENT) return Napi::Boolean::New(env, false);
    return Throw(env, m.op(), errno);
  }
  return Napi::Boolean::New(env, true);
}

// mapNextKey(map, key | null, keyLen?) -> Buffer | null (end)
static Napi::Value MapNextKey(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MapRef m;
  if (!ArgMap(info, "map next key", &m) || !CheckLenArg(info, 2, "keyLen", m, true)) return env.Undefined();
  const void* cur = nullptr;
  if (info.Length() > 1 && !info[1].IsNull() && !info[1].IsUndefined()) {
    Napi::Buffer<uint8_t> key;
    if (!ArgBuffer(info, 1, "key", &key) || !CheckKey(env, m, key.Length())) return env.Undefined();
    cur = key.Data();
  }
  auto out = Napi::Buffer<uint8_t>::New(env, m.meta->key_size);
  if (bpf_map_get_next_key(m.fd, cur, out.Data())) {
    if (errno == ENOENT) return env.Null();
    return Throw(env, m.op(), errno);
  }
  return out;
}

// mapDump(map, keyLen?, valueLen?, batch?) -> { keys, values, count }
// Reads the whole map with BPF_MAP_LOOKUP_BATCH; falls back to key-by-key
// iteration where the map type has no batch support.
static Napi::Value MapDump(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MapRef m;
  int64_t batch = 4096;
  if (!ArgMap(info, "map dump", &m) || !CheckLenArg(info, 1, "keyLen", m, true) ||
      !CheckLenArg(info, 2, "valueLen", m, false))
    return env.Undefined();
  if (info.Length() > 3 && !info[3].IsUndefined() && !ArgInt(info, 3, "batch", &batch)) return env.Undefined();
  // A batch never needs more room than the map has entries.
  batch = std::max<int64_t>(1, std::min<int64_t>(batch, std::max<uint32_t>(m.meta->max_entries, 1)));
  const size_t klen = m.meta->key_size, vlen = m.meta->value_len;
  std::vector<uint8_t> keys, values;
  std::vector<uint8_t> token(std::max<size_t>(klen, 8)), next(std::max<size_t>(klen, 8));
  std::vector<uint8_t> kb(klen * batch), vb(vlen * batch);
  bool first = true, batched = true;
  size_t total = 0;
  for (;;) {
    __u32 count = batch;
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    int err =
        bpf_map_lookup_batch(m.fd, first ? nullptr : token.data(), next.data(), kb.data(), vb.data(), &count, &opts);
    int e = err ? errno : 0;
    if (err && first && (e == EINVAL || e == ENOTSUP || e == EOPNOTSUPP || e == 524 /* ENOTSUPP */)) {
      batched = false;
      break;
    }
    if (err && e != ENOENT) return Throw(env, m.op(), e);
    keys.insert(keys.end(), kb.begin(), kb.begin() + count * klen);
    values.insert(values.end(), vb.begin(), vb.begin() + count * vlen);
    total += count;
    if (err) break;  // ENOENT: that was the last batch
    token.swap(next);
    first = false;
  }
  if (!batched) {
    std::vector<uint8_t> k(klen), nk(klen), v(vlen);
    const void* cur = nullptr;
    while (bpf_map_get_next_key(m.fd, cur, nk.data()) == 0) {
      if (bpf_map_lookup_elem(m.fd, nk.data(), v.data()) == 0) {
        keys.insert(keys.end(), nk.begin(), nk.end());
        values.insert(values.end(), v.begin(), v.end());
        total++;
      }
      k.swap(nk);
      cur = k.data();
    }
    if (errno != ENOENT) return Throw(env, m.op(), errno);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("keys", Napi::Buffer<uint8_t>::Copy(env, keys.data(), keys.size()));
  out.Set("values", Napi::Buffer<uint8_t>::Copy(env, values.data(), values.size()));
  out.Set("count", Napi::Number::New(env, total));
  return out;
}

// mapUpdateBatch(map, keys, values, count, flags?) -> count
static Napi::Value MapUpdateBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MapRef m;
  int64_t count, flags = BPF_ANY;
  Napi::Buffer<uint8_t> keys, values;
  if (!ArgMap(info, "map update batch", &m) || !ArgBuffer(info, 1, "keys", &keys) ||
      !ArgBuffer(info, 2, "values", &values) || !ArgInt(info, 3, "count", &count) || !OptFlags(info, 4, &flags) ||
      !CheckBatch(env, m, count, keys.Length(), m.meta->key_size, "keys", Bytes(m.meta->key_size)) ||
      !CheckBatch(env, m, count, values.Length(), m.meta->value_len, "values", ValueSizeText(*m.meta)))
    return env.Undefined();
  if (count == 0) return Napi::Number::New(env, 0);
  __u32 n = count;
  LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = static_cast<__u64>(flags));
  if (bpf_map_update_batch(m.fd, keys.Data(), values.Data(), &n, &opts)) {
    Napi::Error e = MakeError(env, m.op(), errno);
    e.Set("done", Napi::Number::New(env, n));
    e.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, n);
}

// mapDeleteBatch(map, keys, count) -> count
static Napi::Value MapDeleteBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MapRef m;
  int64_t count;
  Napi::Buffer<uint8_t> keys;
  if (!ArgMap(info, "map delete batch", &m) || !ArgBuffer(info, 1, "keys", &keys) ||
      !ArgInt(info, 2, "count", &count) ||
      !CheckBatch(env, m, count, keys.Length(), m.meta->key_size, "keys", Bytes(m.meta->key_size)))
    return env.Undefined();
  if (count == 0) return Napi::Number::New(env, 0);
  __u32 n = count;
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  if (bpf_map_delete_batch(m.fd, keys.Data(), &n, &opts)) {
    Napi::Error e = MakeError(env, m.op(), errno);
    e.Set("done", Napi::Number::New(env, n));
    e.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, n);
}

// ---------------------------------------------------------------- objects

static std::string BaseName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// objGet(path, kind = 'map') -> MapHandle | ProgHandle
static Napi::Value ObjGet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path, kind = "map";
  if (!ArgString(info, 0, "path", &path)) return env.Undefined();
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    if (!ArgString(info, 1, "kind", &kind)) return env.Undefined();
    if (kind != "map" && kind != "prog") {
      ThrowTypeError(env, "argument 1 (kind) must be 'map' or 'prog', got '" + kind + "'");
      return env.Undefined();
    }
  }
  const std::string op = "open pinned " + kind + " " + path;
  Fd fd(bpf_obj_get(path.c_str()));
  if (fd.get() < 0) return Throw(env, op, errno);
  std::string is = FdKind(fd.get());
  if (is != kind && is != "?")
    return Throw(env, op, EINVAL, "", "the pin holds a " + (is.empty() ? "?" : is) + ", not a " + kind);
  if (kind == "prog") return NewProgHandle(env, std::move(fd), op);
  return NewMapHandle(env, std::move(fd), BaseName(path), op);
}

// objPin(fd | handle, path)
static Napi::Value ObjPin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  std::string path;
  if (!ArgFd(info, 0, "fd", &fd) || !ArgString(info, 1, "path", &path)) return env.Undefined();
  if (bpf_obj_pin(fd, path.c_str())) return Throw(env, "pin " + path, errno);
  return env.Undefined();
}

static Napi::Value MapInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  if (!ArgFd(info, 0, "fd", &fd) || !CheckFdKind(env, fd, "map", "map info")) return env.Undefined();
  struct bpf_map_info mi = {};
  __u32 len = sizeof(mi);
  if (bpf_obj_get_info_by_fd(fd, &mi, &len)) return Throw(env, "map info", errno);
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", mi.id);
  o.Set("name", mi.name);
  o.Set("type", mi.type);
  o.Set("keySize", mi.key_size);
  o.Set("valueSize", mi.value_size);
  o.Set("maxEntries", mi.max_entries);
  o.Set("flags", mi.map_flags);
  return o;
}

static Napi::Value ProgInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  if (!ArgFd(info, 0, "fd", &fd) || !CheckFdKind(env, fd, "prog", "program info")) return env.Undefined();
  struct bpf_prog_info pi = {};
  __u32 len = sizeof(pi);
  if (bpf_obj_get_info_by_fd(fd, &pi, &len)) return Throw(env, "program info", errno);
  char tag[BPF_TAG_SIZE * 2 + 1];
  for (int i = 0; i < BPF_TAG_SIZE; i++) snprintf(tag + 2 * i, 3, "%02x", pi.tag[i]);
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", pi.id);
  o.Set("name", pi.name);
  o.Set("type", pi.type);
  o.Set("tag", tag);
  o.Set("loadTime", Napi::Number::New(env, static_cast<double>(pi.load_time)));
  // the maps it uses: a second call with room for their ids
  std::vector<__u32> ids(pi.nr_map_ids);
  if (!ids.empty()) {
    struct bpf_prog_info again = {};
    again.nr_map_ids = ids.size();
    again.map_ids = reinterpret_cast<__u64>(ids.data());
    len = sizeof(again);
    if (bpf_obj_get_info_by_fd(fd, &again, &len)) return Throw(env, "program info (map ids)", errno);
    ids.resize(std::min<size_t>(ids.size(), again.nr_map_ids));
  }
  Napi::Array mids = Napi::Array::New(env, ids.size());
  for (size_t i = 0; i < ids.size(); i++) mids.Set(static_cast<uint32_t>(i), ids[i]);
  o.Set("mapIds", mids);
  return o;
}

// progById(id) -> ProgHandle
static Napi::Value ProgById(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t id;
  if (!ArgInt(info, 0, "id", &id)) return env.Undefined();
  const std::string op = "open program id " + std::to_string(id);
  if (id <= 0 || id > UINT32_MAX) return Throw(env, op, ENOENT);
  Fd fd(bpf_prog_get_fd_by_id(static_cast<__u32>(id)));
  if (fd.get() < 0) return Throw(env, op, errno);
  return NewProgHandle(env, std::move(fd), op);
}

// mapCreate({ type, name, keySize, valueSize, maxEntries, flags? }) -> MapHandle
// A map of no object (BPF_MAP_CREATE): the inner maps of a map-in-map,
// which the agent makes, fills and then swaps in. `name` is the kernel's
// (cut at 15 characters) and what errors call the map.
static Napi::Value MapCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o;
  bool present, set;
  if (!OptionsObject(info, 0, "mapCreate", {"type", "name", "keySize", "valueSize", "maxEntries", "flags"}, &o,
                     &present))
    return env.Undefined();
  if (!present) {
    ThrowTypeError(env, "mapCreate: argument 0 must be { type, name, keySize, valueSize, maxEntries, flags? }");
    return env.Undefined();
  }
  uint32_t type = 0, key_size = 0, value_size = 0, max_entries = 0, flags = 0;
  std::string name;
  bool have_type, have_key, have_value, have_max, have_name;
  if (!OptU32(o, "mapCreate", "type", &type, &have_type) || !OptU32(o, "mapCreate", "keySize", &key_size, &have_key) ||
      !OptU32(o, "mapCreate", "valueSize", &value_size, &have_value) ||
      !OptU32(o, "mapCreate", "maxEntries", &max_entries, &have_max) ||
      !OptU32(o, "mapCreate", "flags", &flags, &set) || !OptString(o, "mapCreate", "name", &name, &have_name))
    return env.Undefined();
  if (!have_type || !have_key || !have_value || !have_max || !have_name) {
    ThrowTypeError(env, "mapCreate: type, name, keySize, valueSize and maxEntries are required");
    return env.Undefined();
  }
  const std::string op = "create map " + name;
  LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = flags);
  std::string kname = name.substr(0, BPF_OBJ_NAME_LEN - 1);
  Fd fd(bpf_map_create(static_cast<enum bpf_map_type>(type), kname.c_str(), key_size, value_size, max_entries, &opts));
  if (fd.get() < 0) return Throw(env, op, errno);
  return NewMapHandle(env, std::move(fd), name, op);
}

// mapById(id, name?) -> MapHandle (an inner map, read back from its outer map)
static Napi::Value MapById(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t id;
  std::string name;
  if (!ArgInt(info, 0, "id", &id)) return env.Undefined();
  if (info.Length() > 1 && !info[1].IsUndefined() && !ArgString(info, 1, "name", &name)) return env.Undefined();
  const std::string op = "open map id " + std::to_string(id);
  if (id <= 0 || id > UINT32_MAX) return Throw(env, op, ENOENT);
  Fd fd(bpf_map_get_fd_by_id(static_cast<__u32>(id)));
  if (fd.get() < 0) return Throw(env, op, errno);
  return NewMapHandle(env, std::move(fd), name, op);
}

// ---------------------------------------------------------------- test runs

// progTestRun(fd, data, { repeat?, ctx?, dataOutLen? }) -> { retval, data, durationNs, ctx? }
static Napi::Value ProgTestRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  Napi::Buffer<uint8_t> data;
  if (!ArgFd(info, 0, "fd", &fd) || !ArgBuffer(info, 1, "data", &data)) return env.Undefined();
  uint32_t repeat = 1, out_len = data.Length() + 256;
  std::vector<uint8_t> ctx_in, ctx_out;
  Napi::Object o;
  bool present, set;
  if (!OptionsObject(info, 2, "progTestRun", {"repeat", "ctx", "dataOutLen"}, &o, &present)) return env.Undefined();
  if (present) {
    Napi::Buffer<uint8_t> c;
    if (!OptU32(o, "progTestRun", "repeat", &repeat, &set) || !OptU32(o, "progTestRun", "dataOutLen", &out_len, &set) ||
        !OptBuffer(o, "progTestRun", "ctx", &c, &set))
      return env.Undefined();
    if (set) {
      ctx_in.assign(c.Data(), c.Data() + c.Length());
      ctx_out.resize(c.Length());
    }
  }
  std::vector<uint8_t> out(out_len);
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = data.Data(), .data_out = out.data(),
              .data_size_in = static_cast<__u32>(data.Length()), .data_size_out = out_len,
              .repeat = static_cast<int>(repeat));
  if (!ctx_in.empty()) {
    opts.ctx_in = ctx_in.data();
    opts.ctx_size_in = ctx_in.size();
    opts.ctx_out = ctx_out.data();
    opts.ctx_size_out = ctx_out.size();
  }
  if (bpf_prog_test_run_opts(fd, &opts)) return Throw(env, "program test run", errno);
  Napi::Object r = Napi::Object::New(env);
  r.Set("retval", opts.retval);
  r.Set("data", Napi::Buffer<uint8_t>::Copy(env, out.data(), opts.data_size_out));
  r.Set("durationNs", opts.duration);
  if (!ctx_out.empty()) r.Set("ctx", Napi::Buffer<uint8_t>::Copy(env, ctx_out.data(), ctx_out.size()));
  return r;
}

// progTestRunEach(fd, frames[], { ctx? }) -> { totalNs, retvals: Int32Array }:
// every frame once, in a native loop, so that per-packet figures for a
// stream of distinct packets (new flows) are not dominated by the JS that
// would otherwise run between two runs. Measurement only.
static Napi::Value ProgTestRunEach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  if (!ArgFd(info, 0, "fd", &fd)) return env.Undefined();
  if (info.Length() < 2 || !info[1].IsArray()) {
    ThrowTypeError(env, "progTestRunEach: argument 1 (frames) must be an array of Buffers");
    return env.Undefined();
  }
  Napi::Array arr = info[1].As<Napi::Array>();
  std::vector<std::pair<const uint8_t*, size_t>> frames;
  frames.reserve(arr.Length());
  size_t maxLen = 0;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsBuffer()) {
      ThrowTypeError(env, "progTestRunEach: frames[" + std::to_string(i) + "] is not a Buffer");
      return env.Undefined();
    }
    auto b = v.As<Napi::Buffer<uint8_t>>();
    frames.emplace_back(b.Data(), b.Length());
    maxLen = std::max(maxLen, b.Length());
  }
  std::vector<uint8_t> ctx_in;
  Napi::Object o;
  bool present, set;
  if (!OptionsObject(info, 2, "progTestRunEach", {"ctx"}, &o, &present)) return env.Undefined();
  if (present) {
    Napi::Buffer<uint8_t> c;
    if (!OptBuffer(o, "progTestRunEach", "ctx", &c, &set)) return env.Undefined();
    if (set) ctx_in.assign(c.Data(), c.Data() + c.Length());
  }
  std::vector<uint8_t> out(maxLen + 256);
  std::vector<uint8_t> ctx_out(ctx_in.size());
  auto retvals = Napi::Int32Array::New(env, frames.size());
  uint64_t total = 0;
  for (size_t i = 0; i < frames.size(); i++) {
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frames[i].first, .data_out = out.data(),
                .data_size_in = static_cast<__u32>(frames[i].second), .data_size_out = static_cast<__u32>(out.size()),
                .repeat = 1);
    if (!ctx_in.empty()) {
      opts.ctx_in = ctx_in.data();
      opts.ctx_size_in = ctx_in.size();
      opts.ctx_out = ctx_out.data();
      opts.ctx_size_out = ctx_out.size();
    }
    if (bpf_prog_test_run_opts(fd, &opts)) return Throw(env, "program test run", errno);
    total += opts.duration;
    retvals[i] = static_cast<int32_t>(opts.retval);
  }
  Napi::Object r = Napi::Object::New(env);
  r.Set("totalNs", Napi::Number::New(env, static_cast<double>(total)));
  r.Set("retvals", retvals);
  return r;
}

// ---------------------------------------------------------------- errno

static Napi::Value ErrnoNameFn(const Napi::CallbackInfo& info) {
  int64_t n;
  if (!ArgInt(info, 0, "errno", &n)) return info.Env().Undefined();
  return Napi::String::New(info.Env(), ErrnoName(static_cast<int>(n)));
}

static Napi::Value ErrnoTextFn(const Napi::CallbackInfo& info) {
  int64_t n;
  if (!ArgInt(info, 0, "errno", &n)) return info.Env().Undefined();
  return Napi::String::New(info.Env(), ErrnoText(static_cast<int>(n)));
}

void InitMaps(Napi::Env env, Napi::Object exports) {
  MapHandle::Init(env, exports);
  ProgHandle::Init(env, exports);
  LinkHandle::Init(env, exports);
  exports.Set("mapLookup", Napi::Function::New(env, MapLookup));
  exports.Set("mapUpdate", Napi::Function::New(env, MapUpdate));
  exports.Set("mapDelete", Napi::Function::New(env, MapDelete));
  exports.Set("mapNextKey", Napi::Function::New(env, MapNextKey));
  exports.Set("mapDump", Napi::Function::New(env, MapDump));
  exports.Set("mapUpdateBatch", Napi::Function::New(env, MapUpdateBatch));
  exports.Set("mapDeleteBatch", Napi::Function::New(env, MapDeleteBatch));
  exports.Set("objGet", Napi::Function::New(env, ObjGet));
  exports.Set("objPin", Napi::Function::New(env, ObjPin));
  exports.Set("mapInfo", Napi::Function::New(env, MapInfo));
  exports.Set("progInfo", Napi::Function::New(env, ProgInfo));
  exports.Set("progById", Napi::Function::New(env, ProgById));
  exports.Set("mapCreate", Napi::Function::New(env, MapCreate));
  exports.Set("mapById", Napi::Function::New(env, MapById));
  exports.Set("progTestRun", Napi::Function::New(env, ProgTestRun));
  exports.Set("progTestRunEach", Napi::Function::New(env, ProgTestRunEach));
  exports.Set("errnoName", Napi::Function::New(env, ErrnoNameFn));
  exports.Set("errnoText", Napi::Function::New(env, ErrnoTextFn));
}

}  // namespace bpfproxy
