// SPDX-License-Identifier: Apache-2.0
// Facts about the system the agent needs: interfaces (through netlink, via
// if_nameindex), IPv4 routes of the main table (an rtnetlink dump), possible
// CPUs, the monotonic clock BPF uses, entering a network namespace (the
// calling thread only; used by tests and the lab), and flock (Node has none)
// for the agent's pin dir lock.
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/socket.h>
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

// routes4() -> [{ dst: "10.244.1.11", prefixLen: 32, oif: 7 }]: unicast IPv4
// routes of the main table that name an output interface.
static Napi::Value Routes4(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Fd sock(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (sock.get() < 0) return Throw(env, "open rtnetlink socket", errno);
  struct {
    struct nlmsghdr nh;
    struct rtmsg rt;
  } req = {};
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
  req.nh.nlmsg_type = RTM_GETROUTE;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.nh.nlmsg_seq = 1;
  req.rt.rtm_family = AF_INET;
  if (send(sock.get(), &req, req.nh.nlmsg_len, 0) < 0) return Throw(env, "dump routes", errno);

  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  std::string buf(64 * 1024, '\0');
  for (;;) {
    ssize_t len = recv(sock.get(), buf.data(), buf.size(), 0);
    if (len < 0) {
      if (errno == EINTR) continue;
      return Throw(env, "read routes", errno);
    }
    if (len == 0) return Throw(env, "read routes", EPIPE);
    for (auto* nh = reinterpret_cast<struct nlmsghdr*>(buf.data()); NLMSG_OK(nh, static_cast<size_t>(len));
         nh = NLMSG_NEXT(nh, len)) {
      if (nh->nlmsg_type == NLMSG_DONE) return out;
      if (nh->nlmsg_type == NLMSG_ERROR) {
        auto* e = static_cast<struct nlmsgerr*>(NLMSG_DATA(nh));
        return Throw(env, "dump routes", e->error ? -e->error : EIO);
      }
      if (nh->nlmsg_type != RTM_NEWROUTE || nh->nlmsg_len < NLMSG_LENGTH(sizeof(struct rtmsg))) continue;
      auto* rt = static_cast<struct rtmsg*>(NLMSG_DATA(nh));
      if (rt->rtm_family != AF_INET || rt->rtm_type != RTN_UNICAST || rt->rtm_dst_len > 32) continue;
      uint32_t table = rt->rtm_table;
      uint32_t dst = 0;
      int oif = 0;
      int attrlen = static_cast<int>(RTM_PAYLOAD(nh));
      for (auto* a = RTM_RTA(rt); RTA_OK(a, attrlen); a = RTA_NEXT(a, attrlen)) {
        if (a->rta_type == RTA_TABLE && RTA_PAYLOAD(a) >= 4) memcpy(&table, RTA_DATA(a), 4);
        else if (a->rta_type == RTA_DST && RTA_PAYLOAD(a) >= 4) memcpy(&dst, RTA_DATA(a), 4);
        else if (a->rta_type == RTA_OIF && RTA_PAYLOAD(a) >= 4) memcpy(&oif, RTA_DATA(a), 4);
      }
      if (table != RT_TABLE_MAIN || oif <= 0) continue;
      char text[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &dst, text, sizeof(text));
      Napi::Object o = Napi::Object::New(env);
      o.Set("dst", text);
      o.Set("prefixLen", rt->rtm_dst_len);
      o.Set("oif", oif);
      out.Set(n++, o);
    }
  }
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
  if (op == "exclusive") how = LOCK_EX;
  else if (op == "shared") how = LOCK_SH;
  else if (op == "unlock") how = LOCK_UN;
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
  exports.Set("routes4", Napi::Function::New(env, Routes4));
  exports.Set("possibleCpus", Napi::Function::New(env, PossibleCpus));
  exports.Set("monotonicNs", Napi::Function::New(env, MonotonicNs));
  exports.Set("enterNetns", Napi::Function::New(env, EnterNetns));
  exports.Set("restoreNetns", Napi::Function::New(env, RestoreNetns));
}

}  // namespace bpfproxy
