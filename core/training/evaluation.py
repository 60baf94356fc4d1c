"""Evaluation: a model over a loader (``run_batches``), and a whole run on its test split (``evaluate_run``).

    from core.training.evaluation import evaluate_run
    result = evaluate_run("checkpoints/run1", device="auto")      # also writes eval.json

Always in fp32 (no autocast), whatever the training used, so a run's test accuracy does not
depend on the device's reduced-precision paths; eval.json records it as ``"dtype": "float32"``.
The trainer uses ``run_batches`` for its per-epoch validation and ``evaluate_run`` at the end;
``python -m core.evaluate`` is the command line on top (core/evaluate.py).

eval.json: test_loss, test_acc, macro {precision, recall, f1}, per_class [{class, precision,
recall, f1, support}], classes, confusion_matrix (rows true, columns predicted, counts),
channel_robustness {trained, strategy, tested: {combo: acc or null}, untested: {combo: reason}},
inference_images_per_s, n_test, weights, test_channels, device, dtype, evaluated.

The channel-robustness row is the test accuracy on each combination of the source (RGB..B, L for
greyscale, ALL for other channel counts) with the run's own strategy. A fixed-input model trained
with 'drop' only accepts combinations with as many channels as it was trained on: the others are
null, with the reason in ``untested``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.analysis.metrics import classification_report, confusion_matrix
from core.training.device import resolve_device, synchronize, to_channels_last, to_channels_last_batch

EVAL_DTYPE = torch.float32


@torch.no_grad()
def run_batches(model: nn.Module, loader, *, device: torch.device | str = "cpu", collect: bool = False,
                channels_last: bool = False, timed: bool = True) -> dict:
    """Forward every batch of ``loader`` ((x [B,C,H,W] float32, y [B] int64) pairs) in eval mode, in fp32.

    Loss and correct counts accumulate on the device and are read once at the end. Timing: the
    first batch is a warm-up (CUDA context, cuDNN algorithm search, lazy allocations) and is not
    timed; a loader of one batch gets a second, timed pass; the device is synchronised before each
    clock read. ``timed=False`` (the trainer's validation): no second pass, "seconds" is the wall time.
    Returns {"loss": mean CE, "accuracy", "n", "seconds" (timed part), "timed_images", and with
    collect=True "preds" and "labels" (int64 [N] on the CPU)}.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    n = 0
    preds, labels = [], []
    first_images, start = 0, time.perf_counter()
    for x, y in loader:
        if channels_last:
            x = to_channels_last_batch(x)
        logits = model(x.to(EVAL_DTYPE)).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        p = logits.argmax(1)
        correct += (p == y).sum()
        if n == 0 and timed:            # the warm-up batch ends here: time from now on
            synchronize(device)
            first_images, start = y.shape[0], time.perf_counter()
        n += y.shape[0]
        if collect:
            preds.append(p)
            labels.append(y)
    if timed:
        synchronize(device)
    seconds = time.perf_counter() - start
    timed_images = n - first_images
    if timed_images == 0 and timed:     # a single batch: nothing else to time, so time it again
        seconds, timed_images = _time_one_batch(model, loader, device, channels_last), n
    loss_total, correct_total = float(loss_sum), int(correct)   # read once, at the end
    model.train(was_training)
    out = {"loss": loss_total / max(n, 1), "accuracy": correct_total / max(n, 1), "n": n,
           "seconds": seconds, "timed_images": timed_images}
    if collect:
        out["preds"] = torch.cat(preds).cpu() if preds else torch.zeros(0, dtype=torch.int64)
        out["labels"] = torch.cat(labels).cpu() if labels else torch.zeros(0, dtype=torch.int64)
    return out


def _time_one_batch(model: nn.Module, loader, device: torch.device, channels_last: bool) -> float:
    """Seconds of a second, warm forward of the loader's (only) batch; 0.0 for an empty loader."""
    for x, _ in loader:
        if channels_last:
            x = to_channels_last_batch(x)
        synchronize(device)
        start = time.perf_counter()
        model(x.to(EVAL_DTYPE))
        synchronize(device)
        return time.perf_counter() - start
    return 0.0


def evaluate_run(run_dir: str | Path, *, which: str | int = "best", device: str = "auto",
                 batch_size: int = 256, write: bool = True) -> dict:
    """Evaluate a run's weights (``which``: best, last or an epoch) on its test split; write eval.json.

    device: auto, cpu, cuda or cuda:N. Returns the eval.json dict (module docstring).
    Raises CheckpointError (bad weights/config), DataError (dataset unavailable) or ConfigError
    (cuda asked for without a GPU), each with a clear message.
    """
    from core.data import BatchLoader, combos_for
    from core.models.registry import get_spec
    from core.training.checkpoint import load_run_model
    from core.training.run_folder import RunFolder
    from core.training.run_info import load_dataset_for, read_run_info

    run_dir = Path(run_dir)
    dev = resolve_device(device, problem="cannot evaluate")
    config, info = read_run_info(run_dir)
    model, _ = load_run_model(run_dir, which=which, device=dev)
    if config.channels_last:
        to_channels_last(model)
    data = load_dataset_for(config)
    classes = info.class_names if info.classes else list(data.info.classes)
    source_channels = info.source_channels or int(data.test.images.shape[1])
    if info.eval_channels or config.channels != "random" or info.source_channels:
        headline = info.headline_channels(config)
    else:   # an old run trained on random combinations that did not record its source: ask the data
        headline = "L" if source_channels == 1 else "RGB"

    def loader(combo: str) -> BatchLoader:
        return BatchLoader(data.test, batch_size, shuffle=False, channels=combo,
                           strategy=config.channel_strategy, normalize=info.normalize, device=dev,
                           seed=config.seed)

    main = run_batches(model, loader(headline), device=dev, collect=True, channels_last=config.channels_last)
    cm = confusion_matrix(main["labels"], main["preds"], len(classes))
    report = classification_report(cm, classes)

    tested: dict[str, float | None] = {}
    untested: dict[str, str] = {}
    fixed_drop = config.channel_strategy == "drop" and not get_spec(config.model).variable_input
    for combo in combos_for(source_channels):      # RGB..B, or L (grayscale), or ALL (e.g. 6-channel pairs)
        if combo == headline:
            tested[combo] = main["accuracy"]
        elif fixed_drop and len(combo) != info.in_channels:
            tested[combo] = None
            untested[combo] = (f"model {config.model} was built for {info.in_channels} input channel(s) "
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
        # warm-up batch excluded (run_batches), so a GPU's start-up is not counted as inference
        "inference_images_per_s": main["timed_images"] / max(main["seconds"], 1e-9),
        "n_test": main["n"],
        "weights": str(which),
        "test_channels": headline,
        "device": str(dev),
        "dtype": str(EVAL_DTYPE).removeprefix("torch."),
        "evaluated": time.time(),
    }
    if write:
        RunFolder(run_dir).write_eval(result)
    return result
