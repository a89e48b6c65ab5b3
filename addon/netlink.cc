// SPDX-License-Identifier: Apache-2.0
// Interfaces and their changes through rtnetlink, in the network namespace
// of the thread that asks (the socket stays in the namespace it was opened
// in, whatever the thread does afterwards).
//
// links(): one RTM_GETLINK dump, with each interface's kind (IFLA_LINKINFO /
// IFLA_INFO_KIND: "veth", "bridge", ... or "" for a physical device).
//
// watchNetlink(callback): a socket subscribed to RTNLGRP_LINK and
// RTNLGRP_IPV4_ROUTE, read by a thread of its own; what it reads reaches
// JavaScript through a thread-safe function, one callback per batch read:
//   callback([{ event: 'newlink' | 'dellink', index, name, kind, up },
//             { event: 'newroute' | 'delroute', dst, prefixLen, oif },
//             { event: 'overflow' }  // the kernel dropped events (ENOBUFS): resync
//             { event: 'error', errno }  // the socket failed; no more events
//            ])
// Every event also has `at`: CLOCK_MONOTONIC ms when the thread read it.
// The returned object's close() stops the thread (and is safe to call twice).
// The watcher does not keep Node's event loop alive.
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common.h"
#include "rtnl.h"

namespace bpfproxy {

struct NlEvent {
  std::string event;
  // links
  uint32_t index = 0;
  std::string name;
  std::string kind;
  bool up = false;
  // routes
  std::string dst;
  uint32_t prefix_len = 0;
  uint32_t oif = 0;
  int err = 0;
  // CLOCK_MONOTONIC ms when the reader thread received it
  double at_ms = 0;
};

static double MonotonicMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

static std::string AttrString(const struct rtattr* a) {
  const char* p = static_cast<const char*>(RTA_DATA(a));
  return std::string(p, strnlen(p, RTA_PAYLOAD(a)));
}

// RTM_NEWLINK / RTM_DELLINK -> event; false when the message is too short.
static bool ParseLink(const struct nlmsghdr* nh, NlEvent* ev) {
  if (nh->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifinfomsg))) return false;
  auto* ifi = static_cast<const struct ifinfomsg*>(NLMSG_DATA(nh));
  ev->event = nh->nlmsg_type == RTM_DELLINK ? "dellink" : "newlink";
  ev->index = static_cast<uint32_t>(ifi->ifi_index);
  ev->up = (ifi->ifi_flags & IFF_UP) != 0;
  int len = static_cast<int>(IFLA_PAYLOAD(nh));
  for (auto* a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
    if (a->rta_type == IFLA_IFNAME && RTA_PAYLOAD(a) > 0) {
      ev->name = AttrString(a);
    } else if (a->rta_type == IFLA_LINKINFO) {
      int ilen = static_cast<int>(RTA_PAYLOAD(a));
      for (auto* b = static_cast<struct rtattr*>(RTA_DATA(a)); RTA_OK(b, ilen); b = RTA_NEXT(b, ilen)) {
        if (b->rta_type == IFLA_INFO_KIND && RTA_PAYLOAD(b) > 0) ev->kind = AttrString(b);
      }
    }
  }
  return true;
}

// RTM_NEWROUTE / RTM_DELROUTE -> event for unicast IPv4 and IPv6 routes of
// the main table that name an output interface (what routes4() and
// routes6() list).
static bool ParseRoute(const struct nlmsghdr* nh, NlEvent* ev) {
  if (nh->nlmsg_len < NLMSG_LENGTH(sizeof(struct rtmsg))) return false;
  auto* rt = static_cast<const struct rtmsg*>(NLMSG_DATA(nh));
  const bool v6 = rt->rtm_family == AF_INET6;
  if ((rt->rtm_family != AF_INET && !v6) || rt->rtm_type != RTN_UNICAST || rt->rtm_dst_len > (v6 ? 128 : 32))
    return false;
  const size_t alen = v6 ? 16 : 4;
  uint32_t table = rt->rtm_table;
  uint8_t dst[16] = {};
  int oif = 0;
  int len = static_cast<int>(RTM_PAYLOAD(nh));
  for (auto* a = RTM_RTA(rt); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
    if (a->rta_type == RTA_TABLE && RTA_PAYLOAD(a) >= 4)
      memcpy(&table, RTA_DATA(a), 4);
    else if (a->rta_type == RTA_DST && RTA_PAYLOAD(a) >= alen)
      memcpy(dst, RTA_DATA(a), alen);
    else if (a->rta_type == RTA_OIF && RTA_PAYLOAD(a) >= 4)
      memcpy(&oif, RTA_DATA(a), 4);
  }
  if (table != RT_TABLE_MAIN || oif <= 0) return false;
  char text[INET6_ADDRSTRLEN];
  inet_ntop(v6 ? AF_INET6 : AF_INET, dst, text, sizeof(text));
  ev->event = nh->nlmsg_type == RTM_DELROUTE ? "delroute" : "newroute";
  ev->dst = text;
  ev->prefix_len = rt->rtm_dst_len;
  ev->oif = static_cast<uint32_t>(oif);
  return true;
}

// A dump's routes of one family only: without IPv6 in the kernel, the
// AF_INET6 request falls back to the all-families dump.
template <int Family>
static bool ParseRouteOf(const struct nlmsghdr* nh, NlEvent* ev) {
  if (nh->nlmsg_len < NLMSG_LENGTH(sizeof(struct rtmsg))) return false;
  if (static_cast<const struct rtmsg*>(NLMSG_DATA(nh))->rtm_family != Family) return false;
  return ParseRoute(nh, ev);
}

static Napi::Object EventToJs(Napi::Env env, const NlEvent& e) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("event", e.event);
  o.Set("at", e.at_ms);
  if (e.event == "newlink" || e.event == "dellink") {
    o.Set("index", e.index);
    o.Set("name", e.name);
    o.Set("kind", e.kind);
    o.Set("up", e.up);
  } else if (e.event == "newroute" || e.event == "delroute") {
    o.Set("dst", e.dst);
    o.Set("prefixLen", e.prefix_len);
    o.Set("oif", e.oif);
  } else if (e.event == "error") {
    o.Set("errno", e.err);
  }
  return o;
}

// Dump one rtnetlink table (links or IPv4 routes) into a JS array: messages
// of `type` that `parse` accepts, converted by `put`.
template <typename Msg>
static Napi::Value DumpEvents(Napi::Env env, uint16_t get, uint16_t type, uint8_t family, const char* what,
                              bool (*parse)(const struct nlmsghdr*, NlEvent*),
                              void (*put)(Napi::Object&, const NlEvent&)) {
  struct {
    struct nlmsghdr nh;
    Msg body;
  } req = {};
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(Msg));
  req.nh.nlmsg_type = get;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.nh.nlmsg_seq = 1;
  reinterpret_cast<uint8_t*>(&req.body)[0] = family;  // ifi_family / rtm_family: the first byte of both
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  const char* step;
  int err = RtnlDump(
      &req, req.nh.nlmsg_len,
      [&](const struct nlmsghdr* nh) {
        NlEvent ev;
        if (nh->nlmsg_type != type || !parse(nh, &ev)) return;
        Napi::Object o = Napi::Object::New(env);
        put(o, ev);
        out.Set(n++, o);
      },
      &step);
  if (err) return Throw(env, std::string(step) + " the " + what + " dump", err);
  return out;
}

// links() -> [{ index, name, kind, up }]
static Napi::Value Links(const Napi::CallbackInfo& info) {
  return DumpEvents<struct ifinfomsg>(info.Env(), RTM_GETLINK, RTM_NEWLINK, AF_UNSPEC, "interface", ParseLink,
                                      [](Napi::Object& o, const NlEvent& ev) {
                                        o.Set("index", ev.index);
                                        o.Set("name", ev.name);
                                        o.Set("kind", ev.kind);
                                        o.Set("up", ev.up);
                                      });
}

// routes4() -> [{ dst, prefixLen, oif }]: unicast IPv4 routes of the main
// table that name an output interface (the pod source check reads them).
static Napi::Value Routes4(const Napi::CallbackInfo& info) {
  return DumpEvents<struct rtmsg>(info.Env(), RTM_GETROUTE, RTM_NEWROUTE, AF_INET, "route", ParseRouteOf<AF_INET>,
                                  [](Napi::Object& o, const NlEvent& ev) {
                                    o.Set("dst", ev.dst);
                                    o.Set("prefixLen", ev.prefix_len);
                                    o.Set("oif", ev.oif);
                                  });
}

// routes6() -> [{ dst, prefixLen, oif }]: the same for IPv6 (the IPv6 pod
// source check reads them).
static Napi::Value Routes6(const Napi::CallbackInfo& info) {
  return DumpEvents<struct rtmsg>(info.Env(), RTM_GETROUTE, RTM_NEWROUTE, AF_INET6, "IPv6 route",
                                  ParseRouteOf<AF_INET6>, [](Napi::Object& o, const NlEvent& ev) {
                                    o.Set("dst", ev.dst);
                                    o.Set("prefixLen", ev.prefix_len);
                                    o.Set("oif", ev.oif);
                                  });
}

class NetlinkWatcher : public Napi::ObjectWrap<NetlinkWatcher> {
 public:
  static Napi::FunctionReference* ctor;

  static Napi::Function Define(Napi::Env env) {
    Napi::Function f = DefineClass(env, "NetlinkWatcher", {InstanceMethod("close", &NetlinkWatcher::Close)});
    ctor = new Napi::FunctionReference(Napi::Persistent(f));
    return f;
  }

  explicit NetlinkWatcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NetlinkWatcher>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction()) {
      Napi::TypeError::New(env, "watchNetlink(callback): callback must be a function").ThrowAsJavaScriptException();
      return;
    }
    Fd sock(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE));
    if (sock.get() < 0) {
      MakeError(env, "open rtnetlink socket", errno).ThrowAsJavaScriptException();
      return;
    }
    // Room for a burst (hundreds of pods starting at once) before ENOBUFS.
    int rcvbuf = 4 << 20;
    setsockopt(sock.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_nl sa = {};
    sa.nl_family = AF_NETLINK;
    sa.nl_groups = RTMGRP_LINK | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE;
    if (bind(sock.get(), reinterpret_cast<struct sockaddr*>(&sa), sizeof(sa)) < 0) {
      MakeError(env, "subscribe to rtnetlink link and route events", errno).ThrowAsJavaScriptException();
      return;
    }
    Fd stop(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (stop.get() < 0) {
      MakeError(env, "create eventfd for the netlink watcher", errno).ThrowAsJavaScriptException();
      return;
    }
    tsfn_ = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "bpfproxy-netlink", 0, 1);
    tsfn_.Unref(env);
    sock_ = std::move(sock);
    stop_ = std::move(stop);
    thread_ = std::thread(&NetlinkWatcher::Run, this, sock_.get(), stop_.get(), tsfn_);
    running_ = true;
  }

  ~NetlinkWatcher() override { Stop(); }

 private:
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Stop();
    return info.Env().Undefined();
  }

  void Stop() {
    if (!running_) return;
    running_ = false;
    uint64_t one = 1;
    ssize_t w = write(stop_.get(), &one, sizeof(one));
    (void)w;
    if (thread_.joinable()) thread_.join();
    sock_.reset();
    stop_.reset();
  }

  using Batch = std::vector<NlEvent>;

  static void Deliver(Napi::ThreadSafeFunction& tsfn, Batch* batch) {
    napi_status st = tsfn.BlockingCall(batch, [](Napi::Env env, Napi::Function cb, Batch* b) {
      std::unique_ptr<Batch> own(b);
      if (env == nullptr || cb.IsEmpty()) return;
      Napi::Array arr = Napi::Array::New(env, b->size());
      for (size_t i = 0; i < b->size(); i++) arr.Set(static_cast<uint32_t>(i), EventToJs(env, (*b)[i]));
      cb.Call({arr});
    });
    if (st != napi_ok) delete batch;
  }

  // The reader thread: wait for the socket or the stop signal, read all
  // that is there, hand it over as one batch.
  static void Run(NetlinkWatcher* self, int sock, int stop, Napi::ThreadSafeFunction tsfn) {
    (void)self;
    std::vector<char> buf(64 * 1024);
    for (;;) {
      struct pollfd p[2] = {{sock, POLLIN, 0}, {stop, POLLIN, 0}};
      int r = poll(p, 2, -1);
      if (r < 0) {
        if (errno == EINTR) continue;
        auto* b = new Batch(1);
        (*b)[0].event = "error";
        (*b)[0].err = errno;
        Deliver(tsfn, b);
        break;
      }
      if (p[1].revents) break;
      auto* batch = new Batch();
      bool failed = false;
      for (;;) {
        ssize_t len = recv(sock, buf.data(), buf.size(), 0);
        if (len < 0) {
          if (errno == EINTR) continue;
          if (errno == EAGAIN || errno == EWOULDBLOCK) break;
          NlEvent e;
          if (errno == ENOBUFS) {
            e.event = "overflow";
            batch->push_back(e);
            continue;
          }
          e.event = "error";
          e.err = errno;
          batch->push_back(e);
          failed = true;
          break;
        }
        int rest = static_cast<int>(len);
        const double at = MonotonicMs();
        for (auto* nh = reinterpret_cast<struct nlmsghdr*>(buf.data()); NLMSG_OK(nh, rest); nh = NLMSG_NEXT(nh, rest)) {
          NlEvent e;
          e.at_ms = at;
          bool ok = false;
          if (nh->nlmsg_type == RTM_NEWLINK || nh->nlmsg_type == RTM_DELLINK)
            ok = ParseLink(nh, &e);
          else if (nh->nlmsg_type == RTM_NEWROUTE || nh->nlmsg_type == RTM_DELROUTE)
            ok = ParseRoute(nh, &e);
          if (ok) batch->push_back(std::move(e));
        }
      }
      if (batch->empty())
        delete batch;
      else
        Deliver(tsfn, batch);
      if (failed) break;
    }
    tsfn.Release();
  }

  Fd sock_;
  Fd stop_;
  std::thread thread_;
  Napi::ThreadSafeFunction tsfn_;
  bool running_ = false;
};

Napi::FunctionReference* NetlinkWatcher::ctor = nullptr;

// watchNetlink(callback) -> watcher with close()
static Napi::Value WatchNetlink(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) {
    Napi::TypeError::New(env, "watchNetlink(callback): callback must be a function").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return NetlinkWatcher::ctor->New({info[0]});
}

void InitNetlink(Napi::Env env, Napi::Object exports) {
  NetlinkWatcher::Define(env);
  exports.Set("links", Napi::Function::New(env, Links));
  exports.Set("routes4", Napi::Function::New(env, Routes4));
  exports.Set("routes6", Napi::Function::New(env, Routes6));
  exports.Set("watchNetlink", Napi::Function::New(env, WatchNetlink));
}

}  // namespace bpfproxy
