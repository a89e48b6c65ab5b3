// SPDX-License-Identifier: Apache-2.0
// Facts about the system the agent needs: interfaces (through netlink, via
// if_nameindex; routes and link kinds are in netlink.cc), possible CPUs, the monotonic clock BPF uses, entering a network namespace (the
// calling thread only; used by tests and the lab), and flock (Node has none)
// for the agent's pin dir lock.
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/file.h>
#include <time.h>

#include "common.h"

namespace bpfproxy {

static Napi::Value Interfaces(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct if_nameindex* list = if_nameindex();
  if (!list) return Throw(env, "list interfaces", errno);
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  for (struct if_nameindex* i = list; i->if_index != 0; i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("index", i->if_index);
    o.Set("name", i->if_name);
    out.Set(n++, o);
  }
  if_freenameindex(list);
  return out;
}

static Napi::Value PossibleCpus(const Napi::CallbackInfo& info) {
  int n = libbpf_num_possible_cpus();
  if (n < 0) return Throw(info.Env(), "count possible CPUs", n);
  return Napi::Number::New(info.Env(), n);
}

static Napi::Value MonotonicNs(const Napi::CallbackInfo& info) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t ns = static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + ts.tv_nsec;
  return Napi::BigInt::New(info.Env(), ns);
}

// enterNetns(path) -> fd of the namespace we left (pass it to restoreNetns)
static Napi::Value EnterNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  if (!ArgString(info, 0, "path", &path)) return env.Undefined();
  Fd prev(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (prev.get() < 0) return Throw(env, "open current netns", errno);
  Fd target(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (target.get() < 0) return Throw(env, "open netns " + path, errno);
  if (setns(target.get(), CLONE_NEWNET)) return Throw(env, "enter netns " + path, errno);
  return Napi::Number::New(env, prev.release());
}

static Napi::Value RestoreNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  if (!ArgInt(info, 0, "fd", &fd)) return env.Undefined();
  Fd prev(fd);
  if (setns(prev.get(), CLONE_NEWNET)) return Throw(env, "return to netns", errno);
  return env.Undefined();
}

// flockNb(fd, op) with op 'exclusive', 'shared' or 'unlock', never blocking:
// true when done, false when another open file holds a conflicting lock.
static Napi::Value FlockNb(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  std::string op;
  if (!ArgInt(info, 0, "fd", &fd) || !ArgString(info, 1, "op", &op)) return env.Undefined();
  int how;
  if (op == "exclusive")
    how = LOCK_EX;
  else if (op == "shared")
    how = LOCK_SH;
  else if (op == "unlock")
    how = LOCK_UN;
  else {
    Napi::TypeError::New(env, "op must be 'exclusive', 'shared' or 'unlock'").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  for (;;) {
    if (flock(static_cast<int>(fd), how | LOCK_NB) == 0) return Napi::Boolean::New(env, true);
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
    return Throw(env, "flock " + op + " fd " + std::to_string(fd), errno);
  }
}

void InitSystem(Napi::Env env, Napi::Object exports) {
  exports.Set("flockNb", Napi::Function::New(env, FlockNb));
  exports.Set("interfaces", Napi::Function::New(env, Interfaces));
  exports.Set("possibleCpus", Napi::Function::New(env, PossibleCpus));
  exports.Set("monotonicNs", Napi::Function::New(env, MonotonicNs));
  exports.Set("enterNetns", Napi::Function::New(env, EnterNetns));
  exports.Set("restoreNetns", Napi::Function::New(env, RestoreNetns));
}

}  // namespace bpfproxy
