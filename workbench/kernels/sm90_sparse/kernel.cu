// One sparse GEMM configuration for one dtype. build.py compiles this file once per entry of its
// configuration list (the slow CUTLASS instantiations then compile in parallel), defining
// WB_DTYPE (bf16 | fp16), WB_INDEX, WB_TILE_M/N/K, WB_CLUSTER_M/N and WB_SCHEDULE (cooperative | pingpong).
#include "sparse_gemm.cuh"

#define WB_STRING_(x) #x
#define WB_STRING(x) WB_STRING_(x)

namespace {

using Config = wb_sm90_sparse::SparseGemm<wb_sm90_sparse::WB_DTYPE, WB_TILE_M, WB_TILE_N, WB_TILE_K, WB_CLUSTER_M,
                                          WB_CLUSTER_N, wb_sm90_sparse::WB_SCHEDULE>;

constexpr char kName[] = WB_STRING(WB_TILE_M) "x" WB_STRING(WB_TILE_N) "x" WB_STRING(WB_TILE_K) "_" WB_STRING(
    WB_CLUSTER_M) "x" WB_STRING(WB_CLUSTER_N) "x1_" WB_STRING(WB_SCHEDULE);

struct Registrar {
  Registrar() { wb_sm90_sparse::register_entry(Config::entry(WB_INDEX, kName)); }
} registrar;

}  // namespace
