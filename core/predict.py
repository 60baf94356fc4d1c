"""Classify images with a trained run: ``python -m core.predict RUN_DIR IMAGE [IMAGE ...] [--top-k K] [--json]``.

Each image goes through the run's own pipeline: core.images.load_image (any mode -> RGB), the
source's colour mode (greyscale sources: L), resize to the run's image size (the same antialiased
bilinear resize the dataset used), the run's preprocessing (denoising), then the same BatchLoader
path as training and evaluation (normalisation with the run's statistics, channel combination
with its strategy). A run trained on random combinations is queried with all channels.
Unreadable images are reported by name and do not stop the others.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from core.images import ImageError, ImageSource, load_image


class Predictor:
    """A run's model and pipeline loaded once; ``predict(images, top_k)`` many times (thread-safe
    for concurrent calls: inference only, no state changes)."""

    def __init__(self, run_dir: str | os.PathLike, *, which: str | int = "best", device: str = "cpu") -> None:
        from core.training.checkpoint import load_run_model, read_run_info

        self.run_dir = Path(run_dir)
        _, self.run = read_run_info(self.run_dir)
        self.model, self.config = load_run_model(self.run_dir, which=which, device=device)
        self.device = torch.device(device)
        self.classes = list(self.run["classes"])
        self.image_size = int(self.run["image_size"])
        source_channels = int(self.run.get("source_channels", 3))
        if source_channels not in (1, 3):
            from core.training.checkpoint import CheckpointError

            raise CheckpointError(f"{self.run_dir}: this model reads {source_channels}-channel inputs "
                                  f"({self.config.dataset}, e.g. stacked image pairs), not single images: "
                                  f"evaluate it with python -m core.evaluate instead")
        self.greyscale = source_channels == 1
        self.channels = self.run.get("eval_channels") or (
            ("L" if self.greyscale else "RGB") if self.config.channels == "random" else self.config.channels)
        mean, std = self.run.get("normalize_mean"), self.run.get("normalize_std")
        self.normalize = (mean, std) if mean else None

    def to_tensor(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB PIL images -> uint8 [N, C, S, S] exactly as the dataset stores its images."""
        from core.data.preprocess import PreprocessConfig, denoise_images, resize_images

        out = []
        for img in images:
            if self.greyscale:
                img = img.convert("L")
            arr = np.asarray(img, dtype=np.uint8)
            t = torch.from_numpy(arr.copy())
            t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
            out.append(resize_images(t[None].contiguous(), self.image_size))
        batch = torch.cat(out)
        if self.config.preprocess:
            cfg = PreprocessConfig.from_dict(self.config.preprocess)
            if cfg.denoise:
                batch, _ = denoise_images(batch, cfg, dataset=self.config.dataset, split="predict", use_cache=False)
        return batch

    @torch.no_grad()
    def predict(self, sources: Sequence[ImageSource], top_k: int = 5, names: Sequence[str] | None = None) -> list[dict]:
        """One dict per source, in order: {"image", "ok", "error", "top": [{"class", "index", "prob"}]}."""
        from core.data import BatchLoader, TensorSplit

        top_k = max(1, min(int(top_k), len(self.classes)))
        results: list[dict] = []
        decoded: list[tuple[int, Image.Image]] = []
        for i, src in enumerate(sources):
            name = (names[i] if names else None) or (str(src) if isinstance(src, (str, os.PathLike)) else f"image {i + 1}")
            results.append({"image": name, "ok": False, "error": None, "top": []})
            try:
                decoded.append((i, load_image(src, name=name)))
            except ImageError as exc:
                results[i]["error"] = str(exc)
        if not decoded:
            return results
        images = self.to_tensor([img for _, img in decoded])
        split = TensorSplit(images, torch.zeros(len(images), dtype=torch.int64))
        loader = BatchLoader(split, 64, shuffle=False, channels=self.channels, strategy=self.config.channel_strategy,
                             normalize=self.normalize, device=str(self.device))
        probs = torch.cat([torch.softmax(self.model(x).float(), dim=1) for x, _ in loader]).cpu()
        values, indices = probs.topk(top_k, dim=1)
        for row, (i, _) in enumerate(decoded):
            results[i]["ok"] = True
            results[i]["top"] = [{"class": self.classes[int(k)], "index": int(k), "prob": float(p)}
                                 for p, k in zip(values[row], indices[row])]
        return results


def predict_images(run_dir: str | os.PathLike, images: Sequence[ImageSource], top_k: int = 5, *,
                   which: str | int = "best", device: str = "cpu") -> list[dict]:
    """Top-k classes and probabilities for each image (paths, bytes, file objects or PIL images).

    Returns [{"image": name, "ok": bool, "error": message or None, "top": [{"class", "index", "prob"}]}].
    Raises CheckpointError when the run itself cannot be loaded.
    """
    return Predictor(run_dir, which=which, device=device).predict(images, top_k)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.predict", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--weights", default="best", help="best, last or an epoch number")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args(argv)
    from core.training.checkpoint import CheckpointError

    if args.top_k < 1:
        print("error: --top-k must be >= 1", file=sys.stderr)
        return 2
    try:
        results = predict_images(args.run_dir, args.images, args.top_k, which=args.weights, device=args.device)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        for r in results:
            if r["ok"]:
                tops = ", ".join(f"{t['class']} {t['prob']:.3f}" for t in r["top"])
                print(f"{r['image']}: {tops}")
            else:
                print(f"{r['image']}: ERROR {r['error']}")
    # Some images unreadable: still report them all, then exit 1 so scripts notice.
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
