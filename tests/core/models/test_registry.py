"""The registry and its CLI: ``python -m core.models [NAME ...] [--json]``."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

from core.models import registry
from core.models.__main__ import main
from core.models.registry import UnknownModelError, create_model, get_spec, list_models, register_model

REPO = Path(__file__).resolve().parents[3]


def test_every_spec_documents_itself_and_its_options_match_the_factory():
    for spec in list_models():
        assert spec.description.strip() and spec.source.strip(), spec.name
        assert set(spec.in_channels) <= {1, 2, 3, 6} and spec.in_channels, spec.name   # 6: stacked image pairs
        assert 1 <= spec.min_input_size <= 28, spec.name
        params = inspect.signature(spec.factory).parameters
        assert "num_classes" in params and "in_channels" in params, spec.name
        for option, default in spec.options.items():
            assert option in params, f"{spec.name}: documented option {option!r} is not a factory argument"
            assert params[option].default == default, f"{spec.name}: {option} default differs from the listing"


def _assert_lists_every_model(text: str) -> None:
    lines = text.splitlines()
    for spec in list_models():
        i = next((i for i, ln in enumerate(lines) if ln.startswith(spec.name + " ")), None)
        assert i is not None, f"{spec.name} not listed"
        assert spec.description in lines[i]
        assert f"source: {spec.source}" in lines[i + 1]
    assert f"{len(list_models())} models" in text


def test_cli_text_lists_every_model_with_description_and_source(capsys):
    assert main([]) == 0
    _assert_lists_every_model(capsys.readouterr().out)


@pytest.mark.slow  # a fresh interpreter importing torch + torchvision: 5-15 s on a shared CPU
def test_python_dash_m_core_models_entry_point():
    proc = subprocess.run([sys.executable, "-m", "core.models"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    _assert_lists_every_model(proc.stdout)
    bad = subprocess.run([sys.executable, "-m", "core.models", "nope"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "unknown model 'nope'" in bad.stderr


def test_cli_json(capsys):
    assert main(["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [s.name for s in list_models()]
    row = next(r for r in rows if r["name"] == "dyconv_resnet18")
    assert row["variable_input"] is True and row["in_channels"] == [1, 2, 3]
    assert row["options"]["num_kernels"] == 4
    assert all(r["description"] and r["source"] for r in rows)


def test_cli_selected_names_and_unknown_name(capsys):
    assert main(["cnn3", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["cnn3"]
    assert main(["cnn33"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'cnn33'" in err and "cnn3" in err


def test_unknown_model_message_lists_known_models():
    with pytest.raises(UnknownModelError) as info:
        create_model("resnet19", num_classes=10)
    msg = str(info.value)
    assert msg.startswith("unknown model 'resnet19'") and "resnet18" in msg


@pytest.mark.parametrize("in_channels", [0, 4])
def test_bad_in_channels_message(in_channels):
    with pytest.raises(ValueError, match=rf"'cnn2' accepts in_channels in \(1, 2, 3\), got {in_channels}"):
        create_model("cnn2", num_classes=10, in_channels=in_channels)


def test_zero_classes_message():
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        create_model("cnn2", num_classes=0)


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match="pretrained"):
        create_model("cnn3", num_classes=10, pretrained=True)


def test_registering_a_new_model_is_one_decorator():
    try:
        @register_model("tmp_linear_probe", "test-only model", source="test", in_channels=(1,))
        def tmp(num_classes: int, in_channels: int = 1) -> nn.Module:
            return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

        assert get_spec("tmp_linear_probe").in_channels == (1,)
        assert isinstance(create_model("tmp_linear_probe", num_classes=2, in_channels=1), nn.Sequential)
        with pytest.raises(ValueError, match="accepts in_channels in \\(1,\\)"):
            create_model("tmp_linear_probe", num_classes=2, in_channels=3)
        with pytest.raises(ValueError, match="registered twice"):
            register_model("tmp_linear_probe", "again", source="test")(lambda num_classes, in_channels: None)
    finally:
        registry._REGISTRY.pop("tmp_linear_probe", None)


def test_options_are_read_from_the_factory_signature():
    def factory(num_classes: int, in_channels: int = 3, width: int = 16, *, gated: bool = False, **extra) -> nn.Module:
        return nn.Identity()

    assert registry.factory_options(factory) == {"width": 16, "gated": False}
    assert get_spec("dyconv_resnet18").options == {"small_input": False, "num_kernels": 4, "temperature": 1.0}


def test_an_option_without_default_is_refused_at_registration():
    def factory(num_classes: int, in_channels: int, depth: int) -> nn.Module:
        return nn.Identity()

    with pytest.raises(TypeError, match="option 'depth' needs a default"):
        register_model("tmp_no_default", "test-only model", source="test")(factory)
    assert "tmp_no_default" not in registry._REGISTRY
