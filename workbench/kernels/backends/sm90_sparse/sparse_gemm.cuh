// D = A B on Hopper's sparse tensor cores (wgmma.sp), A 2:4-sparse along K, from CUTLASS's sm90 sparse
// collective (sm90_sparse_mma_tma_gmma_ss_warpspecialized.hpp) and its structured-sparse compressor.
//
// A linear layer y = x W^T maps onto it without copies: A = W (M = out, K = in, row-major: K-major),
// B = x^T (K x N, N = tokens; x in rows is B in columns), D = y^T (M x N in columns: y in rows).
// Operands bf16 or fp16, fp32 accumulation, D in the operand type, alpha = 1 and beta = 0 with no C.
#pragma once

#include <cstdint>
#include <tuple>
#include <unordered_map>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/transform/device/transform_universal_adapter.hpp"
#include "cutlass/transform/kernel/sparse_gemm_compressor.hpp"
#include "cutlass/util/packed_stride.hpp"

#include "entry.h"

namespace wb_sm90_sparse {

using namespace cute;

struct bf16 {
  using Element = cutlass::bfloat16_t;
  static constexpr int id = kBf16;
};
struct fp16 {
  using Element = cutlass::half_t;
  static constexpr int id = kFp16;
};

// The two persistent schedules the sparse collective builder accepts, each with its TMA epilogue.
// Cooperative: two consumer warp groups share one tile (tile M of 128 or more). Ping-pong: each warp
// group owns a tile and their mainloops and epilogues alternate.
struct cooperative {
  using Kernel = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
  using Epilogue = cutlass::epilogue::TmaWarpSpecializedCooperative;
};
struct pingpong {
  using Kernel = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
  using Epilogue = cutlass::epilogue::TmaWarpSpecialized;
};

// Tile schedulers. Persistent: each CTA walks whole output tiles. Stream-K (cooperative only): the
// MAC-loop iterations of all tiles are shared evenly among the CTAs, and CTAs that share a tile reduce
// their partial sums through a workspace. It fixes the last partial wave of large problems, and lets a
// decode-sized problem (few output tiles, long K) use every SM instead of one per tile.
struct persistent {
  using Scheduler = void;
};
struct streamk {
  using Scheduler = cutlass::gemm::StreamKScheduler;
};

inline bool aligned16(void const* pointer) {
  return reinterpret_cast<std::uintptr_t>(pointer) % 16 == 0;
}

inline int cuda_fail(char const* step, cudaError_t error) {
  return fail(kCudaError, "%s: %s (%s)", step, cudaGetErrorName(error), cudaGetErrorString(error));
}

// A failed launch leaves its reason in the runtime's error state: report it, and clear it.
inline int cutlass_fail(char const* step, cutlass::Status status) {
  cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) {
    return fail(kCutlassError, "%s: %s; CUDA: %s (%s)", step, cutlassGetStatusString(status),
                cudaGetErrorName(error), cudaGetErrorString(error));
  }
  return fail(kCutlassError, "%s: %s", step, cutlassGetStatusString(status));
}

// The current device and its SM count (the persistent tile scheduler sizes its grid from it), cached
// per device because the count is asked on every call.
inline int hardware(cutlass::KernelHardwareInfo* hw_info) {
  static int counts[64] = {};
  int device = 0;
  if (cudaError_t error = cudaGetDevice(&device); error != cudaSuccess) {
    return cuda_fail("cudaGetDevice", error);
  }
  if (device < 0 || device >= 64) {
    return fail(kInvalid, "device %d out of range", device);
  }
  if (counts[device] == 0) {
    if (cudaError_t error = cudaDeviceGetAttribute(&counts[device], cudaDevAttrMultiProcessorCount, device);
        error != cudaSuccess) {
      return cuda_fail("cudaDeviceGetAttribute", error);
    }
  }
  hw_info->device_id = device;
  hw_info->sm_count = counts[device];
  return kOk;
}

template <class Dtype, int TileM, int TileN, int TileK, int ClusterM, int ClusterN, class Schedule, class TileScheduler>
struct SparseGemm {
  using Element = typename Dtype::Element;
  using LayoutTagA = cutlass::layout::RowMajor;
  using LayoutTagB = cutlass::layout::ColumnMajor;
  using LayoutTagD = cutlass::layout::ColumnMajor;
  static constexpr int kAlignment = 128 / cutlass::sizeof_bits<Element>::value;  // 16-byte TMA accesses

  using TileShape = Shape<Int<TileM>, Int<TileN>, Int<TileK>>;
  using ClusterShape = Shape<Int<ClusterM>, Int<ClusterN>, _1>;
  using ProblemShape = Shape<int, int, int, int>;  // M, N, K, batch

  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassSparseTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float,
      void, LayoutTagD, kAlignment,  // no C: beta is 0
      Element, LayoutTagD, kAlignment, typename Schedule::Epilogue>::CollectiveOp;

  // Pipeline stages: as many as fit beside the epilogue's shared memory.
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassSparseTensorOp, Element, LayoutTagA, kAlignment, Element,
      LayoutTagB, kAlignment, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      typename Schedule::Kernel>::CollectiveOp;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, Mainloop, Epilogue,
                                                      typename TileScheduler::Scheduler>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
  using SparseConfig = typename Mainloop::SparseConfig;
  static constexpr int kLayoutK = decltype(cute::min(Int<TileK>{}, _128{}))::value;

  using StrideA = cutlass::gemm::TagToStrideA_t<LayoutTagA>;  // of the dense weight
  using StrideB = typename Kernel::StrideB;
  using StrideC = typename Kernel::StrideC;
  using StrideD = typename Kernel::StrideD;
  using CompressorUtility =
      cutlass::transform::kernel::StructuredSparseCompressorUtility<ProblemShape, Element, LayoutTagA, SparseConfig>;
  using Compressor = cutlass::transform::device::TransformUniversalAdapter<
      cutlass::transform::kernel::StructuredSparseCompressor<ProblemShape, Element, LayoutTagA, SparseConfig,
                                                             cutlass::arch::Sm90>>;

  static ProblemShape problem(int m, int n, int k) { return ProblemShape{m, n, k, 1}; }

  static StrideA dense_stride(int m, int k) { return cutlass::make_cute_packed_stride(StrideA{}, make_shape(m, k, 1)); }

  static int sizes(int m, int k, size_t* values_bytes, size_t* meta_bytes) {
    if (m <= 0 || k <= 0) {
      return fail(kInvalid, "compressed sizes: m=%d and k=%d must be positive", m, k);
    }
    CompressorUtility utility(problem(m, 1, k), dense_stride(m, k));
    *values_bytes = utility.get_compressed_tensor_A_bytes();
    *meta_bytes = utility.get_tensor_E_bytes();
    return kOk;
  }

  static int compress(void const* dense, int m, int k, void* values, void* meta, cudaStream_t stream) {
    if (!aligned16(dense) || !aligned16(values) || !aligned16(meta)) {
      return fail(kInvalid, "compress: dense, values and meta must be 16-byte aligned");
    }
    cutlass::KernelHardwareInfo hw_info;
    if (int code = hardware(&hw_info); code != kOk) {
      return code;
    }
    typename Compressor::Arguments args{problem(m, 1, k), {dense, dense_stride(m, k), values, meta}, {hw_info}};
    Compressor compressor;
    if (cutlass::Status status = compressor.can_implement(args); status != cutlass::Status::kSuccess) {
      return fail(kInvalid, "compress: can_implement: %s (k=%d must be a multiple of 4)",
                  cutlassGetStatusString(status), k);
    }
    // The compressor's workspace is a legacy of the host compressor: its kernel uses shared memory only.
    if (cutlass::Status status = compressor.initialize(args, nullptr, stream); status != cutlass::Status::kSuccess) {
      return cutlass_fail("compress: initialize", status);
    }
    if (cutlass::Status status = compressor.run(stream); status != cutlass::Status::kSuccess) {
      return cutlass_fail("compress: run", status);
    }
    return kOk;
  }

  static typename Gemm::Arguments arguments(void const* values, void const* meta, void const* x, void* y, int m,
                                            int n, int k, cutlass::KernelHardwareInfo hw_info) {
    auto shape = problem(m, n, k);
    return typename Gemm::Arguments{
        cutlass::gemm::GemmUniversalMode::kGemm,
        shape,
        {static_cast<Element const*>(values), SparseConfig::fill_layoutA(shape), static_cast<Element const*>(x),
         cutlass::make_cute_packed_stride(StrideB{}, make_shape(n, k, 1)),
         static_cast<typename Mainloop::ElementE const*>(meta), SparseConfig::fill_layoutE(shape)},
        {{1.0f, 0.0f}, nullptr, cutlass::make_cute_packed_stride(StrideC{}, make_shape(m, n, 1)),
         static_cast<Element*>(y), cutlass::make_cute_packed_stride(StrideD{}, make_shape(m, n, 1))},
        hw_info};
  }

  static int workspace(int m, int n, int k, size_t* bytes) {
    cutlass::KernelHardwareInfo hw_info;
    if (int code = hardware(&hw_info); code != kOk) {
      return code;
    }
    *bytes = Gemm::get_workspace_size(arguments(nullptr, nullptr, nullptr, nullptr, m, n, k, hw_info));
    return kOk;
  }

  // Kernel parameters (TMA descriptors among them) of recent calls. Building them costs host time on
  // every eager call; a captured graph replays the launch only, so only eager timing would pay it.
  // Keyed by everything the parameters depend on, so a hit is exact.
  struct Key {
    void const* values; void const* meta; void const* x; void* y; int m, n, k, device; void* workspace;
    bool operator==(Key const& o) const {
      return std::tie(values, meta, x, y, m, n, k, device, workspace) ==
             std::tie(o.values, o.meta, o.x, o.y, o.m, o.n, o.k, o.device, o.workspace);
    }
  };
  struct KeyHash {
    size_t operator()(Key const& key) const {
      size_t seed = 0;
      for (uintptr_t part : {uintptr_t(key.values), uintptr_t(key.meta), uintptr_t(key.x), uintptr_t(key.y),
                             uintptr_t(key.m), uintptr_t(key.n), uintptr_t(key.k), uintptr_t(key.device),
                             uintptr_t(key.workspace)}) {
        seed ^= std::hash<uintptr_t>{}(part) + 0x9e3779b97f4a7c15ull + (seed << 6) + (seed >> 2);
      }
      return seed;
    }
  };
  static constexpr size_t kCachedParams = 256;

  static int gemm(void const* values, void const* meta, void const* x, void* y, int m, int n, int k,
                  void* workspace, size_t workspace_bytes, cudaStream_t stream) {
    if (!aligned16(values) || !aligned16(meta) || !aligned16(x) || !aligned16(y)) {
      return fail(kInvalid, "gemm: values, meta, x and y must be 16-byte aligned (TMA)");
    }
    cutlass::KernelHardwareInfo hw_info;
    if (int code = hardware(&hw_info); code != kOk) {
      return code;
    }
    thread_local std::unordered_map<Key, typename Gemm::Params, KeyHash> cache;
    Key key{values, meta, x, y, m, n, k, hw_info.device_id, workspace};
    if (auto hit = cache.find(key); hit != cache.end()) {
      if (cutlass::Status status = Gemm::run(hit->second, stream); status != cutlass::Status::kSuccess) {
        return cutlass_fail("gemm: run", status);
      }
      return kOk;
    }
    auto args = arguments(values, meta, x, y, m, n, k, hw_info);
    if (cutlass::Status status = Gemm::can_implement(args); status != cutlass::Status::kSuccess) {
      return fail(kInvalid, "gemm: can_implement: %s (m=%d n=%d k=%d: 16-byte TMA rows need m, the output "
                  "features, a multiple of 8 and k, the input features, of 16)", cutlassGetStatusString(status), m,
                  n, k);
    }
    size_t needed = Gemm::get_workspace_size(args);
    if (needed > workspace_bytes || (needed > 0 && workspace == nullptr)) {
      return fail(kInvalid, "gemm: workspace of %zu bytes given, %zu needed", workspace_bytes, needed);
    }
    Gemm op;
    if (cutlass::Status status = op.initialize(args, workspace, stream); status != cutlass::Status::kSuccess) {
      return cutlass_fail("gemm: initialize", status);
    }
    if (cutlass::Status status = op.run(stream); status != cutlass::Status::kSuccess) {
      return cutlass_fail("gemm: run", status);
    }
    if (needed == 0) {  // a workspace may need initialising per call: only parameters without one are reused
      if (cache.size() >= kCachedParams) {
        cache.clear();
      }
      cache.emplace(key, op.params());
    }
    return kOk;
  }

  static Entry entry(int index, char const* name) {
    return Entry{Dtype::id, index, name, kLayoutK, &sizes, &compress, &workspace, &gemm};
  }
};

}  // namespace wb_sm90_sparse
