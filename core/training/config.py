"""TrainConfig: the one description of a training run (nanoGPT style).

The CLI (``python -m core.train``), the dashboard and the benchmark suite all build this same
dataclass; ``config.json`` in a run folder is ``to_dict()`` plus a ``"run"`` section the trainer
fills in (resolved device, library versions, class names, input channels, normalisation), which
``from_dict`` ignores. Nothing reads training settings from anywhere else.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from core.data.channels import ALL_COMBO, CHANNEL_COMBOS, GRAYSCALE_COMBO, STRATEGIES
from core.errors import InvalidInputError
from core.io import parse_json

OPTIMIZERS = ("adam", "sgd")
SCHEDULERS = ("none", "step", "cosine", "onecycle")
LOSSES = ("ce", "ce+triplet", "triplet")
TRAIN_ONLY = ("all", "head")
TRIPLET_MINING = ("batch-hard", "random")
DEVICES = ("auto", "cpu", "cuda")
# Keys config.json may hold that are not TrainConfig fields (written by the trainer).
RUN_SECTION = "run"


class ConfigError(InvalidInputError):
    """An invalid training configuration; the message lists every problem found."""


@dataclass
class TrainConfig:
    # ---- model ------------------------------------------------------------------------------
    model: str = "cnn2"
    model_options: dict = field(default_factory=dict)
    # ---- data -------------------------------------------------------------------------------
    dataset: str = "shapes"
    data_root: str | None = None
    image_size: int | None = None          # None: the source's native size
    channels: str | None = None            # a combination, "random", "L"; None: RGB or L by source
    channel_strategy: str = "drop"         # drop | zero-fill | mean-fill | sigmoid-fill
    preprocess: dict = field(default_factory=dict)   # PreprocessConfig(**preprocess)
    augment: dict | str = field(default_factory=dict)  # AugmentConfig fields, or a preset name; {} = none
    normalize: bool = True                 # per-channel mean/std from the train split
    max_train_samples: int | None = None
    max_eval_samples: int | None = None    # validation and test each cut to this many (the same for every seed)
    classes: list[str] | None = None       # a subset of the source's classes (names or indices), relabelled 0..k-1
    # ---- transfer ---------------------------------------------------------------------------
    init_from: str | None = None           # a run folder (its best weights) or a .safetensors file; new runs only
    train_only: str = "all"                # all | head: a linear probe (only the last nn.Linear trains)
    # ---- optimisation -----------------------------------------------------------------------
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9                  # sgd only
    weight_decay: float | None = None      # None: 0 for adam, 5e-4 for sgd
    scheduler: str = "none"
    step_size: int | None = None           # step scheduler: None = max(1, epochs // 3)
    gamma: float = 0.1                     # step scheduler decay
    label_smoothing: float = 0.0
    loss: str = "ce"                       # ce | ce+triplet (seed 002 part three) | triplet (embedding only)
    triplet_margin: float = 1.0
    triplet_weight: float = 1.0            # ce+triplet only (loss triplet is the triplet term alone)
    triplet_mining: str = "batch-hard"     # batch-hard | random in-batch triplets
    # ---- run --------------------------------------------------------------------------------
    seed: int = 0
    device: str = "auto"
    compile: bool = False                  # torch.compile the model (CUDA mostly)
    channels_last: bool = True             # NHWC weights and batches (faster convolutions, CPU and CUDA)
    num_threads: int | None = None         # CPU threads; None = cores / processes
    checkpoint_every: int = 0              # keep epoch_NNNN.safetensors every N epochs (0: never)
    log_every: int = 10                    # batches between steps.jsonl rows / progress updates
    eval_at_end: bool = True
    tensorboard: bool = True               # write scalars to <run>/tensorboard when importable

    # ---- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "config") -> "TrainConfig":
        """Build from a dict; unknown keys are an error naming them (a typo must not pass silently)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        known = set(cls.field_names())
        unknown = sorted(k for k in data if k not in known and k != RUN_SECTION)
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; known keys: {', '.join(sorted(known))}"
            )
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "TrainConfig":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        return cls.from_dict(parse_json(text, path, ConfigError), source=str(path))

    def replace(self, **changes: Any) -> "TrainConfig":
        data = self.to_dict()
        data.update(changes)
        return TrainConfig.from_dict(data)

    # ---- derived values ---------------------------------------------------------------------
    def resolved_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return float(self.weight_decay)
        return 5e-4 if self.optimizer == "sgd" else 0.0

    def resolved_step_size(self) -> int:
        return int(self.step_size) if self.step_size else max(1, self.epochs // 3)

    # ---- validation -------------------------------------------------------------------------
    def static_problems(self) -> list[str]:
        """Problems visible without importing data sources or models (types, ranges, choices)."""
        p: list[str] = []

        def check_int(name: str, minimum: int, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int):
                p.append(f"{name} must be an integer, got {v!r}")
            elif v < minimum:
                p.append(f"{name} must be >= {minimum}, got {v}")

        def check_choice(name: str, choices: tuple) -> None:
            v = getattr(self, name)
            if v not in choices:
                p.append(f"{name} must be one of {', '.join(choices)}; got {v!r}")

        check_int("epochs", 1)
        check_int("batch_size", 1)
        check_int("seed", 0)
        check_int("checkpoint_every", 0)
        check_int("log_every", 1)
        check_int("image_size", 8, allow_none=True)
        check_int("max_train_samples", 1, allow_none=True)
        check_int("max_eval_samples", 1, allow_none=True)
        check_int("num_threads", 1, allow_none=True)
        check_int("step_size", 1, allow_none=True)
        check_choice("optimizer", OPTIMIZERS)
        check_choice("scheduler", SCHEDULERS)
        check_choice("loss", LOSSES)
        check_choice("train_only", TRAIN_ONLY)
        check_choice("triplet_mining", TRIPLET_MINING)
        check_choice("channel_strategy", STRATEGIES)
        check_choice("device", DEVICES)
        for name in ("lr", "momentum", "gamma", "label_smoothing", "triplet_margin", "triplet_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                p.append(f"{name} must be a number, got {v!r}")
        if isinstance(self.lr, (int, float)) and not self.lr > 0:
            p.append(f"lr must be > 0, got {self.lr}")
        if isinstance(self.label_smoothing, (int, float)) and not 0 <= self.label_smoothing < 1:
            p.append(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.weight_decay is not None and (
            not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0
        ):
            p.append(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if isinstance(self.augment, str):
            from core.data.augment import AugmentConfig

            if self.augment not in AugmentConfig.PRESETS:
                p.append(f"augment preset must be one of {', '.join(AugmentConfig.PRESETS)}; got {self.augment!r}")
        for name in ("model_options", "preprocess") + (() if isinstance(self.augment, str) else ("augment",)):
            if not isinstance(getattr(self, name), dict):
                p.append(f"{name} must be a JSON object (dict), got {getattr(self, name)!r}")
        p += self._transfer_static_problems()
        if not isinstance(self.model, str) or not self.model:
            p.append(f"model must be a name, got {self.model!r}")
        if not isinstance(self.dataset, str) or not self.dataset:
            p.append(f"dataset must be a name, got {self.dataset!r}")
        if self.channels is not None and self.channels not in CHANNEL_COMBOS + ("random", GRAYSCALE_COMBO, ALL_COMBO):
            p.append(
                f"channels must be one of {', '.join(CHANNEL_COMBOS)}, random, L or ALL; got {self.channels!r}"
            )
        return p

    def _transfer_static_problems(self) -> list[str]:
        """classes, init_from, train_only and loss 'triplet': types and combinations."""
        p: list[str] = []
        if self.classes is not None:
            if isinstance(self.classes, (str, bytes)) or not isinstance(self.classes, (list, tuple)) or any(
                    isinstance(c, bool) or not isinstance(c, (str, int)) for c in self.classes):
                p.append(f"classes must be a list of class names or indices, got {self.classes!r}")
            elif len(self.classes) < 2:
                p.append(f"classes must name at least 2 classes, got {list(self.classes)!r}")
            elif len({str(c) for c in self.classes}) != len(self.classes):
                dups = sorted({str(c) for c in self.classes if [str(x) for x in self.classes].count(str(c)) > 1})
                p.append(f"classes lists {', '.join(map(repr, dups))} more than once")
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            p.append(f"init_from must be a path (a run folder or a .safetensors file), got {self.init_from!r}")
        if self.loss == "triplet" and self.train_only == "head":
            p.append("loss 'triplet' trains the embedding without the head, and train_only 'head' trains the "
                     "head alone: nothing would train; train the head in a second run (loss 'ce')")
        return p

    def init_from_weights(self) -> Path | None:
        """The weights file ``init_from`` names: a run folder's best weights (model.safetensors), or the file."""
        if not self.init_from:
            return None
        path = Path(self.init_from)
        return path / "model.safetensors" if path.is_dir() else path

    def _init_from_problems(self) -> list[str]:
        """init_from must name an existing run folder with best weights, or a .safetensors file."""
        path = self.init_from_weights()
        if path is None or not isinstance(self.init_from, str):
            return []
        if not Path(self.init_from).exists():
            return [f"init_from {self.init_from!r} does not exist (expected a run folder or a .safetensors file)"]
        if Path(self.init_from).is_dir() and not path.is_file():
            return [f"init_from {self.init_from!r} is a folder without {path.name} (not a finished run folder?)"]
        if path.suffix != ".safetensors":
            return [f"init_from {self.init_from!r} is not a .safetensors file (weights are only read from "
                    f"safetensors, never unpickled)"]
        return []

    def validate(self, *, check_init_from: bool = True) -> "TrainConfig":
        """Check everything that can be checked before any work, including that the model and the
        dataset exist and fit together. Returns a copy with ``channels`` resolved (RGB/L by source).
        Raises ``ConfigError`` listing every problem. ``check_init_from=False``: a resumed run
        (init_from was loaded when it started; its file may be gone since)."""
        problems = self.static_problems()
        if problems:
            raise ConfigError("invalid training config:\n  - " + "\n  - ".join(problems))
        # Imported here so that building/serialising a config needs neither torch models nor data.
        from core.data import describe
        from core.models.registry import UnknownModelError, get_spec

        resolved = self.replace()
        from core.data import AugmentConfig, DataError, PreprocessConfig

        try:
            PreprocessConfig.from_dict(self.preprocess).validate()
        except (DataError, TypeError, ValueError) as exc:
            problems.append(f"preprocess: {exc}")
        try:
            if isinstance(self.augment, dict):
                AugmentConfig.from_dict(self.augment)
        except (DataError, TypeError, ValueError) as exc:
            problems.append(f"augment: {exc}")
        try:
            spec = get_spec(self.model)
        except UnknownModelError as exc:
            problems.append(str(exc))
            spec = None
        info = None
        # describe() knows every form of a name, including "imagefolder:PATH" / "listfile:PATH",
        # and its DataError already names the unknown source or missing folder.
        try:
            kw = {"root": self.data_root} if self.data_root else {}
            info = describe(self.dataset, **kw)
        except DataError as exc:
            problems.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - the data layer names the file/source
            problems.append(f"dataset {self.dataset!r} cannot be described: {exc}")
        if info is not None:
            source_channels = info.channels
            if resolved.channels is None:
                resolved.channels = {1: "L", 3: "RGB"}.get(source_channels, "ALL")
            if source_channels not in (1, 3) and resolved.channels != "ALL":
                problems.append(
                    f"dataset {self.dataset!r} has {source_channels} channels (not a grayscale or RGB image, "
                    f"e.g. stacked image pairs): channels must be 'ALL', got {resolved.channels!r}"
                )
            if source_channels == 1 and resolved.channels != "L":
                problems.append(
                    f"dataset {self.dataset!r} is greyscale (1 channel): channels must be 'L', "
                    f"got {resolved.channels!r}"
                )
            if source_channels == 3 and resolved.channels == "L":
                problems.append(f"dataset {self.dataset!r} has colour channels: 'L' is not one of its combinations")
        if spec is not None and isinstance(self.model_options, dict) and spec.options:
            unknown = sorted(set(self.model_options) - set(spec.options))
            if unknown:
                problems.append(f"model {self.model!r} has no option(s) {', '.join(map(repr, unknown))}; "
                                f"its options: {', '.join(sorted(spec.options))}")
        if spec is not None and resolved.channels is not None and not problems:
            in_ch = input_channels(resolved.channels, resolved.channel_strategy, spec.variable_input,
                                   source_channels)
            if resolved.channels == "random" and resolved.channel_strategy == "drop" and not spec.variable_input:
                problems.append(
                    f"model {self.model!r} has a fixed number of input channels, so channels='random' with "
                    f"strategy 'drop' would feed it 1, 2 or 3 channels; use a fill strategy "
                    f"(zero-fill, mean-fill, sigmoid-fill) or a variable-input model"
                )
            elif in_ch not in spec.in_channels:
                problems.append(
                    f"model {self.model!r} accepts {spec.in_channels} input channels; channels "
                    f"{resolved.channels!r} with strategy {resolved.channel_strategy!r} gives {in_ch}"
                )
            size = resolved.image_size or (info.image_size if info is not None else None)
            if size and size < spec.min_input_size:
                problems.append(
                    f"model {self.model!r} needs images of at least {spec.min_input_size} px, got {size}"
                )
            elif size and spec.source_file is not None and info is not None:
                # A student's model (ARCHSCOPE_MODELS): one forward at the chosen size and channels now,
                # so a model that cannot run fails here (exit 2, nothing written), not after loading the data.
                from core.models.registry import check_user_model
                from core.models.user_models import UserModelError

                try:
                    check_user_model(self.model, num_classes=len(self.classes or ()) or info.num_classes,
                                     in_channels=in_ch,
                                     image_size=int(size), options=dict(self.model_options),
                                     channels_last=self.channels_last)
                except UserModelError as exc:
                    problems.append(str(exc))
        problems += (self._init_from_problems() if check_init_from else []) + self._classes_problems(info)
        if problems:
            raise ConfigError("invalid training config:\n  - " + "\n  - ".join(problems))
        return resolved

    def _classes_problems(self, info: Any) -> list[str]:
        """Each entry of ``classes`` must be a class of the dataset (``info``: its DatasetInfo, or None)."""
        if self.classes is None or info is None:
            return []
        from core.data import DataError
        from core.data.registry import class_indices

        try:
            class_indices(self.dataset, self.classes, info.classes)
        except DataError as exc:
            return [str(exc)]
        return []


def input_channels(channels: str, strategy: str, variable_input: bool, source_channels: int = 3) -> int:
    """Channels the model is built with: 1 for L; the source's count for ALL (passthrough); 3 for fills,
    for random, and for variable-input models (built once for the most channels they will see); else
    the combination's length."""
    if channels == GRAYSCALE_COMBO:
        return 1
    if channels == ALL_COMBO:
        return int(source_channels)
    if strategy != "drop" or channels == "random" or variable_input:
        return 3
    return len(channels)
