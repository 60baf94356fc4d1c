"""The one place that writes files atomically (temp file in the same folder, then os.replace).

A reader never sees a half-written file: either the old content or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

_UMASK = os.umask(0)
os.umask(_UMASK)


def cache_root() -> Path:
    """ArchScope's cache folder (not created here): $ARCHSCOPE_CACHE, else ~/.cache/archscope.
    Decoded datasets (core.data.base.cache_dir) and counted costs (core.analysis.cost_cache) live
    under it."""
    return Path(os.environ.get("ARCHSCOPE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "archscope"))


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` to fill a temp file next to ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600; a run folder must stay readable by other users/tools (umask applies).
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    def _write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    atomic_write(path, _write)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: str | os.PathLike, obj: dict) -> None:
    """Append one JSON object as one line, flushed and fsynced (metrics survive a kill -9)."""
    line = json.dumps(obj, separators=(",", ":")) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file, skipping a half-written (unparseable) last line and blank lines."""
    rows: list[dict] = []
    try:
        # errors="replace": a torn multi-byte character or stray bytes spoil one line, not the file.
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return rows
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # a writer was killed mid-line: tolerate it
            continue
        if isinstance(obj, dict):
            rows.append(obj)
    return rows


def parse_json(text: str, where: str | os.PathLike, error: Callable[[str], Exception]) -> Any:
    """``json.loads(text)``; malformed JSON raises ``error("<where>: not valid JSON (<why> at line L,
    column C)")``, the one wording every reader of a user's JSON file uses."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
