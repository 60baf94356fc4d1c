"""The two entry points: ``complexity_report(model, shape)`` and ``model_complexity(name, shape, classes)``."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from core.analysis.complexity.counter import CountResult, count
from core.analysis.complexity.cross_checks import run_cross_checks
from core.analysis.complexity.report import ComplexityError, ComplexityReport


def complexity_report(
    model: nn.Module,
    input_shape: Sequence[int] = (3, 224, 224),
    *,
    model_name: str | None = None,
    cross_check: bool = True,
) -> ComplexityReport:
    """Count parameters, MACs and element-wise ops of ``model`` for one image.

    ``input_shape`` is (C, H, W); the model runs once on a [1, C, H, W] tensor (seeded randn,
    on the model's device and dtype) in eval mode under ``torch.no_grad``; its train/eval mode
    is restored afterwards and the model is not otherwise changed. ``cross_check`` also runs
    ptflops (pytorch and aten backends, on a deep copy) and FlopCounterMode.

    The model is switched to eval() for the count: don't count a model another thread is training
    (``model_complexity`` builds a fresh one). Counting runs one forward, so it costs what
    inference at batch 1 costs (about 1 s for ResNet-50 at 224 px on a laptop CPU, x4 with cross-checks).

    Raises ``ComplexityError`` when the shape is malformed or the forward fails (e.g. an input
    too small for the model), with the model name, the shape and the first line of torch's error.
    """
    shape = tuple(int(s) for s in input_shape)
    name = model_name or type(model).__name__
    if len(shape) != 3 or any(s < 1 for s in shape):
        raise ComplexityError(f"input shape must be C,H,W with positive sizes, got {list(input_shape)}")
    x = _probe_input(model, shape)
    was_training = {m: m.training for m in model.modules()}
    model.eval()
    try:
        result = _count_or_explain(model, x, name, shape)
        rows = result.rows
        report = ComplexityReport(
            model_name=name,
            input_shape=shape,
            output_shape=result.output_shape,
            params_total=sum(p.numel() for p in model.parameters()),
            params_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
            macs=sum(r.macs for r in rows),
            elementwise_ops=sum(r.elementwise_ops for r in rows),
            layers=rows,
        )
        if cross_check:
            report.cross_checks.extend(run_cross_checks(model, x, rows))
    finally:
        for m, flag in was_training.items():
            m.training = flag
    return report


def _probe_input(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """A seeded randn [1, C, H, W] on the model's device, in its floating dtype (float32 otherwise)."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    gen = torch.Generator().manual_seed(0)
    return torch.randn((1, *shape), generator=gen).to(device=device, dtype=dtype)


def _count_or_explain(model: nn.Module, x: torch.Tensor, name: str, shape: tuple[int, ...]) -> CountResult:
    """``count(model, x)``; a failing forward becomes one ComplexityError line naming model and shape."""
    try:
        return count(model, x)
    except Exception as exc:  # noqa: BLE001 - turned into one clear line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ComplexityError(
            f"model {name!r} cannot run on input {'x'.join(map(str, shape))} (C x H x W): "
            f"{type(exc).__name__}: {first}"
        ) from exc


def model_complexity(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    options: dict | None = None,
    *,
    cross_check: bool = True,
) -> ComplexityReport:
    """Build registered model ``name`` (random init) and count it; bad input -> ``ComplexityError``.

    ``input_shape`` (C, H, W): C is passed as ``in_channels``. Checks the class count, the channel
    count and the model's smallest supported size before building.
    """
    from core.models.registry import UnknownModelError, create_model, get_spec

    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ComplexityError(f"--classes must be a positive integer, got {num_classes!r}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or any(s < 1 for s in shape):
        raise ComplexityError(f"--input must be C,H,W with positive sizes, got {list(input_shape)}")
    try:
        spec = get_spec(name)
    except UnknownModelError as exc:
        raise ComplexityError(str(exc)) from None
    c, h, w = shape
    if c not in spec.in_channels:
        raise ComplexityError(f"model {name!r} accepts {spec.in_channels} input channels, got {c}")
    if min(h, w) < spec.min_input_size:
        raise ComplexityError(
            f"input {h}x{w} is too small for model {name!r}: it needs at least "
            f"{spec.min_input_size}x{spec.min_input_size}"
        )
    try:
        model = create_model(name, num_classes=num_classes, in_channels=c, **(options or {}))
    except Exception as exc:  # noqa: BLE001 - any factory failure becomes one clear line
        raise ComplexityError(f"cannot build model {name!r} with options {options or {}}: {exc}") from None
    return complexity_report(model, shape, model_name=name, cross_check=cross_check)
