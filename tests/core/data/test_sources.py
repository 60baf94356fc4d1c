import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import DataError, describe, list_sources, load_dataset
from core.data.__main__ import main as cli_main

REPO = Path(__file__).resolve().parents[3]
FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_img(path: Path, colour=(200, 30, 30), mode="RGB", size=(10, 7)):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        Image.new("L", size, colour[0]).save(path)
    else:
        Image.new(mode, size, colour).save(path)
    return path


# --------------------------------------------------------------------------- registry / CLI

def test_list_sources_has_the_required_ones():
    assert {"shapes", "fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder", "listfile"} <= set(list_sources())


def test_unknown_source_names_the_value():
    with pytest.raises(DataError, match="'nope'.*shapes"):
        load_dataset("nope")
    with pytest.raises(DataError, match="needs a folder"):
        describe("listfile")


def test_cli_lists_and_describes(capsys):
    assert cli_main([]) == 0
    assert "imagefolder:PATH" in capsys.readouterr().out
    assert cli_main(["describe", "shapes", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d) == {"name", "num_classes", "classes", "splits", "channels", "image_size"}   # as before DatasetInfo
    assert d["splits"] == {"train": 10000, "val": 1000, "test": 1000}


def test_cli_bad_input_one_line_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "core.data", "describe", f"listfile:{tmp_path / 'missing'}"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "folder not found" in r.stderr and "missing" in r.stderr


# --------------------------------------------------------------------------- listfile

def make_listfile(root: Path) -> Path:
    for i in range(6):
        write_img(root / "images" / "n001" / f"a{i}.jpg", (220, 20, 20))
        write_img(root / "images" / "n002" / f"b{i}.png", (20, 20, 220))
    write_img(root / "images" / "n002" / "gray.png", (90,), mode="L")          # grayscale in an RGB set
    write_img(root / "images" / "n001" / "with space.png", (0, 250, 0, 0), mode="RGBA")
    lines = {
        "train.txt": [f"images/n001/a{i}.jpg 0" for i in range(4)] + [f"images/n002/b{i}.png 1" for i in range(4)]
        + ["images/n002/gray.png 1", "", "# comment", "images/n001/with space.png 0"],
        "val.txt": ["images/n001/a4.jpg 0", "images/n002/b4.png 1"],
        "test.txt": ["images/n001/a5.jpg 0", "images/n002/b5.png 1"],
    }
    for name, rows in lines.items():
        (root / name).write_text("\n".join(rows) + "\n")
    return root


def test_listfile_loads_with_grayscale_and_rgba_images(tmp_path):
    root = make_listfile(tmp_path / "mini")
    ds = load_dataset(f"listfile:{root}", image_size=16)
    assert ds.describe().splits == {"train": 10, "val": 2, "test": 2}
    assert ds.info.channels == 3 and ds.info.classes == ["n001", "n002"]
    assert ds.train.images.shape == (10, 3, 16, 16) and ds.train.images.dtype == torch.uint8
    gray = ds.train.images[8]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2]) and int(gray[0, 0, 0]) == 90
    transparent = ds.train.images[9]                        # fully transparent -> composited on white
    assert int(transparent.min()) == 255
    red = ds.train.images[0].float().mean((1, 2))
    assert red[0] > 150 and red[2] < 80
    assert describe(f"listfile:{root}").splits == {"train": 10, "val": 2, "test": 2}


def test_listfile_all_grayscale_gives_one_channel(tmp_path):
    root = tmp_path / "g"
    for i in range(3):
        write_img(root / f"x{i}.png", (40 * i,), mode="L")
    (root / "train.txt").write_text("x0.png 0\nx1.png 1\n")
    (root / "val.txt").write_text("x2.png 1\n")
    (root / "test.txt").write_text("x2.png 0\n")
    assert describe(f"listfile:{root}").channels == 1
    ds = load_dataset(f"listfile:{root}", image_size=8)
    assert ds.info.channels == 1 and ds.train.images.shape == (2, 1, 8, 8)


@pytest.mark.parametrize("line,match", [
    ("images/n001/a0.jpg", r"train\.txt line 2: expected 'relative/path\.jpg label'"),
    ("images/n001/a0.jpg zero", r"train\.txt line 2: label 'zero' is not an integer"),
    ("images/n001/a0.jpg -1", r"train\.txt line 2: label -1 is negative"),
    ("images/n001/nothere.jpg 0", r"train\.txt line 2: image file not found: .*nothere\.jpg"),
])
def test_listfile_bad_lines_name_file_and_line(tmp_path, line, match):
    root = make_listfile(tmp_path / "mini")
    (root / "train.txt").write_text("images/n001/a1.jpg 0\n" + line + "\n")
    with pytest.raises(DataError, match=match):
        load_dataset(f"listfile:{root}", image_size=8)


@pytest.mark.parametrize("content", [b"this is not an image", None])
def test_listfile_unreadable_image_names_file_and_line(tmp_path, content):
    root = make_listfile(tmp_path / "mini")
    bad = root / "images" / "bad.jpg"
    if content is None:       # a truncated JPEG: opens fine, fails when decoded
        Image.new("RGB", (64, 64), (1, 2, 3)).save(bad, quality=95)
        bad.write_bytes(bad.read_bytes()[:200])
    else:
        bad.write_bytes(content)
    (root / "val.txt").write_text("images/n001/a4.jpg 0\nimages/bad.jpg 1\n")
    with pytest.raises(DataError, match=r"val\.txt line 2: cannot decode image .*bad\.jpg"):
        load_dataset(f"listfile:{root}", image_size=8)


def test_listfile_missing_folder_and_missing_train_txt(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        load_dataset(f"listfile:{tmp_path / 'absent'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"missing file .*train\.txt"):
        load_dataset(f"listfile:{tmp_path / 'empty'}")


def test_decode_cache_reused(tmp_path):
    root = make_listfile(tmp_path / "mini")
    a = load_dataset(f"listfile:{root}", image_size=8)
    from core.data import sources
    calls = {"n": 0}
    real = sources.decode_files

    def counting(items, size):
        calls["n"] += 1
        return real(items, size)

    sources.decode_files = counting
    try:
        b = load_dataset(f"listfile:{root}", image_size=8)
        assert calls["n"] == 0 and torch.equal(a.train.images, b.train.images)
        write_img(root / "images" / "n001" / "a0.jpg", (0, 0, 0), size=(11, 7))   # a file changed
        load_dataset(f"listfile:{root}", image_size=8)
        assert calls["n"] == 1                                                    # only the train split
    finally:
        sources.decode_files = real


# --------------------------------------------------------------------------- imagefolder

def test_imagefolder_with_split_subfolders(tmp_path):
    root = tmp_path / "pets"
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        for cls, colour in (("cat", (250, 0, 0)), ("dog", (0, 0, 250))):
            for i in range(n):
                write_img(root / split / cls / f"{i}.png", colour)
    ds = load_dataset(f"imagefolder:{root}", image_size=12)
    assert ds.info.classes == ["cat", "dog"] and ds.info.channels == 3
    assert ds.describe().splits == {"train": 6, "val": 2, "test": 4}
    assert ds.train.images.shape == (6, 3, 12, 12)
    assert ds.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.train.images[3, 2].float().mean() > 200         # dog images are blue


def test_imagefolder_single_folder_seeded_split(tmp_path):
    root = tmp_path / "flat"
    for cls in ("a", "b"):
        for i in range(10):
            write_img(root / cls / f"{i}.jpg", (i * 20, 50, 50))
    d0 = describe(f"imagefolder:{root}", data_seed=0)
    assert d0.splits == {"train": 16, "val": 2, "test": 2}
    a = load_dataset(f"imagefolder:{root}", image_size=8, data_seed=0)
    b = load_dataset(f"imagefolder:{root}", image_size=8, data_seed=0, seed=9)   # training seed: same splits
    c = load_dataset(f"imagefolder:{root}", image_size=8, data_seed=1)
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.test.images, c.test.images) or not torch.equal(a.val.images, c.val.images)


def test_imagefolder_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        load_dataset(f"imagefolder:{tmp_path / 'nothing'}")
    (tmp_path / "noclasses").mkdir()
    with pytest.raises(DataError, match="noclasses"):
        load_dataset(f"imagefolder:{tmp_path / 'noclasses'}")
    root = tmp_path / "broken"
    write_img(root / "a" / "ok.png")
    write_img(root / "b" / "ok.png")
    (root / "b" / "junk.png").write_bytes(b"\x89PNG not really")
    for i in range(3):
        write_img(root / "a" / f"more{i}.png")
    with pytest.raises(DataError, match=r"cannot decode image .*junk\.png"):
        load_dataset(f"imagefolder:{root}", image_size=8)


# --------------------------------------------------------------------------- torchvision sources

def write_idx(path: Path, arr: np.ndarray):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_mnist_from_a_local_root_of_idx_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(raw / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 28, 28)))
    write_idx(raw / "train-labels-idx1-ubyte.gz", np.arange(20) % 10)
    write_idx(raw / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (5, 28, 28)))
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.arange(5))
    ds = load_dataset("mnist", root=tmp_path)
    assert ds.info.channels == 1 and ds.info.num_classes == 10
    assert ds.describe().splits == {"train": 18, "val": 2, "test": 5}
    assert ds.train.images.shape == (18, 1, 28, 28)
    small = load_dataset("mnist", root=tmp_path, image_size=14)
    assert small.test.images.shape == (5, 1, 14, 14) and small.info.image_size == 14
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x09abc"))
    with pytest.raises(DataError, match="t10k-labels.*IDX header"):
        load_dataset("mnist", root=tmp_path)


def test_offline_without_files_says_how_to_get_them(tmp_path):
    with pytest.raises(DataError, match=r"mnist: dataset files not found.*downloads are off.*root=FOLDER"):
        load_dataset("mnist", root=tmp_path, download=False)
    with pytest.raises(DataError, match=r"fashion-mnist.*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", root=tmp_path, download=False)
    with pytest.raises(DataError, match=r"cifar10: dataset files not found.*downloads are off"):
        load_dataset("cifar10", root=tmp_path, download=False)


def test_cifar_tensors_and_carved_val(tmp_path, monkeypatch):
    import torchvision

    class FakeCIFAR:           # stands in for torchvision's class: no 170 MB download in a unit test
        classes = [f"c{i}" for i in range(10)]

        def __init__(self, root, train, download):
            n = 30 if train else 10
            self.data = np.full((n, 32, 32, 3), 7, dtype=np.uint8)
            self.data[:, :, :, 2] = 200
            self.targets = [i % 10 for i in range(n)]

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR)
    ds = load_dataset("cifar10", root=tmp_path)
    assert ds.describe().splits == {"train": 27, "val": 3, "test": 10}
    assert ds.train.images.shape == (27, 3, 32, 32) and int(ds.train.images[0, 2, 0, 0]) == 200
    assert describe("cifar100").num_classes == 100


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian package dataset-fashion-mnist not installed "
                    "(/usr/share/datasets/fashion-mnist absent); `apt-get install dataset-fashion-mnist`")
def test_fashion_mnist_from_the_debian_package():
    ds = load_dataset("fashion-mnist", max_train_samples=500)
    assert ds.meta["folder"] == str(FASHION)
    assert ds.info.channels == 1 and ds.info.classes[0] == "T-shirt/top"
    assert len(ds.train) == 500 and len(ds.val) == 6000 and len(ds.test) == 10000
    assert ds.test.images.shape[1:] == (1, 28, 28)
    assert torch.bincount(ds.test.labels).tolist() == [1000] * 10
    d = describe("fashion-mnist")
    assert d.splits == {"train": 54000, "val": 6000, "test": 10000} and d.channels == 1


def test_unknown_source_option_is_named():
    with pytest.raises(DataError, match=r"'mnist'.*\['n_train'\].*download"):
        load_dataset("mnist", n_train=5)
    with pytest.raises(DataError, match=r"colour"):
        describe("shapes", colour=True)


def test_describe_returns_a_dataset_info_with_an_int_image_size():
    from core.data import DatasetInfo

    d = describe("shapes", image_size=48)
    assert isinstance(d, DatasetInfo)
    assert d.image_size == 48 and isinstance(d.image_size, int)
    assert d.to_dict() == {"name": "shapes", "num_classes": d.num_classes, "classes": d.classes,
                           "splits": {"train": 10000, "val": 1000, "test": 1000}, "channels": 3,
                           "image_size": 48}
    assert "notes" in DatasetInfo("x", 1, ["a"], 3, 8, notes="carved").to_dict()
