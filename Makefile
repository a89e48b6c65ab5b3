# bpfproxy — build, test, demo. Run as root on Linux (see README.md).
SHELL := /bin/bash
CLANG ?= clang
BPF_OUT := bpf/.output
# One object carries every program (bpf/bpfproxy.c includes the entry file
# of each hook) and shares one set of maps between them.
BPF_OBJ := $(BPF_OUT)/bpfproxy.o
BPF_ENTRIES := bpf/tc_pod.c bpf/tc_data.c bpf/tc_host.c bpf/tc_to_pod.c bpf/xdp_afxdp.c bpf/xdp_data.c bpf/sock.c
BPF_HDRS := $(wildcard bpf/lib/*.h bpf/include/*.h)
# npm's own node-gyp: no download, builds against the installed Node headers.
NODE_GYP ?= node $(shell npm root -g 2>/dev/null)/npm/node_modules/node-gyp/bin/node-gyp.js
# Debian's nodejs ships its headers: build against them, never download.
NODE_GYP_FLAGS := $(if $(wildcard /usr/include/node/node.h),--nodedir=/usr)
# Kernel types come from the vendored bpf/include/uapi.h: the build needs no
# BTF of its own host (bpftool btf dump), so the image builds anywhere; no
# bpf_tracing.h, so no __TARGET_ARCH either.
BPF_CFLAGS := -g -O2 -target bpf -Wall -Werror -Ibpf -mcpu=v3

.PHONY: lint all build bpf addon ts deps test demo clean bench bench-tools fuzz engine-stress
all: build

# typecheck, eslint, prettier and clang-format (CI runs it)
lint:
	npm run -s typecheck
	npm run -s lint

deps:
	./scripts/install-deps.sh

build: bpf addon ts bench-tools

bench-tools: bench/.output/crr bench/.output/flood bench/.output/xdp-pass.o bench/.output/livegen bench/.output/livegen-xdp.o

bench/.output/xdp-pass.o: bench/xdp-pass.c
	@mkdir -p bench/.output
	$(CLANG) -O2 -target bpf -Wall -Werror -c $< -o $@

bench/.output/crr: bench/crr.c
	@mkdir -p bench/.output
	$(CC) -O2 -Wall -Werror -pthread -o $@ $<

bench/.output/flood: bench/flood.c bench/gen-common.h
	@mkdir -p bench/.output
	$(CC) -O2 -Wall -Wextra -Werror -o $@ $<

# livegen: BPF_PROG_RUN live-frames generator; its XDP program sits beside it
bench/.output/livegen: bench/livegen.c bench/livegen.h bench/gen-common.h
	@mkdir -p bench/.output
	$(CC) -O2 -Wall -Wextra -Werror -pthread -Ibench -o $@ $< -lbpf

bench/.output/livegen-xdp.o: bench/livegen-xdp.c bench/livegen.h bpf/include/uapi.h
	@mkdir -p bench/.output
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

# The engine's table swaps under concurrent workers, natively
# (test/native/engine-swap-stress.c; test/engine-swap-stress.test.ts runs
# both): plain, and under AddressSanitizer (a use of a freed table aborts).
ENGINE_SRCS := $(wildcard addon/engine/*.c)
STRESS_OUT := test/native/.output
STRESS_CFLAGS := -std=gnu11 -g -Wall -Wextra -Werror -Wno-missing-field-initializers -pthread
engine-stress: $(STRESS_OUT)/engine-swap-stress $(STRESS_OUT)/engine-swap-stress-asan

$(STRESS_OUT)/engine-swap-stress: test/native/engine-swap-stress.c $(ENGINE_SRCS) $(wildcard addon/engine/*.h)
	@mkdir -p $(STRESS_OUT)
	$(CC) $(STRESS_CFLAGS) -O2 -o $@ $< $(ENGINE_SRCS) -lbpf -lelf -lz

$(STRESS_OUT)/engine-swap-stress-asan: test/native/engine-swap-stress.c $(ENGINE_SRCS) $(wildcard addon/engine/*.h)
	@mkdir -p $(STRESS_OUT)
	$(CC) $(STRESS_CFLAGS) -O1 -fsanitize=address -fno-omit-frame-pointer -o $@ $< $(ENGINE_SRCS) -lbpf -lelf -lz

bpf: $(BPF_OBJ) $(BPF_OUT)/sock_destroy.o

$(BPF_OBJ): bpf/bpfproxy.c $(BPF_ENTRIES) $(BPF_HDRS)
	@mkdir -p $(BPF_OUT)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

# Socket destroy for the socket LB (kernel 6.5+, CO-RE): its own object, so
# that kernels without it still load bpfproxy.o.
$(BPF_OUT)/sock_destroy.o: bpf/sock_destroy.c $(BPF_HDRS)
	@mkdir -p $(BPF_OUT)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

addon: build/Release/bpfproxy_native.node

build/Release/bpfproxy_native.node: $(wildcard addon/*.cc addon/*.h addon/engine/*.c addon/engine/*.h addon/engine/*.cc) binding.gyp
	$(NODE_GYP) rebuild $(NODE_GYP_FLAGS)

ts:
	npx tsc -b

test: build
	./scripts/test.sh

demo: deps build
	node dist/lab/cli.js demo

bench: build
	node dist/bench/cli.js local --out bench/results/local
	node dist/bench/cli.js gc --out bench/results/gc
	node dist/bench/cli.js engine --out bench/results/engine

# Packet fuzzing of every loaded program through BPF_PROG_RUN (test/fuzz-datapath.test.ts):
# FUZZ_PACKETS per program, bounded by FUZZ_SECONDS; FUZZ_SEED=N replays a run.
FUZZ_PACKETS ?= 1000000
FUZZ_SECONDS ?= 3600
FUZZ_REPORT ?= dist/fuzz-report.json
fuzz: build
	FUZZ_PACKETS=$(FUZZ_PACKETS) FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_REPORT=$(FUZZ_REPORT) \
		node dist/test/fuzz-datapath.test.js
	ENGINE_FUZZ_PACKETS=$(FUZZ_PACKETS) ENGINE_FUZZ_SECONDS=$(FUZZ_SECONDS) node dist/test/engine-fuzz.test.js

clean:
	rm -rf $(BPF_OUT) build dist bench/.output $(STRESS_OUT)
