"""A published Fashion-MNIST number reproduced through a student's model file (ARCHSCOPE_MODELS).

    python benchmarks/bench_published.py [--epochs 10] [--out RUN_DIR] [--threads N] [--json-out F]
    python benchmarks/bench_published.py --resume RUN_DIR [--epochs N]    # continue a stopped run

Trains examples/models/fashion_tf_tutorial.py (the TensorFlow tutorial CNN) exactly as a student
would: ``ARCHSCOPE_MODELS=examples/models/fashion_tf_tutorial.py python -m core.train --model
fashion_tf_tutorial --dataset fashion-mnist --epochs N``, every other setting the trainer's default
(optimiser, learning rate, batch size, schedule, normalisation, no augmentation). Then prints our
test accuracy next to the published one:

- published: 0.916, Zalando's benchmark table (README of fashion-mnist; Debian ships it as
  /usr/share/doc/dataset-fashion-mnist/README.md.gz), row "2 Conv+pooling | None | 0.916 |
  Tensorflow's doc", code /usr/share/doc/dataset-fashion-mnist/benchmark/convnet.py.gz.
  That script trains with plain SGD at lr 0.001, batch 400, on all 60,000 training images, and
  evaluates the test set every 2,000 steps for up to 200,000 steps: its figure is the test accuracy
  after a long run (13 epochs per evaluation), not a fixed short budget.
- ours: the trainer's own test evaluation (eval.json test_acc: the weights of the best validation
  epoch, scored on the 10,000 test images) and the last epoch's weights' figure when the trainer
  records it. The trainer holds out 6,000 of the 60,000 training images for validation, so it
  trains on 54,000.

Wall time is the whole ``python -m core.train`` process (data loading, training, validation, test
evaluation); the sum of the epochs' own times (metrics.jsonl ``seconds``: training + validation) is
printed too, and is the figure to compare when the run was stopped and continued with ``--resume``
(``python -m core.train --resume``: it continues after the last completed epoch; ``--epochs`` may
change there, and since the default schedule is a constant learning rate, N epochs continued are
the same training as N epochs in one go). The run folder is kept (default: a fresh folder under the system temp directory) so it
can be opened in the dashboard with the same ARCHSCOPE_MODELS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_FILE = ROOT / "examples" / "models" / "fashion_tf_tutorial.py"
MODEL = "fashion_tf_tutorial"
DATASET = "fashion-mnist"
PUBLISHED = 0.916
PUBLISHED_ROW = "Zalando Fashion-MNIST benchmark, '2 Conv+pooling, no preprocessing' (TensorFlow's doc)"


def train_command(epochs: int, out: Path, threads: int | None, resume: bool = False) -> list[str]:
    """The ``python -m core.train`` command line: model, dataset, epochs, folder; nothing else tuned."""
    if resume:
        cmd = [sys.executable, "-m", "core.train", "--resume", str(out), "--epochs", str(epochs), "--quiet"]
    else:
        cmd = [sys.executable, "-m", "core.train", "--model", MODEL, "--dataset", DATASET,
               "--epochs", str(epochs), "--out", str(out), "--quiet", "--no-tensorboard"]
    if threads:
        cmd += ["--num-threads", str(threads)]
    return cmd


def read_result(out: Path) -> dict:
    """Test accuracy, per-epoch validation accuracy and the settings the trainer actually used."""
    evaluation = json.loads((out / "eval.json").read_text())
    config = json.loads((out / "config.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        "test_acc": evaluation["test_acc"],
        "weights": evaluation.get("weights"),                 # "best": the best validation epoch's weights
        "n_test": evaluation.get("n_test"),
        "epochs_done": len(rows),
        "epoch_seconds_sum": round(sum(r["seconds"] for r in rows), 1),   # training + validation, every start
        "val_acc_per_epoch": [round(r["val_acc"], 4) for r in rows],
        "train_acc_per_epoch": [round(r["train_acc"], 4) for r in rows],
        "settings": {k: config.get(k) for k in ("optimizer", "lr", "batch_size", "scheduler", "weight_decay",
                                                 "normalize", "augment", "epochs")},
        "n_train": config.get("run", {}).get("n_train"),
        "model_source": config.get("model_source") or config.get("run", {}).get("model_source"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default: 10, the trainer's default)")
    parser.add_argument("--out", type=Path, help="run folder (default: a new folder in the temp directory)")
    parser.add_argument("--threads", type=int, help="CPU threads for the trainer (default: the trainer's choice)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue this stopped run (to --epochs in all) instead of starting one")
    parser.add_argument("--json-out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    if args.resume and args.out:
        parser.error("--resume RUN_DIR continues that folder; do not also give --out")
    out = args.resume or args.out or Path(tempfile.mkdtemp(prefix="bench-published-")) / "run"
    # The student's path: the model comes from its file through ARCHSCOPE_MODELS, not from core/models/.
    env = {**os.environ, "ARCHSCOPE_MODELS": str(MODEL_FILE)}
    cmd = train_command(args.epochs, out, args.threads, resume=args.resume is not None)
    print("ARCHSCOPE_MODELS=" + str(MODEL_FILE), " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(f"error: python -m core.train exited {proc.returncode} after {wall:.0f} s (see {out}/status.json)",
              file=sys.stderr)
        return 1
    result = {"model": MODEL, "model_file": str(MODEL_FILE), "dataset": DATASET, "epochs": args.epochs,
              "wall_seconds": round(wall, 1), "resumed": args.resume is not None, "published_test_acc": PUBLISHED, "published_row": PUBLISHED_ROW,
              "run_folder": str(out), **read_result(out)}
    print()
    plural = "s" if result["epochs_done"] != 1 else ""
    ours = f"ours: {result['epochs_done']} epoch{plural}, trainer defaults, {result['weights']} weights"
    print(f"{'':<52}{'test accuracy':>14}")
    print(f"{'published: ' + PUBLISHED_ROW.split(',')[0] + ', 2 Conv+pooling':<52}{PUBLISHED:>14.3f}")
    print(f"{ours:<52}{result['test_acc']:>14.4f}")
    print(f"difference ours - published: {result['test_acc'] - PUBLISHED:+.4f} "
          f"on {result['n_test']} test images; wall time {wall / 60:.1f} min ({wall:.0f} s) for this command"
          f"{' (a resumed run)' if args.resume else ''}; the {result['epochs_done']} epoch{plural}' own times sum to "
          f"{result['epoch_seconds_sum'] / 60:.1f} min")
    print(f"settings (trainer defaults): {result['settings']}; trained on {result['n_train']} images")
    print(f"val_acc per epoch: {result['val_acc_per_epoch']}")
    print(f"train_acc per epoch: {result['train_acc_per_epoch']}")
    print(json.dumps(result))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
