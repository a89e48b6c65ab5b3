// SPDX-License-Identifier: Apache-2.0
// Opening and loading BPF objects. Loading (verification) can take a while,
// so it runs on a worker thread and resolves a Promise with a BpfObject that
// owns the libbpf object: its program and map fds live as long as it does.
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <string.h>

#include <map>
#include <memory>
#include <vector>

#include "common.h"

namespace bpfproxy {

struct ObjectCloser {
  void operator()(struct bpf_object* o) const { bpf_object__close(o); }
};
using ObjectPtr = std::unique_ptr<struct bpf_object, ObjectCloser>;

struct LoadOptions {
  std::string path;
  std::string pin_root;
  std::map<std::string, std::vector<uint8_t>> rodata;
  // the whole .rodata of a running copy of the same object, set before `rodata`
  std::vector<uint8_t> rodata_image;
  bool has_rodata_image = false;
  std::map<std::string, uint32_t> max_entries;
};

// Write load-time settings (const volatile globals) into .rodata, by the
// offsets BTF gives for each variable; with an image, over that image.
static int SetRodata(struct bpf_object* obj, const std::map<std::string, std::vector<uint8_t>>& vars,
                     const std::vector<uint8_t>* image, std::string* why) {
  if (vars.empty() && !image) return 0;
  struct btf* btf = bpf_object__btf(obj);
  struct bpf_map* ro = nullptr;
  struct bpf_map* m;
  bpf_object__for_each_map(m, obj) {
    const char* n = bpf_map__name(m);
    size_t len = strlen(n);
    if (len >= 7 && strcmp(n + len - 7, ".rodata") == 0) ro = m;
  }
  if (!btf || !ro) {
    *why = "object has no .rodata section or no BTF";
    return -ENOENT;
  }
  int sec_id = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
  if (sec_id < 0) {
    *why = "no .rodata DATASEC in BTF";
    return -ENOENT;
  }
  size_t size = 0;
  const void* init = bpf_map__initial_value(ro, &size);
  std::vector<uint8_t> data(static_cast<const uint8_t*>(init), static_cast<const uint8_t*>(init) + size);
  if (image) {
    if (image->size() != data.size()) {
      *why = "the .rodata image has " + std::to_string(image->size()) + " bytes, the object's .rodata " +
             std::to_string(data.size()) + ": not the same build";
      return -EINVAL;
    }
    data = *image;
  }
  const struct btf_type* sec = btf__type_by_id(btf, sec_id);
  const struct btf_var_secinfo* vi = btf_var_secinfos(sec);
  size_t found = 0;
  for (int i = 0; i < btf_vlen(sec); i++, vi++) {
    const struct btf_type* var = btf__type_by_id(btf, vi->type);
    const char* name = btf__name_by_offset(btf, var->name_off);
    auto it = vars.find(name);
    if (it == vars.end()) continue;
    if (it->second.size() != vi->size || vi->offset + vi->size > data.size()) {
      *why = std::string("setting ") + name + " has size " + std::to_string(vi->size) + " in the object, got " +
             std::to_string(it->second.size());
      return -EINVAL;
    }
    memcpy(data.data() + vi->offset, it->second.data(), vi->size);
    found++;
  }
  if (found != vars.size()) {
    for (auto& kv : vars) {
      bool seen = false;
      vi = btf_var_secinfos(sec);
      for (int i = 0; i < btf_vlen(sec); i++, vi++) {
        const struct btf_type* var = btf__type_by_id(btf, vi->type);
        if (kv.first == btf__name_by_offset(btf, var->name_off)) seen = true;
      }
      if (!seen) *why = "object has no setting named " + kv.first;
    }
    return -ENOENT;
  }
  return bpf_map__set_initial_value(ro, data.data(), data.size());
}

class BpfObjectWrap : public Napi::ObjectWrap<BpfObjectWrap> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function f = DefineClass(env, "BpfObject",
                                   {
                                       InstanceMethod("programs", &BpfObjectWrap::Programs),
                                       InstanceMethod("maps", &BpfObjectWrap::Maps),
                                       InstanceMethod("close", &BpfObjectWrap::Close),
                                   });
    Data(env)->bpf_object = Napi::Persistent(f);
    exports.Set("BpfObject", f);
  }

  explicit BpfObjectWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfObjectWrap>(info) {
    if (info.Length() > 0 && info[0].IsExternal()) {
      obj_.reset(info[0].As<Napi::External<struct bpf_object>>().Data());
    }
  }

 private:
  Napi::Value Programs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!obj_) return Throw(env, "programs of closed object", EBADF);
    Napi::Array out = Napi::Array::New(env);
    struct bpf_program* p;
    uint32_t i = 0;
    bpf_object__for_each_program(p, obj_.get()) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", bpf_program__name(p));
      o.Set("section", bpf_program__section_name(p));
      o.Set("fd", bpf_program__fd(p));
      out.Set(i++, o);
    }
    return out;
  }

  Napi::Value Maps(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!obj_) return Throw(env, "maps of closed object", EBADF);
    Napi::Array out = Napi::Array::New(env);
    struct bpf_map* m;
    uint32_t i = 0;
    bpf_object__for_each_map(m, obj_.get()) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", bpf_map__name(m));
      o.Set("fd", bpf_map__fd(m));
      o.Set("type", static_cast<uint32_t>(bpf_map__type(m)));
      o.Set("keySize", bpf_map__key_size(m));
      o.Set("valueSize", bpf_map__value_size(m));
      o.Set("maxEntries", bpf_map__max_entries(m));
      const char* pin = bpf_map__pin_path(m);
      o.Set("pinPath", pin ? Napi::Value(Napi::String::New(env, pin)) : env.Null());
      out.Set(i++, o);
    }
    return out;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    obj_.reset();
    return info.Env().Undefined();
  }

  ObjectPtr obj_;
};

class LoadWorker : public Napi::AsyncWorker {
 public:
  LoadWorker(Napi::Env env, LoadOptions opts)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), opts_(std::move(opts)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    LibbpfCapture capture;
    LIBBPF_OPTS(bpf_object_open_opts, oo);
    if (!opts_.pin_root.empty()) oo.pin_root_path = opts_.pin_root.c_str();
    struct bpf_object* raw = bpf_object__open_file(opts_.path.c_str(), &oo);
    if (!raw) {
      fail("open " + opts_.path, errno, capture.take());
      return;
    }
    ObjectPtr obj(raw);
    std::string why;
    int err = SetRodata(obj.get(), opts_.rodata, opts_.has_rodata_image ? &opts_.rodata_image : nullptr, &why);
    if (err) {
      fail("set load-time settings of " + opts_.path, err, why);
      return;
    }
    for (auto& kv : opts_.max_entries) {
      struct bpf_map* m = bpf_object__find_map_by_name(obj.get(), kv.first.c_str());
      if (!m) {
        fail("size map " + kv.first, ENOENT, "no such map in " + opts_.path);
        return;
      }
      err = bpf_map__set_max_entries(m, kv.second);
      if (err) {
        fail("size map " + kv.first, err, "");
        return;
      }
    }
    err = bpf_object__load(obj.get());
    if (err) {
      fail("load " + opts_.path, err, capture.take());
      return;
    }
    obj_ = std::move(obj);
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_) {
      deferred_.Reject(MakeError(env, op_, err_, log_).Value());
      return;
    }
    Napi::Object o = Data(env)->bpf_object.New({Napi::External<struct bpf_object>::New(env, obj_.release())});
    deferred_.Resolve(o);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  void fail(const std::string& op, int err, const std::string& log) {
    op_ = op;
    err_ = err < 0 ? -err : err;
    if (!err_) err_ = EINVAL;
    log_ = log;
  }

  Napi::Promise::Deferred deferred_;
  LoadOptions opts_;
  ObjectPtr obj_;
  std::string op_;
  int err_ = 0;
  std::string log_;
};

// loadObject(path, { pinRoot?, rodata?: {name: Buffer}, rodataImage?: Buffer, maxEntries?: {name: n} })
// Every option is type-checked here, before the worker starts: a wrong type
// is a TypeError naming the option, never a silently ignored setting.
static Napi::Value LoadObject(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  LoadOptions opts;
  if (!ArgString(info, 0, "path", &opts.path)) return env.Undefined();
  Napi::Object o;
  bool present, set;
  if (!OptionsObject(info, 1, "loadObject", {"pinRoot", "rodata", "rodataImage", "maxEntries"}, &o, &present))
    return env.Undefined();
  if (present) {
    if (!OptString(o, "loadObject", "pinRoot", &opts.pin_root, &set)) return env.Undefined();
    Napi::Object r;
    if (!OptObject(o, "loadObject", "rodata", &r, &set)) return env.Undefined();
    if (set) {
      Napi::Array names = r.GetPropertyNames();
      for (uint32_t i = 0; i < names.Length(); i++) {
        std::string n = names.Get(i).ToString().Utf8Value();
        Napi::Buffer<uint8_t> b;
        bool has;
        if (!OptBuffer(r, "loadObject", n, &b, &has, "rodata." + n)) return env.Undefined();
        if (has) opts.rodata[n] = std::vector<uint8_t>(b.Data(), b.Data() + b.Length());
      }
    }
    Napi::Buffer<uint8_t> img;
    if (!OptBuffer(o, "loadObject", "rodataImage", &img, &set)) return env.Undefined();
    if (set) {
      opts.rodata_image.assign(img.Data(), img.Data() + img.Length());
      opts.has_rodata_image = true;
    }
    if (!OptObject(o, "loadObject", "maxEntries", &r, &set)) return env.Undefined();
    if (set) {
      Napi::Array names = r.GetPropertyNames();
      for (uint32_t i = 0; i < names.Length(); i++) {
        std::string n = names.Get(i).ToString().Utf8Value();
        uint32_t v;
        bool has;
        if (!OptU32(r, "loadObject", n, &v, &has, "maxEntries." + n)) return env.Undefined();
        if (has) opts.max_entries[n] = v;
      }
    }
  }
  auto* w = new LoadWorker(env, std::move(opts));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

void InitObject(Napi::Env env, Napi::Object exports) {
  BpfObjectWrap::Init(env, exports);
  exports.Set("loadObject", Napi::Function::New(env, LoadObject));
}

}  // namespace bpfproxy
