"""Classify images with a trained run: ``python -m core.predict RUN_DIR IMAGE [IMAGE ...]``.

Each image goes through the run's own pipeline: core.images.load_image (any mode -> RGB), the
source's colour mode (greyscale sources: L), resize to the run's image size (the same antialiased
bilinear resize the dataset used), the run's preprocessing (denoising), then the one model-input
path of training and evaluation (core.data.loader.to_model_input: normalisation with the run's
statistics, channel combination with its strategy). A run trained on random combinations is
queried with all channels. Unreadable images are reported by name and do not stop the others.

Exit codes: 0 every image classified, 1 some image unreadable or the run cannot be loaded,
2 invalid flags (e.g. --device cuda on a machine without a GPU).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from core import cli
from core.analysis.explain import ExplainError, channels_as_seen, model_lock
from core.errors import EXIT_FAILED, EXIT_OK, InvalidInputError
from core.images import ImageError, ImageSource, load_image

PREDICT_BATCH = 64      # images per forward: bounds memory for a long list of files
EMBED_BATCH = 128


class Predictor:
    """A run's model and pipeline, loaded once; ``predict(images, top_k)`` many times.

    Thread-safe: the model may be shared between dashboard sessions, so every forward here holds
    ``self.lock``, which is ``core.analysis.explain.model_lock(self.model)``: the very lock the
    explain functions (CAMs, taps, deformable offsets) hold while their hooks are on this model.
    So a prediction never runs through another session's hooks, and callers take no lock themselves.

    Attributes: config (TrainConfig), info (RunInfo), model (eval mode, on ``device``), classes,
    image_size, greyscale, channels (the combination queried), normalize ((mean, std) or None).
    """

    def __init__(self, run_dir: str | os.PathLike, *, which: str | int = "best",
                 device: str | torch.device = "cpu") -> None:
        from core.training.checkpoint import CheckpointError, load_run_model
        from core.training.run_info import CONFIG_FILE, read_run_info

        self.run_dir = Path(run_dir)
        self.config, self.info = read_run_info(self.run_dir)
        source_channels = self.info.source_channels or 3      # runs older than the field: RGB sources
        if source_channels not in (1, 3):
            raise CheckpointError(f"{self.run_dir}: this model reads {source_channels}-channel inputs "
                                  f"({self.config.dataset}, e.g. stacked image pairs), not single images: "
                                  f"evaluate it with python -m core.evaluate instead")
        if self.info.image_size is None:
            raise CheckpointError(f"{self.run_dir / CONFIG_FILE}: run.image_size is not recorded, so images "
                                  f"cannot be resized as in training; retrain the run")
        from core.training.device import resolve_device

        # "auto": cuda when a GPU is visible; a cuda that is not there is one clear InvalidInputError
        self.device = resolve_device(str(device), problem=f"cannot load {self.run_dir} on {device}")
        self.model, _ = load_run_model(self.run_dir, which=which, device=self.device)
        self.lock = model_lock(self.model)
        self.classes = self.info.class_names
        self.image_size = int(self.info.image_size)
        self.greyscale = source_channels == 1
        self.channels = self.info.headline_channels(self.config)
        self.normalize = self.info.normalize

    # ---- images -> model input ----------------------------------------------------------------
    def to_tensor(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB PIL images -> uint8 [N, C, S, S] exactly as the dataset stores its images (C = 1 or 3)."""
        from core.data.preprocess import PreprocessConfig, denoise_images, resize_images

        out = []
        for img in images:
            if self.greyscale:
                img = img.convert("L")
            t = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
            t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
            out.append(resize_images(t[None].contiguous(), self.image_size))
        batch = torch.cat(out)
        if self.config.preprocess:
            cfg = PreprocessConfig.from_dict(self.config.preprocess)
            if cfg.denoise:
                batch, _ = denoise_images(batch, cfg, dataset=self.config.dataset, split="predict", use_cache=False)
        return batch

    def model_input(self, images: Sequence[Image.Image] | torch.Tensor, *, channels: str | None = None,
                    strategy: str | None = None) -> torch.Tensor:
        """PIL images, or uint8 [N, C, S, S] from ``to_tensor``, -> float [N, C', S, S] on the model's device.

        channels / strategy: the run's (``self.channels``, its channel strategy) unless given, e.g.
        every combination with 'drop' for a variable-input model.
        """
        from core.data.loader import to_model_input

        u8 = images if isinstance(images, torch.Tensor) else self.to_tensor(images)
        return to_model_input(u8, channels=channels or self.channels,
                              strategy=strategy or self.config.channel_strategy,
                              normalize=self.normalize, device=self.device)

    def as_seen(self, image: Image.Image | torch.Tensor) -> np.ndarray:
        """[S, S, 3] uint8: the image resized, preprocessed and channel-selected as the model sees it.

        image: a PIL image, or its uint8 [1, C, S, S] from ``to_tensor`` (not converted twice).
        """
        u8 = image if isinstance(image, torch.Tensor) else self.to_tensor([image])
        return channels_as_seen(u8[0].float() / 255.0, self.channels)

    @property
    def variable_input(self) -> bool:
        """Whether the run's architecture accepts any channel count (dynamic conv, channel attention)."""
        from core.models.registry import get_spec

        try:
            return bool(get_spec(self.config.model).variable_input)
        except Exception:  # noqa: BLE001 - a model file no longer registered: treat as fixed-input
            return False

    # ---- forwards (under the model's lock) -------------------------------------------------------
    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, C, S, S] (from ``to_tensor``) -> softmax probabilities float [N, num_classes] on CPU."""
        out = []
        with self.lock:
            for start in range(0, len(images), PREDICT_BATCH):
                x = self.model_input(images[start:start + PREDICT_BATCH])
                out.append(torch.softmax(self.model(x).float(), dim=1).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def embed_test_images(self, n: int) -> tuple[torch.Tensor, list[int]]:
        """Embeddings of the first ``n`` test images of the run's dataset, loaded exactly as the run
        was trained (its data root, preprocessing, image size): (float [n', D] on CPU, labels [n']).

        Raises ExplainError when the model has no ``embed()``, DataError when the dataset is missing.
        """
        from core.training.run_info import load_dataset_for

        if not hasattr(self.model, "embed"):
            raise ExplainError(f"model {self.config.model!r} has no embed() method")
        test = load_dataset_for(self.config).test
        images, labels = test.images[:n], test.labels[:n]
        outs = []
        with self.lock:
            for start in range(0, len(images), EMBED_BATCH):
                x = self.model_input(images[start:start + EMBED_BATCH])
                outs.append(self.model.embed(x).float().cpu())
        return torch.cat(outs), labels.tolist()

    def predict(self, sources: Sequence[ImageSource], top_k: int = cli.TOP_K_DEFAULT,
                names: Sequence[str] | None = None) -> list[dict]:
        """One dict per source, in order: {"image", "ok", "error", "top": [{"class", "index", "prob"}]}.

        top_k is capped at the number of classes. An unreadable source gets ok False and its error.
        """
        results, decoded = _decode(sources, names)
        if not decoded:
            return results
        probs = self.probabilities(self.to_tensor([img for _, img in decoded]))
        values, indices = probs.topk(max(1, min(int(top_k), len(self.classes))), dim=1)
        for row, (i, _) in enumerate(decoded):
            results[i]["ok"] = True
            results[i]["top"] = [{"class": self.classes[int(k)], "index": int(k), "prob": float(p)}
                                 for p, k in zip(values[row], indices[row])]
        return results


def _decode(sources: Sequence[ImageSource], names: Sequence[str] | None) -> tuple[list[dict], list[tuple[int, Image.Image]]]:
    """(a result row per source, [(row index, RGB image)] of the sources that decoded)."""
    results: list[dict] = []
    decoded: list[tuple[int, Image.Image]] = []
    for i, src in enumerate(sources):
        name = (names[i] if names else None) or (str(src) if isinstance(src, (str, os.PathLike)) else f"image {i + 1}")
        results.append({"image": name, "ok": False, "error": None, "top": []})
        try:
            decoded.append((i, load_image(src, name=name)))
        except ImageError as exc:
            results[i]["error"] = str(exc)
    return results, decoded


def predict_images(run_dir: str | os.PathLike, images: Sequence[ImageSource], top_k: int = cli.TOP_K_DEFAULT, *,
                   which: str | int = "best", device: str | torch.device = "cpu") -> list[dict]:
    """Top-k classes and probabilities for each image (paths, bytes, file objects or PIL images).

    Returns [{"image": name, "ok": bool, "error": message or None, "top": [{"class", "index", "prob"}]}].
    Raises CheckpointError when the run itself cannot be loaded.
    """
    return Predictor(run_dir, which=which, device=device).predict(images, top_k)


# ---- command line ------------------------------------------------------------------------------
def _parser():
    p = cli.parser("python -m core.predict", __doc__)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (holds config.json and model.safetensors)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    cli.add_top_k(p)
    cli.add_json(p)
    p.add_argument("--weights", default="best", help="best, last or an epoch number")
    cli.add_device(p)
    return p


def _print_results(results: list[dict], as_json: bool) -> None:
    if as_json:
        json.dump(results, sys.stdout, indent=2)
        print()
        return
    for r in results:
        if r["ok"]:
            tops = ", ".join(f"{t['class']} {t['prob']:.3f}" for t in r["top"])
            print(f"{r['image']}: {tops}")
        else:
            print(f"{r['image']}: ERROR {r['error']}")


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    cli.check_device(args.device)
    if args.top_k < 1:
        raise InvalidInputError(f"--top-k must be >= 1, got {args.top_k}")
    results = predict_images(args.run_dir, args.images, args.top_k, which=args.weights, device=args.device)
    _print_results(results, args.json)
    # Some images unreadable: still report them all, then exit 1 so scripts notice.
    return EXIT_OK if all(r["ok"] for r in results) else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
