// SPDX-License-Identifier: Apache-2.0
// TC (clsact) attach/detach/query. Our filters carry a fixed handle and
// priority chosen by the caller, so other filters on the interface are never
// touched; attaching again replaces ours atomically.
#include <bpf/libbpf.h>
#include <errno.h>

#include "common.h"

namespace bpfproxy {

static bool HookArgs(const Napi::CallbackInfo& info, struct bpf_tc_hook* hook,
                     struct bpf_tc_opts* opts, size_t first_opt) {
  int64_t ifindex, handle, prio;
  if (!ArgInt(info, 0, "ifindex", &ifindex)) return false;
  if (info.Length() < 2 || !info[1].IsString()) {
    Napi::TypeError::New(info.Env(), "direction must be 'ingress' or 'egress'")
        .ThrowAsJavaScriptException();
    return false;
  }
  std::string dir = info[1].As<Napi::String>().Utf8Value();
  if (dir != "ingress" && dir != "egress") {
    Napi::TypeError::New(info.Env(), "direction must be 'ingress' or 'egress'")
        .ThrowAsJavaScriptException();
    return false;
  }
  if (!ArgInt(info, first_opt, "handle", &handle) ||
      !ArgInt(info, first_opt + 1, "priority", &prio))
    return false;
  hook->ifindex = ifindex;
  hook->attach_point = dir == "ingress" ? BPF_TC_INGRESS : BPF_TC_EGRESS;
  opts->handle = handle;
  opts->priority = prio;
  return true;
}

// tcAttach(ifindex, dir, progFd, handle, priority) -> program id
static Napi::Value TcAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  LIBBPF_OPTS(bpf_tc_hook, hook);
  LIBBPF_OPTS(bpf_tc_opts, opts);
  int64_t prog_fd;
  if (!HookArgs(info, &hook, &opts, 3) || !ArgInt(info, 2, "progFd", &prog_fd))
    return env.Undefined();
  int err = bpf_tc_hook_create(&hook);
  if (err && err != -EEXIST)
    return Throw(env, "create clsact qdisc on ifindex " + std::to_string(hook.ifindex), err);
  opts.prog_fd = prog_fd;
  opts.flags = BPF_TC_F_REPLACE;
  err = bpf_tc_attach(&hook, &opts);
  if (err) return Throw(env, "attach tc filter on ifindex " + std::to_string(hook.ifindex), err);
  return Napi::Number::New(env, opts.prog_id);
}

// tcDetach(ifindex, dir, handle, priority) -> true, or false when not there
static Napi::Value TcDetach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  LIBBPF_OPTS(bpf_tc_hook, hook);
  LIBBPF_OPTS(bpf_tc_opts, opts);
  if (!HookArgs(info, &hook, &opts, 2)) return env.Undefined();
  int err = bpf_tc_detach(&hook, &opts);
  if (err == -ENOENT || err == -EINVAL || err == -ENODEV) return Napi::Boolean::New(env, false);
  if (err) return Throw(env, "detach tc filter on ifindex " + std::to_string(hook.ifindex), err);
  return Napi::Boolean::New(env, true);
}

// tcQuery(ifindex, dir, handle, priority) -> program id, or 0 when none
static Napi::Value TcQuery(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  LIBBPF_OPTS(bpf_tc_hook, hook);
  LIBBPF_OPTS(bpf_tc_opts, opts);
  if (!HookArgs(info, &hook, &opts, 2)) return env.Undefined();
  int err = bpf_tc_query(&hook, &opts);
  if (err == -ENOENT || err == -EINVAL || err == -ENODEV) return Napi::Number::New(env, 0);
  if (err) return Throw(env, "query tc filter on ifindex " + std::to_string(hook.ifindex), err);
  return Napi::Number::New(env, opts.prog_id);
}

void InitTc(Napi::Env env, Napi::Object exports) {
  exports.Set("tcAttach", Napi::Function::New(env, TcAttach));
  exports.Set("tcDetach", Napi::Function::New(env, TcDetach));
  exports.Set("tcQuery", Napi::Function::New(env, TcQuery));
}

}  // namespace bpfproxy
