"""The one model registry. A family file registers each variant with ``@register_model``.

    @register_model("cnn3", "3-layer plain CNN baseline", source="seed 001 baseline")
    def cnn3(num_classes: int, in_channels: int = 3, **options) -> nn.Module: ...

    model = create_model("cnn3", num_classes=10, in_channels=2)

Model files outside the package (``ARCHSCOPE_MODELS``, see user_models.py) are loaded after the
built-ins, on first use, and register with the same decorator. Their functions are students' code:
create_model turns whatever they raise into a UserModelError naming file, line and model, and
check_user_model runs one forward at the chosen size before a training starts.
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

import core.models.user_models as user_models
from core.errors import ArchScopeError, InvalidInputError
from core.models.user_models import UserModelError

# Family modules imported on first use, so registering is "one file plus one decorator"
# once the file is named here.
FAMILY_MODULES = (
    "core.models.baselines",
    "core.models.resnets",
    "core.models.seed_nets",
)


# Arguments every factory takes from create_model itself; the rest of its keyword parameters are its options.
_BUILD_ARGS = ("num_classes", "in_channels")


def factory_options(factory: Callable[..., nn.Module]) -> dict[str, Any]:
    """A factory's options and their defaults, read from its signature (num_classes, in_channels excluded).

    The signature is the one place an option and its default are written, so the listing, the
    config validation and the dashboard's forms cannot drift from what the factory really takes.
    Raises TypeError for a keyword parameter without a default: create_model could never fill it.
    """
    options: dict[str, Any] = {}
    for name, param in inspect.signature(factory).parameters.items():
        if name in _BUILD_ARGS or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.default is param.empty:
            raise TypeError(f"model factory {factory.__qualname__}: option {name!r} needs a default value "
                            "(create_model passes only num_classes and in_channels)")
        options[name] = param.default
    return options


@dataclass(frozen=True)
class ModelSpec:
    """One registered architecture: how to build it and what it accepts."""

    name: str
    description: str
    source: str                       # seed or paper it reproduces
    factory: Callable[..., nn.Module]
    in_channels: tuple[int, ...] = (1, 2, 3)   # channel counts it accepts
    variable_input: bool = False      # one instance accepts 1, 2 or 3 channels without re-initialisation
    min_input_size: int = 28          # smallest H = W it supports
    source_file: str | None = None    # a model file from ARCHSCOPE_MODELS (None: built in)
    source_sha256: str | None = None  # sha256 of that file's text when it was loaded
    # documented options and their defaults: the factory's keyword parameters (factory_options)
    options: dict[str, Any] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", factory_options(self.factory))


class UnknownModelError(ArchScopeError, KeyError):
    """No model of that name; the message lists the known ones (exit 2 in a CLI)."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


class DuplicateModelError(InvalidInputError):
    """A second registration of a name already taken; the message names both places."""


_REGISTRY: dict[str, ModelSpec] = {}
_loaded = False
# (path, sha256) of the model file being imported from ARCHSCOPE_MODELS (user_models.py), so that
# register_model can record where a model comes from without the file saying so.
_loading_file: tuple[str, str] | None = None


def registered_where(spec: ModelSpec) -> str:
    """Where a model was registered: its ARCHSCOPE_MODELS file, or the built-in module."""
    return spec.source_file or f"built-in {spec.factory.__module__}"


def register_model(
    name: str,
    description: str,
    *,
    source: str,
    in_channels: tuple[int, ...] = (1, 2, 3),
    variable_input: bool = False,
    min_input_size: int = 28,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``factory(num_classes, in_channels, **options) -> nn.Module`` under ``name``.

    The options (and their defaults) are the factory's other keyword parameters: see ``factory_options``.
    """

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        source_file, sha256 = _loading_file or (None, None)
        spec = ModelSpec(name=name, description=description, source=source, factory=factory,
                         in_channels=tuple(in_channels), variable_input=variable_input,
                         min_input_size=min_input_size, source_file=source_file, source_sha256=sha256)
        old = _REGISTRY.get(name)
        if old is not None and old.factory is not factory:
            raise DuplicateModelError(f"model {name!r} registered twice: already by {registered_where(old)}, "
                                      f"again by {registered_where(spec)}")
        _REGISTRY[name] = spec
        return factory

    return deco


def _load_families() -> None:
    """Import the built-in families, then the files named by ARCHSCOPE_MODELS (once per process)."""
    global _loaded
    if _loaded:
        return
    for mod in FAMILY_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:  # a real import error inside the family file
                raise
    _loaded = True
    load_user_models()   # a broken file is kept as a problem (user_model_problems), never raised here


# --------------------------------------------------------------------------- ARCHSCOPE_MODELS files

_user_problems: list[UserModelError] = []


def user_model_problems() -> list[UserModelError]:
    """The ARCHSCOPE_MODELS entries of the last load that were skipped, one error each (empty: all loaded)."""
    _load_families()
    return list(_user_problems)


def load_user_models(value: str | None = None) -> list[UserModelError]:
    """Register the models of every file ARCHSCOPE_MODELS (or ``value``) names; returns, and keeps, the problems.

    Models of earlier loads stay registered; ``reload_user_models`` starts over.
    """
    value = os.environ.get(user_models.ENV_VAR, "") if value is None else value
    files, problems = user_models.model_files(value)
    for path in files:
        try:
            _load_user_file(path)
        except UserModelError as exc:
            problems.append(exc)
    _user_problems[:] = problems
    return list(problems)


def reload_user_models(value: str | None = None) -> list[UserModelError]:
    """Forget every model loaded from a file, then load ARCHSCOPE_MODELS (or ``value``) again."""
    _load_families()
    for name in [n for n, spec in _REGISTRY.items() if spec.source_file is not None]:
        del _REGISTRY[name]
    user_models.forget_model_modules()
    return load_user_models(value)


def _load_user_file(path: Path) -> None:
    """Run one model file, recording it as the source of what it registers; all of its models or none."""
    global _loading_file
    source = user_models.read_model_file(path)
    before = set(_REGISTRY)
    _loading_file = (str(source.path), source.sha256)
    try:
        user_models.run_model_file(source)
    except UserModelError:
        for added in set(_REGISTRY) - before:
            del _REGISTRY[added]
        raise
    finally:
        _loading_file = None


def list_models() -> list[ModelSpec]:
    """Every registered model (built-in and ARCHSCOPE_MODELS files), sorted by name."""
    _load_families()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_spec(name: str) -> ModelSpec:
    """The spec of ``name``; UnknownModelError lists the known names (and any model file that failed)."""
    _load_families()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        problems = _user_problems
        broken = f". Model files that failed to load: {'; '.join(map(str, problems))}" if problems else ""
        raise UnknownModelError(f"unknown model {name!r}. Known models: {known}{broken}")
    return _REGISTRY[name]


def create_model(name: str, num_classes: int, in_channels: int = 3, **options) -> nn.Module:
    """Build a registered model. Raises ``UnknownModelError`` / ``ValueError`` with a clear message.

    A model from an ARCHSCOPE_MODELS file whose function raises (or returns something other than an
    nn.Module) raises ``UserModelError`` naming the file, the line and the model, whatever the
    student's code raised: every command and page catches that one type (exit 2 in a CLI).
    """
    spec = get_spec(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if in_channels not in spec.in_channels:
        raise ValueError(
            f"model {name!r} accepts in_channels in {spec.in_channels}, got {in_channels}"
        )
    if spec.source_file is None:
        return spec.factory(num_classes=num_classes, in_channels=in_channels, **options)
    built = ", ".join([f"num_classes={num_classes}", f"in_channels={in_channels}",
                       *(f"{k}={v!r}" for k, v in options.items())])
    try:
        model = spec.factory(num_classes=num_classes, in_channels=in_channels, **options)
    except Exception as exc:  # noqa: BLE001 - whatever a student's function raises becomes one clear line
        raise model_file_error(spec, f"building it ({built}) failed", exc) from exc
    if not isinstance(model, nn.Module):
        raise model_file_error(spec, f"its function returned {type(model).__name__}, not an nn.Module ({built})")
    return model


def model_file_error(spec: ModelSpec, what: str, exc: BaseException | None = None) -> UserModelError:
    """A UserModelError for a model of an ARCHSCOPE_MODELS file: ``what`` failed, at the file's line that
    raised ``exc`` (else the model's @register_model line). For any caller that runs such a model."""
    return user_models.model_problem(spec.name, str(spec.source_file), spec.factory.__code__.co_firstlineno,
                                     what, exc)


def check_user_model(name: str, num_classes: int, in_channels: int, image_size: int, *,
                     options: dict[str, Any] | None = None, channels_last: bool = False) -> None:
    """Build model ``name`` and run one forward on a batch [2, in_channels, image_size, image_size]
    in train and in eval mode, as training and evaluation will; the output must be logits [2, num_classes].

    Does nothing for a built-in (their parametrised tests do this for every registered model). For
    a model of an ARCHSCOPE_MODELS file it is the check made before a training starts (see
    TrainConfig.validate), so that a model that cannot run at the chosen size or channels fails in a
    second with ``UserModelError`` (file, line, name; exit 2) instead of after loading the data.
    ``channels_last``: store the weights and the batch NHWC, as the trainer does by default (a
    ``.view`` on a non-contiguous tensor fails only then).
    """
    spec = get_spec(name)
    if spec.source_file is None:
        return
    model = create_model(name, num_classes=num_classes, in_channels=in_channels, **(options or {}))
    x = torch.randn((2, in_channels, image_size, image_size), generator=torch.Generator().manual_seed(0))
    if channels_last:
        # As core.training.device.to_channels_last / to_channels_last_batch do (not imported from
        # there: core.training imports core.models, never the reverse).
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                if t.dim() == 4:
                    t.data = t.data.contiguous(memory_format=torch.channels_last)
    shape = f"a batch of 2 images {in_channels}x{image_size}x{image_size} (C x H x W)"
    for mode in ("train", "eval"):
        model.train(mode == "train")
        try:
            with torch.no_grad():
                out = model(x)
        except Exception as exc:  # noqa: BLE001 - the student's forward: one clear line with its line number
            layout = (", in the channels-last memory layout the trainer uses (turn it off with --no-channels-last)"
                      if channels_last else "")
            raise model_file_error(spec, f"forward on {shape} in {mode} mode{layout} failed", exc) from exc
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        if got != (2, num_classes):
            raise model_file_error(spec, f"forward on {shape} returned {list(got) if isinstance(got, tuple) else got}; "
                                 f"a classifier must return logits [batch, num_classes] = [2, {num_classes}]")
