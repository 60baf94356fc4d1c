"""Import a zipped run folder trained elsewhere (e.g. on a GPU server), without unpickling anything.

Pure Python (no streamlit) so it is unit-tested; the Train page calls ``import_run_zip``.

What is accepted: a zip holding one run folder (either at the top level or inside one folder)
with only the run-folder file names (config.json, status.json, metrics.jsonl, steps.jsonl,
eval.json, model.safetensors, last.safetensors, epoch_NNNN.safetensors). Refused: absolute paths,
``..`` components, symlinks, nested folders, unknown names (``last_state.pt`` is a torch pickle
and skipped), bad safetensors headers, a config.json that is not a JSON object, more than
``max_total_bytes`` uncompressed. Extraction goes to a temporary folder next to the destination
and is renamed into place only when everything checked out.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from core.errors import InvalidInputError
from core.training.run_folder import InvalidRunIdError, RunFolder, validate_run_id

ALLOWED_NAMES = {"config.json", "status.json", "metrics.jsonl", "steps.jsonl", "eval.json",
                 "model.safetensors", "last.safetensors"}
EPOCH_WEIGHTS = re.compile(r"^epoch_\d{4,}\.safetensors$")
SKIPPED_NAMES = {"last_state.pt", "train.lock"}   # resume state is a pickle; a lock is meaningless here
MAX_TOTAL_BYTES = 2 * 1024 ** 3


class RunImportError(InvalidInputError):
    """The zip is not an acceptable run; the message says which entry and why."""


@dataclass
class ImportResult:
    run_dir: Path
    files: list[str]
    skipped: list[str] = field(default_factory=list)


def _check_safetensors(path: Path) -> None:
    """Parse the header only (JSON); a pickle or truncated file fails here."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            list(fh.keys())
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a safetensors file"
        raise RunImportError(f"{path.name} is not a valid safetensors file ({exc}); only safetensors weights "
                             "are accepted") from None


def import_run_zip(source: str | Path | BinaryIO, runs_root: str | Path, run_id: str | None = None,
                   max_total_bytes: int = MAX_TOTAL_BYTES) -> ImportResult:
    """Validate and extract a zipped run into ``runs_root/<run_id>`` (never overwrites a folder).

    run_id defaults to the zip's folder name (or "imported-<time>" for a flat zip). Returns the
    new folder, the extracted file names and the skipped ones. Raises RunImportError.
    """
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise RunImportError(f"not a zip archive ({exc})") from None
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if not infos:
            raise RunImportError("the zip is empty")
        prefixes = set()
        plan: list[tuple[zipfile.ZipInfo, str]] = []
        skipped: list[str] = []
        total = 0
        for info in infos:
            name = info.filename
            p = PurePosixPath(name.replace("\\", "/"))
            if name.startswith(("/", "\\")) or p.is_absolute() or re.match(r"^[A-Za-z]:", name):
                raise RunImportError(f"entry {name!r} has an absolute path; refusing to extract")
            if any(part in ("..", "") for part in p.parts):
                raise RunImportError(f"entry {name!r} contains '..' or an empty component; refusing to extract")
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise RunImportError(f"entry {name!r} is a symbolic link; refusing to extract")
            if len(p.parts) > 2:
                if p.parts[-2] == "tensorboard" or "tensorboard" in p.parts:
                    skipped.append(name)
                    continue
                raise RunImportError(f"entry {name!r} is nested too deep: a run folder holds files only")
            prefixes.add(p.parts[0] if len(p.parts) == 2 else "")
            base = p.name
            if base in SKIPPED_NAMES or base.startswith("."):
                skipped.append(name)
                continue
            if base not in ALLOWED_NAMES and not EPOCH_WEIGHTS.match(base):
                raise RunImportError(
                    f"entry {name!r} is not a run-folder file; allowed: {', '.join(sorted(ALLOWED_NAMES))}, "
                    "epoch_NNNN.safetensors")
            total += info.file_size
            if total > max_total_bytes:
                raise RunImportError(f"the zip expands to more than {max_total_bytes:,} bytes; refusing")
            plan.append((info, base))
        if len(prefixes) > 1:
            raise RunImportError(f"the zip holds several folders ({', '.join(sorted(prefixes))}); zip one run at a time")
        names = {b for _, b in plan}
        if "config.json" not in names:
            raise RunImportError("the zip has no config.json, so the model cannot be rebuilt")
        if "model.safetensors" not in names and "last.safetensors" not in names:
            raise RunImportError("the zip has no weights (model.safetensors or last.safetensors)")
        prefix = prefixes.pop()
        run_id = run_id or prefix or f"imported-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            # The one run-id rule (no leading dot: ".", ".." and hidden names would not be run folders).
            validate_run_id(run_id)
        except InvalidRunIdError as exc:
            raise RunImportError(str(exc)) from None
        root = Path(runs_root)
        root.mkdir(parents=True, exist_ok=True)
        dest = root / run_id
        # Belt and braces on top of the name checks: the destination must resolve to a child of root.
        if dest.resolve().parent != root.resolve():
            raise RunImportError(f"run name {run_id!r} resolves outside {root}; refusing")
        if dest.exists():
            raise RunImportError(f"{dest} already exists; rename the zip's folder or delete the old run first")
        tmp = Path(tempfile.mkdtemp(prefix=f".import-{run_id}-", dir=root))
        try:
            for info, base in plan:
                target = tmp / base
                if target.resolve().parent != tmp.resolve():   # base is a bare name; never follow a link out
                    raise RunImportError(f"entry {info.filename!r} resolves outside the import folder; refusing")
                with zf.open(info) as src, open(target, "wb") as out:
                    # Copy at most the declared size: a lying header cannot make us write more.
                    remaining = info.file_size
                    while remaining > 0:
                        chunk = src.read(min(1 << 20, remaining))
                        if not chunk:
                            break
                        out.write(chunk)
                        remaining -= len(chunk)
            try:
                cfg = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise RunImportError(f"config.json is not valid JSON ({exc})") from None
            if not isinstance(cfg, dict) or "model" not in cfg:
                raise RunImportError("config.json does not describe a run (no 'model' key)")
            for f in tmp.glob("*.safetensors"):
                _check_safetensors(f)
            for jf in ("eval.json", "status.json"):
                if (tmp / jf).exists():
                    try:
                        json.loads((tmp / jf).read_text(encoding="utf-8"))
                    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                        raise RunImportError(f"{jf} is not valid JSON ({exc})") from None
            _fix_status(tmp)
            tmp.rename(dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return ImportResult(run_dir=dest, files=sorted(names), skipped=skipped)


def _fix_status(folder: Path) -> None:
    """A run imported while 'running' elsewhere is not running here: its pid means nothing locally."""
    run = RunFolder(folder)
    status = {}
    if run.status_path.exists():
        status = json.loads(run.status_path.read_text(encoding="utf-8")) or {}
    state = status.get("state")
    if state in ("done", "failed", "cancelled"):
        run.write_status(state, pid=None, imported=True)
    else:
        finished = "done" if run.eval_path.exists() else "cancelled"
        run.write_status(finished, pid=None, imported=True,
                         message=f"imported from a zip (was {state or 'without status'})")
