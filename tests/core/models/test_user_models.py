"""Students' model files (ARCHSCOPE_MODELS): registered like built-ins, broken files named and skipped."""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
from pathlib import Path

import pytest
import torch

from core.models import registry, user_models
from core.models.__main__ import main
from core.models.registry import UnknownModelError, create_model, get_spec, list_models

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "models" / "fashion_tf_tutorial.py"

GOOD = '''
from torch import nn
from core.models import register_model


@register_model("{name}", "a student's model", source="test")
def {name}(num_classes: int, in_channels: int = 3, width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))
'''


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def load(monkeypatch):
    """Set ARCHSCOPE_MODELS to the given paths and load them; every user model is forgotten afterwards."""
    def _load(*paths: Path) -> list[str]:
        monkeypatch.setenv(user_models.ENV_VAR, os.pathsep.join(str(p) for p in paths))
        return [str(p) for p in registry.reload_user_models()]

    yield _load
    monkeypatch.delenv(user_models.ENV_VAR, raising=False)
    registry.reload_user_models()


def test_example_registers_with_its_file_and_hand_counted_parameters(load, capsys):
    assert load(EXAMPLE) == []
    spec = get_spec("fashion_tf_tutorial")
    assert spec.source_file == str(EXAMPLE.resolve())
    assert spec.source_sha256 == hashlib.sha256(EXAMPLE.read_text().encode()).hexdigest()
    assert spec.options == {"dropout": 0.4} and spec.in_channels == (1,)
    model = create_model("fashion_tf_tutorial", num_classes=10, in_channels=1)
    assert sum(p.numel() for p in model.parameters()) == 3_274_634
    import sys
    module = next(m for n, m in sys.modules.items() if n.startswith("archscope_user_model_fashion_tf_tutorial"))
    assert module.HAND_COUNTED_PARAMETERS == 3_274_634
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert main([]) == 0
    out = capsys.readouterr().out
    assert f"file: {EXAMPLE.resolve()}" in out and "fashion_tf_tutorial" in out
    assert main(["fashion_tf_tutorial", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["source_file"] == str(EXAMPLE.resolve())
    assert get_spec("cnn3").source_file is None            # built-ins say so


def test_a_folder_loads_every_py_file_but_private_ones(load, tmp_path):
    write(tmp_path, "mine.py", GOOD.format(name="mine_a"))
    write(tmp_path, "_helper.py", "raise RuntimeError('not a model file')")
    assert load(tmp_path, tmp_path / "mine.py") == []          # named twice, loaded once
    assert get_spec("mine_a").source_file == str((tmp_path / "mine.py").resolve())


def test_syntax_error_is_named_with_its_line_and_the_others_stay(load, tmp_path, capsys):
    good = write(tmp_path, "good.py", GOOD.format(name="good_model"))
    bad = write(tmp_path, "bad.py", "from torch import nn\n\ndef broken(:\n    pass\n")
    problems = load(good, bad)
    assert len(problems) == 1 and f"{bad.resolve()} line 3: SyntaxError" in problems[0]
    assert get_spec("good_model") and get_spec("cnn3")
    assert main([]) == 2
    captured = capsys.readouterr()
    assert "good_model" in captured.out and "cnn3" in captured.out
    assert captured.err.strip() == f"error: {problems[0]}"


def test_exception_at_import_unregisters_the_files_models(load, tmp_path):
    bad = write(tmp_path, "half.py", GOOD.format(name="half_done") + "\nraise RuntimeError('forgot a weight file')\n")
    problems = load(bad)
    assert len(problems) == 1
    assert f"{bad.resolve()} line 11: RuntimeError: forgot a weight file" in problems[0]
    with pytest.raises(UnknownModelError, match="half_done.*failed to load.*forgot a weight file"):
        get_spec("half_done")


def test_two_files_with_one_name_and_a_builtin_name(load, tmp_path):
    first = write(tmp_path, "first.py", GOOD.format(name="same_name"))
    second = write(tmp_path, "second.py", GOOD.format(name="same_name"))
    clash = write(tmp_path, "clash.py", GOOD.format(name="cnn3"))
    problems = load(first, second, clash)
    assert len(problems) == 2
    assert (f"{second.resolve()} line 6: DuplicateModelError: model 'same_name' registered twice: "
            f"already by {first.resolve()}, again by {second.resolve()}") in problems[0]
    assert "model 'cnn3' registered twice: already by built-in core.models.baselines" in problems[1]
    assert get_spec("same_name").source_file == str(first.resolve())
    assert get_spec("cnn3").source_file is None


def test_paths_that_do_not_exist_or_are_not_python(load, tmp_path):
    text = write(tmp_path, "notes.txt", "hello")
    problems = load(tmp_path / "missing.py", text)
    assert problems == [f"ARCHSCOPE_MODELS: {tmp_path / 'missing.py'}: no such file or folder",
                        f"ARCHSCOPE_MODELS: {text}: not a .py file or a folder"]
    assert len(list_models()) == len([s for s in list_models() if s.source_file is None])


def test_builtin_registration_twice_is_still_refused():
    with pytest.raises(registry.DuplicateModelError, match="registered twice"):
        registry.register_model("cnn3", "again", source="test")(lambda num_classes, in_channels=3: None)
