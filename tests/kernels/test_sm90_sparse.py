"""The sm90 2:4 sparse GEMM library: its build's refusals and cache key, its C ABI (which loads without a
GPU), the backend's reasons; on an H100/H200 with the library, products against the masked dense layer."""

import ctypes

import pytest
import torch
import torch.nn.functional as F

from workbench.kernels.backends import make_backend
from workbench.kernels.backends.formats import semi24_mask
from workbench.kernels.backends.sm90_sparse import build, library
from workbench.kernels.measure.environment import DTYPES, DeviceInfo
from workbench.kernels.measure.harness import relative_error

HOPPER = DeviceInfo("cuda", "NVIDIA H200", (9, 0))


def _library_or_skip() -> ctypes.CDLL:
    try:
        return library.load()
    except library.LibraryUnavailable as err:
        pytest.skip(str(err))


def test_build_without_nvcc_says_how_to_get_it(monkeypatch, tmp_path):
    for name in ("NVCC", "CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(build.shutil, "which", lambda _: None)
    monkeypatch.setattr(build, "DEFAULT_CUDA_HOME", str(tmp_path))
    with pytest.raises(build.BuildError, match="nvcc") as err:
        build.build(echo=lambda _: None)
    assert "Fix:" in str(err.value) and build.LIB_ENV in str(err.value)


def test_build_without_cutlass_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv(build.CUTLASS_ENV, str(tmp_path))
    with pytest.raises(build.BuildError, match="CUTLASS") as err:
        build.find_cutlass()
    assert "nvidia-cutlass" in str(err.value)
    monkeypatch.delenv(build.CUTLASS_ENV)
    monkeypatch.setattr(build.importlib.util, "find_spec", lambda _: None)
    with pytest.raises(build.BuildError, match="nvidia-cutlass package"):
        build.find_cutlass()


def test_cutlass_dir_gives_both_include_folders(monkeypatch, tmp_path):
    for path in ("include/cutlass/gemm/collective/sm90_sparse_mma_tma_gmma_ss_warpspecialized.hpp",
                 "tools/util/include/cutlass/util/packed_stride.hpp"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    monkeypatch.setenv(build.CUTLASS_ENV, str(tmp_path))
    assert build.find_cutlass() == [tmp_path / "include", tmp_path / "tools" / "util" / "include"]


def test_the_library_name_changes_with_sources_flags_and_configurations():
    sources = build.read_sources()
    key = build.source_key(sources)
    assert key == build.source_key(dict(sources)) and build.library_file(key).name.endswith(f"-{key}.so")
    assert build.source_key({**sources, "api.cu": sources["api.cu"] + b"\n"}) != key
    assert build.source_key(sources, flags=(*build.FLAGS, "-lineinfo")) != key
    assert build.source_key(sources, configs=build.CONFIGS[:-1]) != key


def test_configuration_names_and_compile_defines():
    config = build.KernelConfig((128, 256, 64), (1, 2), "cooperative")
    assert config.name == "128x256x64_1x2x1_cooperative"
    assert "-DWB_TILE_N=256" in config.defines("fp16", 3) and "-DWB_INDEX=3" in config.defines("fp16", 3)
    assert "-DWB_SCHEDULER=persistent" in config.defines("fp16", 3)
    assert f"-DWB_NAME={config.name}" in config.defines("fp16", 3)  # the library reports build.py's name
    stream_k = build.KernelConfig((128, 64, 128), (1, 1), "cooperative", "streamk")
    assert stream_k.name == "128x64x128_1x1x1_cooperative_streamk" and "-DWB_SCHEDULER=streamk" in stream_k.defines(
        "bf16", 0)
    assert len({c.name for c in build.CONFIGS}) == len(build.CONFIGS)
    assert all(c.schedule == "cooperative" for c in build.CONFIGS if c.scheduler == "streamk")  # CUTLASS's rule


def test_backend_says_why_it_cannot_run(monkeypatch, tmp_path):
    backend = make_backend("semi24-sm90")
    assert "cuda" in backend.unsupported(DeviceInfo("cpu", "x86"), "bf16")
    assert "no fp8" in backend.unsupported(HOPPER, "fp8")
    assert "9.0" in backend.unsupported(DeviceInfo("cuda", "NVIDIA A100", (8, 0)), "bf16")
    monkeypatch.setenv(build.LIB_ENV, str(tmp_path / "missing.so"))
    assert "does not exist" in backend.unsupported(HOPPER, "bf16")
    monkeypatch.delenv(build.LIB_ENV)
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    reason = backend.unsupported(HOPPER, "fp16")
    assert "build-sm90" in reason and "unsupported" in reason  # recorded as an unsupported case, not a fault


def test_the_library_abi_answers_without_a_gpu():
    lib = _library_or_skip()
    assert library.config_names() == [config.name for config in build.CONFIGS]
    layouts = [library.layout_k(torch.bfloat16, i) for i in range(len(build.CONFIGS))]
    assert layouts == [min(config.tile[2], 128) for config in build.CONFIGS]  # the metadata's tile depth
    values, meta = ctypes.c_size_t(), ctypes.c_size_t()
    assert lib.wb_sm90_sparse_compressed_sizes(0, 0, 4096, 11008, ctypes.byref(values), ctypes.byref(meta)) == 0
    assert values.value == 4096 * 11008 // 2 * 2  # half the values, 2 bytes each
    assert 0 < meta.value <= values.value // 4  # 2 bits of position per kept value, in CUTLASS's padded layout
    assert lib.wb_sm90_sparse_gemm(0, 99, None, None, None, None, 8, 8, 16, None, 0, None) == 4
    assert b"configuration 99" in lib.wb_sm90_sparse_last_error()


def _pruned(rows: int, cols: int, dtype: str) -> torch.Tensor:
    torch.manual_seed(0)
    weight = torch.randn(rows, cols, device="cuda")
    return (weight * semi24_mask(weight)).to(DTYPES[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("shape", [(256, 512), (4096, 11008), (11008, 4096)])
@pytest.mark.parametrize("tokens", [1, 16, 128, 200, 2048])
def test_every_configuration_equals_the_masked_dense_layer(dtype, shape, tokens):
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("sm_90a kernels: an H100 or H200 only")
    _library_or_skip()
    weight = _pruned(*shape, dtype)
    x = torch.randn(tokens, shape[1], device="cuda").to(DTYPES[dtype])
    reference = F.linear(x.float(), weight.float())
    errors = {}
    for config, name in enumerate(library.config_names()):
        values, meta = library.compress(weight, config)
        result = library.linear(values, meta, x, shape[0], config)
        assert result.shape == (tokens, shape[0]) and result.dtype == x.dtype
        errors[name] = relative_error(result, reference)
    assert max(errors.values()) < 1e-2, errors  # 16-bit operands and output, fp32 accumulation


@pytest.mark.gpu
def test_backend_tunes_and_multiplies():
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("sm_90a kernels: an H100 or H200 only")
    _library_or_skip()
    backend = make_backend("semi24-sm90")
    weight = _pruned(512, 1024, "bf16")
    x = torch.randn(64, 1024, device="cuda", dtype=torch.bfloat16)
    prepared = backend.prepare(weight, "bf16")
    assert prepared.nbytes < 0.6 * weight.numel() * weight.element_size()
    tuned = backend.tune(prepared, x)
    assert tuned.config["config"] in library.config_names() and prepared.tuned[64] is not None
    assert relative_error(backend.matmul(prepared, x), F.linear(x.float(), weight.float())) < 1e-2


@pytest.mark.gpu
def test_compress_refuses_a_weight_that_is_not_2to4():
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("sm_90a kernels: an H100 or H200 only")
    _library_or_skip()
    with pytest.raises(ValueError, match="not 2:4"):
        library.compress(torch.ones(64, 64, device="cuda", dtype=torch.bfloat16), 0)


def test_the_library_in_use_is_named_by_its_content(monkeypatch, tmp_path):
    from workbench.kernels.measure.environment import sm90_sparse_library

    monkeypatch.setenv(build.LIB_ENV, str(tmp_path / "missing.so"))
    assert sm90_sparse_library() is None
    first, second = tmp_path / "a.so", tmp_path / "b.so"
    first.write_bytes(b"kernels one")
    second.write_bytes(b"kernels two")
    monkeypatch.setenv(build.LIB_ENV, str(first))
    named = sm90_sparse_library()
    monkeypatch.setenv(build.LIB_ENV, str(second))
    assert len(named) == 12 and sm90_sparse_library() != named  # a rebuild is another benchmark stack


def test_the_compiled_operator_states_its_output_shape_without_running_the_library():
    from torch._subclasses.fake_tensor import FakeTensorMode

    from workbench.kernels.backends.sm90 import sm90_linear

    with FakeTensorMode():  # what torch.compile traces with: shapes and dtypes, no kernel runs
        values, meta = torch.empty(4096, dtype=torch.uint8), torch.empty(512, dtype=torch.uint8)
        y = sm90_linear(values, meta, torch.empty(16, 128, dtype=torch.float16), 96, 2)
    assert y.shape == (16, 96) and y.dtype == torch.float16


def test_a_weight_the_kernels_cannot_tile_is_an_unsupported_case():
    from workbench.kernels.backends.base import is_unsupported_error

    with pytest.raises(ValueError) as err:
        make_backend("semi24-sm90").prepare(torch.zeros(12, 64, dtype=torch.bfloat16), "bf16")
    assert is_unsupported_error(err.value) and "multiple of 8" in str(err.value)  # a row, not a fault
    with pytest.raises(ValueError) as err:
        library._dtype_id(torch.float32)
    assert is_unsupported_error(err.value)
