"""What a browser may make this app read or run, fixed when the server starts.

The app shows every result in its store and starts jobs on the machine it runs on, so by default it
serves this machine only, and reads only the store it was started on:

- **Address**: the server must listen on a loopback address (``.streamlit/config.toml`` sets 127.0.0.1
  when Streamlit starts from the repository root; started anywhere else it listens on every interface).
  Otherwise the app shows how to bind it and stops, unless ``WORKBENCH_APP_EXPOSE=1`` says the exposure
  is deliberate (``streamlit run app/main.py --server.address 0.0.0.0`` behind your own access control).
- **Folders**: the sidebar's store and every local file or folder a launched spec names (``model:``,
  ``data:``, any path in its parameters) must lie inside the allowed folders: ``WORKBENCH_APP_ALLOW``
  (folders separated by ``:``, then, last, one ``ducklake:`` URL allowed as a store), else the folder of the
  store the app started on (``WORKBENCH_STORE``, default ``store/workbench.duckdb``). The store the
  server was started on is always allowed. Symbolic links and ``..`` are resolved before the check.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from workbench.store import default_store_path, is_lake_url

EXPOSE_ENV = "WORKBENCH_APP_EXPOSE"
ALLOW_ENV = "WORKBENCH_APP_ALLOW"
PATH_KEYS = {"model", "data", "teacher", "path", "file", "folder"}  # spec fields that may name a local path


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; an unset address means every interface."""
    if not address:
        return False
    host = address.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_problem(address: str | None) -> str | None:
    """Why the app must not serve on ``address`` (None when it may)."""
    if is_loopback(address) or os.environ.get(EXPOSE_ENV) == "1":
        return None
    where = f"`{address}`" if address else "every network interface (no `server.address` set)"
    return (f"**This app is listening on {where}**, so anyone who can reach this machine could read every "
            "result in the store and start jobs here. It serves this machine only: start it with "
            "`streamlit run app/main.py --server.address 127.0.0.1` (the repository's `.streamlit/config.toml` "
            f"does this when Streamlit starts from the repository root). To expose it on purpose, behind "
            f"access control of your own, set `{EXPOSE_ENV}=1`.")


def _entries(text: str) -> list[str]:
    """Folders separated by ``:`` (``;`` on Windows); a ``ducklake:`` URL, which holds colons itself, last."""
    if text.startswith("ducklake:"):
        folders, url = "", text
    else:
        at = text.find(os.pathsep + "ducklake:")
        folders, url = (text, "") if at < 0 else (text[:at], text[at + 1:])
    return [e.strip() for e in folders.split(os.pathsep) if e.strip()] + ([url.strip()] if url.strip() else [])


def _resolved(path: str | Path) -> Path | None:
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):  # a NUL byte, a symlink loop
        return None


@dataclass(frozen=True)
class Allowed:
    """The folders (and shared-store URLs) the app may read, and the store it started on."""

    folders: tuple[Path, ...]
    urls: tuple[str, ...]
    start_store: str

    @classmethod
    def from_env(cls) -> "Allowed":
        start = str(default_store_path())
        entries = _entries(os.environ.get(ALLOW_ENV, ""))
        if not entries:
            entries = [start] if is_lake_url(start) else [str(Path(start).parent)]
        urls = tuple(e for e in entries if is_lake_url(e))
        folders = tuple(p for p in (_resolved(e) for e in entries if not is_lake_url(e)) if p is not None)
        if is_lake_url(start) and start not in urls:
            urls += (start,)
        return cls(folders, urls, start)

    def describe(self) -> str:
        return ", ".join([f"`{f}`" for f in self.folders] + [f"`{u}`" for u in self.urls]) or "none"

    def contains(self, path: str | Path) -> bool:
        resolved = _resolved(path)
        return resolved is not None and any(resolved == f or resolved.is_relative_to(f) for f in self.folders)

    def store_problem(self, location: str) -> str | None:
        """Why the app may not open ``location`` as its store (None when it may)."""
        location = location.strip()
        if location in (self.start_store, str(default_store_path())):
            return None  # the store the server was started on (by whoever set WORKBENCH_STORE)
        if is_lake_url(location):
            if location in self.urls:
                return None
            return (f"this app may not open the shared store `{location}`: only the stores it was started with "
                    f"are allowed. Fix: restart the app with {ALLOW_ENV} listing that URL")
        if self.contains(location):
            return None
        return (f"`{location}` is outside the folders this app may read ({self.describe()}). Fix: choose a "
                f"store inside them, or restart the app with {ALLOW_ENV} naming the folder")

    def spec_problems(self, spec: Any, names: set[str] = frozenset()) -> list[str]:
        """Every local path a spec (a mapping) names outside the allowed folders; ``names`` are values that
        are never paths (built-in models and corpora)."""
        problems = []
        for key, value in _strings(spec):
            if value in names or not _names_local_path(key, value):
                continue
            if not self.contains(value):
                problems.append(f"`{key}: {value}` names a local path outside the folders this app may read "
                                f"({self.describe()})")
        return problems


def _strings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, text) of every string in a nested spec."""
    if isinstance(value, dict):
        for name, inner in value.items():
            yield from _strings(inner, f"{key}.{name}" if key else str(name))
    elif isinstance(value, (list, tuple)):
        for inner in value:
            yield from _strings(inner, key)
    elif isinstance(value, str):
        yield key, value


def _names_local_path(key: str, value: str) -> bool:
    """Whether a spec's text value refers to a file or folder on this machine (which the job would read)."""
    if value.startswith(("/", "~", "./", "../", "file:")) or value in (".", ".."):
        return True
    if key.rsplit(".", 1)[-1] in PATH_KEYS or "/" in value or os.sep in value:
        path = _resolved(value)
        return path is not None and path.exists()
    return False


_ALLOWED: Allowed | None = None


def allowed() -> Allowed:
    """The allow-list, read from the environment once: when the server (this process) first needs it."""
    global _ALLOWED
    if _ALLOWED is None:
        _ALLOWED = Allowed.from_env()
    return _ALLOWED
