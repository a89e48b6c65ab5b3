// SPDX-License-Identifier: Apache-2.0
// Shared pieces of the native addon: owners for fds, error reporting.
//
// Every native function either returns its result or throws a JS Error that
// carries `errno` (positive) and `op` (what was being done); src/native.ts
// turns that into a typed BpfError. No policy lives here.
#pragma once

#include <napi.h>
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

// Build the Error object we throw: message, errno, op, and optional log.
Napi::Error MakeError(Napi::Env env, const std::string& op, int err,
                      const std::string& log = "");
// Throw it (with exceptions disabled: set pending and return undefined).
Napi::Value Throw(Napi::Env env, const std::string& op, int err,
                  const std::string& log = "");

// Read an int argument with a type check; on error throws and returns false.
bool ArgInt(const Napi::CallbackInfo& info, size_t i, const char* what, int64_t* out);
bool ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* what,
               Napi::Buffer<uint8_t>* out);
bool ArgString(const Napi::CallbackInfo& info, size_t i, const char* what, std::string* out);

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
