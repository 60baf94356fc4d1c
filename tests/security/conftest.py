"""Hostile and broken inputs shared by the security tests: run folders made by hand (fast, no training).

``hostile_root`` holds one good run and one run per way a checkpoint can be bad. Weights are untrained
(the pipeline is what is tested, not the accuracy); the good run comes from the same helper that
tests/core/test_predict.py uses, so a change to the run-folder layout breaks both together.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.training.checkpoint import save_weights
from core.training.run_folder import RunFolder
from tests.core.test_images import make_bomb_png
from tests.core.test_predict import make_run


class SideEffect:
    """Unpickling this creates ``marker`` (stands for any code a stranger's pickle would run)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


# run id -> the file whose name the refusal must carry
BAD_RUNS = {
    "evil_pickle": "model.safetensors",
    "evil_torch_save": "model.safetensors",
    "truncated": "model.safetensors",
    "other_arch": "model.safetensors",
    "other_classes": "model.safetensors",
    "unknown_model": "config.json",
}


def _done(path: Path) -> Path:
    RunFolder(path).write_status("done", pid=None, message="made by a test", epoch=1, epochs=1)
    return path


def make_hostile_root(root: Path, marker: Path) -> Path:
    """root/good plus one run per BAD_RUNS entry. ``marker`` must never come to exist."""
    from core.models.registry import create_model

    _done(make_run(root / "good"))
    p = _done(make_run(root / "evil_pickle"))
    (p / "model.safetensors").write_bytes(pickle.dumps({"fc.weight": SideEffect(str(marker))}))
    p = _done(make_run(root / "evil_torch_save"))
    torch.save({"fc.weight": SideEffect(str(marker))}, p / "model.safetensors")
    p = _done(make_run(root / "truncated"))
    data = (p / "model.safetensors").read_bytes()
    (p / "model.safetensors").write_bytes(data[: len(data) * 2 // 3])
    p = _done(make_run(root / "other_arch"))
    save_weights(p / "model.safetensors", create_model("cnn3", num_classes=5, in_channels=3))
    p = _done(make_run(root / "other_classes"))
    save_weights(p / "model.safetensors", create_model("cnn2", num_classes=7, in_channels=3))
    p = _done(make_run(root / "unknown_model"))
    cfg = json.loads((p / "config.json").read_text())
    cfg["model"] = "no_such_net"
    (p / "config.json").write_text(json.dumps(cfg))
    return root


@pytest.fixture
def hostile_root(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    return make_hostile_root(tmp_path / "runs", marker), marker


# ---- uploads ----------------------------------------------------------------------------------
def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def hostile_uploads() -> dict[str, bytes]:
    """Files that must be refused with a message naming them."""
    rng = np.random.default_rng(0)
    jpeg = _save(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    return {
        "empty.png": b"",
        "notes.png": b"I am a text file with an image name\n",
        "cut.jpg": jpeg[: len(jpeg) // 2],
        "bomb.png": make_bomb_png(30000, 30000),
    }


def odd_but_valid_uploads() -> dict[str, bytes]:
    """Files that must be converted correctly to RGB."""
    deep = np.full((24, 24), 40000, dtype=np.uint16)
    pal = Image.new("P", (20, 20), 1)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return {
        "deep16.png": _save(Image.fromarray(deep), "PNG"),
        "cmyk.jpg": _save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95),
        "rgba.png": _save(Image.new("RGBA", (16, 16), (0, 0, 0, 0)), "PNG"),
        "palette.png": _save(pal, "PNG"),
        "anim.gif": gif.getvalue(),
    }


# expected centre pixel of each odd upload after conversion (tolerance 40 for JPEG)
ODD_EXPECTED = {
    "deep16.png": (156, 156, 156),     # 40000 / 257, not clipped to 255
    "cmyk.jpg": (255, 0, 0),
    "rgba.png": (255, 255, 255),       # transparent -> white, not the stored black
    "palette.png": (0, 0, 255),
    "anim.gif": (255, 0, 0),           # first frame
}
