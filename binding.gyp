{
  "targets": [
    {
      "target_name": "tachyon_native",
      "sources": ["native/tachyon_native.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [["OS!='linux'", {"type": "none"}]]
    },
    {
      "target_name": "tachyon_dir",
      "sources": ["native/tachyon_dir.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-pthread"],
      "ldflags": ["-pthread"],
      "conditions": [["OS!='linux'", {"type": "none"}]]
    }
  ]
}
