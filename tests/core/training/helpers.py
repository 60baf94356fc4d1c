"""Shared helpers for the training tests: small real runs on the synthetic shapes dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
# Small enough for a 2-core machine shared with others: 512 images at 32 px, cnn2.
QUICK = ["--model", "cnn2", "--dataset", "shapes", "--image-size", "32", "--max-train-samples", "512",
         "--batch-size", "64", "--seed", "0", "--device", "cpu", "--num-threads", "1"]
METRIC_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s"}


def env() -> dict:
    """The child's environment: ours as it is (the project is installed, `core` imports anywhere)."""
    return dict(os.environ)


def run_cli(module: str, *args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=timeout, **kw)


def popen_train(*args: str, log: Path) -> subprocess.Popen:
    fh = open(log, "wb")
    return subprocess.Popen([sys.executable, "-m", "core.train", *args], cwd=REPO, env=env(),
                            stdout=fh, stderr=subprocess.STDOUT)


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"trainer exited ({proc.returncode}) before {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows
