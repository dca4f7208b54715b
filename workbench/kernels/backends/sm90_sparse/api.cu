// The library's C ABI: plain pointers, sizes and a cudaStream_t, so that any process with a CUDA
// driver can load it through ctypes, whatever its torch build. Every function returns an entry.h Code;
// wb_sm90_sparse_last_error() then says which step failed and why.
#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "entry.h"

#define WB_API extern "C" __attribute__((visibility("default")))

namespace wb_sm90_sparse {
namespace {

thread_local std::string last_error;

std::vector<Entry>& registry() {
  static std::vector<Entry> entries;  // a function-local static: kernel objects may register first
  return entries;
}

Entry const* find(int dtype, int config) {
  for (Entry const& entry : registry()) {
    if (entry.dtype == dtype && entry.index == config) {
      return &entry;
    }
  }
  return nullptr;
}

Entry const* find_or_fail(int dtype, int config) {
  Entry const* entry = find(dtype, config);
  if (entry == nullptr) {
    fail(kUnknownConfig, "no kernel for dtype %d and configuration %d in this library", dtype, config);
  }
  return entry;
}

// Entry points must not let a C++ exception cross the C ABI.
template <class Call>
int guarded(char const* step, Call call) {
  try {
    return call();
  } catch (std::exception const& err) {
    return fail(kInternal, "%s: %s", step, err.what());
  } catch (...) {
    return fail(kInternal, "%s: unknown C++ exception", step);
  }
}

}  // namespace

void register_entry(Entry const& entry) {
  registry().push_back(entry);
}

int fail(int code, char const* format, ...) {
  char buffer[1024];
  va_list args;
  va_start(args, format);
  std::vsnprintf(buffer, sizeof(buffer), format, args);
  va_end(args);
  last_error = buffer;
  return code;
}

}  // namespace wb_sm90_sparse

using namespace wb_sm90_sparse;

// Bumped whenever a signature below changes, so that a stale prebuilt library is refused.
WB_API int wb_sm90_sparse_abi_version() { return 1; }

WB_API char const* wb_sm90_sparse_last_error() { return last_error.c_str(); }

WB_API int wb_sm90_sparse_configs() {
  int count = 0;
  for (Entry const& entry : registry()) {
    count = std::max(count, entry.index + 1);
  }
  return count;
}

WB_API char const* wb_sm90_sparse_config_name(int config) {
  for (Entry const& entry : registry()) {
    if (entry.index == config) {
      return entry.name;
    }
  }
  return nullptr;
}

WB_API int wb_sm90_sparse_layout_k(int dtype, int config) {
  Entry const* entry = find(dtype, config);
  return entry == nullptr ? -1 : entry->layout_k;
}

WB_API int wb_sm90_sparse_compressed_sizes(int dtype, int config, int m, int k, size_t* values_bytes,
                                           size_t* meta_bytes) {
  Entry const* entry = find_or_fail(dtype, config);
  return entry == nullptr ? kUnknownConfig : guarded("compressed sizes", [&] {
    return entry->sizes(m, k, values_bytes, meta_bytes);
  });
}

WB_API int wb_sm90_sparse_compress(int dtype, int config, void const* dense, int m, int k, void* values, void* meta,
                                   cudaStream_t stream) {
  Entry const* entry = find_or_fail(dtype, config);
  return entry == nullptr ? kUnknownConfig : guarded("compress", [&] {
    return entry->compress(dense, m, k, values, meta, stream);
  });
}

WB_API int wb_sm90_sparse_workspace(int dtype, int config, int m, int n, int k, size_t* bytes) {
  Entry const* entry = find_or_fail(dtype, config);
  return entry == nullptr ? kUnknownConfig : guarded("workspace size", [&] {
    return entry->workspace(m, n, k, bytes);
  });
}

WB_API int wb_sm90_sparse_gemm(int dtype, int config, void const* values, void const* meta, void const* x, void* y,
                               int m, int n, int k, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  Entry const* entry = find_or_fail(dtype, config);
  return entry == nullptr ? kUnknownConfig : guarded("gemm", [&] {
    return entry->gemm(values, meta, x, y, m, n, k, workspace, workspace_bytes, stream);
  });
}
