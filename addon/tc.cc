// SPDX-License-Identifier: Apache-2.0
// TC (clsact) attach/detach/query. Our filters carry a fixed handle and
// priority chosen by the caller, so other filters on the interface are never
// touched; attaching again replaces ours atomically. The clsact qdisc itself
// can be created explicitly (to learn whether it was already there), listed
// (every filter on a hook, whoever put it there) and deleted; deciding when
// deleting it is safe is the caller's business.
#include <arpa/inet.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <cstring>
#include <vector>

#include "common.h"

namespace bpfproxy {

static bool HookArgs(const Napi::CallbackInfo& info, struct bpf_tc_hook* hook,
                     struct bpf_tc_opts* opts, size_t first_opt) {
  int64_t ifindex, handle, prio;
  if (!ArgInt(info, 0, "ifindex", &ifindex)) return false;
  if (info.Length() < 2 || !info[1].IsString()) {
    Napi::TypeError::New(info.Env(), "direction must be 'ingress' or 'egress'")
        .ThrowAsJavaScriptException();
    return false;
  }
  std::string dir = info[1].As<Napi::String>().Utf8Value();
  if (dir != "ingress" && dir != "egress") {
    Napi::TypeError::New(info.Env(), "direction must be 'ingress' or 'egress'")
        .ThrowAsJavaScriptException();
    return false;
  }
  if (!ArgInt(info, first_opt, "handle", &handle) ||
      !ArgInt(info, first_opt + 1, "priority", &prio))
    return false;
  hook->ifindex = ifindex;
  hook->attach_point = dir == "ingress" ? BPF_TC_INGRESS : BPF_TC_EGRESS;
  opts->handle = handle;
  opts->priority = prio;
  return true;
}

// tcAttach(ifindex, dir, progFd, handle, priority) -> program id
static Napi::Value TcAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  LIBBPF_OPTS(bpf_tc_hook, hook);
  LIBBPF_OPTS(bpf_tc_opts, opts);
  int64_t prog_fd;
  if (!HookArgs(info, &hook, &opts, 3) || !ArgInt(info, 2, "progFd", &prog_fd))
    return env.Undefined();
  int err = bpf_tc_hook_create(&hook);
  if (err && err != -EEXIST)
    return Throw(env, "create clsact qdisc on ifindex " + std::to_string(hook.ifindex), err);
  opts.prog_fd = prog_fd;
  opts.flags = BPF_TC_F_REPLACE;
  err = bpf_tc_attach(&hook, &opts);
  if (err) return Throw(env, "attach tc filter on ifindex " + std::to_string(hook.ifindex), err);
  return Napi::Number::New(env, opts.prog_id);
}

// tcDetach(ifindex, dir, handle, priority) -> true, or false when not there
static Napi::Value TcDetach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  LIBBPF_OPTS(bpf_tc_hook, hook);
  LIBBPF_OPTS(bpf_tc_opts, opts);
  if (!HookArgs(info, &hook, &opts, 2)) return env.Undefined();
  int err = bpf_tc_detach(&hook, &opts);
  if (err == -ENOENT || err == -EINVAL || err == -ENODEV) return Napi::Boolean::New(env, false);
  if (err) return Throw(env, "detach tc filter on ifindex " + std::to_string(hook.ifindex), err);
  return Napi::Boolean::New(env, true);
}

// tcQuery(ifindex, dir, handle, priority) -> program id, or 0 when none
static Napi::Value TcQuery(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  LIBBPF_OPTS(bpf_tc_hook, hook);
  LIBBPF_OPTS(bpf_tc_opts, opts);
  if (!HookArgs(info, &hook, &opts, 2)) return env.Undefined();
  int err = bpf_tc_query(&hook, &opts);
  if (err == -ENOENT || err == -EINVAL || err == -ENODEV) return Napi::Number::New(env, 0);
  if (err) return Throw(env, "query tc filter on ifindex " + std::to_string(hook.ifindex), err);
  return Napi::Number::New(env, opts.prog_id);
}

static bool IfindexArg(const Napi::CallbackInfo& info, int64_t* ifindex) {
  if (!ArgInt(info, 0, "ifindex", ifindex)) return false;
  if (*ifindex <= 0) {
    Napi::TypeError::New(info.Env(), "ifindex must be positive").ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

// tcHookCreate(ifindex) -> true when this call created the clsact qdisc,
// false when one was already there
static Napi::Value TcHookCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t ifindex;
  if (!IfindexArg(info, &ifindex)) return env.Undefined();
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(ifindex),
              .attach_point = BPF_TC_INGRESS);
  int err = bpf_tc_hook_create(&hook);
  if (err == -EEXIST) return Napi::Boolean::New(env, false);
  if (err) return Throw(env, "create clsact qdisc on ifindex " + std::to_string(ifindex), err);
  return Napi::Boolean::New(env, true);
}

// tcHookDestroy(ifindex) -> true when a clsact qdisc was deleted, false when
// there was none. Deleting the qdisc deletes every filter in it, ingress and
// egress, ours or not: callers check tcFilters first.
static Napi::Value TcHookDestroy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t ifindex;
  if (!IfindexArg(info, &ifindex)) return env.Undefined();
  // INGRESS|EGRESS deletes the qdisc; either alone would flush that hook's filters.
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(ifindex),
              .attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS));
  int err = bpf_tc_hook_destroy(&hook);
  if (err == -ENOENT || err == -EINVAL) return Napi::Boolean::New(env, false);
  if (err) return Throw(env, "delete clsact qdisc on ifindex " + std::to_string(ifindex), err);
  return Napi::Boolean::New(env, true);
}

// tcFilters(ifindex, dir) -> every filter on the clsact hook, through an
// RTM_GETTFILTER dump: [{ kind, chain, priority, protocol, handle }]. Each
// classifier instance (chain, priority, protocol) is reported once with
// handle 0, then once per filter it holds. No clsact (or no such interface:
// the kernel answers the dump with nothing): an empty list.
static Napi::Value TcFilters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t ifindex;
  if (!IfindexArg(info, &ifindex)) return env.Undefined();
  std::string dir;
  if (!ArgString(info, 1, "direction", &dir)) return env.Undefined();
  if (dir != "ingress" && dir != "egress") {
    Napi::TypeError::New(env, "direction must be 'ingress' or 'egress'").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const std::string what = "list tc " + dir + " filters on ifindex " + std::to_string(ifindex);
  Fd sock(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (sock.get() < 0) return Throw(env, what, errno);
  struct {
    struct nlmsghdr nh;
    struct tcmsg tc;
  } req = {};
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct tcmsg));
  req.nh.nlmsg_type = RTM_GETTFILTER;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.nh.nlmsg_seq = 1;
  req.tc.tcm_family = AF_UNSPEC;
  req.tc.tcm_ifindex = static_cast<int>(ifindex);
  req.tc.tcm_parent = TC_H_MAKE(TC_H_CLSACT, dir == "ingress" ? TC_H_MIN_INGRESS : TC_H_MIN_EGRESS);
  struct sockaddr_nl sa = {};
  sa.nl_family = AF_NETLINK;
  if (sendto(sock.get(), &req, req.nh.nlmsg_len, 0, reinterpret_cast<struct sockaddr*>(&sa), sizeof(sa)) < 0)
    return Throw(env, what, errno);

  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  std::vector<char> buf(64 * 1024);
  for (;;) {
    ssize_t len = recv(sock.get(), buf.data(), buf.size(), 0);
    if (len < 0) {
      if (errno == EINTR) continue;
      return Throw(env, what, errno);
    }
    if (len == 0) return Throw(env, what, EPROTO);
    int rest = static_cast<int>(len);
    for (struct nlmsghdr* nh = reinterpret_cast<struct nlmsghdr*>(buf.data()); NLMSG_OK(nh, rest);
         nh = NLMSG_NEXT(nh, rest)) {
      if (nh->nlmsg_seq != 1) continue;
      if (nh->nlmsg_type == NLMSG_DONE) return out;
      if (nh->nlmsg_type == NLMSG_ERROR) {
        auto* e = static_cast<struct nlmsgerr*>(NLMSG_DATA(nh));
        if (e->error == 0) continue;
        return Throw(env, what, -e->error);
      }
      if (nh->nlmsg_type != RTM_NEWTFILTER || nh->nlmsg_len < NLMSG_LENGTH(sizeof(struct tcmsg))) continue;
      auto* tc = static_cast<struct tcmsg*>(NLMSG_DATA(nh));
      std::string kind;
      uint32_t chain = 0;
      int alen = static_cast<int>(nh->nlmsg_len - NLMSG_LENGTH(sizeof(struct tcmsg)));
      for (struct rtattr* a = reinterpret_cast<struct rtattr*>(reinterpret_cast<char*>(tc) + NLMSG_ALIGN(sizeof(struct tcmsg)));
           RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
        if (a->rta_type == TCA_KIND && RTA_PAYLOAD(a) > 0)
          kind.assign(static_cast<const char*>(RTA_DATA(a)), strnlen(static_cast<const char*>(RTA_DATA(a)), RTA_PAYLOAD(a)));
        else if (a->rta_type == TCA_CHAIN && RTA_PAYLOAD(a) >= sizeof(uint32_t))
          chain = *static_cast<const uint32_t*>(RTA_DATA(a));
      }
      Napi::Object o = Napi::Object::New(env);
      o.Set("kind", kind);
      o.Set("chain", chain);
      o.Set("priority", TC_H_MAJ(tc->tcm_info) >> 16);
      o.Set("protocol", ntohs(static_cast<uint16_t>(TC_H_MIN(tc->tcm_info))));
      o.Set("handle", tc->tcm_handle);
      out.Set(n++, o);
    }
  }
}

void InitTc(Napi::Env env, Napi::Object exports) {
  exports.Set("tcHookCreate", Napi::Function::New(env, TcHookCreate));
  exports.Set("tcHookDestroy", Napi::Function::New(env, TcHookDestroy));
  exports.Set("tcFilters", Napi::Function::New(env, TcFilters));
  exports.Set("tcAttach", Napi::Function::New(env, TcAttach));
  exports.Set("tcDetach", Napi::Function::New(env, TcDetach));
  exports.Set("tcQuery", Napi::Function::New(env, TcQuery));
}

}  // namespace bpfproxy
