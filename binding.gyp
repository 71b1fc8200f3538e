{
  "targets": [
    {
      "target_name": "tachyon_native",
      "sources": ["native/tachyon_native.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [["OS!='linux'", {"type": "none"}]]
    }
  ]
}
