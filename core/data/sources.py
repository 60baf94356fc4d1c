"""Every data source except `shapes` (core/data/shapes.py): torchvision datasets (MNIST,
Fashion-MNIST, CIFAR-10/100) and user folders (imagefolder:PATH, listfile:PATH).

Each source is a ``describe_*`` function (cheap: no decoding) and a ``load_*`` function returning
a LoadedDataset of uint8 tensors. Splits that a source does not ship are carved from its training
split with a seeded ratio (``val_fraction``, default 0.1): e.g. Fashion-MNIST's 60000 training
images become train 54000 / val 6000, test stays the official 10000.
"""

from __future__ import annotations

import gzip
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from core.data.base import (DataError, DatasetInfo, LoadedDataset, TensorSplit, cache_dir, carve_split,
                            stable_key)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_FOLDER_SIZE = 64        # folder images vary in size; they are resized to this square by default


def downloads_allowed(download: bool | None) -> bool:
    """``download`` if given, else True unless $ARCHSCOPE_OFFLINE is set (skips slow failing attempts)."""
    if download is not None:
        return bool(download)
    return os.environ.get("ARCHSCOPE_OFFLINE", "") in ("", "0")


def _carve_val(name: str, train: TensorSplit, val_fraction: float, seed: int) -> tuple[TensorSplit, TensorSplit]:
    if not (0 < val_fraction < 1):
        raise DataError(f"{name}: val_fraction must be between 0 and 1, got {val_fraction}")
    keep, carved = carve_split(len(train), val_fraction, seed)
    return train.subset(keep), train.subset(carved)


# =========================================================================== MNIST / Fashion-MNIST

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_MNIST_LIKE = {
    "mnist": {"tv": "MNIST", "classes": [str(i) for i in range(10)], "sizes": (60000, 10000),
              "system": [], "apt": None},
    "fashion-mnist": {"tv": "FashionMNIST",
                      "classes": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                  "Sneaker", "Bag", "Ankle boot"],
                      "sizes": (60000, 10000), "system": [DEBIAN_FASHION_MNIST],
                      "apt": "dataset-fashion-mnist"},
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (plain or .gz): uint8 images [N, H, W] or labels [N]."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read IDX file: {e}") from None
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise DataError(f"{path}: IDX header says {dims} ({expected} bytes) but the file holds {len(data) - offset}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _find_idx_folder(candidates: list[Path]) -> Path | None:
    for folder in candidates:
        if all((folder / f).exists() or (folder / (f + ".gz")).exists() for f in _IDX_FILES.values()):
            return folder
    return None


def _idx_candidates(name: str, root: str | os.PathLike | None) -> list[Path]:
    spec = _MNIST_LIKE[name]
    out: list[Path] = []
    if root is not None:
        r = Path(root)
        out += [r, r / spec["tv"] / "raw", r / name]
    else:
        out += list(spec["system"])
        out.append(cache_dir("torchvision") / spec["tv"] / "raw")
    return out


def _how_to_get(name: str, root, searched: list[Path], error: str) -> str:
    spec = _MNIST_LIKE.get(name)
    hints = []
    if spec and spec["apt"]:
        hints.append(f"install Debian's package (`sudo apt-get install {spec['apt']}`, files land in "
                     f"{DEBIAN_FASHION_MNIST})")
    if spec:
        hints.append("pass root=FOLDER holding the four train-/t10k- idx files (.gz or not)")
    else:   # CIFAR: torchvision's layout; its md5 check runs before any file is unpickled
        hints.append(f"pass root=FOLDER containing torchvision's {'cifar-10-batches-py' if name == 'cifar10' else 'cifar-100-python'}/ folder")
    hints.append("or run once with network access so torchvision can download them "
                 "(unset ARCHSCOPE_OFFLINE / download=True)")
    where = ", ".join(str(p) for p in searched) if searched else str(root)
    error = " ".join(error.split())[:300]      # torchvision's download errors span several lines
    return f"{name}: dataset files not found (looked in {where}); {error}. To get them: " + "; ".join(hints) + "."


def describe_mnist_like(name: str, *, image_size: int | None = None, val_fraction: float = DEFAULT_VAL_FRACTION,
                        **_: object) -> DatasetInfo:
    """MNIST / Fashion-MNIST from their fixed sizes: 1 channel, 28 px, val carved from train."""
    spec = _MNIST_LIKE[name]
    n_train, n_test = spec["sizes"]
    n_val = int(round(n_train * val_fraction))
    return DatasetInfo(name, len(spec["classes"]), list(spec["classes"]), 1, int(image_size or 28),
                       splits={"train": n_train - n_val, "val": n_val, "test": n_test})


def load_mnist_like(name: str, *, root=None, seed: int = 0, download: bool | None = None,
                    val_fraction: float = DEFAULT_VAL_FRACTION, **_: object) -> LoadedDataset:
    """MNIST / Fashion-MNIST as 1-channel uint8 [N, 1, 28, 28]; val carved from train (seeded)."""
    spec = _MNIST_LIKE[name]
    searched = _idx_candidates(name, root)
    folder = _find_idx_folder(searched)
    if folder is None:
        if not downloads_allowed(download):
            raise DataError(_how_to_get(name, root, searched, "downloads are off"))
        import torchvision

        target = Path(root) if root is not None else cache_dir("torchvision")
        try:
            for train in (True, False):
                getattr(torchvision.datasets, spec["tv"])(str(target), train=train, download=True)
        except Exception as e:  # offline: URLError, timeouts, HTTP errors... all mean "could not download"
            raise DataError(_how_to_get(name, root, searched, f"download failed ({type(e).__name__}: {e})")) from None
        folder = _find_idx_folder([target / spec["tv"] / "raw"])
        if folder is None:
            raise DataError(_how_to_get(name, root, searched, "download finished but files are missing"))

    def read(key: str) -> np.ndarray:
        base = folder / _IDX_FILES[key]
        return read_idx(base if base.exists() else Path(str(base) + ".gz"))

    splits = {}
    for part in ("train", "test"):
        x, y = read(f"{part}_images"), read(f"{part}_labels")
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{folder}: {part} images {x.shape} and labels {y.shape} do not match")
        if y.size and int(y.max()) >= len(spec["classes"]):
            raise DataError(f"{folder}: {part} label {int(y.max())} out of range 0..{len(spec['classes']) - 1}")
        splits[part] = TensorSplit(torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64)))
    train, val = _carve_val(name, splits["train"], val_fraction, seed)
    info = DatasetInfo(name, len(spec["classes"]), list(spec["classes"]), 1, int(train.images.shape[-1]),
                       notes=f"val = {len(val)} images carved from the official train split "
                             f"(fraction {val_fraction}, seed {seed}); test = official test split")
    return LoadedDataset(info, train, val, splits["test"], meta={"folder": str(folder)})


# =========================================================================== CIFAR

_CIFAR = {"cifar10": ("CIFAR10", 10), "cifar100": ("CIFAR100", 100)}


def describe_cifar(name: str, *, image_size: int | None = None, val_fraction: float = DEFAULT_VAL_FRACTION,
                   root=None, **_: object) -> DatasetInfo:
    """CIFAR-10/100 from their fixed sizes: 3 channels, 32 px, val carved from the 50000 train images."""
    n_val = int(round(50000 * val_fraction))
    return DatasetInfo(name, _CIFAR[name][1], _cifar_classes(name, root), 3, int(image_size or 32),
                       splits={"train": 50000 - n_val, "val": n_val, "test": 10000})


def _cifar_classes(name: str, root) -> list[str]:
    if name == "cifar10":
        return ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return [str(i) for i in range(100)]   # real fine-label names come from the files at load time


def load_cifar(name: str, *, root=None, seed: int = 0, download: bool | None = None,
               val_fraction: float = DEFAULT_VAL_FRACTION, **_: object) -> LoadedDataset:
    """CIFAR-10/100 via torchvision as uint8 [N, 3, 32, 32]; val carved from train (seeded)."""
    import torchvision

    cls_name, n_classes = _CIFAR[name]
    target = Path(root) if root is not None else cache_dir("torchvision")
    cls = getattr(torchvision.datasets, cls_name)
    parts = {}
    try:
        for train in (True, False):
            try:
                parts[train] = cls(str(target), train=train, download=False)
            except RuntimeError:
                if not downloads_allowed(download):
                    raise DataError(_how_to_get(name, root, [target], "downloads are off")) from None
                parts[train] = cls(str(target), train=train, download=True)
    except DataError:
        raise
    except Exception as e:
        raise DataError(_how_to_get(name, root, [target], f"download failed ({type(e).__name__}: {e})")) from None
    splits = {}
    for train, ds in parts.items():
        images = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
        splits["train" if train else "test"] = TensorSplit(images, labels)
    classes = list(getattr(parts[True], "classes", None) or _cifar_classes(name, root))
    tr, val = _carve_val(name, splits["train"], val_fraction, seed)
    info = DatasetInfo(name, n_classes, classes, 3, 32,
                       notes=f"val = {len(val)} images carved from the official train split "
                             f"(fraction {val_fraction}, seed {seed}); test = official test split")
    return LoadedDataset(info, tr, val, splits["test"], meta={"root": str(target)})


# =========================================================================== image decoding

_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def _decode_image(path: Path, size: int) -> tuple[np.ndarray, bool]:
    """Decode one file into uint8 [size, size, 3] RGB plus "was it grayscale" (from its mode).

    Decoding is core.images.load_image, the project's one decoder (EXIF orientation, 16-bit
    rescaling, transparency on white, CMYK/palette, first frame, pixel limit, truncated files ->
    ImageError), turned into DataError here. Resized straight to a square (as the seeds do:
    reshape to (3, 224, 224)), bilinear with PIL's antialiasing.
    """
    from PIL import Image

    from core.images import ImageError, load_image

    try:
        im = load_image(path)
    except ImageError as e:
        raise DataError(f"cannot decode image {e}") from None
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    return np.array(im, dtype=np.uint8), _header_is_gray(path)   # np.array: a writable copy


def _header_is_gray(path: Path) -> bool:
    """Grayscale judged from the file header only (PIL opens lazily); unreadable files count as
    colour here and fail with a clear message at load time."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode in _GRAY_MODES or (im.mode == "P" and _palette_is_gray(im))
    except Exception:
        return False


def all_gray_by_header(paths: list[Path]) -> bool:
    """True when every file is grayscale; stops at the first colour file (a colour folder costs one open)."""
    return bool(paths) and all(_header_is_gray(p) for p in paths)


def _palette_is_gray(im) -> bool:
    pal = im.getpalette() or []
    rgb = np.asarray(pal[: len(pal) // 3 * 3]).reshape(-1, 3)
    return bool(len(rgb)) and bool((rgb == rgb[:, :1]).all())


def decode_files(items: list[tuple[Path, str]], size: int) -> tuple[torch.Tensor, bool]:
    """Decode files (path, where-for-errors) into uint8 [N, 3, size, size] and "all grayscale".

    Threads overlap PIL's decoding (it releases the GIL); the first failure raises DataError that
    names ``where`` (e.g. "train.txt line 12") and the file.
    """
    def one(item):
        path, where = item
        try:
            return _decode_image(path, size)
        except DataError as e:
            raise DataError(f"{where}: {e}") from None

    out = torch.empty(len(items), 3, size, size, dtype=torch.uint8)
    all_gray = True
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) + 2)) as pool:
        for i, (arr, gray) in enumerate(pool.map(one, items)):
            out[i] = torch.from_numpy(arr).permute(2, 0, 1)
            all_gray = all_gray and gray
    return out, all_gray


def _decode_cached(name: str, split: str, items: list[tuple[Path, str]], size: int,
                   use_cache: bool) -> tuple[torch.Tensor, bool]:
    """decode_files, cached on disk keyed by (paths, sizes, mtimes, image size): re-opening a
    folder dataset costs one file read instead of decoding thousands of images."""
    from safetensors.torch import load_file, save_file

    from core.io import atomic_write

    if not items:
        return torch.empty(0, 3, size, size, dtype=torch.uint8), True
    stats = []
    for path, where in items:
        try:
            st = os.stat(path)
        except OSError:
            raise DataError(f"{where}: image file not found: {path}") from None
        stats.append((str(path), st.st_size, st.st_mtime_ns))
    key = stable_key({"v": 1, "files": stats, "size": size})
    path = cache_dir("decoded") / f"{''.join(c if c.isalnum() else '_' for c in name)[-60:]}-{split}-{key}.safetensors"
    if use_cache and path.exists():
        try:
            t = load_file(str(path))
            return t["images"], bool(int(t["all_gray"].item()))
        except Exception:
            pass
    images, gray = decode_files(items, size)
    if use_cache:
        tensors = {"images": images, "all_gray": torch.tensor([int(gray)], dtype=torch.uint8)}
        atomic_write(path, lambda tmp: save_file(tensors, tmp))
    return images, gray


def _finish_folder_dataset(name: str, classes: list[str], size: int, decoded: dict, notes: str,
                           meta: dict) -> LoadedDataset:
    """Turn {split: (uint8 [N,3,S,S], labels, all_gray)} into a LoadedDataset; 1 channel when every
    image of every split is grayscale, else 3 (grayscale images replicated, as seed 001 does)."""
    gray = all(g for _, _, g in decoded.values())
    splits = {}
    for k, (imgs, labels, _) in decoded.items():
        imgs = imgs[:, :1].contiguous() if gray else imgs
        splits[k] = TensorSplit(imgs, torch.as_tensor(labels, dtype=torch.int64))
    info = DatasetInfo(name, len(classes), classes, 1 if gray else 3, size, notes=notes)
    return LoadedDataset(info, splits["train"], splits["val"], splits["test"], meta=meta)


def _folder_info(name: str, classes: list[str], files: dict[str, list[Path]], image_size: int | None) -> DatasetInfo:
    """describe() of a folder source: 1 channel when every file's header says grayscale, else 3."""
    gray = all_gray_by_header([p for k in ("train", "val", "test") for p in files[k]])
    return DatasetInfo(name, len(classes), classes, 1 if gray else 3, int(image_size or DEFAULT_FOLDER_SIZE),
                       splits={k: len(files[k]) for k in ("train", "val", "test")})


# =========================================================================== imagefolder:PATH

def _folder_path(kind: str, path: str | None) -> Path:
    if not path:
        raise DataError(f"{kind} needs a folder: use '{kind}:/path/to/folder'")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{kind}:{path}: folder not found: {p}")
    if not p.is_dir():
        raise DataError(f"{kind}:{path}: not a folder: {p}")
    return p


def _list_imagefolder(root: Path, class_to_idx: dict | None = None) -> tuple[list[str], dict, list[tuple[str, int]]]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, found = find_classes(str(root))
    except FileNotFoundError as e:
        raise DataError(f"imagefolder {root}: {e}") from None
    if class_to_idx is not None:
        extra = sorted(set(classes) - set(class_to_idx))
        if extra:
            raise DataError(f"imagefolder {root}: class folder(s) {extra} are not in the train split")
    else:
        class_to_idx = found
    samples = make_dataset(str(root), {c: class_to_idx[c] for c in classes}, extensions=IMG_EXTENSIONS,
                           allow_empty=True)
    return sorted(class_to_idx, key=class_to_idx.get), class_to_idx, samples


def _imagefolder_plan(path: str | None, seed: int, val_fraction: float, test_fraction: float):
    root = _folder_path("imagefolder", path)
    if (root / "train").is_dir():
        classes, c2i, train = _list_imagefolder(root / "train")
        parts = {"train": train}
        notes = "splits from the train/val/test subfolders"
        for k in ("val", "test"):
            if (root / k).is_dir():
                parts[k] = _list_imagefolder(root / k, c2i)[2]
        for k, frac in (("val", val_fraction), ("test", test_fraction)):
            if k not in parts:   # a missing split is carved from train, seeded
                keep, carved = carve_split(len(parts["train"]), frac, seed + (0 if k == "val" else 1))
                parts[k] = [parts["train"][i] for i in carved.tolist()]
                parts["train"] = [parts["train"][i] for i in keep.tolist()]
                notes += f"; {k} carved from train (fraction {frac}, seed {seed})"
    else:
        classes, c2i, samples = _list_imagefolder(root)
        keep, test_idx = carve_split(len(samples), test_fraction, seed + 1)
        rest = [samples[i] for i in keep.tolist()]
        keep2, val_idx = carve_split(len(rest), val_fraction / max(1e-9, 1 - test_fraction), seed)
        parts = {"train": [rest[i] for i in keep2.tolist()], "val": [rest[i] for i in val_idx.tolist()],
                 "test": [samples[i] for i in test_idx.tolist()]}
        notes = f"one folder split by seeded ratio (val {val_fraction}, test {test_fraction}, seed {seed})"
    if not parts["train"]:
        raise DataError(f"imagefolder:{path}: no images found in the train split")
    return root, classes, parts, notes


def describe_imagefolder(path: str | None, *, image_size: int | None = None, seed: int = 0,
                         val_fraction: float = DEFAULT_VAL_FRACTION, test_fraction: float = DEFAULT_VAL_FRACTION,
                         **_: object) -> DatasetInfo:
    """The imagefolder's classes and split sizes from the file listing; channels from file headers."""
    root, classes, parts, _ = _imagefolder_plan(path, seed, val_fraction, test_fraction)
    files = {k: [Path(p) for p, _ in parts[k]] for k in ("train", "val", "test")}
    return _folder_info(f"imagefolder:{path}", classes, files, image_size)


def load_imagefolder(path: str | None, *, image_size: int | None = None, seed: int = 0,
                     val_fraction: float = DEFAULT_VAL_FRACTION, test_fraction: float = DEFAULT_VAL_FRACTION,
                     use_cache: bool = True, **_: object) -> LoadedDataset:
    """torchvision ImageFolder layout: PATH/train|val|test/CLASS/*.jpg, or PATH/CLASS/*.jpg split
    by seeded ratio. Images decoded with PIL and resized to image_size (default 64) squares."""
    name = f"imagefolder:{path}"
    size = int(image_size or DEFAULT_FOLDER_SIZE)
    root, classes, parts, notes = _imagefolder_plan(path, seed, val_fraction, test_fraction)
    decoded = {}
    for k in ("train", "val", "test"):
        items = [(Path(p), f"{name} ({k} split)") for p, _ in parts[k]]
        imgs, gray = _decode_cached(name, k, items, size, use_cache)
        decoded[k] = (imgs, [label for _, label in parts[k]], gray)
    return _finish_folder_dataset(name, classes, size, decoded, notes, {"root": str(root)})


# =========================================================================== listfile:PATH

LISTFILES = ("train.txt", "val.txt", "test.txt")


def parse_listfile(listfile: Path) -> list[tuple[Path, int, int]]:
    """Lines ``relative/path.jpg label`` (blank lines and '#' comments skipped) -> (path, label, line).

    Paths are relative to the listfile's folder and may contain spaces (the label is the last
    field). Malformed lines raise DataError naming the file and line number.
    """
    base = listfile.parent
    out = []
    try:
        text = listfile.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{listfile}: not UTF-8 text ({e})") from None
    except OSError as e:
        raise DataError(f"{listfile}: cannot read: {e}") from None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields_ = line.rsplit(None, 1)
        if len(fields_) != 2:
            raise DataError(f"{listfile} line {lineno}: expected 'relative/path.jpg label', got {line!r}")
        rel, label_text = fields_
        try:
            label = int(label_text)
        except ValueError:
            raise DataError(f"{listfile} line {lineno}: label {label_text!r} is not an integer "
                            f"(expected 'relative/path.jpg label')") from None
        if label < 0:
            raise DataError(f"{listfile} line {lineno}: label {label} is negative")
        out.append((base / rel, label, lineno))
    return out


def _listfile_plan(path: str | None, seed: int, val_fraction: float, test_fraction: float):
    root = _folder_path("listfile", path)
    if not (root / "train.txt").is_file():
        raise DataError(f"listfile:{path}: missing file {root / 'train.txt'} "
                        f"(expected train.txt, val.txt, test.txt with lines 'relative/path.jpg label')")
    parts = {}
    notes = "splits from train.txt / val.txt / test.txt"
    for fname in LISTFILES:
        f = root / fname
        if f.is_file():
            parts[fname[:-4]] = [(p, label, f"{f} line {n}") for p, label, n in parse_listfile(f)]
    for k, frac in (("val", val_fraction), ("test", test_fraction)):
        if k not in parts:
            keep, carved = carve_split(len(parts["train"]), frac, seed + (0 if k == "val" else 1))
            parts[k] = [parts["train"][i] for i in carved.tolist()]
            parts["train"] = [parts["train"][i] for i in keep.tolist()]
            notes += f"; {k}.txt absent: {k} carved from train (fraction {frac}, seed {seed})"
    if not parts["train"]:
        raise DataError(f"listfile:{path}: {root / 'train.txt'} lists no images")
    num_classes = 1 + max(label for rows in parts.values() for _, label, _ in rows)
    classes = _listfile_class_names(root, parts, num_classes)
    return root, classes, parts, notes


def _listfile_class_names(root: Path, parts: dict, num_classes: int) -> list[str]:
    """classes.txt (one name per line) when present; else the image's parent folder name when every
    label maps to exactly one distinct folder (mini-ImageNet's n01532829/...); else "0".."K-1"."""
    names_file = root / "classes.txt"
    if names_file.is_file():
        names = [ln.strip() for ln in names_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if len(names) >= num_classes:
            return names[:num_classes]
        raise DataError(f"{names_file}: {len(names)} class names for {num_classes} labels")
    folders: dict[int, set] = {}
    for rows in parts.values():
        for p, label, _ in rows:
            folders.setdefault(label, set()).add(p.parent.name)
    if len(folders) == num_classes and all(len(v) == 1 for v in folders.values()):
        names = [next(iter(folders[i])) for i in range(num_classes)]
        if len(set(names)) == num_classes:
            return names
    return [str(i) for i in range(num_classes)]


def describe_listfile(path: str | None, *, image_size: int | None = None, seed: int = 0,
                      val_fraction: float = DEFAULT_VAL_FRACTION, test_fraction: float = DEFAULT_VAL_FRACTION,
                      **_: object) -> DatasetInfo:
    """The listfile dataset's classes and split sizes from its .txt files; channels from file headers."""
    root, classes, parts, _ = _listfile_plan(path, seed, val_fraction, test_fraction)
    files = {k: [p for p, _, _ in parts[k]] for k in ("train", "val", "test")}
    return _folder_info(f"listfile:{path}", classes, files, image_size)


def load_listfile(path: str | None, *, image_size: int | None = None, seed: int = 0,
                  val_fraction: float = DEFAULT_VAL_FRACTION, test_fraction: float = DEFAULT_VAL_FRACTION,
                  use_cache: bool = True, **_: object) -> LoadedDataset:
    """The mini-ImageNet course format of seeds 000/001: PATH/train.txt, val.txt, test.txt with
    lines ``relative/path.jpg label``. Grayscale images in a colour dataset are replicated to RGB."""
    name = f"listfile:{path}"
    size = int(image_size or DEFAULT_FOLDER_SIZE)
    root, classes, parts, notes = _listfile_plan(path, seed, val_fraction, test_fraction)
    decoded = {}
    for k in ("train", "val", "test"):
        items = [(p, where) for p, _, where in parts[k]]
        imgs, gray = _decode_cached(name, k, items, size, use_cache)
        decoded[k] = (imgs, [label for _, label, _ in parts[k]], gray)
    return _finish_folder_dataset(name, classes, size, decoded, notes, {"root": str(root)})
