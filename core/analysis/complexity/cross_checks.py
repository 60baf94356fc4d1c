"""Cross-checks: other counters run on their own forward, totals compared with ours, per layer where they can.

- ptflops (``backend="pytorch"`` and ``backend="aten"``; both return MACs, whatever its variables
  are called), always with ``backend=`` explicit (its README and code disagree on the default);
- ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs = 2 x MACs, halved here).

Every layer where a counter disagrees with ours is listed with the reason (bias counted as MACs, a
module type it does not hook, an op it counts as zero...). A failing counter never stops the report:
its ``CrossCheck`` carries the error instead of a total.
"""

from __future__ import annotations

import copy
import io
import math
import threading
from contextlib import redirect_stderr, redirect_stdout
from typing import Callable

import torch
from torch import nn

from core.analysis.complexity.counter import TOP_LEVEL
from core.analysis.complexity.report import CrossCheck, Disagreement, LayerRow

# ptflops monkeypatches torch.nn.functional and keeps module-level state: one call at a time.
_PTFLOPS_LOCK = threading.Lock()


def run_cross_checks(model: nn.Module, x: torch.Tensor, rows: list[LayerRow]) -> list[CrossCheck]:
    """ptflops (pytorch backend, then aten backend) and FlopCounterMode on ``model(x)``, compared with ``rows``."""
    module_names = [n for n, _ in model.named_modules()]
    ours = sum(r.macs for r in rows)
    pytorch = ptflops_pytorch_check(model, x, rows)
    aten = ptflops_aten_check(model, x)
    _explain_aten_difference(aten, rows, ours)
    return [pytorch, aten, flop_counter_check(model, x, rows, module_names)]


# --------------------------------------------------------------------------- ptflops


def _ptflops_version() -> str:
    try:
        from importlib.metadata import version
        return version("ptflops")
    except Exception:  # noqa: BLE001
        return "?"


def _run_ptflops(clone: nn.Module, x: torch.Tensor, backend: str, **extra) -> tuple[int | None, str | None]:
    """ptflops' total MACs of ``clone(x)`` as (macs, None), or (None, error line).

    ``clone`` must be a copy: ptflops adds attributes and hooks to the model it counts and never
    removes its hooks on children.
    """
    try:
        from ptflops import get_model_complexity_info
    except Exception as exc:  # noqa: BLE001
        return None, f"ptflops not importable: {exc}"
    buf = io.StringIO()
    try:
        # Our seeded input, not ptflops' default torch.empty batch: uninitialised memory can hold
        # NaN/huge values, which become NaN offsets that crash torchvision's deform_conv2d CPU
        # kernel (segfault, measured here). no_grad: a count needs no graph.
        # ptflops print()s its failures and tracebacks: keep them out of our output.
        with _PTFLOPS_LOCK, torch.no_grad(), redirect_stdout(buf), redirect_stderr(buf):
            macs, _params = get_model_complexity_info(
                clone, tuple(x.shape[1:]), as_strings=False, print_per_layer_stat=False,
                backend=backend, ost=buf, verbose=False, input_constructor=lambda _res: x.clone(), **extra,
            )
    except Exception as exc:  # noqa: BLE001 - a cross-check never stops the report
        return None, f"{type(exc).__name__}: {exc}"
    if macs is None:
        return None, "ptflops failed: " + buf.getvalue().strip()[-300:]
    return int(macs), None


def ptflops_pytorch_check(model: nn.Module, x: torch.Tensor, rows: list[LayerRow]) -> CrossCheck:
    """ptflops' module-hook backend, with its per-module MACs compared to each of our rows."""
    note = ("ptflops returns MACs; backend=pytorch hooks known module types (adding bias, activations, "
            "pooling and norms to MACs) and patches torch.nn.functional/tensor ops (counted in its total "
            "but not per layer)")
    label = f"ptflops {_ptflops_version()} (backend=pytorch)"
    try:
        from ptflops.pytorch_ops import MODULES_MAPPING
    except Exception as exc:  # noqa: BLE001
        return CrossCheck(label, None, note, error=f"ptflops not importable: {exc}")
    clone = copy.deepcopy(model)
    per_module: dict[str, int] = {}
    hooks = _per_module_hooks(clone, MODULES_MAPPING, per_module)
    macs, error = _run_ptflops(clone, x, "pytorch", custom_modules_hooks=hooks)
    if error is not None:
        return CrossCheck(label, None, note, error=error)
    check = CrossCheck(label, macs, note)
    check.unattributed_macs = macs - sum(per_module.values())
    if check.unattributed_macs:
        check.note += (f"; {check.unattributed_macs:,} of its MACs come from functional/tensor ops "
                       "(F.relu, pooling, tensor add/matmul) not tied to a layer")
    hooked = tuple(MODULES_MAPPING)
    by_name = dict(model.named_modules())
    for r in rows:
        key = "" if r.name == TOP_LEVEL else r.name
        theirs = per_module.get(key, 0)
        if theirs != r.macs:
            reason = _ptflops_reason(r, by_name.get(key), theirs, hooked)
            check.disagreements.append(Disagreement(r.name, r.type, r.macs, theirs, reason))
    return check


def _per_module_hooks(clone: nn.Module, mapping: dict, per_module: dict[str, int]) -> dict[type, Callable]:
    """ptflops' own hooks, wrapped to record each module's MACs under its name in ``per_module``."""
    names = {id(m): n for n, m in clone.named_modules()}

    def wrap(hook: Callable) -> Callable:
        def counting_hook(module, inputs, output):
            before = getattr(module, "__flops__", 0)
            hook(module, inputs, output)
            n = names.get(id(module), "?")
            per_module[n] = per_module.get(n, 0) + int(getattr(module, "__flops__", 0) - before)
        return counting_hook

    return {t: wrap(h) for t, h in mapping.items()}


def _ptflops_reason(r: LayerRow, mod: nn.Module | None, theirs: int, hooked: tuple) -> str:
    if mod is not None and type(mod) not in hooked:
        if r.name == TOP_LEVEL or r.counted_by == "aten ops":
            return (f"ptflops pytorch backend does not hook {r.type}: its functional ops (F.conv2d, matmul, "
                    "activations) are missing, or only in ptflops' unattributed total")
        if r.counted_by == "rule: deformable conv":
            return ("ptflops pytorch backend hooks only torchvision.ops.DeformConv2d, not this custom "
                    "module: the deformable conv is missing from the layer (its matmul, if any, lands in "
                    "ptflops' unattributed total; offset/mask convs are counted)")
        if r.counted_by == "rule: dynamic conv":
            return ("ptflops pytorch backend does not see the functional grouped F.conv2d / kernel "
                    "aggregation of a custom module (fix: custom_modules_hooks=)")
        return f"ptflops pytorch backend does not hook {r.type}"
    if r.counted_by in ("rule: conv", "rule: linear") and theirs - r.macs == _bias_elems(mod, r):
        return "ptflops pytorch backend adds one MAC per output element for the bias"
    if r.macs == 0 and theirs > 0:
        return ("ptflops pytorch backend counts element-wise work (activation/pooling/norm) as MACs; "
                "we report it in the element-wise column")
    if r.counted_by == "rule: deformable conv":
        return ("ptflops adds a flat per-position constant for offsets and bilinear sampling to the conv "
                "MACs; we count sampling as element-wise")
    return "ptflops pytorch backend uses a different formula for this module type"


def _bias_elems(mod: nn.Module | None, r: LayerRow) -> int:
    if mod is None or getattr(mod, "bias", None) is None or r.output_shape is None:
        return -1
    return math.prod(r.output_shape)


def ptflops_aten_check(model: nn.Module, x: torch.Tensor) -> CrossCheck:
    """ptflops' aten backend: a total only (it does not attribute ops to modules)."""
    note = ("ptflops returns MACs; backend=aten counts only aten mm/matmul/addmm/bmm/convolution "
            "(element-wise work and torchvision::deform_conv2d count as zero); totals only")
    label = f"ptflops {_ptflops_version()} (backend=aten)"
    macs, error = _run_ptflops(copy.deepcopy(model), x, "aten")
    if error is not None:
        return CrossCheck(label, None, note, error=error)
    return CrossCheck(label, macs, note)


def _explain_aten_difference(aten: CrossCheck, rows: list[LayerRow], ours: int) -> None:
    """Add to the aten check's note how much of its difference from ours is bias adds it counts as MACs."""
    if aten.macs is None or aten.macs == ours:
        return
    bias_adds = sum(r.elementwise_ops for r in rows if r.counted_by in ("rule: conv", "rule: linear"))
    if aten.macs - ours == bias_adds:
        aten.note += (f"; the difference ({aten.macs - ours:+,}) is exactly the bias adds of the "
                      "conv/linear layers, which the aten backend counts as MACs")
    else:
        rest = aten.macs - ours - bias_adds
        aten.note += (f"; the difference = bias adds it counts as MACs ({bias_adds:+,}) and {rest:+,} "
                      "of other work (negative: ops it counts as zero, e.g. torchvision::deform_conv2d)")


# --------------------------------------------------------------------------- FlopCounterMode


def _exclusive(inclusive: dict[str, int], names: list[str]) -> dict[str, int]:
    """Per-module counts of a counter that reports inclusive (subtree) totals -> own work only.

    Subtracts the nearest counted descendants, not just direct children: a ``ModuleList`` is
    never called, so its members' counts hang directly under the module that calls them.
    """
    out = {n: inclusive.get(n, 0) for n in names}
    for d in names:
        if d == "" or d not in inclusive:
            continue
        parent = d
        while parent:  # walk up "a.b.c" -> "a.b" -> "a" -> "" to the nearest counted ancestor
            parent = parent.rpartition(".")[0]
            if parent in inclusive:
                out[parent] -= inclusive[d]
                break
    return out


def flop_counter_check(model: nn.Module, x: torch.Tensor, rows: list[LayerRow],
                       module_names: list[str]) -> CrossCheck:
    """FlopCounterMode's total and per-module counts (its FLOPs halved to MACs) compared with ``rows``."""
    from torch.utils.flop_counter import FlopCounterMode

    note = "torch.utils.flop_counter.FlopCounterMode: FLOPs = 2 x MACs, halved here; unknown ops count 0"
    try:
        fcm = FlopCounterMode(display=False, depth=None)
        with torch.no_grad(), fcm:
            model(x)
        total = fcm.get_total_flops() // 2
        counts = fcm.get_flop_counts()
    except Exception as exc:  # noqa: BLE001 - a cross-check never stops the report
        return CrossCheck("FlopCounterMode", None, note, error=f"{type(exc).__name__}: {exc}")
    excl = _exclusive(_fcm_inclusive(counts, type(model).__name__), module_names)
    check = CrossCheck("FlopCounterMode (torch " + torch.__version__ + ")", int(total), note)
    for r in rows:
        key = "" if r.name == TOP_LEVEL else r.name
        theirs = excl.get(key, 0)
        if theirs != r.macs:
            check.disagreements.append(Disagreement(r.name, r.type, r.macs, int(theirs), _fcm_reason(r)))
    return check


def _fcm_inclusive(counts: dict, prefix: str) -> dict[str, int]:
    """FlopCounterMode's per-module FLOPs keyed "Model.a.b" -> MACs keyed by module name "a.b" ("" = root)."""
    inclusive = {}
    for key, per_op in counts.items():
        if key == "Global":
            continue
        if key == prefix:
            n = ""
        elif key.startswith(prefix + "."):
            n = key[len(prefix) + 1:]
        else:
            continue
        inclusive[n] = sum(per_op.values()) // 2
    return inclusive


def _fcm_reason(r: LayerRow) -> str:
    if r.counted_by == "rule: deformable conv":
        return ("FlopCounterMode counts only the aten conv/matmul ops inside; torchvision::deform_conv2d "
                "counts as zero and it has no rule for the deformable weighted sum")
    if r.counted_by == "rule: dynamic conv":
        return ("FlopCounterMode counts the aten ops as executed (kernel aggregation as a matmul, grouped "
                "conv); our rule states aggregation + conv by hand")
    unknown_to_fcm = [op for op in ("_euclidean_dist", "_cdist_forward", "mv", "addmv", "dot", "addbmm")
                      if f"{op} " in r.formula]
    if unknown_to_fcm:
        return (f"FlopCounterMode has no formula for {', '.join(unknown_to_fcm)} (counts it as zero); "
                "we count one MAC per pair and feature / per product")
    if r.flagged:
        return "op(s) without a rule: both counters skip them (see the FLAGGED note)"
    return "different aten ops counted"
