// SPDX-License-Identifier: Apache-2.0
// Map operations by fd: single-element ops, key iteration, batch ops, pinned
// objects. Keys and values are opaque Buffers; the TypeScript codecs give
// them meaning. Per-CPU maps take valueLen = round_up(value_size, 8) * ncpus.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>

#include <vector>

#include "common.h"

namespace bpfproxy {

static Napi::Value MapLookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd, vlen;
  Napi::Buffer<uint8_t> key;
  if (!ArgInt(info, 0, "fd", &fd) || !ArgBuffer(info, 1, "key", &key) ||
      !ArgInt(info, 2, "valueLen", &vlen))
    return env.Undefined();
  auto out = Napi::Buffer<uint8_t>::New(env, vlen);
  if (bpf_map_lookup_elem(fd, key.Data(), out.Data())) {
    if (errno == ENOENT) return env.Null();
    return Throw(env, "map lookup", errno);
  }
  return out;
}

static Napi::Value MapUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd, flags = BPF_ANY;
  Napi::Buffer<uint8_t> key, value;
  if (!ArgInt(info, 0, "fd", &fd) || !ArgBuffer(info, 1, "key", &key) ||
      !ArgBuffer(info, 2, "value", &value))
    return env.Undefined();
  if (info.Length() > 3 && !ArgInt(info, 3, "flags", &flags)) return env.Undefined();
  if (bpf_map_update_elem(fd, key.Data(), value.Data(), flags))
    return Throw(env, "map update", errno);
  return env.Undefined();
}

// Returns true when deleted, false when the key was not there.
static Napi::Value MapDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  Napi::Buffer<uint8_t> key;
  if (!ArgInt(info, 0, "fd", &fd) || !ArgBuffer(info, 1, "key", &key)) return env.Undefined();
  if (bpf_map_delete_elem(fd, key.Data())) {
    if (errno == ENOENT) return Napi::Boolean::New(env, false);
    return Throw(env, "map delete", errno);
  }
  return Napi::Boolean::New(env, true);
}

// mapNextKey(fd, key | null, keyLen) -> Buffer | null (end)
static Napi::Value MapNextKey(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd, klen;
  if (!ArgInt(info, 0, "fd", &fd) || !ArgInt(info, 2, "keyLen", &klen)) return env.Undefined();
  const void* cur = nullptr;
  if (info.Length() > 1 && info[1].IsBuffer()) cur = info[1].As<Napi::Buffer<uint8_t>>().Data();
  auto out = Napi::Buffer<uint8_t>::New(env, klen);
  if (bpf_map_get_next_key(fd, cur, out.Data())) {
    if (errno == ENOENT) return env.Null();
    return Throw(env, "map next key", errno);
  }
  return out;
}

// mapDump(fd, keyLen, valueLen, batch) -> { keys, values, count }
// Reads the whole map with BPF_MAP_LOOKUP_BATCH; falls back to key-by-key
// iteration where the map type has no batch support.
static Napi::Value MapDump(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd, klen, vlen, batch;
  if (!ArgInt(info, 0, "fd", &fd) || !ArgInt(info, 1, "keyLen", &klen) ||
      !ArgInt(info, 2, "valueLen", &vlen) || !ArgInt(info, 3, "batch", &batch))
    return env.Undefined();
  if (batch < 1) batch = 1;
  std::vector<uint8_t> keys, values;
  std::vector<uint8_t> token(std::max<int64_t>(klen, 8)), next(std::max<int64_t>(klen, 8));
  std::vector<uint8_t> kb(klen * batch), vb(vlen * batch);
  bool first = true, batched = true;
  size_t total = 0;
  for (;;) {
    __u32 count = batch;
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    int err = bpf_map_lookup_batch(fd, first ? nullptr : token.data(), next.data(), kb.data(),
                                   vb.data(), &count, &opts);
    int e = err ? errno : 0;
    if (err && first && (e == EINVAL || e == ENOTSUP || e == EOPNOTSUPP || e == 524 /* ENOTSUPP */)) {
      batched = false;
      break;
    }
    if (err && e != ENOENT) return Throw(env, "map lookup batch", e);
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
    while (bpf_map_get_next_key(fd, cur, nk.data()) == 0) {
      if (bpf_map_lookup_elem(fd, nk.data(), v.data()) == 0) {
        keys.insert(keys.end(), nk.begin(), nk.end());
        values.insert(values.end(), v.begin(), v.end());
        total++;
      }
      k.swap(nk);
      cur = k.data();
    }
    if (errno != ENOENT) return Throw(env, "map iterate", errno);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("keys", Napi::Buffer<uint8_t>::Copy(env, keys.data(), keys.size()));
  out.Set("values", Napi::Buffer<uint8_t>::Copy(env, values.data(), values.size()));
  out.Set("count", Napi::Number::New(env, total));
  return out;
}

// mapUpdateBatch(fd, keys, values, count, flags) -> count
static Napi::Value MapUpdateBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd, count, flags = BPF_ANY;
  Napi::Buffer<uint8_t> keys, values;
  if (!ArgInt(info, 0, "fd", &fd) || !ArgBuffer(info, 1, "keys", &keys) ||
      !ArgBuffer(info, 2, "values", &values) || !ArgInt(info, 3, "count", &count))
    return env.Undefined();
  if (info.Length() > 4 && !ArgInt(info, 4, "flags", &flags)) return env.Undefined();
  __u32 n = count;
  LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = static_cast<__u64>(flags));
  if (bpf_map_update_batch(fd, keys.Data(), values.Data(), &n, &opts)) {
    Napi::Error e = MakeError(env, "map update batch", errno);
    e.Set("done", Napi::Number::New(env, n));
    e.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, n);
}

// mapDeleteBatch(fd, keys, count) -> count
static Napi::Value MapDeleteBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd, count;
  Napi::Buffer<uint8_t> keys;
  if (!ArgInt(info, 0, "fd", &fd) || !ArgBuffer(info, 1, "keys", &keys) ||
      !ArgInt(info, 2, "count", &count))
    return env.Undefined();
  __u32 n = count;
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  if (bpf_map_delete_batch(fd, keys.Data(), &n, &opts)) {
    Napi::Error e = MakeError(env, "map delete batch", errno);
    e.Set("done", Napi::Number::New(env, n));
    e.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, n);
}

static Napi::Value ObjGet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  if (!ArgString(info, 0, "path", &path)) return env.Undefined();
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) return Throw(env, "open pinned " + path, errno);
  return Napi::Number::New(env, fd);
}

static Napi::Value ObjPin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  std::string path;
  if (!ArgInt(info, 0, "fd", &fd) || !ArgString(info, 1, "path", &path)) return env.Undefined();
  if (bpf_obj_pin(fd, path.c_str())) return Throw(env, "pin " + path, errno);
  return env.Undefined();
}

static Napi::Value MapInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  if (!ArgInt(info, 0, "fd", &fd)) return env.Undefined();
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
  if (!ArgInt(info, 0, "fd", &fd)) return env.Undefined();
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
  return o;
}

static Napi::Value ProgFdById(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t id;
  if (!ArgInt(info, 0, "id", &id)) return env.Undefined();
  int fd = bpf_prog_get_fd_by_id(id);
  if (fd < 0) return Throw(env, "open program id " + std::to_string(id), errno);
  return Napi::Number::New(env, fd);
}

static Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  if (!ArgInt(info, 0, "fd", &fd)) return env.Undefined();
  if (fd >= 0) close(fd);
  return env.Undefined();
}

// progTestRun(fd, data, { repeat, ctx?, dataOutLen? }) -> { retval, data, durationNs }
static Napi::Value ProgTestRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  Napi::Buffer<uint8_t> data;
  if (!ArgInt(info, 0, "fd", &fd) || !ArgBuffer(info, 1, "data", &data)) return env.Undefined();
  uint32_t repeat = 1, out_len = data.Length() + 256;
  std::vector<uint8_t> ctx_in, ctx_out;
  if (info.Length() > 2 && info[2].IsObject()) {
    Napi::Object o = info[2].As<Napi::Object>();
    if (o.Has("repeat")) repeat = o.Get("repeat").As<Napi::Number>().Uint32Value();
    if (o.Has("dataOutLen")) out_len = o.Get("dataOutLen").As<Napi::Number>().Uint32Value();
    if (o.Has("ctx") && o.Get("ctx").IsBuffer()) {
      auto c = o.Get("ctx").As<Napi::Buffer<uint8_t>>();
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
  Napi::Object o = Napi::Object::New(env);
  o.Set("retval", opts.retval);
  o.Set("data", Napi::Buffer<uint8_t>::Copy(env, out.data(), opts.data_size_out));
  o.Set("durationNs", opts.duration);
  if (!ctx_out.empty())
    o.Set("ctx", Napi::Buffer<uint8_t>::Copy(env, ctx_out.data(), ctx_out.size()));
  return o;
}

// progTestRunEach(fd, frames[], { ctx }) -> { totalNs, retvals: Int32Array }:
// every frame once, in a native loop, so that per-packet figures for a
// stream of distinct packets (new flows) are not dominated by the JS that
// would otherwise run between two runs. Measurement only.
static Napi::Value ProgTestRunEach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  if (!ArgInt(info, 0, "fd", &fd)) return env.Undefined();
  if (info.Length() < 2 || !info[1].IsArray()) {
    Napi::TypeError::New(env, "frames must be an array of Buffers").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array arr = info[1].As<Napi::Array>();
  std::vector<std::pair<const uint8_t*, size_t>> frames;
  frames.reserve(arr.Length());
  size_t maxLen = 0;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsBuffer()) {
      Napi::TypeError::New(env, "frames[" + std::to_string(i) + "] is not a Buffer").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    auto b = v.As<Napi::Buffer<uint8_t>>();
    frames.emplace_back(b.Data(), b.Length());
    maxLen = std::max(maxLen, b.Length());
  }
  std::vector<uint8_t> ctx_in;
  if (info.Length() > 2 && info[2].IsObject()) {
    Napi::Object o = info[2].As<Napi::Object>();
    if (o.Has("ctx")) {
      if (!o.Get("ctx").IsBuffer()) {
        Napi::TypeError::New(env, "ctx must be a Buffer").ThrowAsJavaScriptException();
        return env.Undefined();
      }
      auto c = o.Get("ctx").As<Napi::Buffer<uint8_t>>();
      ctx_in.assign(c.Data(), c.Data() + c.Length());
    }
  }
  std::vector<uint8_t> out(maxLen + 256);
  std::vector<uint8_t> ctx_out(ctx_in.size());
  auto retvals = Napi::Int32Array::New(env, frames.size());
  uint64_t total = 0;
  for (size_t i = 0; i < frames.size(); i++) {
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frames[i].first, .data_out = out.data(),
                .data_size_in = static_cast<__u32>(frames[i].second),
                .data_size_out = static_cast<__u32>(out.size()), .repeat = 1);
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
  Napi::Object o = Napi::Object::New(env);
  o.Set("totalNs", Napi::Number::New(env, static_cast<double>(total)));
  o.Set("retvals", retvals);
  return o;
}

void InitMaps(Napi::Env env, Napi::Object exports) {
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
  exports.Set("progFdById", Napi::Function::New(env, ProgFdById));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd));
  exports.Set("progTestRun", Napi::Function::New(env, ProgTestRun));
  exports.Set("progTestRunEach", Napi::Function::New(env, ProgTestRunEach));
}

}  // namespace bpfproxy
