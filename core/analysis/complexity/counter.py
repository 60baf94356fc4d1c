"""The primary counter: one forward at batch 1, every aten op attributed to the module running it.

1. forward pre/post hooks on every module keep a stack, so each aten op executed is attributed to
   the innermost module running;
2. a ``TorchDispatchMode`` (``AtenCounter``) classifies every aten op with the tables of
   aten_ops.py; an op in none of them FLAGS the layer with its name (never silently zero);
3. the post hook applies the explicit rules of rules.py (conv, linear, deformable, dynamic conv).

``count(model, x)`` returns one ``LayerRow`` per module that owns parameters or did work.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from core.analysis.complexity.aten_ops import (MAC_OPS, aten_elementwise, aten_macs, dims_text, first_tensor,
                                               shape_of)
from core.analysis.complexity.report import LayerRow
from core.analysis.complexity.rules import LayerStats, layer_classes, rule_for

TOP_LEVEL = "(top-level forward)"   # the row name of the root module's own work


class AtenCounter(TorchDispatchMode):
    """Attributes every aten op to the innermost running module (top of ``stack``)."""

    def __init__(self, stack: list[LayerStats]) -> None:
        super().__init__()
        self.stack = stack

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        stats = self.stack[-1]
        name = func._overloadpacket.__name__
        namespace = getattr(func, "namespace", "aten")
        if namespace != "aten":
            key = f"{namespace}::{name}"
            stats.custom_ops[key] = stats.custom_ops.get(key, 0) + 1
            return out
        if name in MAC_OPS:
            try:
                macs, formula = aten_macs(name, args, out)
            except Exception:  # noqa: BLE001 - an operand layout we did not foresee: flag, never 0
                key = f"{name} (unreadable operands)"
                stats.unknown_ops[key] = stats.unknown_ops.get(key, 0) + 1
                return out
            stats.aten_macs += macs
            stats.aten_formulas.append(formula)
            return out
        ew = aten_elementwise(name, args, out)
        if ew is None:
            stats.unknown_ops[name] = stats.unknown_ops.get(name, 0) + 1
        else:
            stats.aten_elementwise += ew
        return out


@dataclass
class CountResult:
    """The rows of the table (in ``named_modules`` order) and the model's output shape."""

    rows: list[LayerRow]
    output_shape: list[int] | None


def count(model: nn.Module, x: torch.Tensor) -> CountResult:
    """Run ``model(x)`` once under no_grad with the hooks and the aten counter; one row per module."""
    named: list[tuple[str, nn.Module]] = list(model.named_modules())
    stats: dict[int, LayerStats] = {}
    for name, mod in named:
        stats.setdefault(id(mod), LayerStats(name=name, module=mod))
    root = stats[id(model)]
    output = _forward_counted(model, x, named, stats, root)
    root.calls = max(root.calls, 1)
    root.output_shape = shape_of(first_tensor(output))
    return CountResult(rows=_rows(model, named, stats), output_shape=root.output_shape)


def _forward_counted(model: nn.Module, x: torch.Tensor, named: list[tuple[str, nn.Module]],
                     stats: dict[int, LayerStats], root: LayerStats):
    """The forward with a pre/post hook on every module and the aten counter; hooks removed after."""
    classes = layer_classes()
    stack: list[LayerStats] = [root]
    # Hooks live on the caller's model: a forward of the same model in another thread (a dashboard
    # session) must not touch this count's stack.
    owner = threading.get_ident()

    def pre(mod, inputs):
        if threading.get_ident() != owner:
            return
        stack.append(stats[id(mod)])

    def post(mod, inputs, output):
        if threading.get_ident() != owner:
            return
        st = stats[id(mod)]
        if stack and stack[-1] is st:
            stack.pop()
        st.calls += 1
        o = first_tensor(output)
        st.output_shape = shape_of(o)
        rule = rule_for(mod, classes)
        if rule is not None and o is not None and inputs and isinstance(inputs[0], torch.Tensor):
            try:
                rule(st, mod, inputs, o)
            except Exception as exc:  # noqa: BLE001 - a layer unlike the one the rule expects
                st.rule = None
                st.rule_notes.append(f"rule failed ({type(exc).__name__}: {exc}); counted from aten ops")

    # The root gets hooks too (its pre-hook pushes it a second time, harmlessly), so a model that
    # IS a rule layer (a lone DeformConv2d) gets its rule.
    handles = []
    for _name, mod in named:
        handles.append(mod.register_forward_pre_hook(pre))
        handles.append(mod.register_forward_hook(post, always_call=True))
    try:
        with torch.no_grad(), AtenCounter(stack):
            return model(x)
    finally:
        for h in handles:
            h.remove()


def _rows(model: nn.Module, named: list[tuple[str, nn.Module]], stats: dict[int, LayerStats]) -> list[LayerRow]:
    """One row per module worth showing, with the depthwise-separable pair note on 1x1 convs."""
    rows: list[LayerRow] = []
    pending_depthwise: tuple[str, nn.Conv2d, LayerStats] | None = None
    for name, mod in named:
        st = stats[id(mod)]
        row = _row(name or TOP_LEVEL, mod, st, is_root=mod is model)
        if row is None:
            continue
        if isinstance(mod, nn.Conv2d) and st.rule == "rule: conv" and st.calls == 1:
            pair = _separable_pair_note(pending_depthwise, mod, st)
            if pair:
                row.note = "; ".join(n for n in (row.note, pair) if n)
            is_depthwise = mod.groups > 1 and mod.groups == mod.in_channels == mod.out_channels
            pending_depthwise = (row.name, mod, st) if is_depthwise else None
        rows.append(row)
    return rows


def _row(name: str, mod: nn.Module, st: LayerStats, *, is_root: bool) -> LayerRow | None:
    """The row of one module: its rule's count when it has one, else its aten ops; None to leave it out."""
    params = sum(p.numel() for p in mod.parameters(recurse=False))
    notes: list[str] = list(dict.fromkeys(st.rule_notes))
    flagged = False
    if st.rule is not None:
        macs = st.rule_macs
        ew = st.aten_elementwise if st.rule_elementwise is None else st.rule_elementwise
        formula = " + ".join(st.rule_formulas)
        counted_by = st.rule
        if st.aten_macs and st.aten_macs != macs:
            notes.append(f"aten ops executed: {st.aten_macs:,} MACs")
    else:
        macs = st.aten_macs
        ew = st.aten_elementwise
        formula = _join_formulas(st.aten_formulas)
        counted_by = "aten ops" if (macs or ew or st.unknown_ops or st.custom_ops) else ""
        unknown = {**st.custom_ops, **st.unknown_ops}
        if unknown:
            flagged = True
            ops = ", ".join(f"{k} x{v}" for k, v in sorted(unknown.items()))
            notes.append(f"FLAGGED: op(s) with no counting rule, not counted: {ops}")
    if st.calls == 0 and not is_root:
        if params == 0:
            return None
        counted_by = "not called"
        notes.append("module not called in this forward: 0 MACs")
    if not (params or macs or ew or flagged or notes) and not is_root:
        return None
    if is_root and not (params or macs or ew or flagged):
        return None
    if not formula and ew and not macs:
        formula = "element-wise only"
    if st.calls > 1:
        notes.append(f"called {st.calls} times; counts summed")
    return LayerRow(name=name, type=type(mod).__name__, output_shape=st.output_shape, params=params,
                    macs=int(macs), elementwise_ops=int(ew), formula=formula, counted_by=counted_by,
                    note="; ".join(notes), flagged=flagged, calls=max(st.calls, 0))


def _separable_pair_note(depthwise: tuple[str, nn.Conv2d, LayerStats] | None, pointwise: nn.Conv2d,
                         st: LayerStats) -> str:
    """Note for a 1x1 conv right after a depthwise conv: the pair's MAC ratio to a plain conv.

    depthwise Dk x Dk x M x Ho x Wo + pointwise M x N x Ho x Wo over plain Dk x Dk x M x N x Ho x Wo
    = 1/N + 1/Dk^2 (Dk^2 = kh x kw), exact, printed as a fraction.
    """
    if depthwise is None:
        return ""
    dw_name, dw, dw_st = depthwise
    if pointwise.kernel_size != (1, 1) or pointwise.groups != 1 or pointwise.in_channels != dw.out_channels:
        return ""
    if dw_st.output_shape is None or st.output_shape is None or dw_st.output_shape[2:] != st.output_shape[2:]:
        return ""
    kh, kw = dw.kernel_size
    M, N = dw.in_channels, pointwise.out_channels
    Ho, Wo = st.output_shape[2], st.output_shape[3]
    plain = kh * kw * M * N * Ho * Wo
    pair = dw_st.rule_macs + st.rule_macs
    ratio = Fraction(pair, plain)
    expected = Fraction(1, N) + Fraction(1, kh * kw)
    check = "" if ratio == expected else f" (expected {expected}: layers differ from the textbook pair)"
    return (f"depthwise-separable with {dw_name}: {pair:,} MACs vs plain {dims_text([kh, kw, M, N, Ho, Wo])} = "
            f"{plain:,}; ratio {ratio.numerator}/{ratio.denominator} = 1/N + 1/Dk^2 = 1/{N} + 1/{kh * kw}{check}")


def _join_formulas(formulas: list[str], limit: int = 4) -> str:
    if not formulas:
        return ""
    shown = formulas[:limit]
    text = " + ".join(shown)
    if len(formulas) > limit:
        rest = len(formulas) - limit
        text += f" + {rest} more op(s)"
    return text

