{
  "targets": [
    {
      "target_name": "bpfproxy_native",
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
        "addon/conntrack.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
      "libraries": ["-lbpf", "-lelf", "-lz"]
    }
  ]
}
