// One sparse GEMM configuration for one dtype. build.py compiles this file once per entry of its
// configuration list (the slow CUTLASS instantiations then compile in parallel), defining WB_DTYPE
// (bf16 | fp16), WB_INDEX, WB_TILE_M/N/K, WB_CLUSTER_M/N, WB_SCHEDULE (cooperative | pingpong),
// WB_SCHEDULER (persistent | streamk) and WB_NAME, the configuration's name in build.py (a pp-number
// such as 128x256x64_1x2x1_cooperative, so it can be turned into a string here).
#include "sparse_gemm.cuh"

#define WB_STRING_(x) #x
#define WB_STRING(x) WB_STRING_(x)

namespace {

using Config = wb_sm90_sparse::SparseGemm<wb_sm90_sparse::WB_DTYPE, WB_TILE_M, WB_TILE_N, WB_TILE_K, WB_CLUSTER_M,
                                          WB_CLUSTER_N, wb_sm90_sparse::WB_SCHEDULE, wb_sm90_sparse::WB_SCHEDULER>;

constexpr char kName[] = WB_STRING(WB_NAME);

struct Registrar {
  Registrar() { wb_sm90_sparse::register_entry(Config::entry(WB_INDEX, kName)); }
} registrar;

}  // namespace
