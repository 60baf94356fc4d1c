"""TrainConfig round trips and every invalid config is refused before any work (exit 2)."""

import json

import pytest

from core.train import main as train_main
from core.training.config import ConfigError, TrainConfig


def test_round_trip_and_unknown_keys(tmp_path):
    cfg = TrainConfig(model="cnn3", channels="RG", augment="crop-flip", model_options={"dropout": 0.1})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    path = tmp_path / "c.json"
    path.write_text(json.dumps({**cfg.to_dict(), "run": {"device": "cpu"}}))   # a config.json
    assert TrainConfig.from_json(path) == cfg
    with pytest.raises(ConfigError, match="unknown key.*'epoch'"):
        TrainConfig.from_dict({"epoch": 3})
    path.write_text("{broken")
    with pytest.raises(ConfigError, match="c.json: not valid JSON"):
        TrainConfig.from_json(path)


def test_validate_resolves_channels_by_source():
    assert TrainConfig(dataset="shapes").validate().channels == "RGB"
    assert TrainConfig(dataset="fashion-mnist").validate().channels == "L"
    assert TrainConfig(weight_decay=None, optimizer="sgd").resolved_weight_decay() == 5e-4


@pytest.mark.parametrize("flags, message", [
    (["--model", "no_such_net"], "unknown model 'no_such_net'"),
    (["--dataset", "no_such_data"], "unknown data source 'no_such_data'"),
    (["--channels", "L"], "'L' is not one of its combinations"),
    (["--dataset", "fashion-mnist", "--channels", "RG"], "greyscale"),
    (["--channels", "RGBX"], "channels must be one of"),
    (["--epochs", "0"], "epochs must be >= 1"),
    (["--channels", "random", "--channel-strategy", "drop"], "fixed number of input channels"),
    (["--lr", "-1"], "lr must be > 0"),
    (["--augment", '{"flip_everything": true}'], "unknown augmentation option"),
    (["--image-size", "16"], "at least 28 px"),
    (["--model-options", '{"depth": 7}'], "has no option(s) 'depth'"),
])
def test_invalid_config_exit_2_nothing_written(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    code = train_main(["--model", "cnn2", "--dataset", "shapes", "--out", str(out), "--quiet", *flags])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_config_file_plus_overrides(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": "cnn2", "epochs": 0}))
    assert train_main(["--config", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "epochs must be >= 1" in capsys.readouterr().err
    path.write_text(json.dumps({"model": "cnn2", "epochz": 1}))
    assert train_main(["--config", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "unknown key(s) 'epochz'" in capsys.readouterr().err


def test_imagefolder_path_dataset_validates(tmp_path):
    # "KIND:PATH" sources are not in list_sources() verbatim; validation must still accept them.
    from PIL import Image

    for cls, colour in (("a", (200, 0, 0)), ("b", (0, 200, 0))):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (12, 12), colour).save(tmp_path / "train" / cls / f"{i}.png")
    cfg = TrainConfig(model="cnn2", dataset=f"imagefolder:{tmp_path}").validate()
    assert cfg.channels == "RGB"
