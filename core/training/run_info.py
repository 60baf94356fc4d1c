"""A run's config.json read once, typed: what was trained (TrainConfig) and how (RunInfo).

The trainer writes ``config.json`` as the TrainConfig fields plus a ``run`` section with what it
found out while starting (classes, channel counts, image size, normalisation statistics, device).
Everything that rebuilds a run's model, its data or its model input reads that file through
``read_run_info`` here, so a field is parsed in one place:

    config, info = read_run_info("checkpoints/chan-cnn3-zf-rg")
    info.num_classes, info.in_channels, info.normalize, info.eval_channels
    data = load_run_dataset("checkpoints/chan-cnn3-zf-rg")   # the dataset exactly as trained

A run of a student's model (a file from ARCHSCOPE_MODELS, core/models/user_models.py) records that
file in ``run.model_source``: ``{"file": path, "sha256": of its text}`` (``model_source_section``);
core.training.checkpoint.load_run_model checks it against the file registered now.

Runs written by older versions may lack fields: every field but ``num_classes`` and
``in_channels`` (without which no model can be rebuilt) has a default meaning "unknown"
(None, or an empty tuple).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from core.errors import EXIT_FAILED, ArchScopeError
from core.training.config import RUN_SECTION, ConfigError, TrainConfig

if TYPE_CHECKING:   # only for hints: importing core.data here would load every source at import
    from core.data import LoadedDataset

CONFIG_FILE = "config.json"


class CheckpointError(ArchScopeError, RuntimeError):
    """A run folder or weights file that cannot be used; the message names the file (exit 1).

    Defined here, below core.training.checkpoint (which imports and re-exports it), because
    reading config.json is the first step of loading any checkpoint."""

    exit_code = EXIT_FAILED


MODEL_SOURCE = "model_source"   # key of the run section: the model file of a student's model


@dataclass(frozen=True)
class ModelSource:
    """The ARCHSCOPE_MODELS file a run's model came from, as it was when the run started."""

    file: str       # resolved path
    sha256: str     # of the file's text


def model_source_section(model: str) -> dict[str, dict[str, str]]:
    """``{"model_source": {"file", "sha256"}}`` for a model of an ARCHSCOPE_MODELS file, ``{}`` for a
    built-in: what the trainer merges into config.json's run section. Raises UnknownModelError."""
    from core.models.registry import get_spec

    spec = get_spec(model)
    if spec.source_file is None:
        return {}
    return {MODEL_SOURCE: {"file": spec.source_file, "sha256": str(spec.source_sha256)}}


@dataclass(frozen=True)
class RunInfo:
    """config.json's ``run`` section: facts the trainer recorded when the run started.

    normalize: ((mean per source channel), (std per source channel)) in [0, 1] units, or None
    when the run trained without normalisation. eval_channels: the combination the run is tested
    on by default (its own, or RGB / L for a run trained on random combinations); None when unknown.
    """

    num_classes: int
    in_channels: int                        # channels the model's first layer takes
    classes: tuple[str, ...] = ()           # class names; () when unknown (see class_names)
    source_channels: int | None = None      # channels of the dataset's images (1, 3, or 6 for pairs)
    image_size: int | None = None           # square side in pixels the model was trained at
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    eval_channels: str | None = None
    device: str | None = None
    device_name: str | None = None
    world_size: int = 1
    cpu_threads: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    batch_size_global: int | None = None
    amp: str | None = None                  # "bf16" on CUDA, None = full precision (or unknown)
    command: str | None = None
    created: float | None = None
    versions: Mapping[str, str] = field(default_factory=dict)
    model_source: ModelSource | None = None   # None: a built-in model (or a run older than the field)

    @property
    def class_names(self) -> list[str]:
        """The recorded class names, or "class 0".."class N-1" for a run that did not record them."""
        return list(self.classes) if self.classes else [f"class {i}" for i in range(self.num_classes)]

    def headline_channels(self, config: TrainConfig) -> str:
        """The combination a run is predicted / evaluated with: the recorded ``eval_channels``, else
        the trained one, else (random combinations) every channel: RGB, or L for grayscale sources."""
        if self.eval_channels:
            return self.eval_channels
        if config.channels != "random":
            return config.channels
        return "L" if self.source_channels == 1 else "RGB"


# ---- parsing ---------------------------------------------------------------------------------
def _field(run: Mapping[str, Any], key: str, convert: Callable[[Any], Any], source: Path, default: Any = None) -> Any:
    """run[key] converted, ``default`` when absent or null; a wrong type is a CheckpointError naming the file."""
    value = run.get(key)
    if value is None:
        return default
    try:
        return convert(value)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: run.{key} = {value!r} is not valid ({exc})") from None


def _floats(values: Any) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError("expected a list of numbers")
    return tuple(float(v) for v in values)


def _normalize(run: Mapping[str, Any], source: Path) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    mean = _field(run, "normalize_mean", _floats, source)
    std = _field(run, "normalize_std", _floats, source)
    if not mean and not std:
        return None
    if not mean or not std or len(mean) != len(std):
        raise CheckpointError(f"{source}: run.normalize_mean and run.normalize_std must both be lists of the "
                              f"same length, got {run.get('normalize_mean')!r} and {run.get('normalize_std')!r}")
    if any(s <= 0 for s in std):
        raise CheckpointError(f"{source}: run.normalize_std must be positive, got {list(std)}")
    return mean, std


def _model_source(value: Any) -> ModelSource:
    if not isinstance(value, Mapping) or not isinstance(value.get("file"), str) \
            or not isinstance(value.get("sha256"), str):
        raise TypeError('expected {"file": path, "sha256": hex digest}')
    return ModelSource(file=value["file"], sha256=value["sha256"])


def run_info_from_dict(run: Mapping[str, Any], source: str | os.PathLike = CONFIG_FILE) -> RunInfo:
    """A RunInfo from a ``run`` section (a dict); ``source`` names the file in error messages."""
    source = Path(source)
    if not isinstance(run, Mapping) or "num_classes" not in run or "in_channels" not in run:
        raise CheckpointError(
            f"{source}: has no 'run' section with num_classes and in_channels (the trainer writes it when "
            f"training starts; was this folder written by ArchScope?)"
        )
    num_classes = _field(run, "num_classes", int, source)
    in_channels = _field(run, "in_channels", int, source)
    if num_classes is None or num_classes < 1 or in_channels is None or in_channels < 1:
        raise CheckpointError(f"{source}: run.num_classes and run.in_channels must be positive integers, "
                              f"got {run.get('num_classes')!r} and {run.get('in_channels')!r}")
    classes = _field(run, "classes", lambda v: tuple(str(c) for c in v), source, ())
    if classes and len(classes) != num_classes:
        raise CheckpointError(f"{source}: run.classes has {len(classes)} names but run.num_classes is {num_classes}")
    return RunInfo(
        num_classes=num_classes, in_channels=in_channels, classes=classes,
        source_channels=_field(run, "source_channels", int, source),
        image_size=_field(run, "image_size", int, source),
        normalize=_normalize(run, source),
        eval_channels=_field(run, "eval_channels", str, source),
        device=_field(run, "device", str, source),
        device_name=_field(run, "device_name", str, source),
        world_size=_field(run, "world_size", int, source, 1),
        cpu_threads=_field(run, "cpu_threads", int, source),
        n_train=_field(run, "n_train", int, source),
        n_val=_field(run, "n_val", int, source),
        n_test=_field(run, "n_test", int, source),
        batch_size_global=_field(run, "batch_size_global", int, source),
        amp=_field(run, "amp", str, source),
        command=_field(run, "command", str, source),
        created=_field(run, "created", float, source),
        versions=_field(run, "versions", lambda v: {str(k): str(x) for k, x in dict(v).items()}, source, {}),
        model_source=_field(run, MODEL_SOURCE, _model_source, source),
    )


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing, so the model cannot be rebuilt") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot be read as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: does not hold a JSON object")
    return data


# ---- the public readers ----------------------------------------------------------------------
def read_run_info(run_dir: str | os.PathLike) -> tuple[TrainConfig, RunInfo]:
    """(the run's TrainConfig, its RunInfo) from ``run_dir/config.json``.

    Raises CheckpointError naming the file when it is missing, not JSON, has unknown training
    keys, or has no usable ``run`` section (a folder whose training never started).
    """
    path = Path(run_dir) / CONFIG_FILE
    data = _read_json(path)
    info = run_info_from_dict(data.get(RUN_SECTION), path)
    try:
        config = TrainConfig.from_dict(data, source=str(path))
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    return config, info


def load_dataset_for(config: TrainConfig, **options: Any) -> "LoadedDataset":
    """The dataset exactly as ``config`` trains on it: same source, image size, data root, seed
    (which picks the max_train_samples subset), preprocessing (e.g. denoising), subset sizes (max_train_samples; max_eval_samples for validation and test) and
    class subset (``config.classes``, relabelled 0..k-1: what training, evaluation, predict and the
    dashboard all see).

    Images uint8 [N, C, H, W], labels int64 [N] per split. ``options`` go to the source (e.g.
    ``download``). Raises DataError when the dataset is not available.
    """
    from core.data import PreprocessConfig, load_dataset

    return load_dataset(
        config.dataset,
        image_size=config.image_size,
        root=config.data_root,
        seed=config.seed,
        preprocess=PreprocessConfig.from_dict(config.preprocess) if config.preprocess else None,
        max_train_samples=config.max_train_samples,
        classes=config.classes,
        max_eval_samples=config.max_eval_samples,
        **options,
    )


def load_run_dataset(run_dir: str | os.PathLike, **options: Any) -> "LoadedDataset":
    """The dataset a run in ``run_dir`` was trained on (see load_dataset_for); raises CheckpointError
    for a bad config.json, DataError when the dataset is not available."""
    config, _ = read_run_info(run_dir)
    return load_dataset_for(config, **options)
