# bpfproxy agent image. Builds on any host (the BPF object needs no BTF of the
# build host: kernel types are vendored in bpf/include/uapi.h):
#   docker build -t <your-registry>/bpfproxy:0.1.0 .
FROM node:20-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev make g++ python3 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts
COPY . .
RUN make build && npm prune --omit=dev && scripts/image-tree.sh /image

FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libbpf1 libelf1 iproute2 iptables nftables util-linux \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/bpfproxy
# the agent alone: scripts/image-tree.sh stages dist/src (no tests, test kit,
# lab or benchmark suite: test/image-tree.test.ts), the addon and the BPF object
COPY --from=build /image/ ./
COPY --from=build /src/node_modules ./node_modules
RUN printf '#!/bin/sh\nexec node /opt/bpfproxy/dist/src/cli/main.js "$@"\n' > /usr/local/bin/bpfproxy && chmod +x /usr/local/bin/bpfproxy
# AGENT_NODE_FLAGS (src/paths.ts; test/image-tree.test.ts checks they match)
ENTRYPOINT ["node", "--max-semi-space-size=2", "/opt/bpfproxy/dist/src/cli/main.js"]
CMD ["agent"]
