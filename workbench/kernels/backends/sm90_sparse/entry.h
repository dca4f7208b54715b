// The seam between the C ABI (api.cu) and the kernel objects (kernel.cu, compiled once per dtype and
// configuration): each kernel object registers one Entry when the library is loaded, so the ABI needs
// no list of configurations of its own (build.py's list is the only one).
#pragma once

#include <cstddef>
#include <cuda_runtime_api.h>

namespace wb_sm90_sparse {

enum Dtype : int { kBf16 = 0, kFp16 = 1 };

// Return codes of every entry point: 0, or what went wrong (the thread's last error says more).
enum Code : int { kOk = 0, kInvalid = 1, kCudaError = 2, kCutlassError = 3, kUnknownConfig = 4, kInternal = 5 };

struct Entry {
  int dtype;
  int index;     // position in build.py's configuration list
  char const* name;
  int layout_k;  // the tile K that the compressed layout depends on (Sm90GemmSparseConfig's MinTileShapeK)
  int (*sizes)(int m, int k, size_t* values_bytes, size_t* meta_bytes);
  int (*compress)(void const* dense, int m, int k, void* values, void* meta, cudaStream_t stream);
  int (*workspace)(int m, int n, int k, size_t* bytes);
  int (*gemm)(void const* values, void const* meta, void const* x, void* y, int m, int n, int k,
              void* workspace, size_t workspace_bytes, cudaStream_t stream);
};

void register_entry(Entry const& entry);

// Records a message as the calling thread's last error and returns ``code``.
int fail(int code, char const* format, ...);

}  // namespace wb_sm90_sparse
