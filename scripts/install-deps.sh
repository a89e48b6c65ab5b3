#!/usr/bin/env bash
# Installs what bpfproxy needs to build and run on Debian (as root):
# compilers and libbpf for the BPF objects and the addon, iproute2 and
# friends for the lab and tests, and the npm dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(clang clang-format llvm libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config make g++ python3
          iproute2 iperf3 iptables nftables conntrack procps util-linux kmod tcpdump)

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v node >/dev/null; then
  echo "installing Node.js from Debian"
  apt-get install -y -q --no-install-recommends nodejs npm
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "bpfproxy needs Node.js 20 or newer; this machine has $(node --version)." >&2
  echo "Install Node.js 20+ (for example from the nodejs.org Debian repository) and run again." >&2
  exit 1
fi

# kubectl, for the tests that drive the in-process API server with it
# (test/apiserver-kubectl.test.ts). Debian's kubernetes-client only if none
# is installed: it is old (1.20 on bookworm), older than the 1.27 those tests
# need (aggregated discovery, OpenAPI v3), so they skip with it and say so;
# install a current kubectl from pkgs.k8s.io to run them.
if ! command -v kubectl >/dev/null; then
  echo "installing kubectl (Debian's kubernetes-client)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get install -y -q --no-install-recommends kubernetes-client; } || echo "kubernetes-client not available: the kubectl tests will skip" >&2
fi

# Pins live on bpffs.
grep -qs ' /sys/fs/bpf bpf ' /proc/mounts || mount -t bpf bpf /sys/fs/bpf

if [ -L node_modules ]; then
  # npm ci empties node_modules through the link: another checkout's install
  echo "node_modules links to $(readlink node_modules): leaving that install alone (run npm ci where it lives)"
elif [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
  # tap compiles its plugin set; ours leaves out the TypeScript loader.
  npx tap build >/dev/null
fi
