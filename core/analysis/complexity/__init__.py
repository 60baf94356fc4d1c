"""Parameters, MACs, FLOPs and element-wise work of a model, per layer, with hand formulas.

    report = complexity_report(model, input_shape=(3, 224, 224))
    report.params_total, report.macs, report.flops, report.elementwise_ops
    print(report.format_table())

Conventions (stated in every report, ``CONVENTIONS``):

* MACs = multiply-accumulates of convolution, linear and matmul-type work, for ONE image
  (batch 1), bias excluded: torchvision's model-table convention. FLOPs = 2 x MACs.
* Element-wise work (activations, bias adds, pooling, normalisation, softmax, attention gates,
  dropout, bilinear interpolation) is counted separately as ``elementwise_ops``, one op per
  element per primitive step, never folded into MACs.

How it counts (our primary counter). One forward at batch 1 under ``torch.no_grad`` with:

1. forward pre/post hooks on every module, keeping a stack so each aten op executed is
   attributed to the innermost module running;
2. a ``TorchDispatchMode`` classifying every aten op: matmul-type (mm, addmm, bmm, baddbmm,
   convolution, scaled-dot-product attention) -> MACs from the operand shapes; known
   element-wise ops -> element-wise ops; data movement (view, cat, ...) -> free; anything else
   -> the layer is FLAGGED with the op name (never silently zero);
3. explicit rules, applied in the post hook, for modules whose cost we state by hand:
   ``nn.Conv*d`` and ``nn.Linear`` (the textbook formulas), ``DeformConv2d`` (ours and
   torchvision's) and ``DynamicConv2d``. A rule replaces the aten-op count of that module's own
   ops (submodules such as a deformable conv's offset/mask convs keep their own rows).

The package, one module per concern:

    report.py        the result types (LayerRow, CrossCheck, ComplexityReport) and the conventions
    aten_ops.py      what each aten op costs (MACs, element-wise, free)
    rules.py         the explicit rules: conv, linear, deformable conv, dynamic conv
    counter.py       the hooks + dispatch-mode counter that fills one row per module
    cross_checks.py  ptflops (pytorch and aten backends) and FlopCounterMode
    text.py          the plain-text table
    measure.py       complexity_report / model_complexity

Cross-checks: ptflops (``backend="pytorch"`` and ``backend="aten"``, both return MACs) and
``torch.utils.flop_counter.FlopCounterMode`` (FLOPs, halved here) run on their own forward;
their totals are reported and every layer where they disagree with us is listed with a reason.
"""


from core.analysis.complexity.measure import complexity_report, model_complexity
from core.analysis.complexity.report import (CONVENTIONS, DEFORM_RULE, DYNAMIC_RULE, ComplexityError,
                                             ComplexityReport, CrossCheck, Disagreement, LayerRow)
from core.analysis.complexity.text import format_report

__all__ = [
    "complexity_report", "model_complexity", "format_report",
    "ComplexityError", "ComplexityReport", "CrossCheck", "Disagreement", "LayerRow",
    "CONVENTIONS", "DEFORM_RULE", "DYNAMIC_RULE",
]
