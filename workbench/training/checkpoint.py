"""Checkpoints that let a killed training job resume where it stopped, with no pickles.

A checkpoint is a folder ``step-<N>/`` in the job's own folder (``<store dir>/checkpoints/<key>/``):

- ``model.safetensors``: the model's weights (tied weights stored once);
- ``optimizer.safetensors``: every per-parameter optimizer tensor (momentum, Adam moments, step),
  named ``<parameter index>/<state name>``, and the method's tensors (masks) as ``method/...``;
- ``masks.safetensors``: the distinct mask snapshots taken so far, bit-packed;
- ``state.json``: the step, the metrics logged so far and the index of the snapshots.

It is written to a temporary folder and renamed into place, so a kill while writing leaves the
previous checkpoint intact; older checkpoints are removed once the new one is in place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from workbench.pruning.masks import pack_bits, unpack_bits
from workbench.records import Metric

_STEP_DIR = re.compile(r"step-(\d+)")


@dataclass
class Resumed:
    step: int
    metrics: list[Metric]
    snapshots: list[tuple[int, dict[str, torch.Tensor]]]
    extra: dict[str, Any]


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    tensors = {}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, param in enumerate(params):
        for key, value in optimizer.state.get(param, {}).items():
            value = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"{index}/{key}"] = value.detach().to("cpu").contiguous()
    return tensors


def _load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    optimizer.state.clear()
    for name, value in tensors.items():
        index, key = name.split("/", 1)
        param = params[int(index)]
        # Adam keeps `step` on the CPU as a float tensor; everything else lives with its parameter
        optimizer.state[param][key] = value if key == "step" else value.to(param.device)


class Checkpoints:
    """The checkpoints of one job key. ``folder=None`` disables them (nothing is written)."""

    def __init__(self, folder: Path | None):
        self.folder = Path(folder) if folder is not None else None

    def _steps(self) -> list[int]:
        if self.folder is None or not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir()
                      if (m := _STEP_DIR.fullmatch(p.name)) and (p / "state.json").is_file())

    def latest_step(self) -> int | None:
        steps = self._steps()
        return steps[-1] if steps else None

    def save(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, method_tensors: dict[str, torch.Tensor],
             metrics: list[Metric], snapshots: list[tuple[int, dict[str, torch.Tensor]]], extra: dict[str, Any]) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"step-{step:08d}"
        tmp = self.folder / f".tmp-{step:08d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_model(model, str(tmp / "model.safetensors"))
        state = {**_optimizer_tensors(optimizer),
                 **{f"method/{k}": v.detach().to("cpu").contiguous() for k, v in method_tensors.items()}}
        save_file(state, str(tmp / "optimizer.safetensors"))
        distinct: dict[int, str] = {}  # id of the tensor -> its name in the file (unchanged masks are shared)
        packed, index = {}, []
        for snap_step, masks in snapshots:
            entry = {}
            for layer, mask in masks.items():
                if id(mask) not in distinct:
                    distinct[id(mask)] = f"m{len(distinct)}"
                    packed[distinct[id(mask)]] = pack_bits(mask).cpu()
                entry[layer] = [distinct[id(mask)], list(mask.shape)]
            index.append([snap_step, entry])
        save_file(packed, str(tmp / "masks.safetensors"))
        (tmp / "state.json").write_text(json.dumps({
            "step": step, "extra": extra, "snapshots": index,
            "metrics": [[m.name, m.value, m.step] for m in metrics]}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in self._steps():
            if old != step:
                shutil.rmtree(self.folder / f"step-{old:08d}", ignore_errors=True)

    def load_latest(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Resumed, dict[str, torch.Tensor]] | None:
        """Restore model and optimizer in place from the newest checkpoint; returns what the loop needs
        to go on (step, metrics, snapshots) and the method's tensors, or None when there is none."""
        step = self.latest_step()
        if step is None:
            return None
        folder = self.folder / f"step-{step:08d}"
        load_model(model, str(folder / "model.safetensors"))
        tensors = load_file(str(folder / "optimizer.safetensors"))
        _load_optimizer_tensors(optimizer, {k: v for k, v in tensors.items() if not k.startswith("method/")})
        method_tensors = {k.removeprefix("method/"): v for k, v in tensors.items() if k.startswith("method/")}
        state = json.loads((folder / "state.json").read_text())
        packed = load_file(str(folder / "masks.safetensors"))
        unpacked: dict[str, torch.Tensor] = {}
        snapshots = []
        for snap_step, entry in state["snapshots"]:
            masks = {}
            for layer, (name, shape) in entry.items():
                if name not in unpacked:
                    unpacked[name] = unpack_bits(packed[name], shape)
                masks[layer] = unpacked[name]
            snapshots.append((snap_step, masks))
        metrics = [Metric(name, value, metric_step) for name, value, metric_step in state["metrics"]]
        return Resumed(step, metrics, snapshots, state["extra"]), method_tensors

    def clear(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
