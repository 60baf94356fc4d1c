"""Command line: parameters, MACs, FLOPs and a per-layer table of a registered model.

    python -m core.complexity alexnet_seed --input 3,224,224 --classes 1000
    python -m core.complexity resnet18 --input 1,32,32 --classes 10 --json
    python -m core.complexity resnet18 --input 3,32,32 --classes 10 --options '{"small_input": true}'

Exit status: 0 on success, 2 on bad input (unknown model, malformed or impossible input size,
zero classes, bad options), with one clear line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from core.analysis.complexity import ComplexityError, model_complexity


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own code)
        self.exit(2, f"error: {message}\n")


def _parse_shape(text: str) -> tuple[int, int, int]:
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ComplexityError(f"--input must be C,H,W (three integers), got {text!r}") from None
    if len(values) != 3 or any(v < 1 for v in values):
        raise ComplexityError(f"--input must be C,H,W with three positive integers, got {text!r}")
    return values  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(
        prog="python -m core.complexity",
        description="Parameters, MACs (multiply-accumulates), FLOPs (= 2 x MACs) and element-wise ops "
                    "of a registered model, per layer, cross-checked with ptflops and FlopCounterMode.",
    )
    parser.add_argument("model", help="registered model name (python -m core.models lists them)")
    parser.add_argument("--input", required=True, metavar="C,H,W", help="one image's shape, e.g. 3,224,224")
    parser.add_argument("--classes", required=True, type=int, metavar="N", help="number of classes")
    parser.add_argument("--options", default="{}", metavar="JSON", help="model options as a JSON object")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-cross-check", action="store_true", help="skip ptflops / FlopCounterMode")
    args = parser.parse_args(argv)

    try:
        shape = _parse_shape(args.input)
        try:
            options = json.loads(args.options)
        except json.JSONDecodeError as exc:
            raise ComplexityError(f"--options is not valid JSON ({exc.msg} at column {exc.colno}): {args.options!r}") from None
        if not isinstance(options, dict):
            raise ComplexityError(f"--options must be a JSON object, got {args.options!r}")
        report = model_complexity(args.model, shape, args.classes, options, cross_check=not args.no_cross_check)
    except ComplexityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
