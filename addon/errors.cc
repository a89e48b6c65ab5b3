// SPDX-License-Identifier: Apache-2.0
#include <bpf/libbpf.h>
#include <string.h>

#include <cmath>
#include <cstdarg>
#include <cstdio>

#include "common.h"

namespace bpfproxy {

AddonData* Data(Napi::Env env) {
  AddonData* d = env.GetInstanceData<AddonData>();
  if (!d) {
    d = new AddonData();
    env.SetInstanceData(d);
  }
  return d;
}

// Codes the kernel uses internally (include/linux/errno.h) that some BPF
// paths let through to user space (ENOTSUPP above all); the C library has
// no name for them.
struct KernelErrno {
  int no;
  const char* name;
  const char* text;
};
static const KernelErrno kKernelErrnos[] = {
    {512, "ERESTARTSYS", "Interrupted system call (kernel-internal restart)"},
    {513, "ERESTARTNOINTR", "Interrupted system call (kernel-internal restart)"},
    {514, "ERESTARTNOHAND", "Interrupted system call (kernel-internal restart)"},
    {515, "ENOIOCTLCMD", "No ioctl command (kernel-internal)"},
    {516, "ERESTART_RESTARTBLOCK", "Interrupted system call (kernel-internal restart)"},
    {517, "EPROBE_DEFER", "Driver requests probe retry (kernel-internal)"},
    {518, "EOPENSTALE", "Open found a stale dentry (kernel-internal)"},
    {519, "ENOPARAM", "Parameter not supported (kernel-internal)"},
    {521, "EBADHANDLE", "Illegal NFS file handle (kernel-internal)"},
    {522, "ENOTSYNC", "Update synchronization mismatch (kernel-internal)"},
    {523, "EBADCOOKIE", "Cookie is stale (kernel-internal)"},
    {524, "ENOTSUPP", "Operation is not supported (kernel-internal ENOTSUPP)"},
    {525, "ETOOSMALL", "Buffer or request is too small (kernel-internal)"},
    {526, "ESERVERFAULT", "An untranslatable error occurred (kernel-internal)"},
    {527, "EBADTYPE", "Type not supported by server (kernel-internal)"},
    {528, "EJUKEBOX", "Request initiated, but will not complete before timeout (kernel-internal)"},
    {529, "EIOCBQUEUED", "iocb queued, will get completion event (kernel-internal)"},
    {530, "ERECALLCONFLICT", "Conflict with recalled state (kernel-internal)"},
    {531, "ENOGRACE", "NFS file lock reclaim refused (kernel-internal)"},
};

static const KernelErrno* Kernel(int err) {
  for (const auto& k : kKernelErrnos)
    if (k.no == err) return &k;
  return nullptr;
}

std::string ErrnoName(int err) {
  if (err < 0) err = -err;
  if (const char* n = strerrorname_np(err)) return n;
  if (const KernelErrno* k = Kernel(err)) return k->name;
  return "errno " + std::to_string(err);
}

std::string ErrnoText(int err) {
  if (err < 0) err = -err;
  if (const char* d = strerrordesc_np(err)) return d;
  if (const KernelErrno* k = Kernel(err)) return k->text;
  return "Unknown error " + std::to_string(err);
}

Napi::Error MakeError(Napi::Env env, const std::string& op, int err, const std::string& log,
                      const std::string& detail) {
  if (err < 0) err = -err;
  std::string msg = op + ": " + ErrnoName(err) + " (" + ErrnoText(err) + ")";
  if (!detail.empty()) msg += ": " + detail;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, ErrnoName(err)));
  e.Set("op", Napi::String::New(env, op));
  if (!log.empty()) e.Set("log", Napi::String::New(env, log));
  if (!detail.empty()) e.Set("detail", Napi::String::New(env, detail));
  return e;
}

Napi::Value Throw(Napi::Env env, const std::string& op, int err, const std::string& log, const std::string& detail) {
  MakeError(env, op, err, log, detail).ThrowAsJavaScriptException();
  return env.Undefined();
}

void ThrowTypeError(Napi::Env env, const std::string& msg) {
  Napi::TypeError::New(env, msg).ThrowAsJavaScriptException();
}

static std::string TypeOf(const Napi::Value& v) {
  switch (v.Type()) {
    case napi_undefined:
      return "undefined";
    case napi_null:
      return "null";
    case napi_boolean:
      return "a boolean";
    case napi_number:
      return "the number " + v.As<Napi::Number>().ToString().Utf8Value();
    case napi_string:
      return "a string";
    case napi_symbol:
      return "a symbol";
    case napi_function:
      return "a function";
    case napi_bigint:
      return "a bigint";
    default:
      return v.IsArray() ? "an array" : v.IsBuffer() ? "a Buffer" : "an object";
  }
}

static void ArgTypeError(const Napi::CallbackInfo& info, size_t i, const char* what, const char* type) {
  std::string got = info.Length() > i ? TypeOf(info[i]) : "nothing";
  ThrowTypeError(info.Env(),
                 std::string("argument ") + std::to_string(i) + " (" + what + ") must be " + type + ", got " + got);
}

static bool IsInteger(const Napi::Value& v) {
  if (!v.IsNumber()) return false;
  double d = v.As<Napi::Number>().DoubleValue();
  return std::isfinite(d) && std::trunc(d) == d && std::fabs(d) <= 9007199254740991.0;
}

bool ArgInt(const Napi::CallbackInfo& info, size_t i, const char* what, int64_t* out) {
  if (info.Length() <= i || !IsInteger(info[i])) {
    ArgTypeError(info, i, what, "an integer");
    return false;
  }
  *out = info[i].As<Napi::Number>().Int64Value();
  return true;
}

bool ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* what, Napi::Buffer<uint8_t>* out) {
  if (info.Length() <= i || !info[i].IsBuffer()) {
    ArgTypeError(info, i, what, "a Buffer");
    return false;
  }
  *out = info[i].As<Napi::Buffer<uint8_t>>();
  return true;
}

bool ArgString(const Napi::CallbackInfo& info, size_t i, const char* what, std::string* out) {
  if (info.Length() <= i || !info[i].IsString()) {
    ArgTypeError(info, i, what, "a string");
    return false;
  }
  *out = info[i].As<Napi::String>().Utf8Value();
  return true;
}

bool ArgFd(const Napi::CallbackInfo& info, size_t i, const char* what, int64_t* out) {
  if (info.Length() > i) {
    bool real;
    if (HandleFd(info.Env(), info[i], out, &real)) {
      if (real && *out < 0) {
        Throw(info.Env(), std::string("use ") + what, EBADF, "", "the handle was closed");
        return false;
      }
      if (real) return true;
      ArgTypeError(info, i, what, "a handle made by the addon");
      return false;
    }
  }
  if (info.Length() <= i || !IsInteger(info[i])) {
    ArgTypeError(info, i, what, "an fd (integer) or a MapHandle/ProgHandle/LinkHandle");
    return false;
  }
  *out = info[i].As<Napi::Number>().Int64Value();
  return true;
}

bool OptionsObject(const Napi::CallbackInfo& info, size_t i, const char* fn, std::initializer_list<const char*> known,
                   Napi::Object* out, bool* present) {
  *present = false;
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return true;
  if (!info[i].IsObject() || info[i].IsArray() || info[i].IsFunction() || info[i].IsBuffer()) {
    ThrowTypeError(info.Env(), std::string(fn) + ": options must be an object, got " + TypeOf(info[i]));
    return false;
  }
  Napi::Object o = info[i].As<Napi::Object>();
  Napi::Array names = o.GetPropertyNames();
  for (uint32_t k = 0; k < names.Length(); k++) {
    std::string n = names.Get(k).ToString().Utf8Value();
    bool ok = false;
    for (const char* x : known) ok = ok || n == x;
    if (!ok) {
      std::string list;
      for (const char* x : known) list += (list.empty() ? "" : ", ") + std::string(x);
      ThrowTypeError(info.Env(), std::string(fn) + ": unknown option " + n + " (known: " + list + ")");
      return false;
    }
  }
  *out = o;
  *present = true;
  return true;
}

// The option's value, or false (and *set = false) when absent or undefined.
static bool OptGet(Napi::Object o, const std::string& key, Napi::Value* v, bool* set) {
  *set = false;
  if (!o.Has(key)) return false;
  *v = o.Get(key);
  if (v->IsUndefined()) return false;
  *set = true;
  return true;
}

static void OptTypeError(Napi::Object o, const char* fn, const std::string& key, const std::string& label,
                         const char* type) {
  ThrowTypeError(o.Env(), std::string(fn) + ": option " + (label.empty() ? key : label) + " must be " + type +
                              ", got " + TypeOf(o.Get(key)));
}

bool OptU32(Napi::Object o, const char* fn, const std::string& key, uint32_t* out, bool* set,
            const std::string& label) {
  Napi::Value v;
  if (!OptGet(o, key, &v, set)) return true;
  if (!IsInteger(v) || v.As<Napi::Number>().DoubleValue() < 0 || v.As<Napi::Number>().DoubleValue() > 4294967295.0) {
    OptTypeError(o, fn, key, label, "an integer from 0 to 2^32-1");
    return false;
  }
  *out = static_cast<uint32_t>(v.As<Napi::Number>().Int64Value());
  return true;
}

bool OptBuffer(Napi::Object o, const char* fn, const std::string& key, Napi::Buffer<uint8_t>* out, bool* set,
               const std::string& label) {
  Napi::Value v;
  if (!OptGet(o, key, &v, set)) return true;
  if (!v.IsBuffer()) {
    OptTypeError(o, fn, key, label, "a Buffer");
    return false;
  }
  *out = v.As<Napi::Buffer<uint8_t>>();
  return true;
}

bool OptString(Napi::Object o, const char* fn, const std::string& key, std::string* out, bool* set,
               const std::string& label) {
  Napi::Value v;
  if (!OptGet(o, key, &v, set)) return true;
  if (!v.IsString()) {
    OptTypeError(o, fn, key, label, "a string");
    return false;
  }
  *out = v.As<Napi::String>().Utf8Value();
  return true;
}

bool OptObject(Napi::Object o, const char* fn, const std::string& key, Napi::Object* out, bool* set,
               const std::string& label) {
  Napi::Value v;
  if (!OptGet(o, key, &v, set)) return true;
  if (!v.IsObject() || v.IsArray() || v.IsFunction() || v.IsBuffer()) {
    OptTypeError(o, fn, key, label, "an object");
    return false;
  }
  *out = v.As<Napi::Object>();
  return true;
}

// libbpf prints through one global callback; we keep what it says for the
// thread that asked (a load runs on a worker thread), and drop debug noise
// otherwise.
static thread_local std::string* tl_capture = nullptr;

static int Printer(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (!tl_capture) return 0;
  if (level == LIBBPF_DEBUG) return 0;
  char buf[4096];
  int n = vsnprintf(buf, sizeof(buf), fmt, args);
  if (n > 0) tl_capture->append(buf, std::min<size_t>(n, sizeof(buf) - 1));
  return n;
}

void InstallLibbpfPrinter() { libbpf_set_print(Printer); }

LibbpfCapture::LibbpfCapture() { tl_capture = new std::string(); }
LibbpfCapture::~LibbpfCapture() {
  delete tl_capture;
  tl_capture = nullptr;
}
std::string LibbpfCapture::take() {
  std::string s = tl_capture ? *tl_capture : "";
  if (tl_capture) tl_capture->clear();
  return s;
}

}  // namespace bpfproxy
