// SPDX-License-Identifier: Apache-2.0
#include <bpf/libbpf.h>

#include "common.h"

namespace bpfproxy {

void InitNetlink(Napi::Env env, Napi::Object exports);    // netlink.cc
void InitBulk(Napi::Env env, Napi::Object exports);       // addon/bulk.cc
void InitRingbuf(Napi::Env env, Napi::Object exports);    // addon/ringbuf.cc
void InitConntrack(Napi::Env env, Napi::Object exports);  // addon/conntrack.cc
void InitEngine(Napi::Env env, Napi::Object exports);     // addon/engine/binding.cc
void InitCgroup(Napi::Env env, Napi::Object exports);     // addon/cgroup.cc

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
  InstallLibbpfPrinter();
  InitObject(env, exports);
  InitMaps(env, exports);
  InitTc(env, exports);
  InitSystem(env, exports);
  InitNetlink(env, exports);
  InitBulk(env, exports);
  InitRingbuf(env, exports);
  InitConntrack(env, exports);
  InitEngine(env, exports);
  InitCgroup(env, exports);
  return exports;
}

}  // namespace bpfproxy

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return bpfproxy::Init(env, exports); }

NODE_API_MODULE(bpfproxy_native, InitModule)
