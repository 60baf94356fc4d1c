"""Evaluate a run on its test split: ``python -m core.evaluate RUN_DIR [--json]`` writes eval.json.

eval.json: test_loss, test_acc, macro {precision, recall, f1}, per_class [{class, precision,
recall, f1, support}], classes, confusion_matrix (rows true, columns predicted, counts),
channel_robustness {trained, strategy, tested: {combo: acc or null}, untested: {combo: reason}},
inference_images_per_s, n_test, weights, test_channels.

The channel-robustness row is the test accuracy on each of the 7 combinations with the run's own
strategy. A fixed-input model trained with 'drop' only accepts combinations with as many channels
as it was trained on: the others are null, with the reason in ``untested``. Greyscale sources have
one combination, "L".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.analysis.metrics import CHANNEL_COMBOS, classification_report, confusion_matrix


@torch.no_grad()
def run_batches(model: nn.Module, loader, *, device: torch.device | str = "cpu", collect: bool = False,
                channels_last: bool = False) -> dict:
    """Forward every batch of ``loader`` ((x [B,C,H,W] float, y [B] int64) pairs) in eval mode.

    Loss and correct counts accumulate on the device and are read once at the end.
    Returns {"loss": mean CE, "accuracy", "n", "seconds", and with collect=True "preds" and
    "labels" (int64 [N] on the CPU)}.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    on_cuda = device.type == "cuda"
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else torch.autocast("cpu", enabled=False)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    n = 0
    preds, labels = [], []
    start = time.perf_counter()
    for x, y in loader:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with amp:
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        p = logits.argmax(1)
        correct += (p == y).sum()
        n += y.shape[0]
        if collect:
            preds.append(p)
            labels.append(y)
    loss_total, correct_total = float(loss_sum), int(correct)   # the one sync
    seconds = time.perf_counter() - start
    model.train(was_training)
    out = {"loss": loss_total / max(n, 1), "accuracy": correct_total / max(n, 1), "n": n, "seconds": seconds}
    if collect:
        out["preds"] = torch.cat(preds).cpu() if preds else torch.zeros(0, dtype=torch.int64)
        out["labels"] = torch.cat(labels).cpu() if labels else torch.zeros(0, dtype=torch.int64)
    return out


def _resolve(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def evaluate_run(run_dir: str | Path, *, which: str | int = "best", device: str = "auto",
                 batch_size: int = 256, write: bool = True) -> dict:
    """Evaluate a run's weights (``which``: best, last or an epoch) on its test split; write eval.json.

    Raises CheckpointError (bad weights/config) or DataError (dataset unavailable) with clear messages.
    """
    from core.data import BatchLoader, PreprocessConfig, load_dataset
    from core.models.registry import get_spec
    from core.training.checkpoint import load_run_model, read_run_info
    from core.training.run_folder import RunFolder

    run_dir = Path(run_dir)
    dev = _resolve(device)
    _, run = read_run_info(run_dir)
    model, config = load_run_model(run_dir, which=which, device=str(dev))
    if config.channels_last:
        from core.training.trainer import to_channels_last

        to_channels_last(model)
    data = load_dataset(
        config.dataset, image_size=config.image_size, root=config.data_root, seed=config.seed,
        preprocess=PreprocessConfig.from_dict(config.preprocess) if config.preprocess else None,
        max_train_samples=config.max_train_samples,
    )
    normalize = (run["normalize_mean"], run["normalize_std"]) if run.get("normalize_mean") else None
    classes = list(run.get("classes") or data.info.classes)
    source_channels = int(run.get("source_channels", data.test.images.shape[1]))
    greyscale = source_channels == 1
    headline = run.get("eval_channels") or (
        ("L" if greyscale else "RGB") if config.channels == "random" else config.channels)

    def loader(combo: str):
        return BatchLoader(data.test, batch_size, shuffle=False, channels=combo,
                           strategy=config.channel_strategy, normalize=normalize, device=str(dev),
                           seed=config.seed)

    main = run_batches(model, loader(headline), device=dev, collect=True, channels_last=config.channels_last)
    cm = confusion_matrix(main["labels"], main["preds"], len(classes))
    report = classification_report(cm, classes)

    tested: dict[str, float | None] = {}
    untested: dict[str, str] = {}
    spec = get_spec(config.model)
    fixed_drop = config.channel_strategy == "drop" and not spec.variable_input
    from core.data import combos_for

    for combo in combos_for(source_channels):      # RGB..B, or L (grayscale), or ALL (e.g. 6-channel pairs)
        if combo == headline:
            tested[combo] = main["accuracy"]
        elif fixed_drop and len(combo) != int(run["in_channels"]):
            tested[combo] = None
            untested[combo] = (f"model {config.model} was built for {run['in_channels']} input channel(s) "
                               f"(strategy drop); {combo} has {len(combo)}")
        else:
            tested[combo] = run_batches(model, loader(combo), device=dev,
                                        channels_last=config.channels_last)["accuracy"]

    result = {
        "test_loss": main["loss"],
        "test_acc": main["accuracy"],
        "macro": report["macro"],
        "per_class": report["per_class"],
        "classes": classes,
        "confusion_matrix": cm.tolist(),
        "channel_robustness": {"trained": config.channels, "strategy": config.channel_strategy,
                               "tested": tested, "untested": untested},
        "inference_images_per_s": main["n"] / max(main["seconds"], 1e-9),
        "n_test": main["n"],
        "weights": str(which),
        "test_channels": headline,
        "device": str(dev),
        "evaluated": time.time(),
    }
    if write:
        RunFolder(run_dir).write_eval(result)
    return result


def _print_summary(run_dir: str, r: dict) -> None:
    print(f"{run_dir}: test_acc {r['test_acc']:.4f}  test_loss {r['test_loss']:.4f}  n_test {r['n_test']}  "
          f"({r['inference_images_per_s']:,.0f} images/s on {r['device']}, weights {r['weights']})")
    m = r["macro"]
    print(f"macro precision {m['precision']:.4f}  recall {m['recall']:.4f}  f1 {m['f1']:.4f}")
    width = max(len(c["class"]) for c in r["per_class"]) if r["per_class"] else 5
    print(f"{'class':<{width}}  precision  recall     f1  support")
    for c in r["per_class"]:
        print(f"{c['class']:<{width}}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:5.4f}  {c['support']:7d}")
    cr = r["channel_robustness"]
    cells = "  ".join(f"{k}:{'n/a' if v is None else f'{v:.3f}'}" for k, v in cr["tested"].items())
    print(f"channel robustness (trained {cr['trained']}, {cr['strategy']}): {cells}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--json", action="store_true", help="print eval.json to stdout")
    parser.add_argument("--weights", default="best", help="best, last or an epoch number (default best)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    from core.training.checkpoint import CheckpointError

    if not Path(args.run_dir).is_dir():
        print(f"error: {args.run_dir}: no such run folder", file=sys.stderr)
        return 2
    try:
        result = evaluate_run(args.run_dir, which=args.weights, device=args.device, batch_size=args.batch_size)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - e.g. DataError: say it in one line, not a traceback
        print(f"error: evaluating {args.run_dir} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        _print_summary(args.run_dir, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
