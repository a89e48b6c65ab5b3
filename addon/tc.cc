// SPDX-License-Identifier: Apache-2.0
// TC (clsact) attach/detach/query. Our filters carry a fixed handle and
// priority chosen by the caller, so other filters on the interface are never
// touched; attaching again replaces ours atomically. The clsact qdisc itself
// can be created explicitly (to learn whether it was already there), listed
// (every filter on a hook, whoever put it there) and deleted; deciding when
// deleting it is safe is the caller's business.
//
// tcx (kernel >= 6.6): programs attached through BPF links
// (BPF_LINK_CREATE with BPF_TCX_INGRESS / BPF_TCX_EGRESS). A link is an
// object of its own: it can be pinned, adopted by the next process
// (BPF_OBJ_GET), swapped to another program atomically (BPF_LINK_UPDATE) and
// detached (BPF_LINK_DETACH); the kernel detaches it when its interface goes
// away. The system's linux/bpf.h (and libbpf 1.1) predate tcx, so the
// attribute layouts used here are spelled out below, as in the kernel's
// include/uapi/linux/bpf.h of 6.6 and later.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/bpf.h>
#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include <cstddef>
#include <cstring>
#include <vector>

#include "common.h"
#include "rtnl.h"

namespace bpfproxy {

static bool HookArgs(const Napi::CallbackInfo& info, struct bpf_tc_hook* hook, struct bpf_tc_opts* opts,
                     size_t first_opt) {
  int64_t ifindex, handle, prio;
  if (!ArgInt(info, 0, "ifindex", &ifindex)) return false;
  if (info.Length() < 2 || !info[1].IsString()) {
    Napi::TypeError::New(info.Env(), "direction must be 'ingress' or 'egress'").ThrowAsJavaScriptException();
    return false;
  }
  std::string dir = info[1].As<Napi::String>().Utf8Value();
  if (dir != "ingress" && dir != "egress") {
    Napi::TypeError::New(info.Env(), "direction must be 'ingress' or 'egress'").ThrowAsJavaScriptException();
    return false;
  }
  if (!ArgInt(info, first_opt, "handle", &handle) || !ArgInt(info, first_opt + 1, "priority", &prio)) return false;
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
  if (!HookArgs(info, &hook, &opts, 3) || !ArgInt(info, 2, "progFd", &prog_fd)) return env.Undefined();
  int err = bpf_tc_hook_create(&hook);
  if (err && err != -EEXIST) return Throw(env, "create clsact qdisc on ifindex " + std::to_string(hook.ifindex), err);
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
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(ifindex), .attach_point = BPF_TC_INGRESS);
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
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  const char* step;
  int err = RtnlDump(
      &req, req.nh.nlmsg_len,
      [&](const struct nlmsghdr* nh) {
        if (nh->nlmsg_type != RTM_NEWTFILTER || nh->nlmsg_len < NLMSG_LENGTH(sizeof(struct tcmsg))) return;
        auto* tc = static_cast<const struct tcmsg*>(NLMSG_DATA(nh));
        std::string kind;
        uint32_t chain = 0;
        int alen = static_cast<int>(nh->nlmsg_len - NLMSG_LENGTH(sizeof(struct tcmsg)));
        for (const struct rtattr* a = reinterpret_cast<const struct rtattr*>(reinterpret_cast<const char*>(tc) +
                                                                             NLMSG_ALIGN(sizeof(struct tcmsg)));
             RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
          if (a->rta_type == TCA_KIND && RTA_PAYLOAD(a) > 0)
            kind.assign(static_cast<const char*>(RTA_DATA(a)),
                        strnlen(static_cast<const char*>(RTA_DATA(a)), RTA_PAYLOAD(a)));
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
      },
      &step);
  if (err) return Throw(env, what + " (" + step + ")", err);
  return out;
}

// ---- tcx ------------------------------------------------------------------

// Values of the 6.6+ uapi the system header does not have yet.
constexpr uint32_t kTcxIngress = 46;    // BPF_TCX_INGRESS (BPF_LSM_CGROUP + 3)
constexpr uint32_t kTcxEgress = 47;     // BPF_TCX_EGRESS
constexpr uint32_t kLinkTypeTcx = 11;   // BPF_LINK_TYPE_TCX
constexpr uint32_t kLinkTypeXdp = 6;    // BPF_LINK_TYPE_XDP (its ifindex sits where tcx's does)
constexpr uint32_t kFBefore = 1U << 3;  // BPF_F_BEFORE

// bpf_attr.link_create with its tcx member.
struct TcxLinkCreate {
  uint32_t prog_fd;
  uint32_t target_ifindex;
  uint32_t attach_type;
  uint32_t flags;
  uint32_t relative_fd;  // tcx.relative_fd / relative_id
  uint32_t pad;
  uint64_t expected_revision;
};
static_assert(offsetof(TcxLinkCreate, relative_fd) == 16, "link_create.tcx at 16");
static_assert(offsetof(TcxLinkCreate, expected_revision) == 24, "tcx.expected_revision at 24");

// bpf_attr.query with the mprog fields (6.6).
struct MprogQuery {
  uint32_t target_ifindex;
  uint32_t attach_type;
  uint32_t query_flags;
  uint32_t attach_flags;
  uint64_t prog_ids;
  uint32_t count;
  uint32_t pad;
  uint64_t prog_attach_flags;
  uint64_t link_ids;
  uint64_t link_attach_flags;
  uint64_t revision;
};
static_assert(offsetof(MprogQuery, link_ids) == 40, "query.link_ids at 40");
static_assert(sizeof(MprogQuery) == 64, "query is 64 bytes");

// The head of struct bpf_link_info and its tcx member.
struct TcxLinkInfo {
  uint32_t type;
  uint32_t id;
  uint32_t prog_id;
  uint32_t pad;
  uint32_t ifindex;  // 0 once the interface is gone
  uint32_t attach_type;
};
static_assert(offsetof(TcxLinkInfo, ifindex) == 16, "link_info.tcx at 16");

// A zeroed bpf_attr large enough for any command, with T laid over its start.
template <typename T>
struct Attr {
  alignas(8) unsigned char raw[sizeof(union bpf_attr) > sizeof(T) ? sizeof(union bpf_attr) : sizeof(T)] = {};
  T* get() { return reinterpret_cast<T*>(raw); }
};

static long SysBpf(int cmd, void* attr, size_t size) {
  long r;
  do {
    r = syscall(__NR_bpf, cmd, attr, size);
  } while (r < 0 && errno == EINTR);
  return r;
}

static bool TcxDirArg(const Napi::CallbackInfo& info, size_t i, uint32_t* attach_type) {
  std::string dir;
  if (!ArgString(info, i, "direction", &dir)) return false;
  if (dir != "ingress" && dir != "egress") {
    Napi::TypeError::New(info.Env(), "direction must be 'ingress' or 'egress'").ThrowAsJavaScriptException();
    return false;
  }
  *attach_type = dir == "ingress" ? kTcxIngress : kTcxEgress;
  return true;
}

// Query the tcx programs of one hook: [{ progId, linkId }] in the order they
// run (linkId 0: attached without a link). Returns false with errno on failure.
static bool TcxList(uint32_t ifindex, uint32_t attach_type, std::vector<std::pair<uint32_t, uint32_t>>* out, int* err) {
  std::vector<uint32_t> progs(64), links(64);
  for (;;) {
    Attr<MprogQuery> a;
    MprogQuery* q = a.get();
    q->target_ifindex = ifindex;
    q->attach_type = attach_type;
    q->prog_ids = reinterpret_cast<uintptr_t>(progs.data());
    q->link_ids = reinterpret_cast<uintptr_t>(links.data());
    q->count = static_cast<uint32_t>(progs.size());
    if (SysBpf(BPF_PROG_QUERY, a.raw, sizeof(a.raw)) < 0) {
      if (errno == ENOSPC && progs.size() < 65536) {
        progs.resize(progs.size() * 4);
        links.resize(links.size() * 4);
        continue;
      }
      *err = errno;
      return false;
    }
    out->clear();
    for (uint32_t i = 0; i < q->count && i < progs.size(); i++) out->emplace_back(progs[i], links[i]);
    return true;
  }
}

// tcxSupported() -> whether this kernel has tcx (asks for lo's tcx ingress
// programs: kernels before 6.6 do not know the attach type, EINVAL).
static Napi::Value TcxSupported(const Napi::CallbackInfo& info) {
  std::vector<std::pair<uint32_t, uint32_t>> l;
  int err = 0;
  if (TcxList(1, kTcxIngress, &l, &err)) return Napi::Boolean::New(info.Env(), true);
  if (err == EINVAL || err == ENODEV) return Napi::Boolean::New(info.Env(), false);
  return Throw(info.Env(), "probe for tcx (BPF_PROG_QUERY on lo)", err);
}

// tcxAttach(ifindex, dir, prog) -> LinkHandle. The link goes first on the
// hook (BPF_F_BEFORE without a relative: ahead of every other program).
static Napi::Value TcxAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t ifindex, prog_fd;
  uint32_t attach_type;
  if (!IfindexArg(info, &ifindex) || !TcxDirArg(info, 1, &attach_type) || !ArgFd(info, 2, "prog", &prog_fd))
    return env.Undefined();
  Attr<TcxLinkCreate> a;
  TcxLinkCreate* l = a.get();
  l->prog_fd = static_cast<uint32_t>(prog_fd);
  l->target_ifindex = static_cast<uint32_t>(ifindex);
  l->attach_type = attach_type;
  l->flags = kFBefore;
  std::string op = std::string("create tcx ") + (attach_type == kTcxIngress ? "ingress" : "egress") +
                   " link on ifindex " + std::to_string(ifindex);
  Fd fd(static_cast<int>(SysBpf(BPF_LINK_CREATE, a.raw, sizeof(a.raw))));
  if (fd.get() < 0) return Throw(env, op, errno);
  return NewLinkHandle(env, std::move(fd), op);
}

// tcxList(ifindex, dir) -> [{ progId, linkId }], in run order; an interface
// that is not there: ENODEV.
static Napi::Value TcxListJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t ifindex;
  uint32_t attach_type;
  if (!IfindexArg(info, &ifindex) || !TcxDirArg(info, 1, &attach_type)) return env.Undefined();
  std::vector<std::pair<uint32_t, uint32_t>> l;
  int err = 0;
  if (!TcxList(static_cast<uint32_t>(ifindex), attach_type, &l, &err)) {
    return Throw(env,
                 std::string("list tcx ") + (attach_type == kTcxIngress ? "ingress" : "egress") +
                     " programs on ifindex " + std::to_string(ifindex),
                 err);
  }
  Napi::Array out = Napi::Array::New(env, l.size());
  for (size_t i = 0; i < l.size(); i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("progId", l[i].first);
    o.Set("linkId", l[i].second);
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

// linkInfo(link) -> { type: 'tcx' | 'xdp' | 'other', id, progId, ifindex, direction }
// (ifindex 0: the interface is gone, the link is defunct).
static Napi::Value LinkInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  if (!ArgFd(info, 0, "link", &fd)) return env.Undefined();
  TcxLinkInfo li = {};
  uint32_t len = sizeof(li);
  int err = bpf_obj_get_info_by_fd(static_cast<int>(fd), &li, &len);
  if (err) return Throw(env, "link info of fd " + std::to_string(fd), errno);
  Napi::Object o = Napi::Object::New(env);
  bool tcx = li.type == kLinkTypeTcx;
  bool xdp = li.type == kLinkTypeXdp;
  o.Set("type", tcx ? "tcx" : xdp ? "xdp" : "other");
  o.Set("id", li.id);
  o.Set("progId", li.prog_id);
  o.Set("ifindex", tcx || xdp ? li.ifindex : 0);
  if (tcx)
    o.Set("direction", li.attach_type == kTcxIngress ? "ingress" : li.attach_type == kTcxEgress ? "egress" : "?");
  return o;
}

// linkOpen(path) -> LinkHandle of the BPF link pinned there (EINVAL if the
// pin is something else).
static Napi::Value LinkOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  if (!ArgString(info, 0, "path", &path)) return env.Undefined();
  Fd fd(bpf_obj_get(path.c_str()));
  if (fd.get() < 0) return Throw(env, "open pinned link " + path, errno);
  return NewLinkHandle(env, std::move(fd), "open pinned link " + path);
}

// linkById(id) -> LinkHandle of the link with that id.
static Napi::Value LinkById(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t id;
  if (!ArgInt(info, 0, "linkId", &id)) return env.Undefined();
  Fd fd(bpf_link_get_fd_by_id(static_cast<uint32_t>(id)));
  if (fd.get() < 0) return Throw(env, "open link id " + std::to_string(id), errno);
  return NewLinkHandle(env, std::move(fd), "open link id " + std::to_string(id));
}

// linkUpdate(link, prog, expectedProg?) -> put progFd in the link's
// place atomically; with expectedProgFd only if the link still runs that one.
static Napi::Value LinkUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t link_fd, prog_fd, old_fd = -1;
  if (!ArgFd(info, 0, "link", &link_fd) || !ArgFd(info, 1, "prog", &prog_fd)) return env.Undefined();
  if (info.Length() > 2 && !info[2].IsUndefined() && !ArgFd(info, 2, "expectedProg", &old_fd)) return env.Undefined();
  LIBBPF_OPTS(bpf_link_update_opts, opts);
  if (old_fd >= 0) {
    opts.flags = BPF_F_REPLACE;
    opts.old_prog_fd = static_cast<uint32_t>(old_fd);
  }
  int err = bpf_link_update(static_cast<int>(link_fd), static_cast<int>(prog_fd), &opts);
  if (err) return Throw(env, "update link fd " + std::to_string(link_fd), errno);
  return env.Undefined();
}

// linkDetach(link) -> true, or false when it was detached already (its
// interface gone, or detached by someone else).
static Napi::Value LinkDetach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t link_fd;
  if (!ArgFd(info, 0, "link", &link_fd)) return env.Undefined();
  if (bpf_link_detach(static_cast<int>(link_fd)) == 0) return Napi::Boolean::New(env, true);
  if (errno == ENOLINK || errno == ENOENT || errno == ENODEV) return Napi::Boolean::New(env, false);
  return Throw(env, "detach link fd " + std::to_string(link_fd), errno);
}

void InitTc(Napi::Env env, Napi::Object exports) {
  exports.Set("tcxSupported", Napi::Function::New(env, TcxSupported));
  exports.Set("tcxAttach", Napi::Function::New(env, TcxAttach));
  exports.Set("tcxList", Napi::Function::New(env, TcxListJs));
  exports.Set("linkInfo", Napi::Function::New(env, LinkInfo));
  exports.Set("linkById", Napi::Function::New(env, LinkById));
  exports.Set("linkOpen", Napi::Function::New(env, LinkOpen));
  exports.Set("linkUpdate", Napi::Function::New(env, LinkUpdate));
  exports.Set("linkDetach", Napi::Function::New(env, LinkDetach));
  exports.Set("tcHookCreate", Napi::Function::New(env, TcHookCreate));
  exports.Set("tcHookDestroy", Napi::Function::New(env, TcHookDestroy));
  exports.Set("tcFilters", Napi::Function::New(env, TcFilters));
  exports.Set("tcAttach", Napi::Function::New(env, TcAttach));
  exports.Set("tcDetach", Napi::Function::New(env, TcDetach));
  exports.Set("tcQuery", Napi::Function::New(env, TcQuery));
}

}  // namespace bpfproxy
