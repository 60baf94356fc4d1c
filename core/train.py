"""``python -m core.train``: train one model into a run folder (``torchrun ... -m core.train`` for DDP).

    python -m core.train --model cnn2 --dataset shapes --channels RG --epochs 10 --out checkpoints/rg
    python -m core.train --config my_run.json --out checkpoints/run2      # same keys as config.json
    python -m core.train --resume checkpoints/rg [--epochs 20]             # continue a killed run

Exit status: 0 done, 1 failed (see status.json), 2 invalid config or usage (nothing was
written; also --device cuda without a GPU), 3 the folder is in use by another trainer,
130 interrupted (Ctrl-C / SIGINT), 143 cancelled (SIGTERM). Ctrl-C and SIGTERM both keep the
last completed epoch: continue with --resume.
"""

from __future__ import annotations

import signal
import sys


# ==== the first thing a trainer process does: a cancel is never lost ===========================
# Importing torch takes a second or more. A SIGTERM (the dashboard's Cancel) in that time would kill
# the process before the trainer installs its own handler, leaving no status at all: the run would
# read "failed: trainer process gone". So before any heavy import a handler records SIGTERM/SIGINT.
# While the module imports it only records (an exception raised inside an import could not be
# caught here); once main() runs it raises EarlyCancel, and main() writes status 'cancelled' and
# exits 143 / 130. The trainer's own handler takes over while it trains (core/training/trainer.py)
# and puts this one back when it returns.
class EarlyCancel(BaseException):
    """A SIGTERM/SIGINT that arrived while the trainer's own handler was not installed (BaseException:
    no ``except Exception`` on the way swallows it)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


_early = {"signal": None, "raise": False}   # the signal seen, and whether the handler may raise yet


def _early_handler(signum: int, frame: object) -> None:  # noqa: ARG001
    _early["signal"] = signal.Signals(signum).name
    if _early["raise"]:
        raise EarlyCancel(_early["signal"])


def install_early_cancel() -> None:
    """SIGTERM/SIGINT are recorded from now on (this must be the main thread); ``python -m
    core.train`` calls it before any other import."""
    # SIGINT first: Python catches SIGINT from its start (KeyboardInterrupt), so a caught SIGTERM is
    # what tells an observer (/proc/PID/status SigCgt) that both handlers are in place.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _early_handler)


def _arm_early_cancel() -> None:
    """From now on a recorded signal raises EarlyCancel (main() catches it); one that came during
    the imports raises at once."""
    _early["raise"] = True
    if _early["signal"]:
        raise EarlyCancel(_early["signal"])


if __name__ == "__main__":
    install_early_cancel()

# The imports below come after the handler on purpose (they load torch).
import argparse  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from dataclasses import fields  # noqa: E402
from pathlib import Path  # noqa: E402

from core import cli  # noqa: E402
from core.errors import EXIT_CANCELLED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, FailedError  # noqa: E402
from core.data.channels import STRATEGIES  # noqa: E402
from core.training.config import (DEVICES, LOSSES, OPTIMIZERS, SCHEDULERS, TRAIN_ONLY,  # noqa: E402
                                  TRIPLET_MINING, ConfigError, TrainConfig)

_DEFAULTS = {f.name: f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
             for f in fields(TrainConfig)}
_WHEN_NONE = {  # what a None default means, for the help text
    "data_root": "the source's own location or cache", "image_size": "the source's native size",
    "channels": "RGB, or L for a greyscale source", "max_train_samples": "all", "max_eval_samples": "all",
    "weight_decay": "0 for adam, 5e-4 for sgd", "step_size": "max(1, epochs // 3)", "num_threads": "idle cores",
    "classes": "all", "init_from": "fresh weights",
}


def _help(field: str, text: str = "", *, label: str = "") -> str:
    """``text`` plus the TrainConfig default of ``field`` (``label`` names a boolean's default:
    "channels-last on").

    The flags default to argparse.SUPPRESS (a flag not given is absent, so --config values are only
    overridden by the flags actually given), so argparse cannot show a default itself."""
    value = _DEFAULTS[field]
    if value is None:
        shown = _WHEN_NONE.get(field, "none")
    elif isinstance(value, bool):
        shown = "on" if value else "off"
    elif value == {}:
        shown = "none"
    else:
        shown = str(value)
    shown = f"{label} {shown}" if label else shown
    return f"{text} (default: {shown})" if text else f"default: {shown}"


def _augment(text: str) -> dict | str:
    return cli.json_object("--augment")(text) if text.strip().startswith("{") else text


def _classes(text: str) -> list[str]:
    """--classes "red circle,blue square" (names or indices, comma-separated) -> a list of names."""
    return [c.strip() for c in text.split(",") if c.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m core.train`` parser; flags not given are absent from the namespace."""
    p = cli.parser("python -m core.train", __doc__)
    S = argparse.SUPPRESS   # a flag not given is absent, so --config values are only overridden by given flags
    g = p.add_argument_group("run")
    g.add_argument("--config", metavar="FILE.json", default=S,
                   help="a TrainConfig JSON (config.json of another run works) (default: none)")
    g.add_argument("--out", metavar="RUN_DIR", default=S,
                   help="run folder (default: checkpoints/<model>-<dataset>-<time>)")
    g.add_argument("--resume", metavar="RUN_DIR", default=S,
                   help="continue the run in RUN_DIR after its last completed epoch (default: none)")
    g.add_argument("--quiet", action="store_true", help="no progress bar (for subprocess use)")
    g.add_argument("--seed", type=int, default=S, help=_help("seed"))
    g.add_argument("--device", choices=DEVICES, default=S,
                   help=_help("device", "auto: cuda when a GPU is visible, else cpu"))
    g.add_argument("--compile", action="store_true", default=S, help=_help("compile", "torch.compile the model"))
    g.add_argument("--num-threads", type=int, default=S, help=_help("num_threads", "CPU threads per process"))
    g.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=S,
                   help=_help("channels_last", "keep NCHW memory layout", label="channels-last"))
    g.add_argument("--checkpoint-every", type=int, metavar="N", default=S,
                   help=_help("checkpoint_every", "keep every N-th epoch's weights (0: never)"))
    g.add_argument("--log-every", type=int, metavar="BATCHES", default=S,
                   help=_help("log_every", "batches between steps.jsonl rows"))
    g.add_argument("--no-eval", dest="eval_at_end", action="store_false", default=S,
                   help=_help("eval_at_end", "skip the test-split evaluation at the end", label="evaluation"))
    g.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=S,
                   help=_help("tensorboard", "write no TensorBoard scalars", label="TensorBoard"))
    g = p.add_argument_group("model")
    g.add_argument("--model", default=S, help=_help("model", "a name from python -m core.models"))
    cli.add_model_options(g, default=S)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=S, help=_help("dataset", "a source from python -m core.data"))
    g.add_argument("--data-root", default=S, help=_help("data_root"))
    g.add_argument("--channels", default=S,
                   help=_help("channels", "RGB RG RB GB R G B, random (per batch) or L (greyscale)"))
    g.add_argument("--channel-strategy", choices=STRATEGIES, default=S, help=_help("channel_strategy"))
    g.add_argument("--image-size", type=int, default=S, help=_help("image_size"))
    g.add_argument("--preprocess", type=cli.json_object("--preprocess"), default=S, metavar="JSON",
                   help=_help("preprocess", "PreprocessConfig fields as JSON"))
    g.add_argument("--augment", type=_augment, default=S, metavar="PRESET|JSON",
                   help=_help("augment", "a preset (none, crop-flip, rrc-flip, affine, elastic) or AugmentConfig "
                                         "fields as JSON"))
    g.add_argument("--no-normalize", dest="normalize", action="store_false", default=S,
                   help=_help("normalize", "no per-channel mean/std normalisation", label="normalisation"))
    g.add_argument("--max-train-samples", type=int, default=S, help=_help("max_train_samples"))
    g.add_argument("--max-eval-samples", type=int, default=S,
                   help=_help("max_eval_samples", "cut validation and test to N images each (the same N for "
                                                  "every seed: picked by the data seed)"))
    g.add_argument("--classes", type=_classes, default=S, metavar="NAME,NAME,...",
                   help=_help("classes", "train/validate/test on these classes only (names or indices, "
                                         "comma-separated; relabelled 0..k-1 in this order)"))
    g = p.add_argument_group("transfer")
    g.add_argument("--init-from", default=S, metavar="RUN_DIR|FILE.safetensors",
                   help=_help("init_from", "start a new run from a run's best weights or a weights file "
                                           "(tensors of another shape, e.g. the head, stay fresh)"))
    g.add_argument("--train-only", choices=TRAIN_ONLY, default=S,
                   help=_help("train_only", "head: linear probe, only the last nn.Linear trains"))
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=S, help=_help("epochs"))
    g.add_argument("--batch-size", type=int, default=S, help=_help("batch_size"))
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=S, help=_help("optimizer"))
    g.add_argument("--lr", type=float, default=S, help=_help("lr"))
    g.add_argument("--momentum", type=float, default=S, help=_help("momentum", "sgd only"))
    g.add_argument("--weight-decay", type=float, default=S, help=_help("weight_decay"))
    g.add_argument("--scheduler", choices=SCHEDULERS, default=S, help=_help("scheduler"))
    g.add_argument("--step-size", type=int, default=S, help=_help("step_size", "step scheduler: epochs per decay"))
    g.add_argument("--gamma", type=float, default=S, help=_help("gamma", "step scheduler decay"))
    g.add_argument("--label-smoothing", type=float, default=S, help=_help("label_smoothing"))
    g.add_argument("--loss", choices=LOSSES, default=S,
                   help=_help("loss", "triplet: the embedding alone, no cross-entropy (best = last epoch)"))
    g.add_argument("--triplet-margin", type=float, default=S, help=_help("triplet_margin"))
    g.add_argument("--triplet-weight", type=float, default=S, help=_help("triplet_weight"))
    g.add_argument("--triplet-mining", choices=TRIPLET_MINING, default=S, help=_help("triplet_mining"))
    # --model-options is defined in core/cli.py (one name and help for every command); add its default.
    for action in p._actions:
        if action.dest == "model_options":
            action.help = f"{action.help} (default: none)"
    return p


RUN_FLAGS = {"config", "out", "resume", "quiet"}
RESUME_MAY_CHANGE = {"epochs", "device", "quiet", "num_threads", "log_every"}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """--config file (if any) overridden by the flags actually given."""
    config_file = getattr(args, "config", None)
    base = TrainConfig.from_json(config_file).to_dict() if config_file else TrainConfig().to_dict()
    given = {k: v for k, v in vars(args).items() if k not in RUN_FLAGS}
    base.update(given)
    return TrainConfig.from_dict(base)


def _exit_code(status: dict) -> int:
    """The exit code of a finished ``train()``: 0 done, 130 Ctrl-C, 143 SIGTERM; a failure raises."""
    state = status.get("state")
    if state == "done":
        return EXIT_OK
    if state == "cancelled":
        # The trainer names the signal in its message ("cancelled (SIGINT) during epoch 3; ...").
        signal_name = status.get("signal") or ("SIGINT" if "(SIGINT)" in str(status.get("message")) else "SIGTERM")
        return EXIT_INTERRUPTED if signal_name == "SIGINT" else EXIT_CANCELLED
    raise FailedError(f"training {state}: {status.get('message')}")


def _read_config(read, *args, **kwargs) -> TrainConfig:
    """``read(*args, **kwargs)`` with an unreadable file (a folder, no permission) as one clear line."""
    try:
        return read(*args, **kwargs)
    except OSError as exc:
        raise ConfigError(f"cannot read the config: {exc}") from None


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    for name in RUN_FLAGS - {"quiet"}:
        if not hasattr(args, name):
            setattr(args, name, None)
    # First, before the trainer (and torchrun's process group) starts: no GPU for --device cuda.
    cli.check_device(getattr(args, "device", None))

    from core.training.trainer import load_config_for_resume, train

    if _early["signal"]:       # a signal whose raise was swallowed (inside a finalizer) during the import
        raise EarlyCancel(_early["signal"])
    if args.resume:
        if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
            raise ConfigError("--resume RUN_DIR continues that folder; do not also give another --out")
        if not (Path(args.resume) / "config.json").exists():
            raise ConfigError(f"{Path(args.resume) / 'config.json'}: missing; cannot resume that folder")
        overrides = {k: v for k, v in vars(args).items() if k not in RUN_FLAGS}
        extra = sorted(set(overrides) - RESUME_MAY_CHANGE)
        if extra:
            raise ConfigError(f"--resume keeps the run's config; these flags cannot change: "
                              f"{', '.join('--' + e.replace('_', '-') for e in extra)}")
        config = _read_config(load_config_for_resume, args.resume, **overrides)
        run_dir = args.resume
    else:
        config = _read_config(config_from_args, args)
        run_dir = args.out or f"checkpoints/{config.model}-{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    cli.check_device(config.device)          # the same for a device that came from --config or the run
    try:
        status = train(config, run_dir, resume=bool(args.resume), quiet=args.quiet)
    except OSError as exc:
        # The folder cannot be created or written (read-only disk, permissions): one clear line.
        raise FailedError(f"cannot write to {run_dir}: {exc}") from None
    return _exit_code(status)


def _run_dir_from_argv(argv: list[str] | None) -> Path | None:
    """The run folder named by ``--resume`` or ``--out`` in ``argv`` (default sys.argv), read without
    argparse: a signal may arrive before the arguments were parsed."""
    args = list(sys.argv[1:] if argv is None else argv)
    for flag in ("--resume", "--out"):
        for i, arg in enumerate(args):
            if arg == flag and i + 1 < len(args):
                return Path(args[i + 1])
            if arg.startswith(flag + "="):
                return Path(arg[len(flag) + 1:])
    return None


def _signal_exit_code(signal_name: str | None) -> int:
    return EXIT_INTERRUPTED if signal_name == "SIGINT" else EXIT_CANCELLED


def record_early_cancel(run_dir: str | os.PathLike, signal_name: str) -> dict | None:
    """Write status 'cancelled' into ``run_dir`` for a trainer stopped by ``signal_name`` before it
    was training, when the run is this process's: its status.json says queued/running with this
    process's pid or process group (or none, or a pid of this machine that is gone), and no other live
    process holds train.lock. Returns the final status found or written; None when nothing was
    (no status yet: a shell run that created nothing; another process's run or final state; a
    torchrun rank > 0)."""
    from core.training.run_folder import WAITING_FOR_SLOT, RunFolder, is_this_host, owner_alive, pid_alive, this_host

    if os.environ.get("RANK", "0") != "0":
        return None                    # under torchrun rank 0 alone writes the run folder
    run = RunFolder(run_dir)
    raw = run.read_raw_status()        # as written: read_status would call our own queued run failed
    if raw.get("state") in ("done", "failed", "cancelled"):
        # This process's trainer finished before the signal: its final word stays and decides the
        # exit code. A final state of an earlier trainer (a --resume from a shell) stays as well.
        return raw if raw.get("pid") == os.getpid() else None
    if raw.get("state") not in ("queued", "running"):
        return None
    pid, host = raw.get("pid"), raw.get("host")
    ours = not pid or (is_this_host(host) and (int(pid) == os.getpid() or raw.get("pgid") == os.getpgrp()
                                                or not pid_alive(int(pid))))
    owner, owner_host = run.lock_holder()
    if owner and not (owner == os.getpid() and is_this_host(owner_host)) and owner_alive(owner, owner_host):
        ours = False                   # another trainer owns the folder: its status is not ours to end
    if not ours:
        return None
    run.write_status("cancelled", signal=signal_name, finished=time.time(), pid=os.getpid(), host=this_host(),
                     **{WAITING_FOR_SLOT: False},
                     message=f"cancelled ({signal_name}) before the trainer was running; the run folder is as "
                             f"it was: start it again with --resume {run.path}")
    run.release_lock()                 # taken already if the signal came during the trainer's first steps
    return run.read_raw_status()


def _cancelled_early(signal_name: str, argv: list[str] | None) -> int:
    """main()'s answer to EarlyCancel: record the cancel in the run folder; exit 143 (SIGTERM) / 130 (SIGINT),
    or the exit code of the final status the trainer had already written."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(sig, signal.SIG_IGN)     # a second Cancel must not cut the recording short
        except ValueError:                          # not the main thread: nothing was installed here
            pass
    run_dir = _run_dir_from_argv(argv)
    final = (record_early_cancel(run_dir, signal_name) if run_dir is not None else None) or {}
    if final.get("state") == "done":
        return EXIT_OK             # finished before the signal could stop it
    if final.get("state") == "failed":
        return EXIT_FAILED
    print(f"cancelled ({signal_name})", file=sys.stderr)
    if final.get("state") == "cancelled":
        return _exit_code(final)   # its own signal field (or message) decides 130 / 143
    return _signal_exit_code(signal_name)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 done, 1 failed, 2 invalid, 3 locked,
    130 interrupted, 143 cancelled)."""
    try:
        _arm_early_cancel()
        return cli.run(_main, argv)
    except EarlyCancel as exc:
        return _cancelled_early(exc.signal_name, argv)


if __name__ == "__main__":
    sys.exit(main())
