"""Params / MACs / FLOPs counts kept on disk between server starts.

Counting builds each model: it imports torch (about 1.5 s) and takes 0.1-1.5 s per architecture,
so a restarted dashboard counted the 23 architectures of the shipped runs again (about 3.5 s on 2
cores) before the Overview's cost columns and the Compare cost table could be filled. A count
depends only on the architecture (model, options, input shape, classes) and on the code that builds
and counts it, so the key holds both. The code's fingerprint is the size and modification time of
every .py file under core/models and core/analysis/complexity, of core/analysis/compare.py, and of
the model files ARCHSCOPE_MODELS names: editing any of them counts anew.

A run is looked up by its config.json (path, size and modification time), so a restarted server
reads every shipped run's counts without parsing a TrainConfig (which imports torch) or building a
model. The same counts are also kept in memory, for a cache folder that cannot be written.

Where: ``costs.json`` in ArchScope's cache folder (core.io.cache_root: ``$ARCHSCOPE_CACHE``, else
``~/.cache/archscope``), written once per batch of new counts. A cache that cannot be read, holds
something else than counts, or cannot be written is ignored: the count is made, never an error.
Nothing here imports torch until a count is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from core import MODEL_FILES_ENV
from core.analysis.compare import RunArchitecture, architecture_cost, run_architecture
from core.errors import ArchScopeError
from core.io import atomic_write_json, cache_root

FILE_NAME = "costs.json"
_CORE = Path(__file__).resolve().parents[1]
# The code a count depends on: the models, the counters, and architecture_cost itself.
_CODE = (_CORE / "models", _CORE / "analysis" / "complexity", _CORE / "analysis" / "compare.py")

# In-process copy: (fingerprint, architecture key) -> counts; (fingerprint, run stamp) -> key.
_MEMORY: dict[tuple[str, str], dict] = {}
_RUNS: dict[tuple[str, str], str] = {}
_LOADED: set[str] = set()           # fingerprints whose disk cache was read into memory


def cache_path() -> Path:
    return cache_root() / FILE_NAME


def code_fingerprint() -> str:
    """A hash of (path, size, mtime) of every file the counts depend on (see the module docstring)."""
    entries = [*_CODE, *(Path(e).expanduser() for e in os.environ.get(MODEL_FILES_ENV, "").split(os.pathsep) if e.strip())]
    digest = hashlib.sha256()
    for entry in entries:
        for path in sorted(entry.rglob("*.py")) if entry.is_dir() else [entry]:
            try:
                st = path.stat()
                digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()[:16]


def _key(arch: RunArchitecture) -> str:
    return json.dumps([arch.model, arch.options_json, list(arch.input_shape), arch.num_classes])


def _is_count(value: object) -> bool:
    """What architecture_cost returns: the counts, or the reason they cannot be made."""
    if not isinstance(value, dict):
        return False
    if set(value) == {"error"}:
        return isinstance(value["error"], str)
    return (set(value) == {"params", "macs", "flops", "input"} and isinstance(value["input"], str)
            and all(isinstance(value[k], int) and not isinstance(value[k], bool) and value[k] >= 0
                    for k in ("params", "macs", "flops")))


def _read(fingerprint: str) -> tuple[dict, dict]:
    """(counts by architecture key, architecture key by run stamp) of this code's version on disk."""
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}, {}
    if not isinstance(data, dict) or data.get("code") != fingerprint:
        return {}, {}       # another version of the code (or not ours): count again
    counts = data.get("counts") if isinstance(data.get("counts"), dict) else {}
    runs = data.get("runs") if isinstance(data.get("runs"), dict) else {}
    counts = {k: v for k, v in counts.items() if _is_count(v)}
    return counts, {k: v for k, v in runs.items() if isinstance(v, str) and v in counts}


def _load(fingerprint: str) -> None:
    if fingerprint in _LOADED:
        return
    counts, runs = _read(fingerprint)
    for key, cost in counts.items():
        _MEMORY.setdefault((fingerprint, key), cost)
    for stamp, key in runs.items():
        _RUNS.setdefault((fingerprint, stamp), key)
    _LOADED.add(fingerprint)


def _save(fingerprint: str, counts: dict, runs: dict) -> None:
    """Add new counts (and run stamps) to the file, with what another process wrote meanwhile."""
    on_disk, on_disk_runs = _read(fingerprint)
    try:
        atomic_write_json(cache_path(), {"code": fingerprint, "counts": {**on_disk, **counts},
                                         "runs": {**on_disk_runs, **runs}})
    except OSError:
        pass            # a read-only or full disk: the counts stay in memory for this process


def _count(fingerprint: str, arch: RunArchitecture, new: dict) -> dict:
    key = _key(arch)
    if (fingerprint, key) not in _MEMORY:
        _MEMORY[(fingerprint, key)] = new[key] = architecture_cost(arch)
    return dict(_MEMORY[(fingerprint, key)])


def cached_architecture_cost(arch: RunArchitecture) -> dict:
    """``compare.architecture_cost(arch)``, from memory or the disk cache when this code counted
    it before, else counted and added to both."""
    fingerprint, new = code_fingerprint(), {}
    _load(fingerprint)
    cost = _count(fingerprint, arch, new)
    if new:
        _save(fingerprint, new, {})
    return cost


def _run_stamp(run_dir: str | Path) -> str | None:
    config = Path(run_dir) / "config.json"
    try:
        st = config.stat()
    except OSError:
        return None
    return f"{config.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def cached_run_costs(run_dirs: Iterable[str | Path]) -> list[dict]:
    """``compare.run_cost`` of each run: the counts of its architecture, found by its config.json's
    path, size and time without reading it when counted before; {error} for a run whose config
    cannot say (never raises for a broken run; not cached). The file is written once."""
    fingerprint, new_counts, new_runs, out = code_fingerprint(), {}, {}, []
    _load(fingerprint)
    for run_dir in run_dirs:
        stamp = _run_stamp(run_dir)
        key = _RUNS.get((fingerprint, stamp)) if stamp else None
        if key is not None and (fingerprint, key) in _MEMORY:
            out.append(dict(_MEMORY[(fingerprint, key)]))
            continue
        try:
            arch = run_architecture(run_dir)
        except ArchScopeError as exc:
            out.append({"error": str(exc)})
            continue
        out.append(_count(fingerprint, arch, new_counts))
        if stamp is not None:
            _RUNS[(fingerprint, stamp)] = new_runs[stamp] = _key(arch)
    if new_counts or new_runs:
        _save(fingerprint, new_counts, new_runs)
    return out


def cached_run_cost(run_dir: str | Path) -> dict:
    """``cached_run_costs`` of one run."""
    return cached_run_costs([run_dir])[0]
