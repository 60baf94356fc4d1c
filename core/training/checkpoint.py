"""The one place weights and resume state are saved and loaded.

- Weights: safetensors only (``model.safetensors`` best, ``last.safetensors``, ``epoch_NNNN``).
  A safetensors file is a JSON header plus raw tensor bytes: loading it never runs code.
- Resume state (``last_state.pt``): ``torch.save`` of plain dicts, lists, numbers and tensors,
  loaded with ``torch.load(weights_only=True)``. It also holds the model weights of the same
  epoch, so that the state is ONE atomically replaced file and can never pair weights of epoch E
  with optimizer moments of epoch E-1 after a kill between two writes.
- Never retry a failed ``weights_only=True`` load without it: that retry is the exploit
  (CVE-2025-32434 and a later bypass were weights_only escapes; we require torch >= 2.10).

Every failure is a ``CheckpointError`` whose message names the file and says what to do.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from core.io import atomic_write
# CheckpointError lives with the config.json reader (the lower module, so the two never import
# each other); importing it from here keeps working.
from core.training.run_info import CheckpointError, read_run_info  # noqa: F401 - re-exported

MIN_TORCH = (2, 10)


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def _sniff(path: Path) -> str:
    """A short description of what a file that failed to load actually looks like."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return "unreadable"
    if head.startswith(b"PK\x03\x04") or zipfile.is_zipfile(path):
        return "a zip archive (the torch.save format, which can hold a pickle)"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "a Python pickle"
    return "not a safetensors file"


# ---- weights (safetensors) -------------------------------------------------------------------
def state_dict_for_saving(model_or_state: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, unshared copies (safetensors refuses tensors sharing memory, e.g. tied weights).

    Unwraps DistributedDataParallel / torch.compile wrappers so keys never start with ``module.``
    or ``_orig_mod.``.
    """
    if isinstance(model_or_state, nn.Module):
        model = unwrap_model(model_or_state)
        state = model.state_dict()
    else:
        state = dict(model_or_state)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DDP and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def save_weights(path: str | os.PathLike, model_or_state: nn.Module | Mapping, metadata: dict | None = None) -> None:
    """Write weights as safetensors atomically (temp file + os.replace: never half-written).

    metadata: str -> str only (a safetensors rule); numbers are converted with str().
    """
    from safetensors.torch import save_file

    state = state_dict_for_saving(model_or_state)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file into CPU tensors. Never unpickles; raises CheckpointError naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    size = path.stat().st_size
    if size < 8:
        raise CheckpointError(f"{path}: {size} bytes is too short to be a safetensors file (truncated?)")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        kind = _sniff(path)
        hint = (
            "; ArchScope loads weights only from safetensors and never unpickles, so this file is refused"
            if "pickle" in kind or "zip" in kind
            else "; the file is truncated or corrupt (re-run or re-download it)"
        )
        raise CheckpointError(f"{path}: cannot read weights: {kind}{hint} ({exc})") from None


def read_weights_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The str->str metadata of a safetensors file (reads the header only)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot read safetensors header ({exc})") from None


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str | os.PathLike) -> nn.Module:
    """Load ``state`` into ``model`` strictly, explaining any mismatch (missing, unexpected, shapes)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s), e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {', '.join(unexpected[:3])}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es), e.g. {'; '.join(shapes[:3])}")
        raise CheckpointError(
            f"{source}: weights do not match the model {type(model).__name__} ({'; '.join(parts)}); "
            f"was config.json edited or the file copied from another run?"
        )
    model.load_state_dict(state, strict=True)
    return model


# ---- resume state (torch.save of plain data, weights_only load) ------------------------------
def save_resume_state(path: str | os.PathLike, state: dict) -> None:
    """torch.save ``state`` (plain dicts/lists/numbers/strings/tensors only) atomically."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_resume_state(path: str | os.PathLike) -> dict:
    """torch.load(weights_only=True): anything but plain data is refused, never retried unsafely."""
    path = Path(path)
    if _torch_version() < MIN_TORCH:
        raise CheckpointError(
            f"{path}: refusing to load with torch {torch.__version__}: weights_only=True had known bypasses "
            f"before torch {MIN_TORCH[0]}.{MIN_TORCH[1]}; upgrade torch"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: resume state not found (no epoch was completed?)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: cannot load the resume state safely ({first[:300]}); the file is truncated, corrupt "
            f"or holds objects other than plain tensors and numbers. It was NOT unpickled."
        ) from None
    if not isinstance(state, dict) or "epoch" not in state:
        raise CheckpointError(f"{path}: not an ArchScope resume state (no 'epoch' entry)")
    return state


# ---- whole runs ------------------------------------------------------------------------------
def weights_path(run_dir: str | os.PathLike, which: str | int = "best") -> Path:
    """'best' -> model.safetensors, 'last' -> last.safetensors, an int N -> epoch_NNNN.safetensors."""
    run_dir = Path(run_dir)
    if which == "best":
        return run_dir / "model.safetensors"
    if which == "last":
        return run_dir / "last.safetensors"
    if isinstance(which, int) or (isinstance(which, str) and which.isdigit()):
        return run_dir / f"epoch_{int(which):04d}.safetensors"
    raise CheckpointError(f"unknown weights {which!r}: use 'best', 'last' or an epoch number")


class ModelSourceChangedWarning(UserWarning):
    """A run's model file (ARCHSCOPE_MODELS) changed since training; its weights are loaded anyway."""


def model_source_warning(config: Any, info: Any) -> str | None:
    """Why the model registered now may not be the one a run trained (its file changed), or None.

    config: TrainConfig; info: RunInfo. Only runs that recorded ``run.model_source`` are checked
    (a built-in model, or a run older than the field, has nothing to compare). Raises
    CheckpointError when the run's model is not registered at all, naming the file to add to
    ARCHSCOPE_MODELS. For the dashboard to show next to a run; load_run_model also warns with it.
    """
    from core.models.registry import UnknownModelError, get_spec, user_model_problems
    from core.models.user_models import ENV_VAR

    recorded = getattr(info, "model_source", None)
    try:
        spec = get_spec(config.model)
    except UnknownModelError as exc:
        if recorded is None:   # a run older than run.model_source, or one copied from another machine
            raise CheckpointError(f"cannot rebuild model {config.model!r}: {exc}. If it is a model of your own, "
                                  f"add its file to {ENV_VAR}") from None
        problems = user_model_problems()
        failed = f" (model files that failed to load: {'; '.join(map(str, problems))})" if problems else ""
        raise CheckpointError(
            f"model {config.model!r} of this run comes from the model file {recorded.file} (sha256 "
            f"{recorded.sha256[:12]}), which is not loaded: add that file to {ENV_VAR} "
            f"(e.g. {ENV_VAR}={recorded.file}) and start again{failed}") from None
    if recorded is None or spec.source_sha256 == recorded.sha256:
        return None
    now = f"now {spec.source_file} (sha256 {spec.source_sha256[:12]})" if spec.source_file \
        else "now a built-in model of that name"
    return (f"model {config.model!r} was trained from {recorded.file} (sha256 {recorded.sha256[:12]}), "
            f"{now}: the model file changed since training; its weights are loaded anyway and decide "
            f"(a parameter that no longer matches is refused by name)")


def build_model(config: Any, run: Any) -> nn.Module:
    """An untrained model as the run built it.

    config: TrainConfig; run: its RunInfo (core.training.run_info) or the raw ``run`` section of
    config.json (a dict with num_classes and in_channels, as tests write by hand).
    """
    from core.models.registry import create_model

    if isinstance(run, Mapping):
        num_classes, in_channels = int(run["num_classes"]), int(run["in_channels"])
    else:
        num_classes, in_channels = run.num_classes, run.in_channels
    return create_model(config.model, num_classes=num_classes, in_channels=in_channels, **dict(config.model_options))


def load_run_model(run_dir: str | os.PathLike, which: str | int = "best", device: str | torch.device = "cpu"):
    """Rebuild a run's model from config.json and load its safetensors weights.

    Returns (model in eval mode on ``device``, TrainConfig). ``which``: 'best', 'last' or an epoch number.
    Raises CheckpointError (names the file) for a missing/corrupt config.json and for
    missing/truncated/mismatched/non-safetensors weights, and for a model of an ARCHSCOPE_MODELS file
    that is not loaded (naming the file to add). A model file changed since training: a
    ModelSourceChangedWarning, then the weights are tried; UserModelError (file, line) when the
    model file's function now fails.
    """
    from core.models.user_models import UserModelError

    config, info = read_run_info(run_dir)
    config_path = Path(run_dir) / "config.json"
    try:
        changed = model_source_warning(config, info)
    except CheckpointError as exc:
        raise CheckpointError(f"{config_path}: {exc}") from None
    if changed:
        warnings.warn(f"{config_path}: {changed}", ModelSourceChangedWarning, stacklevel=2)
    path = weights_path(run_dir, which)
    state = load_weights(path)
    try:
        model = build_model(config, info)
    except UserModelError:
        raise          # the student's file, line and model: already one clear line (exit 2)
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{config_path}: cannot rebuild model {config.model!r}: {exc}") from None
    try:
        load_into(model, state, path)
    except CheckpointError as exc:
        if changed:
            raise CheckpointError(f"{exc} Likely why: {changed}") from None
        raise
    return model.to(device).eval(), config
