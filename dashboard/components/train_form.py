"""The Train page's form as plain data: the values a user chose -> a TrainConfig, a run folder.

No Streamlit here, so the rules (which channel combinations a dataset offers, how the options
text is parsed, how often a short run logs, what a run name may be) are tested without a browser:

    form = TrainForm(model="cnn2", dataset="shapes", channels="RG", ...)
    result = build_config(form, as_dataset_info(describe("shapes")))   # .config, .resolved, .problems
    run_dir = run_folder_for(name, runs_root)      # InvalidInputError with the rule, never an OSError
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from core.data import AugmentConfig, DatasetInfo
from core.data.channels import CHANNEL_COMBOS, GRAYSCALE_COMBO
from core.errors import ArchScopeError, InvalidInputError
from core.training.config import TrainConfig
from core.training.run_folder import validate_run_id

RANDOM_COMBO = "random"      # a random combination per batch (the trainer's own name for it)


@dataclass(frozen=True)
class TrainForm:
    """Every value of the Train page's form, as the widgets return them."""

    model: str
    dataset: str
    channels: str
    strategy: str
    image_size: int
    model_options_text: str = "{}"
    max_train: int = 0                  # 0 = every training image
    augment_preset: str = "none"
    denoise: bool = False
    denoise_h: float = 10.0
    normalize: bool = True
    epochs: int = 5
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    scheduler: str = "none"
    seed: int = 0
    loss: str = "ce"
    label_smoothing: float = 0.0
    weight_decay: float = -1.0          # < 0: the optimizer's default


def as_dataset_info(info: DatasetInfo | Mapping[str, Any]) -> DatasetInfo:
    """``core.data.describe``'s answer as a DatasetInfo, whether it is one or its dict form."""
    if isinstance(info, DatasetInfo):
        return info
    size = info.get("image_size")
    return DatasetInfo(name=str(info.get("name", "")), num_classes=int(info.get("num_classes") or 0),
                       classes=[str(c) for c in info.get("classes") or []], channels=int(info.get("channels", 3)),
                       image_size=int((size[0] if isinstance(size, (list, tuple)) else size) or 0),
                       splits=dict(info.get("splits") or {}))


def channel_choices(info: DatasetInfo) -> list[str]:
    """The combinations the form offers for a dataset: L for a grayscale one, else the seven
    colour combinations and 'random'."""
    return [GRAYSCALE_COMBO] if info.channels == 1 else [*CHANNEL_COMBOS, RANDOM_COMBO]


def parse_model_options(text: str) -> dict:
    """The model-options field as a dict; InvalidInputError with an example when it is not a JSON object."""
    try:
        options = json.loads(text or "{}")
    except ValueError as exc:
        raise InvalidInputError(f"Model options must be a JSON object such as {{\"dropout\": 0.1}} ({exc}).") from None
    if not isinstance(options, dict):
        raise InvalidInputError(f"Model options must be a JSON object such as {{\"dropout\": 0.1}} (got {text!r}).")
    return options


def log_every(info: DatasetInfo, max_train: int, batch_size: int) -> int:
    """Steps between two logged losses: short runs log every batch or so, so the live loss curve
    has points after seconds, not epochs (about 20 points per epoch, at most every 10 steps)."""
    n_train = int(max_train) or int(info.splits.get("train") or 10_000)
    steps_per_epoch = max(1, -(-n_train // int(batch_size)))
    return max(1, min(10, steps_per_epoch // 20))


@dataclass(frozen=True)
class FormResult:
    """config: what the form describes (what is launched); resolved: ``config.validate()``'s answer
    with the dataset's defaults filled in, None when it does not validate; problems: messages that
    keep it from launching (empty: it can launch)."""

    config: TrainConfig
    resolved: TrainConfig | None
    problems: list[str]


def build_config(form: TrainForm, info: DatasetInfo) -> FormResult:
    """The TrainConfig the form describes, validated. A bad options text is reported and the config
    built without options, so the rest of the form is still checked."""
    problems: list[str] = []
    try:
        options = parse_model_options(form.model_options_text)
    except InvalidInputError as exc:
        problems.append(str(exc))
        options = {}
    config = TrainConfig(
        model=form.model, model_options=options, dataset=form.dataset, image_size=int(form.image_size),
        channels=form.channels, channel_strategy=form.strategy,
        preprocess={"denoise": True, "h": form.denoise_h, "h_color": form.denoise_h} if form.denoise else {},
        augment=AugmentConfig.preset(form.augment_preset).to_dict() if form.augment_preset != "none" else {},
        normalize=form.normalize, max_train_samples=int(form.max_train) or None, epochs=int(form.epochs),
        batch_size=int(form.batch_size), optimizer=form.optimizer, lr=float(form.lr), scheduler=form.scheduler,
        seed=int(form.seed), loss=form.loss, label_smoothing=float(form.label_smoothing),
        weight_decay=None if form.weight_decay < 0 else float(form.weight_decay), tensorboard=False,
        log_every=log_every(info, form.max_train, form.batch_size),
    )
    try:
        resolved = config.validate()
    except ArchScopeError as exc:         # ConfigError, or a DataError / UnknownModelError it names
        problems.append(str(exc))
        resolved = None
    return FormResult(config, resolved, problems)


def default_run_name(form: TrainForm, now: float | None = None) -> str:
    """model-dataset-channels-MMDD-HHMMSS: unique enough for one user, and readable in the run list."""
    return f"{form.model}-{form.dataset}-{form.channels}-{time.strftime('%m%d-%H%M%S', time.localtime(now))}"


def run_folder_for(name: str, root: Path) -> Path:
    """The run folder ``root/name`` for a new training. Raises InvalidRunIdError (the one run-id rule)
    for a name that cannot be a folder name, InvalidInputError when that folder already exists.
    The name is checked before the file system is touched, so a 300-character name is refused
    with the rule rather than with an OSError."""
    run_dir = Path(root) / validate_run_id(name.strip())
    if run_dir.exists():
        raise InvalidInputError(f"`{run_dir}` already exists. Choose another run name.")
    return run_dir
