"""List the model zoo: ``python -m core.models [NAME ...] [--json]``.

Text output: one line per model (name, accepted input channels, smallest input size, one-line
description, source), then its options with their defaults. ``--json`` prints a list of objects
with the same fields. Naming an unknown model prints the known ones and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from core.models.registry import ModelSpec, UnknownModelError, get_spec, list_models


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
        if s.options:
            opts = ", ".join(f"{k}={v!r}" for k, v in s.options.items())
            lines.append(f"{'':<{width}}  options: {opts}")
    lines.append(f"{len(specs)} models. Cost per layer: python -m core.complexity MODEL --input C,H,W --classes N")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.models", description="List the registered architectures.")
    parser.add_argument("names", nargs="*", help="only these models (default: all)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        specs = [get_spec(n) for n in args.names] if args.names else list_models()
    except UnknownModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([spec_to_dict(s) for s in specs], indent=2))
    else:
        print(format_table(specs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
