// SPDX-License-Identifier: Apache-2.0
#include <bpf/libbpf.h>
#include <string.h>

#include <cstdarg>
#include <cstdio>

#include "common.h"

namespace bpfproxy {

Napi::Error MakeError(Napi::Env env, const std::string& op, int err, const std::string& log) {
  if (err < 0) err = -err;
  std::string msg = op + ": " + strerror(err);
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("op", Napi::String::New(env, op));
  if (!log.empty()) e.Set("log", Napi::String::New(env, log));
  return e;
}

Napi::Value Throw(Napi::Env env, const std::string& op, int err, const std::string& log) {
  MakeError(env, op, err, log).ThrowAsJavaScriptException();
  return env.Undefined();
}

static void TypeError(const Napi::CallbackInfo& info, size_t i, const char* what,
                      const char* type) {
  std::string msg = std::string("argument ") + std::to_string(i) + " (" + what +
                    ") must be " + type;
  Napi::TypeError::New(info.Env(), msg).ThrowAsJavaScriptException();
}

bool ArgInt(const Napi::CallbackInfo& info, size_t i, const char* what, int64_t* out) {
  if (info.Length() <= i || !info[i].IsNumber()) {
    TypeError(info, i, what, "a number");
    return false;
  }
  *out = info[i].As<Napi::Number>().Int64Value();
  return true;
}

bool ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* what,
               Napi::Buffer<uint8_t>* out) {
  if (info.Length() <= i || !info[i].IsBuffer()) {
    TypeError(info, i, what, "a Buffer");
    return false;
  }
  *out = info[i].As<Napi::Buffer<uint8_t>>();
  return true;
}

bool ArgString(const Napi::CallbackInfo& info, size_t i, const char* what, std::string* out) {
  if (info.Length() <= i || !info[i].IsString()) {
    TypeError(info, i, what, "a string");
    return false;
  }
  *out = info[i].As<Napi::String>().Utf8Value();
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
