"""The Train page's form and run list as plain data: the values a user chose -> a TrainConfig, a
run folder; run folders -> the rows of the run list, in state order.

No Streamlit here, so the rules (the bounds of every number field, which channel combinations a
dataset offers, how the options text is parsed, how often a short run logs, what a run name may
be, which runs may be resumed or deleted) are tested without a browser:

    form = TrainForm(model="cnn2", dataset="shapes", channels="RG", ...)
    result = build_config(form, describe("shapes"))   # .config, .resolved, .problems
    run_dir = run_folder_for(name, runs_root)      # InvalidInputError with the rule, never an OSError
    rows = run_rows(list_runs(root), queue_order=[str(r.path) for r in jobs.queued()])
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from core.data import AugmentConfig, DatasetInfo
from core.data.channels import ALL_COMBO, CHANNEL_COMBOS, GRAYSCALE_COMBO
from core.errors import ArchScopeError, InvalidInputError
from core.training.config import TrainConfig
# RUN_ID_RULE: re-exported for the page's help text.
from core.training.run_folder import RUN_ID_RULE, RunFolder, owner_alive, validate_run_id, waiting_for_slot  # noqa: F401

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
    device: str = "auto"                # auto | cpu | cuda (the job queue picks free GPUs)


class FieldLimit(NamedTuple):
    """A number field of the form: its label and the values it accepts (inclusive)."""

    label: str
    low: float
    high: float


# The one place the number fields' bounds are written. The page gives its number_input widgets no
# min/max of their own on purpose: a value outside a widget's bounds is only flagged red in the
# browser and never sent to the server, so Launch would start the last valid value without a word.
# Without widget bounds every value the form shows reaches field_problems, and Launch is refused
# with the reason.
FIELD_LIMITS: dict[str, FieldLimit] = {
    "image_size": FieldLimit("Image size (px)", 8, 512),
    "max_train": FieldLimit("Max train images (0 = all)", 0, 10_000_000),
    "epochs": FieldLimit("Epochs", 1, 1000),
    "batch_size": FieldLimit("Batch size", 1, 4096),
    "lr": FieldLimit("Learning rate", 1e-6, 10.0),
    "seed": FieldLimit("Seed", 0, 2**31 - 1),
    "label_smoothing": FieldLimit("Label smoothing", 0.0, 0.99),
    "weight_decay": FieldLimit("Weight decay (-1 = default)", -1.0, 1.0),
}
# The TrainConfig field each form field becomes (to leave out config.validate()'s repeat of a problem
# field_problems already reported).
_CONFIG_FIELD = {"max_train": "max_train_samples"}


def field_problems(form: "TrainForm") -> list[str]:
    """One message per number field outside FIELD_LIMITS, naming the field, its value and its range."""
    problems = []
    for name, limit in FIELD_LIMITS.items():
        value = getattr(form, name)
        if not limit.low <= value <= limit.high:
            problems.append(f"{limit.label} is {value:g}: it must be between {limit.low:g} and {limit.high:g}. "
                            "Launch starts exactly what the form shows, so it waits until this is fixed.")
    return problems


def run_name_problem(name: str, root: Path) -> str | None:
    """Why ``name`` cannot name a new run under ``root`` (the run-id rule, or a folder that exists);
    None when it can. Checked while the user types, so Launch is disabled with the reason."""
    try:
        run_folder_for(name, root)
    except InvalidInputError as exc:
        return str(exc)
    return None


def plain_markdown(message: str) -> str:
    """A message from core for st.error/st.markdown, shown as written: markdown characters escaped
    outside `code` spans (the run-id rule's '_' and a path's underscores would become italics)."""
    parts = message.split("`")
    if len(parts) % 2 == 0:               # an unpaired backtick: no code span at all
        parts = [message.replace("`", "'")]
    for i in range(0, len(parts), 2):
        for ch in "\\*_[]<>#|~$":
            parts[i] = parts[i].replace(ch, "\\" + ch)
    return "`".join(parts)


def channel_choices(info: DatasetInfo) -> list[str]:
    """The combinations the form offers for a dataset: L for a grayscale one, the seven colour
    combinations and 'random' for a colour one, ALL (every channel as it is) for any other count
    (e.g. 6-channel image pairs)."""
    if info.channels == 1:
        return [GRAYSCALE_COMBO]
    return [*CHANNEL_COMBOS, RANDOM_COMBO] if info.channels == 3 else [ALL_COMBO]


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
    problems: list[str] = field_problems(form)
    out_of_range = {_CONFIG_FIELD.get(n, n) for n, lim in FIELD_LIMITS.items()
                    if not lim.low <= getattr(form, n) <= lim.high}
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
        device=form.device,
        log_every=log_every(info, form.max_train, form.batch_size),
    )
    # validate() stops at range problems before it looks at the model and the dataset: check a copy
    # with the out-of-range fields at their defaults, so every other problem is reported now too.
    defaults = TrainConfig()
    checked = config.replace(**{f: getattr(defaults, f) for f in out_of_range}) if out_of_range else config
    try:
        resolved = checked.validate()
    except ArchScopeError as exc:         # ConfigError, or a DataError / UnknownModelError it names
        problems.extend(_config_problems(str(exc), out_of_range))
        resolved = None
    if out_of_range:
        resolved = None                   # what the form shows cannot be launched
    return FormResult(config, resolved, problems)


def _config_problems(message: str, already_reported: set[str]) -> list[str]:
    """ConfigError's "invalid training config:\n  - a\n  - b" as one problem per line, without the
    lines about fields field_problems has already reported (one message per mistake)."""
    lines = message.splitlines()
    if len(lines) < 2 or not lines[0].startswith("invalid training config"):
        return [message]
    items = [line.strip()[2:] if line.strip().startswith("- ") else line.strip() for line in lines[1:]]
    return [i for i in items if i and i.split(" ", 1)[0] not in already_reported]


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


# =====================================================================================================
# The run list: state labels, order, what may be done to a run
# =====================================================================================================
# Order of the run list: what is happening now first, then what waits, then what is over.
_STATE_ORDER = {"running": 0, "starting": 1, "queued": 2, "failed": 3, "cancelled": 4, "done": 5}


@dataclass(frozen=True)
class RunRow:
    """One run of the list. state: running | starting (a trainer process launched, not training yet) |
    queued (waiting for a free slot) | done | failed | cancelled | unknown; label: what the user reads."""

    run: RunFolder
    state: str
    label: str
    status: dict
    queue_position: int | None = None   # 1 = next to start

    @property
    def live(self) -> bool:
        """A trainer runs or is about to (Cancel applies, Delete does not)."""
        return self.state in ("running", "starting", "queued")

    @property
    def resumable(self) -> bool:
        """A stopped run with its config: Resume continues from its last completed epoch, or starts a
        run stopped before its first epoch (e.g. cancelled while queued) from epoch 0."""
        return self.state in ("failed", "cancelled") and self.run.config_path.exists()


def run_state(status: dict) -> str:
    """The state the list shows for a status.json (as RunFolder.read_status returns it).

    The launcher writes 'queued' with the trainer's pid before the trainer writes 'running': such a
    run has started and is 'starting', not waiting in the queue (waiting_for_slot tells them apart)."""
    state = str(status.get("state") or "unknown")
    if state == "queued" and not waiting_for_slot(status):
        return "starting" if status.get("pid") else "queued"
    return state if state in _STATE_ORDER else "unknown"


def run_rows(runs: Sequence[RunFolder], queue_order: Sequence[str] = ()) -> list[RunRow]:
    """Runs in the order the Train page lists them: running, starting, queued (in queue order: the
    next to start first), then failed, cancelled and done (most recent first). ``queue_order``: the
    paths of the waiting runs, oldest first (JobRegistry.queued())."""
    position = {str(p): i + 1 for i, p in enumerate(queue_order)}
    rows = []
    for run in runs:
        status = run.read_status()
        state = run_state(status)
        pos = position.get(str(run.path)) if state == "queued" else None
        rows.append(RunRow(run, state, _label(state, status, pos, len(position)), status, pos))

    def key(row: RunRow) -> tuple:
        recent = -float(row.status.get("finished") or row.status.get("updated") or 0)
        return (_STATE_ORDER.get(row.state, 6), row.queue_position or 0, recent, row.run.run_id)

    return sorted(rows, key=key)


def _label(state: str, status: dict, position: int | None, waiting: int) -> str:
    epoch, epochs = status.get("epoch"), status.get("epochs")
    if state == "running":
        return f"running · epoch {epoch or 0}/{epochs}" if epochs else "running"
    if state == "starting":
        return "starting · trainer launched, loading"
    if state == "queued":
        return f"queued · {position} of {waiting} in line" if position else "queued"
    return state


def delete_problem(row: RunRow) -> str | None:
    """Why a run may not be deleted now (None: it may): a live or waiting trainer owns it."""
    if row.live:
        return f"`{row.run.run_id}` is {row.state}: cancel it first."
    pid, host = row.run.lock_holder()
    if pid and owner_alive(pid, host):
        return f"`{row.run.run_id}` is locked by trainer process {pid}: cancel it first."
    return None


def delete_run(row: RunRow, root: Path) -> None:
    """Delete a stopped run's folder. Raises InvalidInputError when a trainer owns it or when the
    folder is not a run folder directly under ``root`` (never deletes anything else)."""
    problem = delete_problem(row)
    if problem:
        raise InvalidInputError(problem)
    path = row.run.path
    if path.resolve().parent != Path(root).resolve() or path.is_symlink() or not path.is_dir():
        raise InvalidInputError(f"`{path}` is not a run folder of {root}; nothing deleted")
    shutil.rmtree(path)


# =====================================================================================================
# Dataset preview: sample images of each class as the model will see them
# =====================================================================================================
@dataclass(frozen=True)
class ClassPreview:
    """The preview of one class: ``image`` uint8 [H, W, 3] (or [H, W] grey), ``per_class`` samples
    side by side, and ``combos``: the channel combination of each sample (one for all but 'random')."""

    name: str
    image: Any
    combos: tuple[str, ...]


def preview_note(channels: str, strategy: str, source_channels: int) -> str:
    """What the preview shows, in words: how the combination and strategy turn into pixels."""
    if source_channels not in (1, 3):
        return (f"{source_channels}-channel images: each group of 3 channels is shown as its own picture, "
                "side by side.")
    if channels == GRAYSCALE_COMBO:
        return "Grayscale: the model gets this one channel."
    if channels == RANDOM_COMBO:
        return (f"'random': every batch uses one combination, drawn anew; here each column shows another, with "
                f"strategy {strategy}.")
    if channels == "RGB":
        return "RGB: the model gets the three channels unchanged."
    missing = "".join(c for c in "RGB" if c not in channels)
    return {
        "drop": (f"drop: the model gets only {', '.join(channels)} ({len(channels)} channel(s)); "
                 + ("shown as grey." if len(channels) == 1 else f"shown with {missing} black (it does not exist "
                                                              "for the model).")),
        "zero-fill": f"zero-fill: {missing} set to 0 after normalisation, i.e. to the dataset's mean value of "
                     f"{missing} (0 without normalisation: black).",
        "mean-fill": f"mean-fill: {missing} filled, per pixel, with the mean of {', '.join(channels)}.",
        "sigmoid-fill": f"sigmoid-fill: {missing} filled with sigmoid(mean of {', '.join(channels)} - "
                        f"{3 - len(channels)}) (seed 001 method 2).",
    }.get(strategy, strategy)


def preview_images(config: TrainConfig, per_class: int = 6, scale_to: int = 64) -> list[ClassPreview]:
    """The first ``per_class`` training images of each class, through the model's input pipeline
    (core.data.loader.to_model_input: resize, normalisation from the train split, channel
    combination and strategy; no augmentation, no denoising) and back to pixels (de-normalised,
    clipped to 0..255). Each image is enlarged (nearest neighbour) to at least ``scale_to`` px.

    ``config`` must be validated (channels resolved). Raises DataError when the dataset cannot be loaded.
    """
    import numpy as np
    import torch

    from core.data import combos_for, compute_normalization
    from core.data.loader import to_model_input
    from core.training.run_info import load_dataset_for

    data = load_dataset_for(config.replace(preprocess={}))
    train = data.train
    source_channels = int(train.images.shape[1])
    normalize = compute_normalization(train) if config.normalize else None
    combos = combos_for(source_channels)
    out = []
    for index, name in enumerate(data.info.classes):
        picked = torch.nonzero(train.labels == index).flatten()[:per_class]
        if len(picked) == 0:
            continue
        used = tuple(combos[i % len(combos)] if config.channels == RANDOM_COMBO else config.channels
                     for i in range(len(picked)))
        tiles = [_as_pixels(to_model_input(train.images[i:i + 1], channels=combo, strategy=config.channel_strategy,
                                           normalize=normalize), combo, config.channel_strategy, normalize)
                 for i, combo in zip(picked.tolist(), used)]
        if len({t.ndim for t in tiles}) > 1:      # 'random' with drop: grey tiles next to colour ones
            tiles = [t if t.ndim == 3 else np.repeat(t[:, :, None], 3, axis=2) for t in tiles]
        factor = max(1, -(-scale_to // tiles[0].shape[0]))
        tiles = [t.repeat(factor, 0).repeat(factor, 1) for t in tiles]
        gap = np.full((tiles[0].shape[0], 2, *tiles[0].shape[2:]), 255, dtype=np.uint8)
        row = [part for t in tiles for part in (t, gap)][:-1]
        out.append(ClassPreview(str(name), np.concatenate(row, axis=1), used))
    return out


def _as_pixels(x: Any, combo: str, strategy: str, normalize: Any) -> Any:
    """One model input float [1, C', H, W] -> uint8 [H, W, 3] (or [H, W] for one channel): the
    normalisation undone per source channel; a 'drop' pair of channels is put back in its RGB places
    (the missing one black); 6 channels (image pairs) -> the two RGB images side by side."""
    import numpy as np
    import torch

    from core.data.channels import ALL_COMBO, combo_indices

    x = x[0].double()
    c = int(x.shape[0])
    if combo == ALL_COMBO or combo == GRAYSCALE_COMBO or strategy != "drop" or combo == "RGB":
        sources = list(range(c))          # output channel i is source channel i
    else:
        sources = combo_indices(combo)
    if normalize is not None:
        mean = torch.tensor(normalize[0], dtype=torch.float64)[sources].view(-1, 1, 1)
        std = torch.tensor(normalize[1], dtype=torch.float64)[sources].view(-1, 1, 1)
        x = x * std + mean
    pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    if c == 1:
        return pixels[0]
    if combo == ALL_COMBO and c % 3 == 0 and c > 3:
        return np.concatenate([pixels[i:i + 3].transpose(1, 2, 0) for i in range(0, c, 3)], axis=1)
    if c == 3:
        return pixels.transpose(1, 2, 0)
    rgb = np.zeros((3, *pixels.shape[1:]), dtype=np.uint8)
    rgb[sources] = pixels
    return rgb.transpose(1, 2, 0)
