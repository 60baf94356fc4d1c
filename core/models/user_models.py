"""Reading and running students' model files (the ``ARCHSCOPE_MODELS`` files); no registry state here.

``ARCHSCOPE_MODELS`` names .py files or folders, separated by os.pathsep:

    # my_models/tiny.py
    from torch import nn
    from core.models import register_model

    @register_model("tiny", "two convs and a linear layer", source="my course project")
    def tiny(num_classes: int, in_channels: int = 3, width: int = 16) -> nn.Module: ...

    ARCHSCOPE_MODELS=my_models/ python -m core.models      # lists tiny with its file

core/models/registry.py loads them after the built-ins (on the first list_models/get_spec/
create_model): each file is imported by path under its own module name (no sys.path change: a
file is self-contained); its models register with the same decorator as the built-ins, and their
ModelSpec records ``source_file`` and the sha256 of the file's text. In a folder, every ``*.py``
not starting with ``_`` is loaded, in name order.

A file that cannot be used (missing, a syntax error, an exception while importing, a model name
already taken by a built-in or another file) is skipped as a whole and becomes a ``UserModelError``
naming the file and line; every other model stays available (see registry.user_model_problems).
A model that loads but fails when built or run (its function raises, its forward fails at the
chosen image size or channels, it returns the wrong shape) is a UserModelError too, from
registry.create_model / registry.check_user_model (model_problem here words it).

A run of such a model records the file and its sha256 in config.json (run.model_source, see
core/training/run_info.py); loading the run later needs the file in ARCHSCOPE_MODELS again and
warns when it changed (core/training/checkpoint.py).

Model files are code: they are read only from ARCHSCOPE_MODELS (or the server's own setting),
never from an upload or a run zip (dashboard/components/run_import.py refuses .py entries).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import CodeType

from core import MODEL_FILES_ENV
from core.errors import InvalidInputError

ENV_VAR = MODEL_FILES_ENV
MODULE_PREFIX = "archscope_user_model_"   # + file stem + path hash: a top-level module name, no package


class UserModelError(InvalidInputError):
    """A model file from ARCHSCOPE_MODELS that cannot be used; the message names the file (and line)."""


@dataclass(frozen=True)
class ModelFile:
    """One model file, read and compiled, ready to run."""

    path: Path          # resolved
    sha256: str         # of the text as read
    code: CodeType


def model_files(value: str) -> tuple[list[Path], list[UserModelError]]:
    """ARCHSCOPE_MODELS' entries (``value``) expanded to .py files, and an error for each unusable entry."""
    files: list[Path] = []
    problems: list[UserModelError] = []
    for entry in value.split(os.pathsep):
        if not entry.strip():
            continue   # "a.py:" or "::" - an empty entry names nothing
        path = Path(entry).expanduser()
        if path.is_dir():
            files.extend(p for p in sorted(path.glob("*.py")) if not p.name.startswith("_"))
        elif path.is_file() and path.suffix == ".py":
            files.append(path)
        elif path.exists():
            problems.append(UserModelError(f"{ENV_VAR}: {path}: not a .py file or a folder"))
        else:
            problems.append(UserModelError(f"{ENV_VAR}: {path}: no such file or folder"))
    # A file named twice (itself and through its folder) is loaded once.
    unique = list({p.resolve(): p for p in files}.values())
    return unique, problems


def read_model_file(path: Path) -> ModelFile:
    """Read and compile a model file; UserModelError for an unreadable file or a syntax error (with its line)."""
    path = Path(path).resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserModelError(f"{ENV_VAR}: {path}: cannot read: {exc}") from None
    try:
        code = compile(text, str(path), "exec")
    except SyntaxError as exc:
        raise UserModelError(f"{ENV_VAR}: {path} line {exc.lineno}: SyntaxError: {exc.msg}") from None
    return ModelFile(path, hashlib.sha256(text.encode("utf-8")).hexdigest(), code)


def run_model_file(source: ModelFile) -> None:
    """Run a compiled model file as its own module; whatever it raises becomes a UserModelError with the line."""
    # One module name per path, so two files called models.py in two folders do not collide.
    name = f"{MODULE_PREFIX}{source.path.stem}_{hashlib.sha256(str(source.path).encode()).hexdigest()[:10]}"
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, source.path))
    sys.modules[name] = module   # dataclasses and pickling inside the file look their module up here
    try:
        exec(source.code, module.__dict__)
    except Exception as exc:  # noqa: BLE001 - whatever a student's file raises becomes one clear line
        del sys.modules[name]
        raise UserModelError(
            f"{ENV_VAR}: {source.path}{_line_in(exc, source.path)}: {type(exc).__name__}: {exc}") from None


def forget_model_modules() -> None:
    """Drop every module made from a model file (before loading the files again)."""
    for name in [m for m in sys.modules if m.startswith(MODULE_PREFIX)]:
        del sys.modules[name]


def model_problem(name: str, path: str, factory_line: int, what: str,
                  exc: BaseException | None = None) -> UserModelError:
    """A UserModelError for model ``name`` of file ``path``: "what" went wrong, at the line that raised.

    The line is the deepest frame of ``exc``'s traceback inside the file (the student's own line, e.g.
    in forward); when the failure is outside it (inside torch, e.g. an nn.Sequential of the wrong
    sizes), the line where the model is registered (its @register_model line).
    """
    line = _line_in(exc, Path(path)) if exc is not None else ""
    where = f"{path}{line or f' line {factory_line}'}"
    detail = ""
    if exc is not None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        detail = f": {type(exc).__name__}: {first}" if first else f": {type(exc).__name__}"
    return UserModelError(f"{ENV_VAR}: {where}: model {name!r}: {what}{detail}")


def _line_in(exc: BaseException, path: Path) -> str:
    """' line N' of the deepest traceback frame inside ``path`` ('' when none is)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return f" line {frames[-1].lineno}" if frames else ""
