// SPDX-License-Identifier: Apache-2.0
// One netlink dump: send the request, read every answer to it, hand each
// message to a callback. Shared by the interface, route and TC filter dumps
// (rtnetlink) and the kernel conntrack dump (ctnetlink), so the read loop and
// its error handling live once.
#pragma once

#include <errno.h>
#include <linux/netlink.h>
#include <sys/socket.h>

#include <functional>
#include <vector>

#include "common.h"

namespace bpfproxy {

// Returns 0 when the dump ended (NLMSG_DONE), or a positive errno; *step says
// what failed ("open", "send", "read"), for the caller's error message.
inline int NetlinkDump(int protocol, const void* req, size_t len,
                       const std::function<void(const struct nlmsghdr*)>& each, const char** step) {
  Fd sock(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol));
  *step = protocol == NETLINK_ROUTE ? "open rtnetlink socket for" : "open netlink socket for";
  if (sock.get() < 0) return errno;
  struct sockaddr_nl sa = {};
  sa.nl_family = AF_NETLINK;
  *step = "send";
  if (sendto(sock.get(), req, len, 0, reinterpret_cast<struct sockaddr*>(&sa), sizeof(sa)) < 0) return errno;
  const __u32 seq = static_cast<const struct nlmsghdr*>(req)->nlmsg_seq;
  std::vector<char> buf(64 * 1024);
  *step = "read";
  for (;;) {
    ssize_t got = recv(sock.get(), buf.data(), buf.size(), 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (got == 0) return EPROTO;
    int rest = static_cast<int>(got);
    for (auto* nh = reinterpret_cast<struct nlmsghdr*>(buf.data()); NLMSG_OK(nh, rest); nh = NLMSG_NEXT(nh, rest)) {
      if (nh->nlmsg_seq != seq) continue;
      if (nh->nlmsg_type == NLMSG_DONE) return 0;
      if (nh->nlmsg_type == NLMSG_ERROR) {
        auto* e = static_cast<struct nlmsgerr*>(NLMSG_DATA(nh));
        if (e->error == 0) continue;
        return -e->error;
      }
      each(nh);
    }
  }
}

inline int RtnlDump(const void* req, size_t len, const std::function<void(const struct nlmsghdr*)>& each,
                    const char** step) {
  return NetlinkDump(NETLINK_ROUTE, req, len, each, step);
}

}  // namespace bpfproxy
