{
  "targets": [
    {
      "target_name": "bpfproxy_engine",
      "type": "static_library",
      "sources": [
        "addon/engine/api.c",
        "addon/engine/engine.c",
        "addon/engine/nodes.c",
        "addon/engine/policy.c",
        "addon/engine/session.c",
        "addon/engine/session6.c",
        "addon/engine/table.c",
        "addon/engine/xsk.c",
        "addon/engine/nl.c"
      ],
      "cflags": ["-fPIC"],
      "cflags!": ["-O3"],
      "cflags_c": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-missing-field-initializers"]
    },
    {
      "target_name": "bpfproxy_native",
      "dependencies": ["bpfproxy_engine"],
      "sources": [
        "addon/module.cc",
        "addon/errors.cc",
        "addon/object.cc",
        "addon/maps.cc",
        "addon/tc.cc",
        "addon/system.cc",
        "addon/netlink.cc",
        "addon/bulk.cc",
        "addon/ringbuf.cc",
        "addon/conntrack.cc",
        "addon/cgroup.cc",
        "addon/engine/binding.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
      "libraries": ["-lbpf", "-lelf", "-lz"]
    }
  ]
}
