// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Two trivial XDP programs for bpfproxy-bench engine-e2e (bench/engine-e2e.ts):
 *  - "xdp" passes every frame: on the backend's veth it gives that veth the
 *    NAPI context a peer's XDP redirect (the XDP acceleration) needs, for
 *    every dataplane alike;
 *  - "xdp_drop" drops every frame: on the node's client-facing veth it makes
 *    the generator's own ceiling measurable (nothing past the first XDP hook).
 * No headers: XDP_DROP = 1, XDP_PASS = 2. */
__attribute__((section("xdp"), used)) int bench_pass(void *ctx)
{
	(void)ctx;
	return 2;
}

__attribute__((section("xdp_drop"), used)) int bench_drop(void *ctx)
{
	(void)ctx;
	return 1;
}

char _license[] __attribute__((section("license"), used)) = "Dual BSD/GPL";
