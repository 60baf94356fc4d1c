"""List the registered architectures: ``python -m core.models [NAME ...] [--json]``.

Text output: one line per model (name, accepted input channels, smallest input size, one-line
description, source), then its options with their defaults. ``--json`` prints a list of objects
with the same fields. Naming an unknown model prints the known ones and exits with status 2.

Models from ARCHSCOPE_MODELS files (see core/models/user_models.py) are listed with their file. When a
file cannot be loaded, the models that did load are still listed, then each problem is printed on
stderr as ``error: ARCHSCOPE_MODELS: FILE line N: ...`` and the status is 2.
"""

from __future__ import annotations

import json
import sys
from typing import Sequence

from core import cli
from core.models.registry import ModelSpec, get_spec, list_models, user_model_problems


def spec_to_dict(spec: ModelSpec) -> dict:
    """JSON-ready description of a registered model (everything but the factory)."""
    return {
        "name": spec.name,
        "description": spec.description,
        "source": spec.source,
        "in_channels": list(spec.in_channels),
        "variable_input": spec.variable_input,
        "min_input_size": spec.min_input_size,
        "options": spec.options,
        "source_file": spec.source_file,        # None for a built-in
        "source_sha256": spec.source_sha256,
    }


def format_table(specs: list[ModelSpec]) -> str:
    """Human-readable listing: a header line per model, then indented source and options."""
    width = max((len(s.name) for s in specs), default=4)
    lines = []
    for s in specs:
        channels = ",".join(str(c) for c in s.in_channels)
        flags = f"C={channels}{' (one instance, variable)' if s.variable_input else ''}, >= {s.min_input_size}px"
        lines.append(f"{s.name:<{width}}  {s.description}")
        lines.append(f"{'':<{width}}  source: {s.source}; input: {flags}")
        if s.source_file:
            lines.append(f"{'':<{width}}  file: {s.source_file} (sha256 {s.source_sha256[:12]})")
        if s.options:
            opts = ", ".join(f"{k}={v!r}" for k, v in s.options.items())
            lines.append(f"{'':<{width}}  options: {opts}")
    lines.append(f"{len(specs)} model{'' if len(specs) == 1 else 's'}. Cost per layer: python -m core.complexity MODEL --input C,H,W --classes N")
    return "\n".join(lines)


def build_parser() -> cli.Parser:
    """``[NAME ...] [--json]``."""
    parser = cli.parser("python -m core.models", __doc__)
    parser.add_argument("names", nargs="*", help="only these models; none named: all of them")
    cli.add_json(parser)
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    specs = [get_spec(n) for n in args.names] if args.names else list_models()   # UnknownModelError: exit 2
    if args.json:
        print(json.dumps([spec_to_dict(s) for s in specs], indent=2))
    else:
        print(format_table(specs))
    # A broken ARCHSCOPE_MODELS file: the models that loaded are listed above, each problem
    # follows on stderr, and the status says the listing is incomplete.
    problems = user_model_problems()
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return cli.EXIT_INVALID if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    """List the registry; returns the exit code (2 with one stderr line for an unknown name)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
