"""Evaluate a run on its test split and write eval.json (fp32; the channel-robustness row too).

Examples:
    python -m core.evaluate checkpoints/cnn3-rg
    python -m core.evaluate checkpoints/cnn3-rg --weights last --device cpu --json

Exit status: 0 done; 1 the run's weights or config.json cannot be used; 2 bad input (no such
folder, --device cuda without a GPU, dataset not available). The work is
core.training.evaluation.evaluate_run; eval.json's fields are listed there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

from core import cli
from core.errors import InvalidInputError
from core.training.evaluation import evaluate_run


def build_parser() -> cli.Parser:
    """The command's flags."""
    parser = cli.parser("python -m core.evaluate", __doc__)
    parser.add_argument("run_dir", help="a run folder (config.json + weights)")
    parser.add_argument("--weights", default="best", help="best, last or an epoch number")
    cli.add_device(parser)
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    cli.add_json(parser)
    return parser


def _print_summary(run_dir: str, r: dict) -> None:
    print(f"{run_dir}: test_acc {r['test_acc']:.4f}  test_loss {r['test_loss']:.4f}  n_test {r['n_test']}  "
          f"({r['inference_images_per_s']:,.0f} images/s on {r['device']}, {r['dtype']}, weights {r['weights']})")
    m = r["macro"]
    print(f"macro precision {m['precision']:.4f}  recall {m['recall']:.4f}  f1 {m['f1']:.4f}")
    width = max(len(c["class"]) for c in r["per_class"]) if r["per_class"] else 5
    print(f"{'class':<{width}}  precision  recall     f1  support")
    for c in r["per_class"]:
        print(f"{c['class']:<{width}}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:5.4f}  {c['support']:7d}")
    cr = r["channel_robustness"]
    cells = "  ".join(f"{k}:{'n/a' if v is None else f'{v:.3f}'}" for k, v in cr["tested"].items())
    print(f"channel robustness (trained {cr['trained']}, {cr['strategy']}): {cells}")


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    cli.check_device(args.device)
    if not Path(args.run_dir).is_dir():
        raise InvalidInputError(f"{args.run_dir}: no such run folder")
    if args.batch_size < 1:
        raise InvalidInputError(f"--batch-size must be >= 1, got {args.batch_size}")
    result = evaluate_run(args.run_dir, which=args.weights, device=args.device, batch_size=args.batch_size)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        _print_summary(args.run_dir, result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (see the module docstring)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
