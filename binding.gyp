{
  "targets": [
    {
      "target_name": "cmiprune_engine",
      "sources": ["native/addon.cc", "native/engine.cc", "native/linalg.cc", "native/winograd.cc", "native/smallconv.cc", "native/gemm.cc", "native/sgd.cc", "native/bnrelu.cc", "native/maxpool.cc", "native/alloc.cc"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "/usr/include/torch/csrc/api/include"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-rtti", "-fno-exceptions"],
      "cflags_cc!": ["-fno-rtti", "-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-O3", "-fopenmp", "-frtti", "-fexceptions", "-Wno-unused-parameter"],
      "ldflags": ["-fopenmp"],
      "libraries": ["-ltorch", "-ltorch_cpu", "-lc10"]
    }
  ]
}
