"""Parameters, MACs (multiply-accumulates), FLOPs (= 2 x MACs) and element-wise ops of a registered model, per layer, cross-checked with ptflops and FlopCounterMode.

Examples:
    python -m core.complexity alexnet_seed --input 3,224,224 --classes 1000
    python -m core.complexity resnet18 --input 1,32,32 --classes 10 --json
    python -m core.complexity resnet18 --input 3,32,32 --classes 10 --model-options '{"small_input": true}'

Exit status: 0 on success, 2 on bad input (unknown model, malformed or impossible input size,
zero classes, bad options), with one clear line on stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Sequence

from core import cli
from core.analysis.complexity import ComplexityError, model_complexity


def _parse_shape(text: str) -> tuple[int, int, int]:
    """"3,224,224" (or "3x224x224") -> (3, 224, 224); anything else -> ComplexityError."""
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ComplexityError(f"--input must be C,H,W (three integers), got {text!r}") from None
    if len(values) != 3 or any(v < 1 for v in values):
        raise ComplexityError(f"--input must be C,H,W with three positive integers, got {text!r}")
    return values  # type: ignore[return-value]


def build_parser() -> cli.Parser:
    """The command's flags (``--model-options`` as in ``python -m core.train``)."""
    parser = cli.parser("python -m core.complexity", __doc__)
    parser.add_argument("model", help="registered model name (python -m core.models lists them)")
    parser.add_argument("--input", required=True, metavar="C,H,W", help="one image's shape, e.g. 3,224,224")
    parser.add_argument("--classes", required=True, type=int, metavar="N", help="number of classes")
    cli.add_model_options(parser, default={})
    cli.add_json(parser)
    parser.add_argument("--no-cross-check", action="store_true", help="skip ptflops / FlopCounterMode")
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    shape = _parse_shape(args.input)
    report = model_complexity(args.model, shape, args.classes, args.model_options,
                              cross_check=not args.no_cross_check)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_table())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (0, or 2 for bad input with one line on stderr)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
