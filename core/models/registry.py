"""The one model registry. A family file registers each variant with ``@register_model``.

    @register_model("cnn3", "3-layer plain CNN baseline", source="seed 001 baseline")
    def cnn3(num_classes: int, in_channels: int = 3, **options) -> nn.Module: ...

    model = create_model("cnn3", num_classes=10, in_channels=2)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from torch import nn
from core.errors import ArchScopeError

# Family modules imported on first use, so registering is "one file plus one decorator"
# once the file is named here.
FAMILY_MODULES = (
    "core.models.baselines",
    "core.models.resnets",
    "core.models.seed_nets",
)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    source: str                       # seed or paper it reproduces
    factory: Callable[..., nn.Module]
    in_channels: tuple[int, ...] = (1, 2, 3)   # channel counts it accepts
    variable_input: bool = False      # one instance accepts 1, 2 or 3 channels without re-initialisation
    min_input_size: int = 28          # smallest H = W it supports
    options: dict = field(default_factory=dict)  # documented options and their defaults


class UnknownModelError(ArchScopeError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


_REGISTRY: dict[str, ModelSpec] = {}
_loaded = False


def register_model(
    name: str,
    description: str,
    *,
    source: str,
    in_channels: tuple[int, ...] = (1, 2, 3),
    variable_input: bool = False,
    min_input_size: int = 28,
    options: dict | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``factory(num_classes, in_channels, **options) -> nn.Module`` under ``name``."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelSpec(
            name=name,
            description=description,
            source=source,
            factory=factory,
            in_channels=tuple(in_channels),
            variable_input=variable_input,
            min_input_size=min_input_size,
            options=dict(options or {}),
        )
        return factory

    return deco


def _load_families() -> None:
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


def list_models() -> list[ModelSpec]:
    _load_families()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_spec(name: str) -> ModelSpec:
    _load_families()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        raise UnknownModelError(f"unknown model {name!r}. Known models: {known}")
    return _REGISTRY[name]


def create_model(name: str, num_classes: int, in_channels: int = 3, **options) -> nn.Module:
    """Build a registered model. Raises ``UnknownModelError`` / ``ValueError`` with a clear message."""
    spec = get_spec(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if in_channels not in spec.in_channels:
        raise ValueError(
            f"model {name!r} accepts in_channels in {spec.in_channels}, got {in_channels}"
        )
    return spec.factory(num_classes=num_classes, in_channels=in_channels, **options)
