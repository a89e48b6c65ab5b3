/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the engine's neighbour table is built from (rtnetlink, in the
 * network namespace of the calling thread):
 *   eng_route_get()      RTM_GETROUTE for one destination: output
 *                        interface, gateway, preferred source (the SNAT
 *                        address towards a backend);
 *   eng_neigh_dump()     RTM_GETNEIGH dump of IPv4 and IPv6 neighbours with
 *                        their MAC;
 *   eng_neigh_resolve()  RTM_NEWNEIGH with NTF_USE: the kernel resolves the
 *                        address as if a packet were sent to it (ARP), so a
 *                        backend nobody talked to yet gets a MAC (IPv6:
 *                        neighbour discovery);
 * each with an IPv6 twin (…6()) or both families at once (the dump).
 * One request, one socket, bounded reads; errors as -errno.
 */
#include <errno.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.h"

#define NL_BUF	      32768
#define NL_TIMEOUT_MS 2000

static int nl_open(void)
{
	struct sockaddr_nl sa  = {.nl_family = AF_NETLINK};
	int		   fd  = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	int		   one = 1;

	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

static void add_attr(struct nlmsghdr *nh, uint16_t type, const void *data, uint16_t len)
{
	struct rtattr *a = (struct rtattr *)((uint8_t *)nh + NLMSG_ALIGN(nh->nlmsg_len));

	a->rta_type = type;
	a->rta_len  = RTA_LENGTH(len);
	memcpy(RTA_DATA(a), data, len);
	nh->nlmsg_len = NLMSG_ALIGN(nh->nlmsg_len) + RTA_ALIGN(a->rta_len);
}

/* Read replies to seq until done (dump) or the first reply (single);
 * calls fn for each message of type want. Returns 0 or -errno. */
static int nl_read(int fd, uint32_t seq, uint16_t want, int dump,
		   int (*fn)(const struct nlmsghdr *, void *), void *arg)
{
	static __thread uint8_t buf[NL_BUF];

	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t	      n;
		int	      len;

		if (poll(&p, 1, NL_TIMEOUT_MS) <= 0)
			return -ETIMEDOUT;
		n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		len = (int)n;
		for (struct nlmsghdr *nh = (struct nlmsghdr *)buf; NLMSG_OK(nh, len);
		     nh			 = NLMSG_NEXT(nh, len)) {
			if (nh->nlmsg_seq != seq)
				continue;
			if (nh->nlmsg_type == NLMSG_DONE)
				return 0;
			if (nh->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(nh);

				return e->error;
			}
			if (nh->nlmsg_type == want) {
				int r = fn(nh, arg);

				if (r < 0)
					return r;
				if (!dump)
					return 0;
			}
		}
	}
}

static int parse_route(const struct nlmsghdr *nh, void *arg)
{
	struct eng_route   *r	= arg;
	const struct rtmsg *rt	= NLMSG_DATA(nh);
	int		    len = (int)RTM_PAYLOAD(nh);

	for (const struct rtattr *a = RTM_RTA(rt); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
		if (a->rta_type == RTA_OIF && RTA_PAYLOAD(a) >= 4)
			memcpy(&r->oif, RTA_DATA(a), 4);
		else if (a->rta_type == RTA_GATEWAY && RTA_PAYLOAD(a) == 16)
			memcpy(r->gateway6, RTA_DATA(a), 16);
		else if (a->rta_type == RTA_GATEWAY && RTA_PAYLOAD(a) >= 4)
			memcpy(&r->gateway, RTA_DATA(a), 4);
		else if (a->rta_type == RTA_PREFSRC && RTA_PAYLOAD(a) == 16)
			memcpy(r->prefsrc6, RTA_DATA(a), 16);
		else if (a->rta_type == RTA_PREFSRC && RTA_PAYLOAD(a) >= 4)
			memcpy(&r->prefsrc, RTA_DATA(a), 4);
	}
	return 0;
}

static int route_get(int family, const void *dst, struct eng_route *r)
{
	struct {
		struct nlmsghdr nh;
		struct rtmsg	rt;
		uint8_t		attrs[64];
	} req;
	int fd = nl_open(), err;

	if (fd < 0)
		return fd;
	memset(&req, 0, sizeof(req));
	memset(r, 0, sizeof(*r));
	req.nh.nlmsg_len   = NLMSG_LENGTH(sizeof(struct rtmsg));
	req.nh.nlmsg_type  = RTM_GETROUTE;
	req.nh.nlmsg_flags = NLM_F_REQUEST;
	req.nh.nlmsg_seq   = 1;
	req.rt.rtm_family  = (unsigned char)family;
	req.rt.rtm_dst_len = family == AF_INET6 ? 128 : 32;
	add_attr(&req.nh, RTA_DST, dst, family == AF_INET6 ? 16 : 4);
	if (send(fd, &req, req.nh.nlmsg_len, 0) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	err = nl_read(fd, 1, RTM_NEWROUTE, 0, parse_route, r);
	close(fd);
	return err;
}

int eng_route_get(uint32_t dst, struct eng_route *r)
{
	return route_get(AF_INET, &dst, r);
}

int eng_route_get6(const uint8_t dst[16], struct eng_route *r)
{
	return route_get(AF_INET6, dst, r);
}

struct neigh_acc {
	struct eng_neigh_entry *out;
	uint32_t		max, n, total;
};

static int parse_neigh(const struct nlmsghdr *nh, void *arg)
{
	struct neigh_acc      *acc = arg;
	const struct ndmsg    *nd  = NLMSG_DATA(nh);
	int		       len = (int)(nh->nlmsg_len - NLMSG_LENGTH(sizeof(*nd)));
	struct eng_neigh_entry e;

	if (nd->ndm_family != AF_INET && nd->ndm_family != AF_INET6)
		return 0;
	memset(&e, 0, sizeof(e));
	e.family = nd->ndm_family == AF_INET6 ? 6 : 4;
	e.ifindex = (uint32_t)nd->ndm_ifindex;
	e.state	  = nd->ndm_state;
	for (const struct rtattr *a =
		     (const struct rtattr *)((const uint8_t *)nd + NLMSG_ALIGN(sizeof(*nd)));
	     RTA_OK(a, len); a = RTA_NEXT(a, len)) {
		if (a->rta_type == NDA_DST && RTA_PAYLOAD(a) == 4 && e.family == 4)
			memcpy(&e.addr, RTA_DATA(a), 4);
		else if (a->rta_type == NDA_DST && RTA_PAYLOAD(a) == 16 && e.family == 6)
			memcpy(e.addr6, RTA_DATA(a), 16);
		else if (a->rta_type == NDA_LLADDR && RTA_PAYLOAD(a) == 6) {
			memcpy(e.mac, RTA_DATA(a), 6);
			e.has_mac = 1;
		}
	}
	if (e.family == 4 ? !e.addr : !memcmp(e.addr6, (const uint8_t[16]){0}, 16))
		return 0;
	acc->total++;
	if (acc->n < acc->max)
		acc->out[acc->n++] = e;
	return 0;
}

int eng_neigh_dump(struct eng_neigh_entry *out, uint32_t max, uint32_t *total)
{
	struct {
		struct nlmsghdr nh;
		struct ndmsg	nd;
	} req;
	struct neigh_acc acc = {.out = out, .max = max};
	int		 fd  = nl_open(), err;

	if (fd < 0)
		return fd;
	memset(&req, 0, sizeof(req));
	req.nh.nlmsg_len   = NLMSG_LENGTH(sizeof(struct ndmsg));
	req.nh.nlmsg_type  = RTM_GETNEIGH;
	req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	req.nh.nlmsg_seq   = 2;
	req.nd.ndm_family  = AF_UNSPEC;
	if (send(fd, &req, req.nh.nlmsg_len, 0) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	err = nl_read(fd, 2, RTM_NEWNEIGH, 1, parse_neigh, &acc);
	close(fd);
	*total = acc.total;
	return err ? err : (int)acc.n;
}

static int neigh_resolve(int family, const void *addr, uint32_t ifindex)
{
	struct {
		struct nlmsghdr nh;
		struct ndmsg	nd;
		uint8_t		attrs[32];
	} req;
	int fd = nl_open(), err;

	if (fd < 0)
		return fd;
	memset(&req, 0, sizeof(req));
	req.nh.nlmsg_len   = NLMSG_LENGTH(sizeof(struct ndmsg));
	req.nh.nlmsg_type  = RTM_NEWNEIGH;
	req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
	req.nh.nlmsg_seq   = 3;
	req.nd.ndm_family  = (uint8_t)family;
	req.nd.ndm_ifindex = (int)ifindex;
	req.nd.ndm_state   = NUD_NONE;
	req.nd.ndm_flags   = NTF_USE;
	add_attr(&req.nh, NDA_DST, addr, family == AF_INET6 ? 16 : 4);
	if (send(fd, &req, req.nh.nlmsg_len, 0) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	err = nl_read(fd, 3, NLMSG_ERROR, 0, NULL, NULL);
	close(fd);
	return err;
}

int eng_neigh_resolve(uint32_t addr, uint32_t ifindex)
{
	return neigh_resolve(AF_INET, &addr, ifindex);
}

int eng_neigh_resolve6(const uint8_t addr[16], uint32_t ifindex)
{
	return neigh_resolve(AF_INET6, addr, ifindex);
}

struct link_acc {
	uint8_t	 *mac;
	uint32_t *rxq, *mtu;
	int	  found;
};

static int parse_link(const struct nlmsghdr *nh, void *arg)
{
	struct link_acc	       *acc = arg;
	const struct ifinfomsg *ifi = NLMSG_DATA(nh);
	int			len = (int)(nh->nlmsg_len - NLMSG_LENGTH(sizeof(*ifi)));

	for (const struct rtattr *a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
		if (a->rta_type == IFLA_ADDRESS && RTA_PAYLOAD(a) == 6)
			memcpy(acc->mac, RTA_DATA(a), 6);
		else if (a->rta_type == IFLA_NUM_RX_QUEUES && RTA_PAYLOAD(a) >= 4)
			memcpy(acc->rxq, RTA_DATA(a), 4);
		else if (a->rta_type == IFLA_MTU && RTA_PAYLOAD(a) >= 4)
			memcpy(acc->mtu, RTA_DATA(a), 4);
	}
	acc->found = 1;
	return 0;
}

int eng_link_info(uint32_t ifindex, uint8_t mac[6], uint32_t *rx_queues, uint32_t *mtu)
{
	struct {
		struct nlmsghdr	 nh;
		struct ifinfomsg ifi;
	} req;
	struct link_acc acc = {.mac = mac, .rxq = rx_queues, .mtu = mtu};
	int		fd  = nl_open(), err;

	if (fd < 0)
		return fd;
	memset(mac, 0, 6);
	*rx_queues = 1;
	*mtu	   = 0;
	memset(&req, 0, sizeof(req));
	req.nh.nlmsg_len   = NLMSG_LENGTH(sizeof(struct ifinfomsg));
	req.nh.nlmsg_type  = RTM_GETLINK;
	req.nh.nlmsg_flags = NLM_F_REQUEST;
	req.nh.nlmsg_seq   = 4;
	req.ifi.ifi_family = AF_UNSPEC;
	req.ifi.ifi_index  = (int)ifindex;
	if (send(fd, &req, req.nh.nlmsg_len, 0) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	err = nl_read(fd, 4, RTM_NEWLINK, 0, parse_link, &acc);
	close(fd);
	if (!err && !acc.found)
		err = -ENODEV;
	return err;
}
