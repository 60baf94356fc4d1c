"""Capture what flows through ``Tap`` modules during a forward pass, without changing the model.

    with Recorder(model, kinds={"spatial_attention"}) as rec:
        model(x)
    rec.records  # list of Record(name, kind, tensor), in forward order

Hooks are removed when the block exits, on success or on error, so nothing leaks into
the next forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from core.models.layers.tap import Tap


@dataclass
class Record:
    name: str          # qualified module name of the Tap, e.g. "attention2.tap_spatial"
    kind: str          # Tap.kind
    tensor: torch.Tensor  # detached copy on the CPU


class Recorder:
    """Context manager collecting the outputs of every ``Tap`` (optionally filtered by kind)."""

    def __init__(self, model: nn.Module, kinds: Iterable[str] | None = None) -> None:
        self.model = model
        self.kinds = set(kinds) if kinds is not None else None
        self.records: list[Record] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def taps(self) -> list[tuple[str, Tap]]:
        return [
            (name, m)
            for name, m in self.model.named_modules()
            if isinstance(m, Tap) and (self.kinds is None or m.kind in self.kinds)
        ]

    def __enter__(self) -> "Recorder":
        for name, tap in self.taps():
            def hook(module: nn.Module, inputs, output, _name=name) -> None:
                self.records.append(Record(_name, module.kind, output.detach().float().cpu()))

            self._handles.append(tap.register_forward_hook(hook))
        return self

    def __exit__(self, *exc) -> None:
        self.remove_hooks()

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def by_kind(self, kind: str) -> list[Record]:
        return [r for r in self.records if r.kind == kind]
