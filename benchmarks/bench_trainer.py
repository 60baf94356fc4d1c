"""Our trainer vs a plain PyTorch loop: same model, same data, same number of steps.

    python benchmarks/bench_trainer.py [--model cnn3] [--dataset shapes] [--samples 4096] [--epochs 3]
                                       [--batch-size 128] [--threads 2] [--device auto|cpu|cuda] [--workers 0]
                                       [--augment none|crop-flip] [--scheduler none|cosine]
                                       [--seeds 0 1 2 ...] [--json-out F]

- ours: core.training.trainer.train (uint8 dataset tensor on the device, whole-batch pipeline, no
  per-step sync; on CUDA also bf16 autocast + channels_last + cudnn.benchmark + TF32 matmuls, which
  the trainer switches on for its training only and restores afterwards).
- plain: the textbook loop: a Dataset of PIL images, per-sample torchvision transforms
  (ToTensor + Normalize with the same statistics), DataLoader(shuffle=True), plain fp32 (the
  process defaults: no cudnn.benchmark, no TF32 matmuls; recorded in its result), ``loss.item()``
  every step. Test accuracy: both with their final weights (ours also reports its best-by-val weights).
Both start from the same initial weights (same seed), train the same epochs x steps with Adam at
the same learning rate (and the same per-epoch schedule with --scheduler cosine), and are scored on the same test split. images/s counts training only
(forward + backward + step + data), excluding validation/evaluation (and, with --compile, the
first compiled step: the trainer reports its compile_seconds apart). Prints a table and a JSON line.
``--device cuda`` on a machine without a GPU stops at once with one line (exit 2); on CUDA every
timer reads after torch.cuda.synchronize().

Accuracy: one training run's final test accuracy moves by a few points with the seed (the shuffle
order and, with augmentation, the random crops differ between the two loops even at the same seed),
so "equal within noise" is judged over several seeds: each seed is a paired trial, and the summary
gives the mean difference ours - plain with its 95% Student-t interval.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from typing import Sequence

import torch
from torch import nn

from core import cli
from core.data import compute_normalization, load_dataset
from core.errors import InvalidInputError
from core.models import create_model
from core.training.config import TrainConfig
from core.training.evaluation import evaluate_run
from core.training.run_folder import RunFolder
from core.training.trainer import train


class PILDataset(torch.utils.data.Dataset):
    """The split as a list of PIL images, transformed one sample at a time (the usual tutorial setup)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        from PIL import Image

        mode = "L" if images.shape[1] == 1 else "RGB"
        arrs = images.permute(0, 2, 3, 1).numpy()
        self.images = [Image.fromarray(a[:, :, 0] if mode == "L" else a, mode=mode) for a in arrs]
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def plain_loop(args, data, mean, std, device: torch.device) -> dict:
    from torchvision import transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    train_tf = tf
    if args.augment == "crop-flip":   # the same augmentation as our AugmentConfig.preset("crop-flip")
        train_tf = transforms.Compose([transforms.RandomCrop(args.image_size, padding=4),
                                       transforms.RandomHorizontalFlip(), tf])
    train_ds = PILDataset(data.train.images, data.train.labels, train_tf)
    test_ds = PILDataset(data.test.images, data.test.labels, tf)
    g = torch.Generator()
    g.manual_seed(args.seed)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, generator=g,
                                         pin_memory=device.type == "cuda")
    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=data.info.num_classes, in_channels=data.train.images.shape[1]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    # the trainer's "cosine": CosineAnnealingLR over the epochs, stepped once per epoch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs) if args.scheduler == "cosine" else None
    crit = nn.CrossEntropyLoss()
    seen, train_seconds, last_loss = 0, 0.0, float("nan")
    # What "plain fp32" ran with: the process defaults (the trainer before it restored its own).
    settings = {"cudnn_benchmark": torch.backends.cudnn.benchmark,
                "matmul_precision": torch.get_float32_matmul_precision()}
    epoch_seconds: list[float] = []
    for _ in range(args.epochs):
        model.train()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = crit(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            last_loss = loss.item()
            seen += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_seconds.append(time.perf_counter() - start)
        train_seconds += epoch_seconds[-1]
        if sched is not None:
            sched.step()
    model.eval()
    correct = n = 0
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(test_ds, batch_size=256):
            correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
            n += len(y)
    per_epoch = seen // max(1, args.epochs)
    steady = per_epoch * (len(epoch_seconds) - 1) / sum(epoch_seconds[1:]) if len(epoch_seconds) > 1 else None
    return {"images_per_s": seen / train_seconds, "steady_images_per_s": steady, "train_seconds": train_seconds,
            "images": seen, "test_acc": correct / n, "last_loss": last_loss, **settings}


def ours(args, device: torch.device) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(model=args.model, dataset=args.dataset, image_size=args.image_size,
                          max_train_samples=args.samples, epochs=args.epochs, batch_size=args.batch_size,
                          lr=args.lr, scheduler=args.scheduler, seed=args.seed, device=device.type, num_threads=args.threads,
                          log_every=50, eval_at_end=True, compile=args.compile,
                          augment=args.augment if args.augment != "none" else {})
        status = train(cfg, Path(tmp) / "run", quiet=True)
        if status["state"] != "done":
            raise SystemExit(f"our trainer failed: {status['message']}")
        run = RunFolder(Path(tmp) / "run")
        rows = run.read_metrics()
        # the plain loop is scored with its final weights: score ours with its last ones too
        ev = evaluate_run(run.path, which="last", device=device.type, write=False)
        best_acc = run.read_eval()["test_acc"]
        n_train = run.read_config()["run"]["n_train"]
        threads = run.read_config()["run"]["cpu_threads"]
    # The metrics row's images_per_s counts training only: train seconds = images / images_per_s.
    # A compiled run's first step is left out of that row's images_per_s (its compile_seconds).
    n_per_epoch = (n_train // args.batch_size) * args.batch_size
    timed = [n_per_epoch - (args.batch_size if "compile_seconds" in r else 0) for r in rows]
    train_seconds = sum(t / r["images_per_s"] for t, r in zip(timed, rows))
    images = sum(timed)
    compile_seconds = sum(r.get("compile_seconds", 0.0) for r in rows)
    later = [(t, r) for t, r in zip(timed, rows)][1:]      # after the first epoch's one-time costs
    steady = sum(t for t, _ in later) / sum(t / r["images_per_s"] for t, r in later) if later else None
    return {"images_per_s": images / train_seconds, "steady_images_per_s": steady, "train_seconds": train_seconds,
            "images": images, "test_acc": ev["test_acc"], "test_acc_best_weights": best_acc,
            "last_loss": rows[-1]["train_loss"], "threads": threads,
            **({"compile_seconds": compile_seconds} if args.compile else {})}


def warm_up_cuda(device: torch.device) -> None:
    """Create the CUDA context and load cuBLAS / cuDNN before either loop is timed: whichever ran first
    would otherwise pay them (seconds on a fresh process) inside its first epoch."""
    conv = nn.Conv2d(3, 8, 3).to(device)
    x = torch.randn(4, 3, 16, 16, device=device, requires_grad=True)
    (conv(x).sum() + (x.flatten(1) @ x.flatten(1).T).sum()).backward()
    torch.cuda.synchronize(device)


def paired_summary(ours_acc: list[float], plain_acc: list[float]) -> dict:
    """Mean and spread of both accuracies and of their per-seed difference (ours - plain), with a
    two-sided 95% confidence interval from Student's t: "equal within noise" means it holds 0."""
    import statistics

    diffs = [a - b for a, b in zip(ours_acc, plain_acc)]
    n = len(diffs)
    out = {"n": n, "ours_mean": statistics.fmean(ours_acc), "plain_mean": statistics.fmean(plain_acc),
           "diff_mean": statistics.fmean(diffs)}
    if n >= 2:
        # t quantiles (0.975) for df 1..30; beyond, the normal 1.96 is within 2%
        t975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
                2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
                2.052, 2.048, 2.045, 2.042]
        t = t975[n - 2] if n - 1 <= len(t975) else 1.96
        sd = statistics.stdev(diffs)
        half = t * sd / n ** 0.5
        out.update({"ours_sd": statistics.stdev(ours_acc), "plain_sd": statistics.stdev(plain_acc),
                    "diff_sd": sd, "diff_ci95": [out["diff_mean"] - half, out["diff_mean"] + half],
                    "equal_within_noise": out["diff_mean"] - half <= 0.0 <= out["diff_mean"] + half})
    return out


def build_parser() -> cli.Parser:
    """The benchmark's flags (help shows each default)."""
    p = cli.parser("python benchmarks/bench_trainer.py", __doc__)
    p.add_argument("--model", default="cnn3")
    p.add_argument("--dataset", default="shapes")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=None, help="one seed (same as --seeds S)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="several seeds, each a paired ours/plain trial (same init, same data); prints the "
                        "mean accuracy difference with its 95%% interval. One training run's accuracy "
                        "varies by a few points with the seed, so one seed cannot tell equal from unequal")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for both (default: the trainer's choice, idle cores; plain gets the same)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of the plain loop")
    cli.add_device(p)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--augment", default="none", choices=("none", "crop-flip"),
                   help="same augmentation on both sides (plain: per-sample RandomCrop + RandomHorizontalFlip)")
    p.add_argument("--scheduler", default="none", choices=("none", "cosine"),
                   help="learning-rate schedule on both sides; cosine anneals to 0, so the final weights (and "
                        "the accuracy comparison) are much less noisy than at a constant rate")
    p.add_argument("--json-out", default=None, help="also write every trial and the summary to this JSON file")
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    cli.check_device(args.device)          # --device cuda without a GPU: one line, exit 2, before any work
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    for flag, value in (("--samples", args.samples), ("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if value < 1:
            raise InvalidInputError(f"{flag} must be >= 1, got {value}")
    seeds = args.seeds if args.seeds is not None else [0 if args.seed is None else args.seed]
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.model} on {args.dataset}: {args.samples} train images max, {args.epochs} epochs, "
          f"batch {args.batch_size}, augment {args.augment}, scheduler {args.scheduler}, {args.device}, seeds {seeds}", flush=True)
    if args.compile:
        print("--compile: ours leaves its first (compiling) step out of images/s; compile_seconds is reported",
              flush=True)
    print(f"{'seed':>4} {'ours img/s':>11} {'plain img/s':>12} {'speed-up':>9} {'ours acc':>9} {'plain acc':>10}",
          flush=True)
    if device.type == "cuda":
        warm_up_cuda(device)
    trials = []
    for seed in seeds:
        args.seed = seed
        data = load_dataset(args.dataset, image_size=args.image_size, seed=seed, max_train_samples=args.samples)
        mean, std = compute_normalization(data.train)
        # Order: ours first, then plain; both pay their own first-iteration costs inside the timed region.
        r_ours = ours(args, device)
        torch.set_num_threads(r_ours["threads"])   # the plain loop gets exactly the threads ours used
        r_plain = plain_loop(args, data, mean, std, device)
        ratio = r_ours["images_per_s"] / r_plain["images_per_s"]
        trials.append({"seed": seed, "ours": r_ours, "plain": r_plain, "ratio": ratio,
                       "load_avg_1min": os.getloadavg()[0]})
        print(f"{seed:4d} {r_ours['images_per_s']:11.1f} {r_plain['images_per_s']:12.1f} {ratio:8.2f}x "
              f"{r_ours['test_acc']:9.4f} {r_plain['test_acc']:10.4f}", flush=True)
    ratios = sorted(t["ratio"] for t in trials)
    acc = paired_summary([t["ours"]["test_acc"] for t in trials], [t["plain"]["test_acc"] for t in trials])
    print(f"threads {trials[-1]['ours']['threads']}, 1-min load average {os.getloadavg()[0]:.1f} (shared machine)")
    print(f"speed-up ours/plain: median {ratios[len(ratios) // 2]:.2f}x (min {ratios[0]:.2f}x, max {ratios[-1]:.2f}x)")
    steady = sorted(t["ours"]["steady_images_per_s"] / t["plain"]["steady_images_per_s"] for t in trials
                    if t["ours"]["steady_images_per_s"] and t["plain"]["steady_images_per_s"])
    if steady:
        print(f"after the first epoch (one-time costs: cudnn.benchmark autotuning, first kernels): median "
              f"{steady[len(steady) // 2]:.2f}x, ours {trials[-1]['ours']['steady_images_per_s']:.0f} img/s, "
              f"plain {trials[-1]['plain']['steady_images_per_s']:.0f} img/s")
    line = f"test accuracy: ours {acc['ours_mean']:.4f}, plain {acc['plain_mean']:.4f}, difference {acc['diff_mean']:+.4f}"
    if "diff_ci95" in acc:
        lo, hi = acc["diff_ci95"]
        line += (f" (95% interval {lo:+.4f} .. {hi:+.4f} over {acc['n']} seeds: "
                 f"{'equal within noise' if acc['equal_within_noise'] else 'NOT equal within noise'})")
    else:
        line += " (one seed: give --seeds S1 S2 ... for an interval)"
    print(line)
    summary = {"model": args.model, "dataset": args.dataset, "device": args.device, "augment": args.augment,
               "scheduler": args.scheduler, "epochs": args.epochs, "batch_size": args.batch_size, "samples": args.samples,
               "ratio_median": ratios[len(ratios) // 2],
               "steady_ratio_median": steady[len(steady) // 2] if steady else None, "accuracy": acc, "trials": trials}
    print(json.dumps(summary))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=1))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit code (2 for bad flags, e.g. --device cuda without a GPU)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
