// SPDX-License-Identifier: Apache-2.0
// cgroup v2 socket hooks (socket-level load balancing, bpf/sock.c): attach a
// program to a cgroup through a BPF link (BPF_LINK_CREATE, 5.7), so the
// attachment is an object of its own that can be pinned, adopted by the next
// agent and detached; read a cgroup link back; the network namespace cookie
// the programs compare (--socket-lb=host).
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <string>

#include "common.h"

namespace bpfproxy {

struct SockHook {
  const char* name;
  enum bpf_attach_type type;
};

static const SockHook kSockHooks[] = {
    {"connect4", BPF_CGROUP_INET4_CONNECT},         {"connect6", BPF_CGROUP_INET6_CONNECT},
    {"sendmsg4", BPF_CGROUP_UDP4_SENDMSG},          {"sendmsg6", BPF_CGROUP_UDP6_SENDMSG},
    {"recvmsg4", BPF_CGROUP_UDP4_RECVMSG},          {"recvmsg6", BPF_CGROUP_UDP6_RECVMSG},
    {"getpeername4", BPF_CGROUP_INET4_GETPEERNAME}, {"getpeername6", BPF_CGROUP_INET6_GETPEERNAME},
};

static const char* HookName(uint32_t type) {
  for (const SockHook& h : kSockHooks)
    if (static_cast<uint32_t>(h.type) == type) return h.name;
  return nullptr;
}

// cgroupAttach(cgroupPath, hook, prog) -> LinkHandle: prog runs for every
// socket of a process in that cgroup or below it.
static Napi::Value CgroupAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path, hook;
  int64_t prog_fd;
  if (!ArgString(info, 0, "cgroupPath", &path) || !ArgString(info, 1, "hook", &hook) ||
      !ArgFd(info, 2, "prog", &prog_fd))
    return env.Undefined();
  const SockHook* h = nullptr;
  for (const SockHook& x : kSockHooks)
    if (hook == x.name) h = &x;
  if (!h) {
    Napi::TypeError::New(env,
                         "hook must be one of connect4, connect6, sendmsg4, sendmsg6, recvmsg4, recvmsg6, "
                         "getpeername4, getpeername6 (got '" +
                             hook + "')")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string op = "attach " + hook + " program to cgroup " + path;
  Fd cg(open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (cg.get() < 0) return Throw(env, op + " (open)", errno);
  Fd link(bpf_link_create(static_cast<int>(prog_fd), cg.get(), h->type, nullptr));
  if (link.get() < 0) return Throw(env, op, errno);
  return NewLinkHandle(env, std::move(link), op);
}

// The head of struct bpf_link_info and its cgroup member.
struct CgroupLinkInfo {
  uint32_t type;
  uint32_t id;
  uint32_t prog_id;
  uint32_t pad;
  uint64_t cgroup_id;  // 0 once the cgroup is gone
  uint32_t attach_type;
  uint32_t pad2;
};
static_assert(offsetof(CgroupLinkInfo, cgroup_id) == 16, "link_info.cgroup at 16");

// cgroupLinkInfo(link) -> { id, progId, cgroupId (bigint; 0n: cgroup gone),
// hook (undefined: not one of ours) } or null when the link is no cgroup link.
static Napi::Value CgroupLinkInfoJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  if (!ArgFd(info, 0, "link", &fd)) return env.Undefined();
  CgroupLinkInfo li = {};
  uint32_t len = sizeof(li);
  if (bpf_obj_get_info_by_fd(static_cast<int>(fd), &li, &len))
    return Throw(env, "link info of fd " + std::to_string(fd), errno);
  if (li.type != BPF_LINK_TYPE_CGROUP) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", li.id);
  o.Set("progId", li.prog_id);
  o.Set("cgroupId", Napi::BigInt::New(env, static_cast<uint64_t>(li.cgroup_id)));
  const char* name = HookName(li.attach_type);
  if (name) o.Set("hook", name);
  return o;
}

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

// netnsCookie() -> bigint: this thread's network namespace cookie (what
// bpf_get_netns_cookie() returns for its sockets); kernels before 5.14 (no
// SO_NETNS_COOKIE): ENOPROTOOPT.
static Napi::Value NetnsCookie(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Fd s(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (s.get() < 0) return Throw(env, "netns cookie (socket)", errno);
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (getsockopt(s.get(), SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len))
    return Throw(env, "netns cookie (getsockopt SO_NETNS_COOKIE)", errno);
  return Napi::BigInt::New(env, cookie);
}

// sockSetRetvalSupported() -> whether cgroup sock_addr programs may call
// bpf_set_retval() here (5.18): probed by loading a tiny program.
static Napi::Value SockSetRetvalSupported(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int r = libbpf_probe_bpf_helper(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_set_retval, nullptr);
  if (r < 0) return Throw(env, "probe bpf_set_retval for cgroup sock_addr programs", -r);
  return Napi::Boolean::New(env, r == 1);
}

// iterRun(prog) -> bytes the iterator program wrote: runs a BPF iterator
// program (SEC("iter/...")) once over this thread's network namespace
// (BPF_LINK_CREATE with BPF_TRACE_ITER, then read the iterator to its end).
static Napi::Value IterRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t prog_fd;
  if (!ArgFd(info, 0, "prog", &prog_fd)) return env.Undefined();
  Fd link(bpf_link_create(static_cast<int>(prog_fd), 0, BPF_TRACE_ITER, nullptr));
  if (link.get() < 0) return Throw(env, "create iterator link", errno);
  Fd it(bpf_iter_create(link.get()));
  if (it.get() < 0) return Throw(env, "open iterator", errno);
  char buf[4096];
  int64_t total = 0;
  for (;;) {
    ssize_t n = read(it.get(), buf, sizeof(buf));
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      return Throw(env, "read iterator", errno);
    }
    total += n;
  }
  return Napi::Number::New(env, static_cast<double>(total));
}

void InitCgroup(Napi::Env env, Napi::Object exports) {
  exports.Set("iterRun", Napi::Function::New(env, IterRun));
  exports.Set("sockSetRetvalSupported", Napi::Function::New(env, SockSetRetvalSupported));
  exports.Set("cgroupAttach", Napi::Function::New(env, CgroupAttach));
  exports.Set("cgroupLinkInfo", Napi::Function::New(env, CgroupLinkInfoJs));
  exports.Set("netnsCookie", Napi::Function::New(env, NetnsCookie));
}

}  // namespace bpfproxy
