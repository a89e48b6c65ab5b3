// SPDX-License-Identifier: Apache-2.0
// Shared pieces of the native addon: owners for fds, handles that own BPF
// fds on the JS side, argument checks, error reporting.
//
// Every native function either returns its result or throws a JS Error that
// carries `errno` (positive), `op` (what was being done, naming the object)
// and, where the addon refused the call itself, `detail` (why);
// src/native/index.ts turns that into a typed BpfError. A wrong argument or
// option type is a TypeError naming it. No policy lives here.
#pragma once

#include <napi.h>
#include <stdint.h>
#include <unistd.h>

#include <string>

namespace bpfproxy {

// Owns a file descriptor; closes it unless released.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.release();
    }
    return *this;
  }
  int get() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

// Per-environment state (class constructors), so the addon also works when
// loaded by more than one Node environment (worker threads).
struct AddonData {
  Napi::FunctionReference bpf_object;
  Napi::FunctionReference map_handle;
  Napi::FunctionReference prog_handle;
  Napi::FunctionReference link_handle;
  Napi::FunctionReference ringbuf_reader;
};
AddonData* Data(Napi::Env env);

// errno -> "E2BIG" / "Argument list too long", from the C library
// (strerrorname_np / strerrordesc_np) plus the kernel-internal codes
// (512..530, e.g. ENOTSUPP) that <errno.h> does not define.
std::string ErrnoName(int err);
std::string ErrnoText(int err);

// Build the Error object we throw: message, errno, code, op, and optional
// log (libbpf / verifier output) and detail (why the addon refused).
Napi::Error MakeError(Napi::Env env, const std::string& op, int err, const std::string& log = "",
                      const std::string& detail = "");
// Throw it (with exceptions disabled: set pending and return undefined).
Napi::Value Throw(Napi::Env env, const std::string& op, int err, const std::string& log = "",
                  const std::string& detail = "");
void ThrowTypeError(Napi::Env env, const std::string& msg);

// Read an argument with a type check; on error throws a TypeError and
// returns false. ArgInt takes integers only.
bool ArgInt(const Napi::CallbackInfo& info, size_t i, const char* what, int64_t* out);
bool ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* what, Napi::Buffer<uint8_t>* out);
bool ArgString(const Napi::CallbackInfo& info, size_t i, const char* what, std::string* out);
// An fd: a number, or a MapHandle / ProgHandle / LinkHandle (whose fd is -1 once closed).
bool ArgFd(const Napi::CallbackInfo& info, size_t i, const char* what, int64_t* out);

// Options objects: undefined/null is "no options"; anything else must be a
// plain object whose keys are all in `known` (a typo is a TypeError, not a
// silently ignored setting). An option set to undefined counts as absent.
bool OptionsObject(const Napi::CallbackInfo& info, size_t i, const char* fn, std::initializer_list<const char*> known,
                   Napi::Object* out, bool* present);
// Each reads option `key` of o (`label` names it in errors, default: the
// key); *set tells whether it was given.
bool OptU32(Napi::Object o, const char* fn, const std::string& key, uint32_t* out, bool* set,
            const std::string& label = "");
bool OptBuffer(Napi::Object o, const char* fn, const std::string& key, Napi::Buffer<uint8_t>* out, bool* set,
               const std::string& label = "");
bool OptString(Napi::Object o, const char* fn, const std::string& key, std::string* out, bool* set,
               const std::string& label = "");
bool OptObject(Napi::Object o, const char* fn, const std::string& key, Napi::Object* out, bool* set,
               const std::string& label = "");

// Handles: JS objects that own one BPF fd each, closed by close() or, if
// never closed, when the object is garbage collected. `name` is what errors
// call the object (a pinned map: the pin's file name, which unlike the
// kernel's name is never cut at 15 characters).
Napi::Value NewMapHandle(Napi::Env env, Fd fd, const std::string& name, const std::string& op);
Napi::Value NewProgHandle(Napi::Env env, Fd fd, const std::string& op);
// A BPF link (fd checked to be one; EINVAL otherwise).
Napi::Value NewLinkHandle(Napi::Env env, Fd fd, const std::string& op);
// True when v is a MapHandle, ProgHandle or LinkHandle (by prototype), with *fd its fd
// (-1 once closed); *real is false for an object that only poses as one.
bool HandleFd(Napi::Env env, Napi::Value v, int64_t* fd, bool* real);

// libbpf messages: collected per thread while a capture is active.
void InstallLibbpfPrinter();
class LibbpfCapture {
 public:
  LibbpfCapture();
  ~LibbpfCapture();
  std::string take();
};

void InitObject(Napi::Env env, Napi::Object exports);
void InitMaps(Napi::Env env, Napi::Object exports);
void InitTc(Napi::Env env, Napi::Object exports);
void InitSystem(Napi::Env env, Napi::Object exports);

}  // namespace bpfproxy
