"""What a complexity count returns: the conventions, the per-layer rows, cross-checks, the report.

Plain dataclasses, no counting here (counter.py fills them, text.py prints them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from core.analysis.complexity.text import format_report
from core.errors import InvalidInputError

CONVENTIONS = (
    "MACs = multiply-accumulates of conv, linear and matmul-type work for one image, bias excluded "
    "(torchvision's table convention); FLOPs = 2 x MACs. Element-wise work (activations, bias adds, "
    "pooling, normalisation, softmax, attention gates, dropout, bilinear interpolation) is counted "
    "separately as element-wise ops (one op per element per step), never included in MACs."
)

# Rules for the element-wise ops of custom layers, stated once so the report can print them.
DEFORM_RULE = (
    "deformable conv: MACs = Dk x Dk x (M/groups) x N x Ho x Wo (the weighted sum, as a plain conv); "
    "element-wise = 4 per sampled value for bilinear interpolation (4 corner weights x values) "
    "+ 1 per sampled value for the modulation mask (v2) + 1 per mask value for its activation "
    "+ 1 per output for the bias, where "
    "sampled values = M x Dk x Dk x Ho x Wo; offset/mask convs are counted in their own rows"
)
DYNAMIC_RULE = (
    "dynamic conv: MACs = K x N x M x Dk x Dk per image for aggregating the K kernels (M = input "
    "channels actually used) + Dk x Dk x M x N x Ho x Wo for the convolution; the attention MLP is "
    "counted in its own submodule rows"
)


class ComplexityError(InvalidInputError):
    """Bad input for a complexity count: the message names the model and the value."""


@dataclass
class LayerRow:
    """One row of the per-layer table (one module; ``name`` is its qualified name)."""

    name: str
    type: str
    output_shape: list[int] | None
    params: int                 # parameters owned directly by this module (not its submodules)
    macs: int
    elementwise_ops: int
    formula: str                # hand formula with its numbers, e.g. "11x11x3x64x55x55 = 70,276,800"
    counted_by: str             # "rule: conv", "rule: deformable conv", "aten ops", "not called", ...
    note: str = ""
    flagged: bool = False       # a counter could not count (part of) this layer
    calls: int = 1


@dataclass
class Disagreement:
    """One layer where a cross-check counter's MACs differ from ours, and why."""

    layer: str
    type: str
    ours: int
    theirs: int
    reason: str


@dataclass
class CrossCheck:
    """Another counter's total (in MACs) and the layers where it disagrees with ours."""

    counter: str                # e.g. "ptflops 0.7.5 (backend=pytorch)"
    macs: int | None            # their total, converted to MACs
    note: str                   # what they count, how we converted
    error: str | None = None    # set when the counter failed; macs is then None
    unattributed_macs: int = 0  # part of their total not tied to a layer (functional patches)
    disagreements: list[Disagreement] = field(default_factory=list)


@dataclass
class ComplexityReport:
    """Totals, per-layer rows and cross-checks of one model at one input shape."""

    model_name: str
    input_shape: tuple[int, ...]        # (C, H, W) of one image
    output_shape: list[int] | None
    params_total: int
    params_trainable: int
    macs: int
    elementwise_ops: int
    layers: list[LayerRow]
    cross_checks: list[CrossCheck] = field(default_factory=list)
    conventions: str = CONVENTIONS
    rules: tuple[str, ...] = (DEFORM_RULE, DYNAMIC_RULE)

    @property
    def flops(self) -> int:
        """FLOPs = 2 x MACs (one multiply + one add per MAC)."""
        return 2 * self.macs

    @property
    def flagged(self) -> list[LayerRow]:
        """Rows a counter could not fully count (marked '!' in the table)."""
        return [r for r in self.layers if r.flagged]

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (ints, strings, lists)."""
        return {
            "model": self.model_name,
            "input_shape": list(self.input_shape),
            "output_shape": self.output_shape,
            "params_total": self.params_total,
            "params_trainable": self.params_trainable,
            "macs": self.macs,
            "flops": self.flops,
            "elementwise_ops": self.elementwise_ops,
            "conventions": self.conventions,
            "rules": list(self.rules),
            "flagged_layers": [r.name for r in self.flagged],
            "layers": [asdict(r) for r in self.layers],
            "cross_checks": [asdict(c) for c in self.cross_checks],
        }

    def format_table(self) -> str:
        """Readable aligned plain-text table with totals and cross-checks."""
        return format_report(self)

