"""The one registry of data sources, and the two entry points everything else calls:
``describe(name)`` (cheap, no decoding) and ``load_dataset(name, ...)``.

A source registers a describe function and a load function. Sources that need a folder are
named ``KIND:PATH`` (``imagefolder:/data/pets``, ``listfile:/data/mini-imagenet``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

import core.data.pairs as pairs
import core.data.shapes as shapes
import core.data.sources as sources
from core.data.base import DataError, DatasetInfo, LoadedDataset, TensorSplit, seeded_generator
from core.data.preprocess import PreprocessConfig, denoise_images, resize_images


@dataclass(frozen=True)
class SourceSpec:
    """One data source: its describe and load functions, and the options they accept."""

    name: str
    description: str
    describe: Callable[..., DatasetInfo]   # (path or None, **options) -> DatasetInfo with splits
    load: Callable[..., LoadedDataset]  # (path or None, **options) -> LoadedDataset
    needs_path: bool = False
    channels: int | None = 3           # None: decided by the files (folder sources)
    options: tuple[str, ...] = ()      # source-specific keyword options load_dataset/describe accept

    def check_options(self, given) -> None:
        """DataError naming every option in ``given`` this source does not accept."""
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            allowed = ", ".join(self.options) or "none"
            raise DataError(f"data source {self.name!r}: unknown option(s) {unknown}; it accepts: {allowed}")


_SOURCES: dict[str, SourceSpec] = {}


def register_source(spec: SourceSpec) -> SourceSpec:
    """Add a source to the registry (at import of this module); a name can be registered once."""
    if spec.name in _SOURCES:
        raise ValueError(f"data source {spec.name!r} registered twice")
    _SOURCES[spec.name] = spec
    return spec


def _no_path(fn: Callable, *bound) -> Callable:
    """Adapt a source function that takes no path (``fn(*bound, **kw)``) to the ``(path, **kw)`` form."""
    def call(path, **kw):
        return fn(*bound, **kw)
    return call


_TORCHVISION_OPTIONS = ("download", "val_fraction", "use_cache")
_FOLDER_OPTIONS = ("val_fraction", "test_fraction", "use_cache")


def _register_torchvision(name: str, description: str, describe_fn: Callable, load_fn: Callable,
                          channels: int) -> None:
    """A torchvision dataset: one family of describe/load functions, bound to ``name``."""
    register_source(SourceSpec(name, description, _no_path(describe_fn, name), _no_path(load_fn, name),
                               channels=channels, options=_TORCHVISION_OPTIONS))


register_source(SourceSpec(
    "shapes", "built-in 12-class colour shapes (generated, cached; colour-only and shape-only classes)",
    _no_path(shapes.describe_shapes), _no_path(shapes.load_shapes), channels=3,
    options=("n_train", "n_val", "n_test", "use_cache")))
_register_torchvision("fashion-mnist", "Zalando Fashion-MNIST, 10 classes, 28x28 gray (Debian package, root, or download)",
                      sources.describe_mnist_like, sources.load_mnist_like, channels=1)
_register_torchvision("mnist", "MNIST digits, 10 classes, 28x28 gray (root or download)",
                      sources.describe_mnist_like, sources.load_mnist_like, channels=1)
_register_torchvision("cifar10", "CIFAR-10, 10 classes, 32x32 colour (root or download)",
                      sources.describe_cifar, sources.load_cifar, channels=3)
_register_torchvision("cifar100", "CIFAR-100, 100 classes, 32x32 colour (root or download)",
                      sources.describe_cifar, sources.load_cifar, channels=3)
register_source(SourceSpec(
    "imagefolder", "PATH/train|val|test/CLASS/*.jpg, or PATH/CLASS/*.jpg split by seeded ratio",
    sources.describe_imagefolder, sources.load_imagefolder, needs_path=True, channels=None,
    options=_FOLDER_OPTIONS))
register_source(SourceSpec(
    "listfile", "PATH/train.txt, val.txt, test.txt with lines 'relative/path.jpg label' "
                "(mini-ImageNet course format)",
    sources.describe_listfile, sources.load_listfile, needs_path=True, channels=None,
    options=_FOLDER_OPTIONS))


# transform-pairs is built from another source: it gets this module's describe/load_dataset as
# arguments (see pairs.py), so pairs.py never imports the registry and there is no import cycle.
def _describe_pairs(path, **kw) -> DatasetInfo:
    return pairs.describe_pairs(path, describe_base=describe, **kw)


def _load_pairs(path, **kw) -> LoadedDataset:
    return pairs.load_pairs(path, load_base=load_dataset, **kw)


register_source(SourceSpec(
    pairs.SOURCE_NAME, pairs.DESCRIPTION, _describe_pairs, _load_pairs, channels=6, options=pairs.OPTIONS))


def list_sources() -> list[str]:
    """Registered source names. Those with ``needs_path`` are used as ``NAME:PATH``."""
    return list(_SOURCES)


def source_specs() -> list[SourceSpec]:
    """Every registered source, in registration order."""
    return list(_SOURCES.values())


def resolve(name: str) -> tuple[SourceSpec, str | None]:
    """'imagefolder:/x' -> (spec, '/x'); 'shapes' -> (spec, None). Unknown names raise DataError."""
    if not isinstance(name, str) or not name:
        raise DataError(f"data source name must be a non-empty string, got {name!r}")
    kind, sep, path = name.partition(":")
    spec = _SOURCES.get(kind)
    if spec is None:
        shown = ", ".join(s.name + (":PATH" if s.needs_path else "") for s in _SOURCES.values())
        raise DataError(f"unknown data source {name!r}: expected one of {shown}")
    if spec.needs_path and not path:
        raise DataError(f"data source {kind!r} needs a folder: use '{kind}:/path/to/folder'")
    if not spec.needs_path and sep:
        raise DataError(f"data source {kind!r} takes no path (got {name!r}); use root= for its files")
    return spec, (path or None)


def describe(name: str, **kw) -> DatasetInfo:
    """A DatasetInfo (name, num_classes, classes, channels, image_size, splits {train, val, test})
    without decoding images (folder sources list files and read headers). ``kw``: image_size, root,
    data_seed, and source options (n_train/n_val/n_test for shapes, val_fraction, test_fraction).
    ``seed`` (a training seed) is accepted and ignored: it does not change the dataset."""
    spec, path = resolve(name)
    kw = {k: v for k, v in kw.items() if v is not None}
    kw.pop("seed", None)
    data_seed = int(kw.pop("data_seed", 0))
    spec.check_options(set(kw) - {"image_size", "root"})
    info = spec.describe(path, seed=data_seed, **kw)
    info.name = name
    return info


def class_indices(name: str, requested, classes: list[str]) -> list[int]:
    """The source indices of ``requested`` (class names, or indices as ints or digit strings; a name
    wins over an index), in the order given. DataError naming an unknown class (with the valid
    names), a class given twice, or fewer than 2 classes."""
    if isinstance(requested, (str, bytes)) or len(requested) < 2:
        raise DataError(f"{name}: classes must name at least 2 classes, got {requested!r}")
    out: list[int] = []
    for c in requested:
        if isinstance(c, str) and c in classes:
            i = classes.index(c)
        elif not isinstance(c, bool) and (isinstance(c, int) or (isinstance(c, str) and c.strip().isdigit())) \
                and 0 <= int(c) < len(classes):
            i = int(c)
        else:
            raise DataError(f"{name}: unknown class {c!r}; its classes are {', '.join(map(repr, classes))} "
                            f"(or indices 0..{len(classes) - 1})")
        if i in out:
            raise DataError(f"{name}: class {classes[i]!r} is listed more than once in classes {list(requested)!r}")
        out.append(i)
    return out


def _keep_classes(ds: LoadedDataset, name: str, classes) -> None:
    """Keep only the rows of ``classes`` in every split, labels remapped to 0..k-1 in that order."""
    keep = class_indices(name, classes, list(ds.info.classes))
    remap = torch.full((ds.info.num_classes,), -1, dtype=torch.int64)
    remap[torch.tensor(keep)] = torch.arange(len(keep))
    for k in ("train", "val", "test"):
        sp = ds.split(k)
        rows = (remap[sp.labels] >= 0).nonzero().squeeze(1)
        sub = sp.subset(rows)
        setattr(ds, k, TensorSplit(sub.images, remap[sub.labels]))
    names = [ds.info.classes[i] for i in keep]
    ds.info.classes, ds.info.num_classes = names, len(names)
    ds.info.notes += f"; classes subset {names} relabelled 0..{len(names) - 1}"


def load_dataset(name: str, *, image_size: int | None = None, root=None, seed: int = 0,
                 preprocess: PreprocessConfig | None = None, max_train_samples: int | None = None,
                 data_seed: int = 0, classes=None, max_eval_samples: int | None = None, **options) -> LoadedDataset:
    """Load a source as uint8 tensors, resized to ``image_size`` (when given and different from the
    source's), train optionally cut to a seeded random ``max_train_samples``, then denoised when
    ``preprocess.denoise`` (cached on disk per dataset + split + parameters + pixels).

    Two seeds, on purpose: ``data_seed`` (default 0) fixes the dataset itself: the images `shapes`
    generates and the val/test splits carved from a training split. ``seed`` (the run's training
    seed) only picks the ``max_train_samples`` subset. So runs trained with different seeds are
    tested on the very same test split and can be compared side by side.

    ``classes`` (names, or indices as ints or digit strings): keep only those classes in train, val
    and test, labels remapped to 0..k-1 in the order given (``info.classes`` follows); the
    ``max_train_samples`` cut is made after this filter. DataError for an unknown class.

    ``max_eval_samples``: validation and test each cut to that many images, picked with ``data_seed``
    (never the run's seed), so every run of a comparison is validated and tested on the same images.

    options go to the source: ``download`` (bool, torchvision sources), ``val_fraction``,
    ``test_fraction`` (when a split must be carved), ``n_train``/``n_val``/``n_test`` (shapes),
    ``use_cache`` (shapes and folder decode caches).
    Returns LoadedDataset(info, train, val, test) with images uint8 [N, C, H, W], labels int64 [N].
    """
    spec, path = resolve(name)
    spec.check_options(options)
    if image_size is not None and not (1 <= int(image_size) <= 1024):
        raise DataError(f"{name}: image_size must be between 1 and 1024, got {image_size}")
    # With classes, the source loads its whole train split: the cut must be made after the filter.
    ds = spec.load(path, image_size=image_size, root=root, seed=int(data_seed),
                   max_train_samples=None if classes is not None else max_train_samples, **options)
    ds.info.name = name
    if classes is not None:
        _keep_classes(ds, name, classes)
    if image_size is not None and ds.info.image_size != int(image_size):
        for k in ("train", "val", "test"):
            sp = ds.split(k)
            sp.images = resize_images(sp.images, int(image_size))
        ds.info.image_size = int(image_size)
    if max_train_samples is not None and max_train_samples < len(ds.train):
        if max_train_samples < 1:
            raise DataError(f"{name}: max_train_samples must be >= 1, got {max_train_samples}")
        keep = torch.randperm(len(ds.train), generator=seeded_generator(seed, 31337))[:max_train_samples]
        ds.train = ds.train.subset(keep.sort().values)
        ds.info.notes += f"; train cut to {max_train_samples} (seeded)"
    if max_eval_samples is not None:
        if max_eval_samples < 1:
            raise DataError(f"{name}: max_eval_samples must be >= 1, got {max_eval_samples}")
        for k, salt in (("val", 4242), ("test", 4343)):
            sp = ds.split(k)
            if max_eval_samples < len(sp):
                keep = torch.randperm(len(sp), generator=seeded_generator(int(data_seed), salt))[:max_eval_samples]
                setattr(ds, k, sp.subset(keep.sort().values))
        ds.info.notes += f"; validation and test cut to {max_eval_samples} each (fixed by the data seed)"
    if preprocess is not None and preprocess.denoise:
        hits = {}
        for k in ("train", "val", "test"):
            sp = ds.split(k)
            sp.images, m = denoise_images(sp.images, preprocess, dataset=name, split=k,
                                          use_cache=options.get("use_cache", True))
            hits[k] = m
        ds.meta["denoise"] = hits
        ds.info.notes += f"; non-local-means denoised (h={preprocess.h}, h_color={preprocess.h_color})"
    return ds
