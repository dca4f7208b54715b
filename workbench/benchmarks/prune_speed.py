"""Pruning speed and memory against llmcompressor, in the same run: `workbench bench prune`.

Each measurement runs in a fresh subprocess (so that peak memory is one implementation's own, and
llmcompressor's global session starts clean), on the same model file, the same calibration windows and
the same sparsity, alternating the order (ours, reference, reference, ours, ...) over repeats. A worker
times only the pruning call (wall and CPU seconds, peak resident memory sampled during the call, peak
GPU memory), then measures quality: perplexity on the evaluation windows for a pretrained model, or the
relative error of the final hidden states against the dense model on held-out windows for a
random-weight model. The parent compares the two implementations' masks layer by layer.

Models: ``smollm2-135m`` (pretrained, Shakespeare calibration), ``llama-7b-random`` (Llama-2-7B shapes:
hidden 4096, MLP 11008, 32 blocks; random weights, random token windows; ``layers`` cuts the depth),
``tiny-llama-random`` (for tests).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

IMPLEMENTATIONS = ("ours", "llmcompressor")
RANDOM_SHAPES: dict[str, dict[str, int]] = {
    "llama-7b-random": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                        "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000},
    "tiny-llama-random": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 259},
}


@dataclass
class Case:
    model: str = "smollm2-135m"
    method: str = "wanda"
    pattern: str = "unstructured"
    sparsity: float = 0.5
    samples: int = 64
    seq_len: int = 512
    eval_windows: int = 64
    layers: int | None = None  # depth override for the random-weight shapes
    device: str = "cpu"
    # attention kernel of our calibration passes: "model" (the model's own, sdpa) or "eager", the explicit
    # softmax that llmcompressor forces during calibration; with "eager" both compute bit-identical statistics
    attention: str = "model"
    # dtype of our calibration forward passes (calibration.precision); llmcompressor always runs in the model's own
    precision: str = "model"

    @property
    def label(self) -> str:
        depth = f" x{self.layers} blocks" if self.layers else ""
        attention = f" ({self.attention} attention)" if self.attention != "model" else ""
        precision = f" ({self.precision} calibration)" if self.precision != "model" else ""
        return f"{self.model}{depth} {self.method} {self.pattern}{attention}{precision}"


@dataclass
class Measurement:
    impl: str
    wall_s: float
    cpu_s: float
    peak_rss_mb: float  # sampled during the pruning call
    process_peak_rss_mb: float  # whole worker process, model loading included
    peak_gpu_mb: float | None
    quality: dict[str, float]
    sparsity: float
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- what a worker prunes
@dataclass
class Workload:
    model: torch.nn.Module
    calibration: torch.Tensor
    heldout: torch.Tensor
    tokenizer: Any
    evaluate: Callable[[torch.nn.Module], dict[str, float]]
    folder: Path  # a save_pretrained-style folder with the model's config (llmcompressor reads it)


def _pretrained_workload(case: Case) -> Workload:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.data import calibration_windows, evaluation_windows
    from workbench.metrics.language import perplexity
    from workbench.models import smollm2_folder
    from workbench.pruning.pipeline import heldout_count

    if case.model != "smollm2-135m":
        raise SystemExit(f"unknown benchmark model {case.model!r}")
    folder = smollm2_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval().to(case.device)
    windows = calibration_windows("shakespeare", tokenizer, case.samples + heldout_count(case.samples),
                                  case.seq_len, 0)
    evaluation = evaluation_windows("shakespeare", tokenizer, case.eval_windows, case.seq_len)
    return Workload(model, windows[: case.samples], windows[case.samples :], tokenizer,
                    lambda m: {"perplexity": perplexity(m, evaluation)} if case.eval_windows else {}, folder)


def _random_workload(case: Case) -> Workload:
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.models import ByteTokenizer
    from workbench.pruning.pipeline import heldout_count

    shape = dict(RANDOM_SHAPES[case.model])
    if case.layers:
        shape["num_hidden_layers"] = case.layers
    config = LlamaConfig(**shape, max_position_embeddings=max(4096, case.seq_len), tie_word_embeddings=False)
    dtype = torch.bfloat16 if case.device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    with torch.device(case.device):
        model = LlamaForCausalLM(config).to(dtype).eval()
    folder = Path(tempfile.mkdtemp(prefix="bench-config-"))
    config.save_pretrained(folder)
    model.config._name_or_path = str(folder)
    generator = torch.Generator().manual_seed(0)
    windows = torch.randint(0, config.vocab_size, (case.samples + heldout_count(case.samples) + max(case.eval_windows, 1),
                                                   case.seq_len), generator=generator)
    calibration_end = case.samples + heldout_count(case.samples)
    evaluation = windows[calibration_end:].to(case.device)
    with torch.no_grad():
        dense = model.model(input_ids=evaluation).last_hidden_state.float()

    def hidden_state_error(pruned: torch.nn.Module) -> dict[str, float]:
        with torch.no_grad():
            output = pruned.model(input_ids=evaluation).last_hidden_state.float()
        return {"hidden_state_error": float((output - dense).norm() / dense.norm())}

    return Workload(model, windows[: case.samples], windows[case.samples : calibration_end], ByteTokenizer(),
                    hidden_state_error, folder)


def _ours(case: Case, work: Workload) -> Callable[[], dict[str, float]]:
    """The pruning call of the workbench, as the prune job makes it (imports and set-up outside the timing)."""
    from workbench.models.layers import prunable_layers
    from workbench.pruning.registry import PruneContext, resolve_method
    from workbench.spec import Pattern

    method = resolve_method(case.method)
    layers = prunable_layers(work.model)
    context = PruneContext(model=work.model, layers=layers, targets={name: case.sparsity for name in layers},
                           pattern=Pattern.parse(case.pattern), params=method.Params(),
                           calibration=work.calibration, heldout=work.heldout, precision=case.precision)

    own_attention = work.model.config._attn_implementation

    def prune() -> dict[str, float]:
        if case.attention != "model":
            work.model.set_attn_implementation(case.attention)
        outcome = method.prune(context)
        work.model.set_attn_implementation(own_attention)  # evaluation uses the model's own kernel
        with torch.no_grad():
            for name, module in layers.items():
                module.weight.mul_(outcome.masks[name].to(module.weight.device))
        return outcome.metrics  # where the pipeline's time went

    return prune


def _llmcompressor(case: Case, work: Workload) -> Callable[[], Any]:
    """llmcompressor's one-shot entry point with its Wanda or SparseGPT modifier and sequential pipeline."""
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning.sparsegpt import SparseGPTModifier
    from llmcompressor.modifiers.pruning.wanda import WandaPruningModifier
    from loguru import logger
    from torch.utils.data import DataLoader

    logger.remove()  # its per-layer log lines would dominate the output
    modifiers = {"wanda": WandaPruningModifier, "sparsegpt": SparseGPTModifier}
    if case.method not in modifiers:
        raise SystemExit(f"llmcompressor has no {case.method}")
    structure = "0:0" if case.pattern == "unstructured" else case.pattern  # its N counts pruned; equal at 2:4
    modifier = modifiers[case.method](sparsity=case.sparsity, mask_structure=structure, targets=["Linear"],
                                      ignore=["re:.*lm_head"])
    batches = DataLoader([{"input_ids": w[None], "attention_mask": torch.ones_like(w)[None]} for w in work.calibration],
                         batch_size=None)
    return lambda: oneshot(model=work.model, processor=work.tokenizer, dataset=batches, recipe=[modifier],
                           pipeline="sequential")


def _save_masks(model: torch.nn.Module, path: Path) -> None:
    """Keep masks (weight != 0) bit-packed, one uint8 tensor per layer."""
    from safetensors.torch import save_file

    from workbench.models.layers import prunable_layers
    from workbench.pruning.masks import pack_bits

    save_file({name: pack_bits(module.weight != 0).cpu() for name, module in prunable_layers(model).items()},
              str(path))


def worker(case: Case, impl: str, out_dir: Path | None) -> Measurement:
    """One implementation on one case, in this process; masks saved to ``out_dir`` when given."""
    import resource

    from workbench.metrics.memory import PeakMemory

    work = _random_workload(case) if case.model in RANDOM_SHAPES else _pretrained_workload(case)
    prune = (_ours if impl == "ours" else _llmcompressor)(case, work)
    cuda = case.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    with PeakMemory() as peak:
        started, cpu_started = time.perf_counter(), time.process_time()
        details = prune()
        if cuda:
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    from workbench.metrics.sparsity import overall_sparsity
    from workbench.models.layers import prunable_layers

    sparsity = overall_sparsity(prunable_layers(work.model))
    quality = work.evaluate(work.model)
    if out_dir is not None:
        _save_masks(work.model, out_dir / f"{impl}.safetensors")
    return Measurement(impl, wall, cpu, peak.rss_mb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                       peak.gpu_mb, quality, sparsity, details if isinstance(details, dict) else {})


# ---------------------------------------------------------------- the parent: A B B A ..., then compare
def _run_worker(case: Case, impl: str, out_dir: Path | None, timeout_s: float | None) -> Measurement:
    command = [sys.executable, "-m", "workbench.benchmarks.prune_speed", "worker", json.dumps(asdict(case)), impl,
               *([str(out_dir)] if out_dir else [])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"{impl} worker failed on {case.label}:\n{done.stderr[-3000:]}")
    return Measurement(**json.loads(done.stdout.strip().splitlines()[-1]))


def mask_agreement(path_a: Path, path_b: Path) -> dict[str, float]:
    """Fraction of weights whose kept/pruned state differs, and how many layers match exactly."""
    import numpy as np
    from safetensors.torch import load_file

    a, b = load_file(str(path_a)), load_file(str(path_b))
    differ = total = equal_layers = 0
    for name, packed in a.items():
        count = int(np.unpackbits(np.bitwise_xor(packed.numpy(), b[name].numpy())).sum())
        differ += count
        total += packed.numel() * 8
        equal_layers += count == 0
    return {"masks_differ_fraction": differ / total, "layers_equal": equal_layers, "layers": len(a)}


def environment(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(),
                            "threads": torch.get_num_threads(), "device": device, "host": platform.node(),
                            "load_average": os.getloadavg()}
    try:
        import transformers

        info["transformers"] = transformers.__version__
        from importlib.metadata import version

        info["llmcompressor"] = version("llmcompressor")
    except Exception:  # noqa: BLE001 - versions are informative only
        pass
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    else:
        info["cpu"] = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                            if line.startswith("model name")), platform.processor())
    return info


def run_cases(cases: list[Case], repeats: int = 1, reference: bool = True, timeout_s: float | None = None,
              on_result: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Every case with both implementations, alternating their order; one summary dict per case."""
    summaries = []
    for case in cases:
        impls = IMPLEMENTATIONS if reference else IMPLEMENTATIONS[:1]
        runs: dict[str, list[Measurement]] = {impl: [] for impl in impls}
        with tempfile.TemporaryDirectory(prefix="bench-prune-") as tmp:
            for repeat in range(repeats):
                order = impls if repeat % 2 == 0 else tuple(reversed(impls))
                for impl in order:
                    runs[impl].append(_run_worker(case, impl, Path(tmp) if reference else None, timeout_s))
            summary: dict[str, Any] = {"case": asdict(case), "label": case.label,
                                       "runs": {impl: [asdict(m) for m in ms] for impl, ms in runs.items()}}
            if reference:
                summary.update(mask_agreement(Path(tmp) / "ours.safetensors", Path(tmp) / "llmcompressor.safetensors"))
                summary.update(ratios(runs["ours"], runs["llmcompressor"]))
        summaries.append(summary)
        if on_result:
            on_result(summary)
    return summaries


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def ratios(ours: list[Measurement], theirs: list[Measurement]) -> dict[str, float]:
    """Reference over ours (above 1: we are faster / leaner); quality as our relative difference."""
    out = {"wall_speedup": _median([m.wall_s for m in theirs]) / _median([m.wall_s for m in ours]),
           "cpu_speedup": _median([m.cpu_s for m in theirs]) / _median([m.cpu_s for m in ours]),
           "peak_rss_ratio": _median([m.peak_rss_mb for m in ours]) / _median([m.peak_rss_mb for m in theirs])}
    if ours[0].peak_gpu_mb and theirs[0].peak_gpu_mb:
        out["peak_gpu_ratio"] = ours[0].peak_gpu_mb / theirs[0].peak_gpu_mb
    for name, value in ours[0].quality.items():
        out[f"{name}_relative_difference"] = value / theirs[0].quality[name] - 1
    return out


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"== {summary['label']} (sparsity {summary['case']['sparsity']}, calibration "
             f"{summary['case']['samples']} x {summary['case']['seq_len']}, {summary['case']['device']})"]
    for impl, measurements in summary["runs"].items():
        for m in measurements:
            gpu = f"  gpu peak {m['peak_gpu_mb']:.0f} MB" if m["peak_gpu_mb"] else ""
            quality = "  ".join(f"{k} {v:.4g}" for k, v in m["quality"].items())
            lines.append(f"  {impl:<14} wall {m['wall_s']:8.1f} s  cpu {m['cpu_s']:8.1f} s  rss peak "
                         f"{m['peak_rss_mb']:7.0f} MB (process {m['process_peak_rss_mb']:.0f}){gpu}  "
                         f"sparsity {m['sparsity']:.4f}  {quality}")
    if "wall_speedup" in summary:
        extra = "".join(f"  {k} {v:+.4f}" for k, v in summary.items() if k.endswith("_relative_difference"))
        gpu = f"  gpu peak ours/ref {summary['peak_gpu_ratio']:.2f}" if "peak_gpu_ratio" in summary else ""
        lines.append(f"  ref/ours wall {summary['wall_speedup']:.2f}x  cpu {summary['cpu_speedup']:.2f}x  "
                     f"rss peak ours/ref {summary['peak_rss_ratio']:.2f}{gpu}  masks differ "
                     f"{summary['masks_differ_fraction']:.2e} ({summary['layers_equal']}/{summary['layers']} layers "
                     f"equal){extra}")
        lines.append(target_line(summary))
    return "\n".join(lines)


# The goals this benchmark exists for: wall time against llmcompressor's, by device (peak memory on a CPU).
WALL_TARGETS = {"cpu": 2.0, "cuda": 5.0}


def target_line(summary: dict[str, Any]) -> str:
    """The case against its goals: wall-time ratio, and on a CPU peak memory no higher than the reference's;
    quality is shown, not judged (its noise is the calibration seed's, see README)."""
    device = "cuda" if summary["case"]["device"].startswith("cuda") else "cpu"
    wall = summary["wall_speedup"]
    parts = [f"wall {wall:.2f}x (goal >= {WALL_TARGETS[device]:g}x: {'met' if wall >= WALL_TARGETS[device] else 'NOT met'})"]
    if device == "cpu":
        rss = summary["peak_rss_ratio"]
        parts.append(f"peak memory {rss:.2f} of the reference's (goal <= 1: {'met' if rss <= 1 else 'NOT met'})")
    parts += [f"{k.removesuffix('_relative_difference')} {v:+.2%}" for k, v in summary.items()
              if k.endswith("_relative_difference")]
    return "  targets: " + "  ".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workbench.benchmarks.prune_speed")
    sub = parser.add_subparsers(dest="command", required=True)
    work = sub.add_parser("worker")
    work.add_argument("case")
    work.add_argument("impl", choices=IMPLEMENTATIONS)
    work.add_argument("out_dir", type=Path, nargs="?", help="where the bit-packed masks go (none: not saved)")
    args = parser.parse_args(argv)
    if args.command == "worker":
        measurement = worker(Case(**json.loads(args.case)), args.impl, args.out_dir)
        print(json.dumps(asdict(measurement)), flush=True)


if __name__ == "__main__":
    main()
