"""core.training.run_info: config.json's run section read once, typed, with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import core.data
from core.training.checkpoint import CheckpointError
from core.training.config import TrainConfig
from core.training.run_info import RunInfo, load_run_dataset, read_run_info, run_info_from_dict

SHIPPED = Path(__file__).resolve().parents[3] / "checkpoints"


def write(tmp_path: Path, run: dict | None, **config) -> Path:
    cfg = TrainConfig(model="cnn2", dataset="shapes", **config).to_dict()
    if run is not None:
        cfg["run"] = run
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


@pytest.mark.parametrize("run_id", ["chan-cnn3-zf-rg", "ciresan-residual-fc2", "transform-cnn3-pairs-s0",
                                    "chan-pca_cnn-random-s0", "probe-cnn3-probe-s0"])
def test_shipped_runs_read_into_typed_fields(run_id):
    config, info = read_run_info(SHIPPED / run_id)
    raw = json.loads((SHIPPED / run_id / "config.json").read_text())["run"]
    assert isinstance(config, TrainConfig) and isinstance(info, RunInfo)
    assert info.num_classes == raw["num_classes"] == len(info.classes) and info.class_names == raw["classes"]
    assert info.in_channels == raw["in_channels"] and info.source_channels == raw["source_channels"]
    assert info.image_size == raw["image_size"] and info.eval_channels == raw["eval_channels"]
    assert info.normalize == (tuple(raw["normalize_mean"]), tuple(raw["normalize_std"]))
    assert info.n_train == raw["n_train"] and info.world_size == raw["world_size"]
    assert info.headline_channels(config) == raw["eval_channels"]


def test_old_run_without_optional_fields_gets_unknown_defaults(tmp_path):
    config, info = read_run_info(write(tmp_path, {"num_classes": 3, "in_channels": 1}, channels="random"))
    assert info.classes == () and info.class_names == ["class 0", "class 1", "class 2"]
    assert info.source_channels is None and info.image_size is None and info.normalize is None
    assert info.eval_channels is None and info.n_train is None and info.world_size == 1 and info.versions == {}
    assert info.headline_channels(config) == "RGB"                       # random: every channel
    assert run_info_from_dict({"num_classes": 2, "in_channels": 1, "source_channels": 1}).headline_channels(
        config) == "L"


def test_missing_or_corrupt_config_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"config.json: missing"):
        read_run_info(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config.json: cannot be read as JSON"):
        read_run_info(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"config.json: does not hold a JSON object"):
        read_run_info(tmp_path)
    with pytest.raises(CheckpointError, match=r"config.json: has no 'run' section"):
        read_run_info(write(tmp_path, None))


@pytest.mark.parametrize("run, message", [
    ({"num_classes": "many", "in_channels": 3}, r"run.num_classes = 'many'"),
    ({"num_classes": 0, "in_channels": 3}, "positive integers"),
    ({"num_classes": 2, "in_channels": 3, "classes": ["a", "b", "c"]}, "3 names but run.num_classes is 2"),
    ({"num_classes": 2, "in_channels": 3, "normalize_mean": [0.5], "normalize_std": None}, "same length"),
    ({"num_classes": 2, "in_channels": 3, "normalize_mean": [0.5], "normalize_std": [0.0]}, "positive"),
    ({"num_classes": 2, "in_channels": 3, "normalize_mean": "0.5", "normalize_std": [0.2]}, "run.normalize_mean"),
])
def test_bad_run_fields_are_clear_errors(tmp_path, run, message):
    with pytest.raises(CheckpointError, match=message) as err:
        read_run_info(write(tmp_path, run))
    assert "config.json" in str(err.value)


def test_unknown_training_key_is_a_checkpoint_error(tmp_path):
    path = write(tmp_path, {"num_classes": 2, "in_channels": 3})
    data = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**data, "lr_typo": 1}))
    with pytest.raises(CheckpointError, match="lr_typo"):
        read_run_info(path)


def test_load_run_dataset_passes_everything_the_trainer_used(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(core.data, "load_dataset", lambda name, **kw: calls.append((name, kw)) or "dataset")
    run = write(tmp_path, {"num_classes": 2, "in_channels": 3}, image_size=24, data_root="/data/here", seed=7,
                max_train_samples=100, preprocess={"denoise": True, "h": 5.0})
    assert load_run_dataset(run) == "dataset"
    (name, kw), = calls
    assert name == "shapes" and kw["image_size"] == 24 and kw["root"] == "/data/here" and kw["seed"] == 7
    assert kw["max_train_samples"] == 100
    assert kw["preprocess"].denoise and kw["preprocess"].h == 5.0


@pytest.mark.slow
def test_load_run_dataset_of_a_shipped_run_has_its_recorded_sizes():
    _, info = read_run_info(SHIPPED / "chan-cnn3-zf-rg")
    data = load_run_dataset(SHIPPED / "chan-cnn3-zf-rg")
    assert (len(data.train), len(data.val), len(data.test)) == (info.n_train, info.n_val, info.n_test)
    assert tuple(data.test.images.shape[1:]) == (info.source_channels, info.image_size, info.image_size)
