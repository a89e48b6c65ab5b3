/**
 * XDP acceleration on data interfaces (--xdp-acceleration): the program
 * bpf/xdp_data.c from the one object, on each data interface through a BPF
 * link pinned as <pinDir>/xdp/<ifindex> so that it outlives the agent as
 * the tcx links do (src/dataplane/bpf/tcx.ts); a restarted agent adopts
 * the pins and swaps its program in, `bpfproxy cleanup` detaches them.
 */
export const XDP_DATA_PROGRAM = 'bpfproxy_xdp_data';
