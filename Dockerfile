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
RUN make build && npm prune --omit=dev

FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libbpf1 libelf1 iproute2 iptables nftables util-linux \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/bpfproxy
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/build/Release/bpfproxy_native.node ./build/Release/
COPY --from=build /src/bpf/.output/bpfproxy.o ./bpf/.output/
ENTRYPOINT ["node", "/opt/bpfproxy/dist/src/cli.js"]
CMD ["agent"]
