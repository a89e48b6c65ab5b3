// SPDX-License-Identifier: Apache-2.0
// The kernel's own connection tracking, read through ctnetlink, in the
// network namespace of the thread that asks. Taking over from kube-proxy,
// the agent copies the kernel's NAT'd service flows into its own conntrack
// (src/dataplane/bpf/adopt.ts), so they keep their backend.
//
// kernelConntrack({ translatedOnly?, family? }) -> [{ proto, src, dst, sport, dport,  // original direction
//                         rsrc, rdst, rsport, rdport,           // reply direction
//                         status, timeout, tcpState, tcpFlags, tcpFlagsReply, zone }]
// One IPCTNL_MSG_CT_GET dump of the IPv4 table (family 6: the IPv6 one),
// TCP and UDP entries only;
// with translatedOnly, only those the kernel destination-NAT'd (the reply
// does not come from where the client sent it), as service flows are: a
// node's conntrack is mostly other flows, and they are not turned into JS
// objects then.
// Addresses are dotted quads (IPv6: RFC 5952 text), ports host-order numbers, status the
// IPS_* bits, timeout the seconds left, tcpState the kernel's
// TCP_CONNTRACK_* and tcpFlags / tcpFlagsReply its IP_CT_TCP_FLAG_* of each
// direction (0 for UDP). Read only: nothing is changed or flushed.
#include <arpa/inet.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <string.h>

#include <string>

#include "common.h"
#include "rtnl.h"

namespace bpfproxy {

namespace {

struct Tuple {
  uint8_t src[16] = {}, dst[16] = {};  // network order; IPv4 in the first 4 bytes
  uint16_t sport = 0, dport = 0;       // network order
  uint8_t proto = 0;
  bool ip = false, ports = false;
};

struct Entry {
  Tuple orig, reply;
  uint32_t status = 0, timeout = 0, zone = 0;
  uint8_t tcp_state = 0;
  uint8_t tcp_flags_orig = 0, tcp_flags_reply = 0;
};

// Walk the attributes in [data, data + len): fn(type without flags, payload, payload length).
template <typename Fn>
void EachAttr(const void* data, int len, Fn fn) {
  auto* a = static_cast<const struct nlattr*>(data);
  while (len >= static_cast<int>(NLA_HDRLEN) && a->nla_len >= NLA_HDRLEN && a->nla_len <= len) {
    fn(a->nla_type & NLA_TYPE_MASK, reinterpret_cast<const uint8_t*>(a) + NLA_HDRLEN,
       static_cast<int>(a->nla_len - NLA_HDRLEN));
    int step = NLA_ALIGN(a->nla_len);
    len -= step;
    a = reinterpret_cast<const struct nlattr*>(reinterpret_cast<const uint8_t*>(a) + step);
  }
}

uint32_t Be32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

void ParseTuple(const uint8_t* data, int len, Tuple* t) {
  EachAttr(data, len, [&](int type, const uint8_t* p, int n) {
    if (type == CTA_TUPLE_IP) {
      EachAttr(p, n, [&](int ty, const uint8_t* q, int m) {
        if (ty == CTA_IP_V4_SRC && m >= 4) memcpy(t->src, q, 4);
        if (ty == CTA_IP_V4_DST && m >= 4) memcpy(t->dst, q, 4);
        if (ty == CTA_IP_V6_SRC && m >= 16) memcpy(t->src, q, 16);
        if (ty == CTA_IP_V6_DST && m >= 16) memcpy(t->dst, q, 16);
      });
      t->ip = true;
    } else if (type == CTA_TUPLE_PROTO) {
      EachAttr(p, n, [&](int ty, const uint8_t* q, int m) {
        if (ty == CTA_PROTO_NUM && m >= 1) t->proto = q[0];
        if (ty == CTA_PROTO_SRC_PORT && m >= 2) memcpy(&t->sport, q, 2);
        if (ty == CTA_PROTO_DST_PORT && m >= 2) memcpy(&t->dport, q, 2);
      });
      t->ports = true;
    }
  });
}

bool ParseEntry(const struct nlmsghdr* nh, int family, Entry* e) {
  if (nh->nlmsg_len < NLMSG_LENGTH(sizeof(struct nfgenmsg))) return false;
  if (NFNL_SUBSYS_ID(nh->nlmsg_type) != NFNL_SUBSYS_CTNETLINK || NFNL_MSG_TYPE(nh->nlmsg_type) != IPCTNL_MSG_CT_NEW)
    return false;
  auto* g = static_cast<const struct nfgenmsg*>(NLMSG_DATA(nh));
  if (g->nfgen_family != family) return false;
  const uint8_t* attrs = static_cast<const uint8_t*>(NLMSG_DATA(nh)) + NLMSG_ALIGN(sizeof(struct nfgenmsg));
  int len = static_cast<int>(nh->nlmsg_len) - static_cast<int>(NLMSG_LENGTH(NLMSG_ALIGN(sizeof(struct nfgenmsg))));
  EachAttr(attrs, len, [&](int type, const uint8_t* p, int n) {
    switch (type) {
      case CTA_TUPLE_ORIG:
        ParseTuple(p, n, &e->orig);
        break;
      case CTA_TUPLE_REPLY:
        ParseTuple(p, n, &e->reply);
        break;
      case CTA_STATUS:
        if (n >= 4) e->status = ntohl(Be32(p));
        break;
      case CTA_TIMEOUT:
        if (n >= 4) e->timeout = ntohl(Be32(p));
        break;
      case CTA_ZONE:
        if (n >= 2) {
          uint16_t z;
          memcpy(&z, p, 2);
          e->zone = ntohs(z);
        }
        break;
      case CTA_PROTOINFO:
        EachAttr(p, n, [&](int ty, const uint8_t* q, int m) {
          if (ty != CTA_PROTOINFO_TCP) return;
          EachAttr(q, m, [&](int t2, const uint8_t* r, int k) {
            if (t2 == CTA_PROTOINFO_TCP_STATE && k >= 1) e->tcp_state = r[0];
            // struct nf_ct_tcp_flags: flags, then mask
            if (t2 == CTA_PROTOINFO_TCP_FLAGS_ORIGINAL && k >= 1) e->tcp_flags_orig = r[0];
            if (t2 == CTA_PROTOINFO_TCP_FLAGS_REPLY && k >= 1) e->tcp_flags_reply = r[0];
          });
        });
        break;
      default:
        break;
    }
  });
  const uint8_t proto = e->orig.proto;
  return e->orig.ip && e->orig.ports && e->reply.ip && e->reply.ports &&
         (proto == IPPROTO_TCP || proto == IPPROTO_UDP) && e->reply.proto == proto;
}

std::string Ip(int family, const uint8_t* a) {
  char text[INET6_ADDRSTRLEN];
  inet_ntop(family, a, text, sizeof(text));
  return text;
}

Napi::Value KernelConntrack(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object opts;
  bool present = false;
  if (!OptionsObject(info, 0, "kernelConntrack", {"translatedOnly", "family"}, &opts, &present)) return env.Undefined();
  bool translated_only = false;
  if (present && opts.Has("translatedOnly") && !opts.Get("translatedOnly").IsUndefined()) {
    if (!opts.Get("translatedOnly").IsBoolean()) {
      ThrowTypeError(env, "kernelConntrack: option translatedOnly must be a boolean");
      return env.Undefined();
    }
    translated_only = opts.Get("translatedOnly").As<Napi::Boolean>().Value();
  }
  int family = AF_INET;
  if (present && opts.Has("family") && !opts.Get("family").IsUndefined()) {
    Napi::Value f = opts.Get("family");
    if (!f.IsNumber() || (f.As<Napi::Number>().Int32Value() != 4 && f.As<Napi::Number>().Int32Value() != 6)) {
      ThrowTypeError(env, "kernelConntrack: option family must be 4 or 6");
      return env.Undefined();
    }
    family = f.As<Napi::Number>().Int32Value() == 6 ? AF_INET6 : AF_INET;
  }
  const size_t alen = family == AF_INET6 ? 16 : 4;
  struct {
    struct nlmsghdr nh;
    struct nfgenmsg g;
  } req = {};
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct nfgenmsg));
  req.nh.nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.nh.nlmsg_seq = 1;
  req.g.nfgen_family = static_cast<uint8_t>(family);
  req.g.version = NFNETLINK_V0;
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  const char* step;
  int err = NetlinkDump(
      NETLINK_NETFILTER, &req, req.nh.nlmsg_len,
      [&](const struct nlmsghdr* nh) {
        Entry e;
        if (!ParseEntry(nh, family, &e)) return;
        if (translated_only && memcmp(e.reply.src, e.orig.dst, alen) == 0 && e.reply.sport == e.orig.dport) return;
        Napi::Object o = Napi::Object::New(env);
        o.Set("proto", e.orig.proto);
        o.Set("src", Ip(family, e.orig.src));
        o.Set("dst", Ip(family, e.orig.dst));
        o.Set("sport", ntohs(e.orig.sport));
        o.Set("dport", ntohs(e.orig.dport));
        o.Set("rsrc", Ip(family, e.reply.src));
        o.Set("rdst", Ip(family, e.reply.dst));
        o.Set("rsport", ntohs(e.reply.sport));
        o.Set("rdport", ntohs(e.reply.dport));
        o.Set("status", e.status);
        o.Set("timeout", e.timeout);
        o.Set("tcpState", e.tcp_state);
        o.Set("tcpFlags", e.tcp_flags_orig);
        o.Set("tcpFlagsReply", e.tcp_flags_reply);
        o.Set("zone", e.zone);
        out.Set(n++, o);
      },
      &step);
  if (err) return Throw(env, std::string(step) + " the kernel conntrack dump (ctnetlink)", err);
  return out;
}

}  // namespace

void InitConntrack(Napi::Env env, Napi::Object exports) {
  exports.Set("kernelConntrack", Napi::Function::New(env, KernelConntrack));
}

}  // namespace bpfproxy
