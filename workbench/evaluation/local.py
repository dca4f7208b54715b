"""Local tasks: small downstream tasks in the harness's own format, built from the held-out text of the
corpora the workbench ships, so that accuracy is measured offline.

| task | output | documents | built from |
|---|---|---|---|
| ``shakespeare-lastword`` | loglikelihood (LAMBADA-style) | 500 | Hamlet, Henry V, The Tempest |
| ``shakespeare-nextline`` | multiple choice of 4 | 500 | the same three plays |
| ``pydoc-nextline`` | multiple choice of 4 | 300 | every fifth pydoc topic |

Only the evaluation part of a corpus is read (``Corpus.evaluation_text``: the plays and topics that
calibration never reads). Documents are drawn with a fixed seed and written in a shuffled order, so the
first N (``evaluation.limit``) are spread over the whole held-out text.

The YAML of each task is shipped in ``workbench/evaluation/tasks/``; its JSON lines are built on first use
into the workbench cache (``<cache>/eval-tasks/<digest>/``), where a copy of the YAML names them by their
absolute path (``dataset_path: json`` with ``data_files``). The digest covers this module's source, the
templates and the corpora's identities, so a changed corpus or builder builds a new folder; a run's key
holds ``task_identity`` (``BUILD_VERSION``, template, corpus), so bump ``BUILD_VERSION`` whenever the
documents change. ``python -m
workbench.evaluation.local OUT/`` writes the same files into OUT/ (e.g. to read them with ``lm_eval
--include_path OUT/``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from workbench.data import load_corpus

# bumped whenever the documents built from the same corpus text change
BUILD_VERSION = "1"
TEMPLATES = Path(__file__).parent / "tasks"
SEED = 0
CONTEXT_LINES = 8  # lines of text before the target line
CHOICES = 4
MIN_DISTANCE = 50  # lines between the target and any distractor

_SPEAKER = re.compile(r"^[A-Z][\w'-]*(?: (?:[A-Z][\w'-]*|of|and|the|de|le))*:$")
_STAGE = frozenset({"Enter", "Re-enter", "Exit", "Exeunt", "Flourish", "Alarum", "Alarums", "Sennet", "Trumpets",
                    "Trumpet", "Music", "Retreat", "Drum", "Thunder", "Sound", "Dies", "Dumb-show"})
_LAST_WORD = re.compile(r"^(?P<head>.*\S)\s+(?P<word>[A-Za-z][A-Za-z']*[A-Za-z])[.,;:!?]+$")
# frequent words that little context is needed for: a LAMBADA target should need the passage
_FUNCTION_WORDS = frozenset("""
    that this with have will your thee thou thine upon what them they from their there then than were when which
    would shall should here hath doth come more some such these those into unto whom whose where else even much
""".split())


class _Dumper(yaml.SafeDumper):
    """Strings holding a line break (the target delimiter) in double quotes, as the templates write them."""


_Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style='"' if "\n" in value else None))


@dataclass(frozen=True)
class LocalTask:
    name: str
    corpus: str
    output: str  # the harness's output_type
    size: int
    summary: str
    build: Callable[[list[str], random.Random, int, str], list[dict[str, Any]]]

    @property
    def template(self) -> Path:
        return TEMPLATES / f"{self.name}.yaml"


def _shakespeare_line(line: str) -> bool:
    """A line of a speech: not blank, not a speaker's name, not a stage direction."""
    stripped = line.strip()
    return bool(stripped) and not _SPEAKER.match(stripped) and stripped.split()[0] not in _STAGE


def _pydoc_line(line: str) -> bool:
    """A line of prose or code: not blank, not a heading's underline."""
    stripped = line.strip()
    return bool(stripped) and not set(stripped) <= set("=-~^*")


def _context(lines: list[str], index: int) -> str:
    return "\n".join(lines[max(0, index - CONTEXT_LINES) : index]).strip("\n")


def _also_calibrated(lines: list[str], index: int, calibration: str) -> bool:
    """Whether the target line with the two before it also occurs in the calibration text (pydoc topics
    share paragraphs; a play may quote another): such documents are left out."""
    return "\n".join(lines[max(0, index - 2) : index + 1]) in calibration


def _last_word_docs(lines: list[str], rng: random.Random, size: int, calibration: str) -> list[dict[str, Any]]:
    """Lines ending in a word of 4+ letters before punctuation: the context is the preceding lines and the
    line up to that word; the target is the word."""
    targets = []
    for index, line in enumerate(lines):
        match = _LAST_WORD.match(line.rstrip())
        if (index >= 2 and _shakespeare_line(line) and _shakespeare_line(lines[index - 1]) and match is not None
                and len(match["word"]) >= 4 and match["word"].lower() not in _FUNCTION_WORDS):
            targets.append(index)
    docs = []
    for index in rng.sample(targets, len(targets)):  # a seeded order: the first N are spread over the plays
        if len(docs) == size:
            break
        if not _also_calibrated(lines, index, calibration):
            docs.append(_last_word_doc(lines, index))
    return docs


def _last_word_doc(lines: list[str], index: int) -> dict[str, Any]:
    match = _LAST_WORD.match(lines[index].rstrip())
    assert match is not None
    before = _context(lines, index)
    context = f"{before}\n{match['head']}" if before else match["head"]
    return {"context": context, "target": match["word"], "line": index}


def _next_line_docs(is_line: Callable[[str], bool]) -> Callable[[list[str], random.Random, int, str], list[dict[str, Any]]]:
    def build(lines: list[str], rng: random.Random, size: int, calibration: str) -> list[dict[str, Any]]:
        """The true next line among 4: distractors are lines of the same kind, similar length and the same
        indentation, at least MIN_DISTANCE lines away from the target."""
        candidates = [i for i, line in enumerate(lines) if is_line(line) and 20 <= len(line.strip()) <= 120]
        targets = [i for i in candidates if i >= 2 and is_line(lines[i - 1])]
        docs = []
        for index in rng.sample(targets, len(targets)):
            if _also_calibrated(lines, index, calibration):
                continue
            true = lines[index].rstrip()
            indent = len(true) - len(true.lstrip())
            pool = [j for j in candidates
                    if abs(j - index) >= MIN_DISTANCE and abs(len(lines[j].rstrip()) - len(true)) <= max(8, len(true) // 4)
                    and len(lines[j]) - len(lines[j].lstrip()) == indent and lines[j].rstrip() != true]
            distractors: list[str] = []
            for j in rng.sample(pool, min(len(pool), 4 * CHOICES)):
                text = lines[j].rstrip()
                if text not in distractors:
                    distractors.append(text)
            if len(distractors) < CHOICES - 1:
                continue
            choices = distractors[: CHOICES - 1]
            label = rng.randrange(CHOICES)
            choices.insert(label, true)
            docs.append({"context": _context(lines, index), "choices": choices, "label": label, "line": index})
            if len(docs) == size:
                break
        return docs

    return build


LOCAL_TASKS: dict[str, LocalTask] = {task.name: task for task in (
    LocalTask("shakespeare-lastword", "shakespeare", "loglikelihood", 500,
              "last word of a held-out line given the lines before it (LAMBADA-style; acc = greedy match)",
              _last_word_docs),
    LocalTask("shakespeare-nextline", "shakespeare", "multiple_choice", 500,
              "true next line of a held-out play among 4 (distractors from elsewhere in the held-out plays)",
              _next_line_docs(_shakespeare_line)),
    LocalTask("pydoc-nextline", "pydoc", "multiple_choice", 300,
              "true next line of a held-out pydoc topic among 4 (distractors from elsewhere in the held-out topics)",
              _next_line_docs(_pydoc_line)),
)}


def build_documents(name: str) -> list[dict[str, Any]]:
    """The documents of a local task, built from its corpus's held-out text (deterministic)."""
    task = LOCAL_TASKS[name]
    seed = int.from_bytes(hashlib.sha256(f"{SEED}:{name}".encode()).digest()[:8], "little")
    corpus = load_corpus(task.corpus)
    return task.build(corpus.evaluation_text.split("\n"), random.Random(seed), task.size, corpus.calibration_text)


def task_identity(name: str) -> str:
    """Names a local task's exact documents without building them: builder version, template, corpus text."""
    task = LOCAL_TASKS[name]
    template = hashlib.sha256(task.template.read_bytes()).hexdigest()[:12]
    return f"{name}@{BUILD_VERSION}:{template}:{load_corpus(task.corpus).identity}"


def write_tasks(folder: Path, names: list[str] | None = None) -> Path:
    """Each task's JSON lines and its YAML (``data_files`` pointing at the JSON lines by absolute path)."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for name in names or list(LOCAL_TASKS):
        data = folder / f"{name}.jsonl"
        with data.open("w", encoding="utf-8") as handle:
            for doc in build_documents(name):
                handle.write(json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n")
        config = yaml.safe_load(LOCAL_TASKS[name].template.read_text(encoding="utf-8"))
        config["dataset_kwargs"]["data_files"] = {"test": str(data)}
        header = f"# built by workbench.evaluation.local v{BUILD_VERSION} from {LOCAL_TASKS[name].template.name}\n"
        (folder / f"{name}.yaml").write_text(header + yaml.dump(config, Dumper=_Dumper, sort_keys=False, allow_unicode=True),
                                             encoding="utf-8")
    return folder


def task_folder() -> Path:
    """The cached folder of every local task, built on first use (atomically: a half-written folder never
    shows under its final name)."""
    from workbench.models import cache_dir

    # the builder's source too: an edit that forgot to bump BUILD_VERSION still rebuilds the files
    source = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    digest = hashlib.sha256("\n".join([source, *(task_identity(name) for name in LOCAL_TASKS)]).encode()).hexdigest()[:16]
    folder = cache_dir() / "eval-tasks" / f"v{BUILD_VERSION}-{digest}"
    if all((folder / f"{name}.yaml").is_file() for name in LOCAL_TASKS):
        return folder
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write_tasks(tmp)
    # the YAML names its data by absolute path: rewrite it for the final folder before the rename
    for name in LOCAL_TASKS:
        path = tmp / f"{name}.yaml"
        path.write_text(path.read_text(encoding="utf-8").replace(str(tmp.resolve()), str(folder.resolve())),
                        encoding="utf-8")
    try:
        tmp.rename(folder)
    except OSError:  # another process built it first (theirs is the same), or a broken folder is in the way
        if not all((folder / f"{name}.yaml").is_file() for name in LOCAL_TASKS):
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def describe_tasks() -> list[dict[str, Any]]:
    """One row per local task, for `workbench tasks`: its corpus, output type, documents, metrics, files."""
    folder = task_folder()
    rows = []
    for name, task in LOCAL_TASKS.items():
        with (folder / f"{name}.jsonl").open(encoding="utf-8") as handle:
            documents = sum(1 for _ in handle)
        metrics = [m["metric"] for m in yaml.safe_load(task.template.read_text(encoding="utf-8"))["metric_list"]]
        rows.append({"task": name, "corpus": task.corpus, "output_type": task.output, "documents": documents,
                     "metrics": metrics, "description": task.summary, "yaml": str(folder / f"{name}.yaml")})
    return rows


if __name__ == "__main__":
    out = write_tasks(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("eval-tasks"))
    for task_name in LOCAL_TASKS:
        print(f"{task_name}: {sum(1 for _ in (out / f'{task_name}.jsonl').open())} documents -> {out / task_name}.yaml")
