"""``python -m core.train``: train one model into a run folder (``torchrun ... -m core.train`` for DDP).

    python -m core.train --model cnn2 --dataset shapes --channels RG --epochs 10 --out checkpoints/rg
    python -m core.train --config my_run.json --out checkpoints/run2      # same keys as config.json
    python -m core.train --resume checkpoints/rg [--epochs 20]             # continue a killed run

Exit status: 0 done, 1 failed (see status.json), 2 invalid config or usage (nothing was
written), 3 the folder is in use by another trainer, 143 cancelled (SIGTERM/Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from core.training.config import (DEVICES, LOSSES, OPTIMIZERS, SCHEDULERS, STRATEGIES, TRIPLET_MINING,
                                  ConfigError, TrainConfig)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_LOCKED, EXIT_CANCELLED = 0, 1, 2, 3, 143


def _json_object(flag: str):
    def parse(text: str) -> dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"{flag} needs a JSON object, e.g. '{{\"width\": 32}}' ({exc.msg})")
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"{flag} needs a JSON object, got {text!r}")
        return value
    return parse


def _augment(text: str) -> dict | str:
    return _json_object("--augment")(text) if text.strip().startswith("{") else text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.train", description=__doc__.split("\n")[0],
                                epilog=__doc__.split("\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    S = argparse.SUPPRESS   # a flag not given is absent, so --config values are only overridden by given flags
    g = p.add_argument_group("run")
    g.add_argument("--config", metavar="FILE.json", help="a TrainConfig JSON (config.json of another run works)")
    g.add_argument("--out", metavar="RUN_DIR", help="run folder (default checkpoints/<model>-<dataset>-<time>)")
    g.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR after its last completed epoch")
    g.add_argument("--quiet", action="store_true", help="no progress bar (for subprocess use)")
    g.add_argument("--seed", type=int, default=S)
    g.add_argument("--device", choices=DEVICES, default=S)
    g.add_argument("--compile", action="store_true", default=S, help="torch.compile the model")
    g.add_argument("--num-threads", type=int, default=S, help="CPU threads per process (default: idle cores)")
    g.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=S,
                   help="keep NCHW memory layout")
    g.add_argument("--checkpoint-every", type=int, metavar="N", default=S, help="keep every N-th epoch's weights")
    g.add_argument("--log-every", type=int, metavar="BATCHES", default=S)
    g.add_argument("--no-eval", dest="eval_at_end", action="store_false", default=S)
    g.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=S)
    g = p.add_argument_group("model")
    g.add_argument("--model", default=S)
    g.add_argument("--model-options", type=_json_object("--model-options"), default=S, metavar="JSON")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=S)
    g.add_argument("--data-root", default=S)
    g.add_argument("--channels", default=S, help="RGB RG RB GB R G B, random (per batch) or L (greyscale)")
    g.add_argument("--channel-strategy", choices=STRATEGIES, default=S)
    g.add_argument("--image-size", type=int, default=S)
    g.add_argument("--preprocess", type=_json_object("--preprocess"), default=S, metavar="JSON",
                   help="PreprocessConfig fields as JSON")
    g.add_argument("--augment", type=_augment, default=S, metavar="PRESET|JSON",
                   help="a preset (none, crop-flip, rrc-flip, affine, elastic) or AugmentConfig fields as JSON")
    g.add_argument("--no-normalize", dest="normalize", action="store_false", default=S)
    g.add_argument("--max-train-samples", type=int, default=S)
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=S)
    g.add_argument("--batch-size", type=int, default=S)
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=S)
    g.add_argument("--lr", type=float, default=S)
    g.add_argument("--momentum", type=float, default=S)
    g.add_argument("--weight-decay", type=float, default=S)
    g.add_argument("--scheduler", choices=SCHEDULERS, default=S)
    g.add_argument("--step-size", type=int, default=S)
    g.add_argument("--gamma", type=float, default=S)
    g.add_argument("--label-smoothing", type=float, default=S)
    g.add_argument("--loss", choices=LOSSES, default=S)
    g.add_argument("--triplet-margin", type=float, default=S)
    g.add_argument("--triplet-weight", type=float, default=S)
    g.add_argument("--triplet-mining", choices=TRIPLET_MINING, default=S)
    return p


RUN_FLAGS = {"config", "out", "resume", "quiet"}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """--config file (if any) overridden by the flags actually given."""
    base = TrainConfig.from_json(args.config).to_dict() if args.config else TrainConfig().to_dict()
    given = {k: v for k, v in vars(args).items() if k not in RUN_FLAGS}
    base.update(given)
    return TrainConfig.from_dict(base)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in RUN_FLAGS - {"quiet"}:
        if not hasattr(args, name):
            setattr(args, name, None)

    from core.training.run_folder import RunLockedError
    from core.training.trainer import load_config_for_resume, train

    try:
        if args.resume:
            if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
                raise ConfigError("--resume RUN_DIR continues that folder; do not also give another --out")
            if not (Path(args.resume) / "config.json").exists():
                raise ConfigError(f"{Path(args.resume) / 'config.json'}: missing; cannot resume that folder")
            overrides = {k: v for k, v in vars(args).items() if k not in RUN_FLAGS}
            extra = sorted(set(overrides) - {"epochs", "device", "quiet", "num_threads", "log_every"})
            if extra:
                raise ConfigError(f"--resume keeps the run's config; these flags cannot change: "
                                  f"{', '.join('--' + e.replace('_', '-') for e in extra)}")
            config = load_config_for_resume(args.resume, **overrides)
            run_dir = args.resume
        else:
            config = config_from_args(args)
            run_dir = args.out or f"checkpoints/{config.model}-{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
        status = train(config, run_dir, resume=bool(args.resume), quiet=args.quiet)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except RunLockedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except OSError as exc:
        # The folder cannot be created or written (read-only disk, permissions): one clear line.
        where = args.resume or args.out or "the run folder"
        print(f"error: cannot write to {where}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    state = status.get("state")
    if state == "done":
        return EXIT_OK
    if state == "cancelled":
        return EXIT_CANCELLED
    print(f"error: training {state}: {status.get('message')}", file=sys.stderr)
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
