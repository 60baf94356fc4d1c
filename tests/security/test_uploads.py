"""Uploads as bytes (what the dashboard gets from st.file_uploader), zip slip in a zipped run, limits.

Already covered elsewhere (not repeated): each odd mode from a path (tests/core/test_images.py:
16-bit, RGBA, LA/palette transparency, CMYK, animated GIF, EXIF, truncated JPEG, empty and text
files, the bomb refused from its header), predict_images mixing good and bad files
(tests/core/test_predict.py), zip entries with '../', absolute paths, nesting, symlinks, size
limit (tests/dashboard/test_run_import.py). Here: the same files as uploaded bytes with their upload
name in the message, time and memory bounds, the configured upload limit, and more zip-slip forms.
"""

from __future__ import annotations

import io
import json
import os
import stat
import time
import tomllib
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save

from core.images import DEFAULT_MAX_PIXELS, ImageError, load_image
from dashboard.components.run_import import RunImportError, import_run_zip
from tests.core.test_images import make_bomb_png
from tests.security.conftest import ODD_EXPECTED, hostile_uploads, odd_but_valid_uploads

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(hostile_uploads()))
def test_hostile_upload_bytes_refused_naming_the_upload(name):
    data = hostile_uploads()[name]
    t = time.perf_counter()
    with pytest.raises(ImageError) as info:
        load_image(data, name=name)
    assert time.perf_counter() - t < 5
    assert str(info.value).startswith(f"{name}: ")
    reason = {"empty.png": "empty", "notes.png": "not an image", "cut.jpg": "truncated",
              "bomb.png": "decompression bomb"}[name]
    assert reason in str(info.value)


@pytest.mark.parametrize("name", sorted(odd_but_valid_uploads()))
def test_odd_upload_bytes_converted_to_rgb(name):
    img = load_image(odd_but_valid_uploads()[name], name=name)
    assert img.mode == "RGB"
    arr = np.asarray(img)
    centre = arr[arr.shape[0] // 2, arr.shape[1] // 2].astype(int)
    assert np.abs(centre - np.array(ODD_EXPECTED[name])).max() <= 40, (name, centre.tolist())


def test_bomb_memory_and_time_are_bounded():
    """900 M pixels (2.7 GB as RGB) in a file of a few hundred KB: refused using < 20 MB and a few seconds at most."""
    data = make_bomb_png(30000, 30000)
    assert len(data) < 1_000_000
    tracemalloc.start()
    try:
        t = time.perf_counter()
        with pytest.raises(ImageError, match="refused before decoding|decompression bomb"):
            load_image(data, name="bomb.png")
        seconds = time.perf_counter() - t
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seconds < 5, seconds                              # decoding would take far longer (and 2.7 GB)
    assert peak < 20 * 1024 ** 2, f"peak {peak / 1e6:.1f} MB"   # the input bytes twice at most, no pixels


def test_pixel_limit_is_below_pillows_own_and_the_upload_limit_is_configured():
    # Pillow only warns between 89 M and 179 M pixels: our own limit must be lower.
    assert DEFAULT_MAX_PIXELS < Image.MAX_IMAGE_PIXELS
    cfg = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    # MB; a realistic zipped run is about 26 MB, so the limit fits real runs (the zip importer caps the
    # uncompressed size itself); the server enforces it (tests/security/test_dashboard_hostile.py)
    assert cfg["server"]["maxUploadSize"] >= 200


# ---- zip slip ----------------------------------------------------------------------------------
def _weights() -> bytes:
    return save({"fc.weight": torch.zeros(2, 2)})


def _zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    buf.seek(0)
    return buf


def _good(prefix: str = "run/") -> list:
    return [(f"{prefix}config.json", json.dumps({"model": "cnn2", "dataset": "shapes"}).encode()),
            (f"{prefix}model.safetensors", _weights())]


def _link(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _tree(top: Path) -> set[str]:
    return {str(p.relative_to(top)) for p in top.rglob("*")}


@pytest.mark.parametrize("entries, match", [
    (_good() + [("run/..\\..\\evil.json", b"{}")], r"'\.\.'"),                 # Windows separators
    (_good() + [("C:/evil/config.json", b"{}")], "absolute path"),                # a drive letter
    (_good() + [("run/../../../tmp/evil.json", b"{}")], r"'\.\.'"),            # ../ after a folder
    (_good() + [("//server/share/x.json", b"{}")], "absolute path"),              # UNC-like
    (_good() + [(_link("run/eval.json", "/etc/passwd"), b"/etc/passwd")], "symbolic link"),
    (_good() + [(_link("run/status.json", "../../outside"), b"../../outside")], "symbolic link"),
    (_good() + [("run/./../x.json", b"{}")], r"'\.\.'"),
])
def test_zip_slip_variants_refused_and_nothing_written(tmp_path, entries, match):
    root = tmp_path / "runs"
    before = _tree(tmp_path)
    with pytest.raises(RunImportError, match=match):
        import_run_zip(_zip(entries), root)
    after = _tree(tmp_path)
    assert after - before <= {"runs"}, after - before                  # at most the empty root itself
    assert not root.exists() or not any(root.iterdir())


@pytest.mark.parametrize("run_id", [".", "..", ".hidden", "a/b", "../x", "/abs"])
def test_hostile_run_names_refused(tmp_path, run_id):
    """The Train page passes the uploaded file's name as the run name: '..zip' becomes '.'."""
    root = tmp_path / "runs"
    with pytest.raises(RunImportError, match="run name"):
        import_run_zip(_zip(_good()), root, run_id=run_id)
    assert _tree(tmp_path) <= {"runs"}


def test_existing_symlink_destination_is_not_followed(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "run")
    with pytest.raises(RunImportError, match="outside|already exists"):
        import_run_zip(_zip(_good()), root)
    assert not any(outside.iterdir())


def test_good_zip_lands_only_inside_root_after_refusals(tmp_path):
    root = tmp_path / "runs"
    with pytest.raises(RunImportError):
        import_run_zip(_zip(_good() + [("run/../evil.json", b"{}")]), root)
    res = import_run_zip(_zip(_good()), root)
    assert res.run_dir == root / "run"
    assert _tree(tmp_path) == {"runs", "runs/run", "runs/run/config.json", "runs/run/model.safetensors",
                               "runs/run/status.json"}
