#!/usr/bin/env bash
# Stages what the agent image ships into OUT (the Dockerfile copies OUT to
# /opt/bpfproxy; node_modules come separately, pruned to production packages):
# the agent's compiled code (dist/src) and nothing else of dist/ (no tests, no
# test kit, no lab, no benchmark suite), the addon and the BPF object.
# test/image-tree.test.ts checks the list and runs the staged agent.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/image-tree.sh OUT}
for f in dist/src/cli/main.js build/Release/bpfproxy_native.node bpf/.output/bpfproxy.o; do
  [ -e "$f" ] || { echo "image-tree: $f is missing: run 'make build' first" >&2; exit 1; }
done
rm -rf "$out"
mkdir -p "$out/dist" "$out/build/Release" "$out/bpf/.output"
cp package.json "$out/"
cp -r dist/src "$out/dist/src"
find "$out/dist/src" \( -name '*.d.ts' -o -name '*.d.ts.map' -o -name '*.tsbuildinfo' \) -delete
cp build/Release/bpfproxy_native.node "$out/build/Release/"
cp bpf/.output/bpfproxy.o "$out/bpf/.output/"
