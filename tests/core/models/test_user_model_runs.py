"""A student's model file (ARCHSCOPE_MODELS) through every command: train, evaluate, predict,
complexity, suite; the run records its model file; broken models are named before training starts.

Each CLI is called in this process (``main(argv)`` returns the exit code), except the suite, which
starts its own ``python -m core.train`` child: that child must find the model through the
environment too.
"""

from __future__ import annotations

import json
import os
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from core import complexity, evaluate, predict, suite, train
from core.models import registry, user_models
from core.models.registry import check_user_model, get_spec
from core.models.user_models import UserModelError
from core.training.checkpoint import ModelSourceChangedWarning, load_run_model, model_source_warning
from core.training.config import TrainConfig
from core.training.run_info import CheckpointError, model_source_section, read_run_info

STUDENT = '''
from torch import nn
from core.models import register_model


@register_model("student_net", "a student's two-conv net", source="test course")
def student_net(num_classes: int, in_channels: int = 3, width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
'''

# One file, one bad model each (and a good one): a broken model must not take the others down.
BROKEN = '''
from torch import nn
from core.models import register_model


@register_model("raises_at_build", "raises in its function", source="test")
def raises_at_build(num_classes: int, in_channels: int = 3) -> nn.Module:
    raise ValueError("width must be even")  # MARK build


class FixedSize(nn.Module):
    """Three input channels and 28x28 images written into the layers."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 26 * 26, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))  # MARK forward


@register_model("fixed_size", "a dense layer sized for 28x28 RGB", source="test")
def fixed_size(num_classes: int, in_channels: int = 3) -> nn.Module:
    return FixedSize(num_classes)


@register_model("wrong_output", "seven outputs whatever the classes", source="test")  # MARK output
def wrong_output(num_classes: int, in_channels: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 7))


class ViewNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 32 * 32, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).view(x.size(0), -1))  # MARK view


@register_model("view_net", "flattens with .view (fails on channels-last tensors)", source="test")
def view_net(num_classes: int, in_channels: int = 3) -> nn.Module:
    return ViewNet(num_classes, in_channels)


@register_model("fine_net", "works", source="test")
def fine_net(num_classes: int, in_channels: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))
'''

TINY = ["--dataset", "shapes", "--image-size", "32", "--max-train-samples", "64", "--epochs", "1",
        "--quiet", "--no-tensorboard", "--num-threads", "1"]

def line_of(text: str, mark: str) -> int:
    """1-based line of the line holding ``# MARK <mark>`` in a file written from ``text``."""
    lines = textwrap.dedent(text).splitlines()
    return next(i for i, line in enumerate(lines, start=1) if f"# MARK {mark}" in line)


@pytest.fixture(autouse=True, scope="module")
def _private_data_cache(tmp_path_factory):
    """A private dataset cache (as tests/core/training/conftest.py): no other session regenerates it."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ARCHSCOPE_CACHE", str(tmp_path_factory.mktemp("archscope-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("student-models")
    out = {}
    for name, text in (("student", STUDENT), ("broken", BROKEN)):
        out[name] = folder / f"{name}.py"
        out[name].write_text(textwrap.dedent(text))
    return out


def use_models(*paths: Path) -> list[str]:
    """ARCHSCOPE_MODELS = ``paths`` for this process and its children, loaded now; the problems."""
    os.environ[user_models.ENV_VAR] = os.pathsep.join(str(p) for p in paths)
    return [str(p) for p in registry.reload_user_models()]


@pytest.fixture(autouse=True)
def _forget_models():
    """Every test sets ARCHSCOPE_MODELS itself; afterwards only the built-ins are registered."""
    old = os.environ.get(user_models.ENV_VAR)
    yield
    if old is None:
        os.environ.pop(user_models.ENV_VAR, None)
    else:
        os.environ[user_models.ENV_VAR] = old
    registry.reload_user_models()


@pytest.fixture(scope="module")
def student_run(files, tmp_path_factory) -> Path:
    """One epoch of student_net on 64 shapes images, trained through ``python -m core.train``'s main."""
    run_dir = tmp_path_factory.mktemp("runs") / "student"
    old = os.environ.get(user_models.ENV_VAR)
    try:
        assert use_models(files["student"]) == []
        assert train.main(["--model", "student_net", *TINY, "--out", str(run_dir)]) == 0
    finally:
        if old is None:
            os.environ.pop(user_models.ENV_VAR, None)
        registry.reload_user_models()
    return run_dir


def image_file(folder: Path) -> Path:
    path = folder / "red.png"
    Image.new("RGB", (40, 40), (220, 30, 30)).save(path)
    return path


# ---- every command takes a user model --------------------------------------------------------
def test_train_one_epoch_of_a_user_model(student_run):
    status = json.loads((student_run / "status.json").read_text())
    assert status["state"] == "done"
    config, info = read_run_info(student_run)
    assert config.model == "student_net" and info.num_classes == 12 and info.image_size == 32
    assert (student_run / "model.safetensors").is_file()


def test_the_run_records_its_model_file_and_its_sha256(student_run, files):
    _, info = read_run_info(student_run)
    assert info.model_source is not None
    assert info.model_source.file == str(files["student"].resolve())
    import hashlib
    assert info.model_source.sha256 == hashlib.sha256(files["student"].read_bytes()).hexdigest()


def test_model_source_section_is_empty_for_a_builtin(files):
    use_models(files["student"])
    assert model_source_section("cnn3") == {}
    section = model_source_section("student_net")["model_source"]
    assert section == {"file": get_spec("student_net").source_file, "sha256": get_spec("student_net").source_sha256}


def test_evaluate_a_user_model_run(student_run, files, tmp_path, capsys):
    use_models(files["student"])
    assert evaluate.main([str(student_run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["test_acc"] <= 1.0 and result["n_test"] > 0


def test_predict_an_image_with_a_user_model_run(student_run, files, tmp_path, capsys):
    use_models(files["student"])
    assert predict.main([str(student_run), str(image_file(tmp_path)), "--json", "--top-k", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    text = json.dumps(out)
    assert "red.png" in text
    _, info = read_run_info(student_run)
    assert any(name in text for name in info.classes)


def test_complexity_of_a_user_model(files, capsys):
    use_models(files["student"])
    assert complexity.main(["student_net", "--input", "3,32,32", "--classes", "12", "--json",
                            "--no-cross-check"]) == 0
    report = json.loads(capsys.readouterr().out)
    model = registry.create_model("student_net", num_classes=12, in_channels=3)
    assert json.dumps(report).count(str(sum(p.numel() for p in model.parameters()))) >= 1


def test_suite_trains_a_user_model_in_its_child_process(files, tmp_path, capsys):
    use_models(files["student"])     # the suite's `python -m core.train` child inherits ARCHSCOPE_MODELS
    suite_file = tmp_path / "mine.json"
    suite_file.write_text(json.dumps({
        "name": "mine", "description": "a student's model in a suite",
        "defaults": {"dataset": "shapes", "image_size": 32, "max_train_samples": 64, "epochs": 1,
                     "tensorboard": False, "num_threads": 1},
        "runs": [{"id": "student-a", "group": "mine", "note": "user model", "config": {"model": "student_net"}}],
    }))
    assert suite.main([str(suite_file), "--runs-root", str(tmp_path / "runs")]) == 0
    status = json.loads((tmp_path / "runs" / "student-a" / "status.json").read_text())
    assert status["state"] == "done"
    assert (tmp_path / "runs" / "student-a" / "eval.json").is_file()


def test_every_example_model_file_loads_runs_and_trains():
    """examples/models as a folder: no problem, and each model passes the pre-training check at its
    smallest size and every channel count it accepts, and gives every parameter a gradient."""
    folder = Path(__file__).resolve().parents[3] / "examples" / "models"
    assert use_models(folder) == []
    examples = [s for s in registry.list_models() if s.source_file]
    assert {Path(s.source_file).name for s in examples} == {p.name for p in folder.glob("*.py")}
    for spec in examples:
        for channels in spec.in_channels:
            check_user_model(spec.name, num_classes=5, in_channels=channels, image_size=spec.min_input_size,
                             channels_last=True)
        model = registry.create_model(spec.name, num_classes=5, in_channels=spec.in_channels[-1])
        x = torch.randn(2, spec.in_channels[-1], spec.min_input_size, spec.min_input_size)
        model(x).square().mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters()), spec.name


# ---- broken models: named before training, the others stay ------------------------------------
def test_a_function_that_raises_is_named_with_file_and_line(files):
    use_models(files["broken"])
    with pytest.raises(UserModelError) as exc:
        registry.create_model("raises_at_build", num_classes=12, in_channels=3)
    where = f"{files['broken'].resolve()} line {line_of(BROKEN, 'build')}"
    assert f"{where}: model 'raises_at_build': building it (num_classes=12, in_channels=3) failed: " \
           f"ValueError: width must be even" in str(exc.value)
    assert registry.create_model("fine_net", num_classes=12, in_channels=3) is not None


@pytest.mark.parametrize("name, channels, size, mark, expected", [
    ("fixed_size", 3, 32, "forward", "forward on a batch of 2 images 3x32x32 (C x H x W) in train mode failed: "
                                     "RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
    ("fixed_size", 2, 28, "forward", "forward on a batch of 2 images 2x28x28 (C x H x W) in train mode failed: "
                                     "RuntimeError: Given groups=1, weight of size [4, 3, 3, 3], expected input"),
    ("wrong_output", 3, 32, "output", "forward on a batch of 2 images 3x32x32 (C x H x W) returned [2, 7]; "
                                      "a classifier must return logits [batch, num_classes] = [2, 12]"),
])
def test_check_user_model_names_file_line_and_model(files, name, channels, size, mark, expected):
    use_models(files["broken"])
    check_user_model("fixed_size", num_classes=12, in_channels=3, image_size=28)     # the size it was made for
    with pytest.raises(UserModelError) as exc:
        check_user_model(name, num_classes=12, in_channels=channels, image_size=size)
    assert f"{files['broken'].resolve()} line {line_of(BROKEN, mark)}: model {name!r}: {expected}" in str(exc.value)


def test_check_user_model_catches_a_view_on_channels_last(files):
    use_models(files["broken"])
    check_user_model("view_net", num_classes=12, in_channels=3, image_size=32)       # NCHW: fine
    with pytest.raises(UserModelError, match=rf"line {line_of(BROKEN, 'view')}: model 'view_net': .*"
                                             r"channels-last memory layout the trainer uses"):
        check_user_model("view_net", num_classes=12, in_channels=3, image_size=32, channels_last=True)


def test_check_user_model_leaves_builtins_alone():
    check_user_model("cnn3", num_classes=12, in_channels=3, image_size=32)   # no forward for a built-in


@pytest.mark.parametrize("name, flags, mark, expected", [
    ("raises_at_build", [], "build", "building it"),
    ("fixed_size", [], "forward", "mat1 and mat2 shapes cannot be multiplied"),
    ("fixed_size", ["--channels", "RG", "--image-size", "28"], "forward", "weight of size [4, 3, 3, 3]"),
    ("wrong_output", [], "output", "returned [2, 7]"),
])
def test_train_refuses_a_broken_model_before_any_work(files, tmp_path, capsys, name, flags, mark, expected):
    use_models(files["broken"], files["student"])
    argv = ["--model", name, *TINY, "--out", str(tmp_path / "run"), *flags]
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{files['broken'].resolve()} line {line_of(BROKEN, mark)}: model {name!r}" in err and expected in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()          # nothing written
    assert get_spec("student_net") and get_spec("fine_net")   # the other models stay


def test_complexity_of_a_broken_model_exits_2_naming_the_file(files, capsys):
    use_models(files["broken"])
    assert complexity.main(["raises_at_build", "--input", "3,32,32", "--classes", "12"]) == 2
    err = capsys.readouterr().err
    assert f"{files['broken'].resolve()} line {line_of(BROKEN, 'build')}: model 'raises_at_build'" in err
    assert complexity.main(["fine_net", "--input", "3,32,32", "--classes", "12", "--no-cross-check"]) == 0


# ---- loading a run later: its model file must be loaded, and unchanged ---------------------------
def copy_run(run_dir: Path, to: Path, model_file: Path | None = None) -> Path:
    """A copy of ``run_dir``; with ``model_file``, its config.json records that file (what the trainer writes)."""
    to.mkdir(parents=True)
    for f in run_dir.iterdir():
        if f.is_file():
            (to / f.name).write_bytes(f.read_bytes())
    if model_file is not None:
        import hashlib
        config = json.loads((to / "config.json").read_text())
        config["run"]["model_source"] = {"file": str(model_file.resolve()),
                                         "sha256": hashlib.sha256(model_file.read_bytes()).hexdigest()}
        (to / "config.json").write_text(json.dumps(config))
    return to


def test_a_run_whose_model_file_is_not_loaded_names_the_file(student_run, files, tmp_path, capsys):
    run = copy_run(student_run, tmp_path / "run", files["student"])
    use_models()                                          # ARCHSCOPE_MODELS empty
    with pytest.raises(CheckpointError) as exc:
        load_run_model(run)
    assert (f"model 'student_net' of this run comes from the model file {files['student'].resolve()}"
            in str(exc.value))
    assert f"add that file to ARCHSCOPE_MODELS (e.g. ARCHSCOPE_MODELS={files['student'].resolve()})" in str(exc.value)
    assert evaluate.main([str(run)]) == 1
    assert "add that file to ARCHSCOPE_MODELS" in capsys.readouterr().err
    assert predict.main([str(run), str(image_file(tmp_path))]) == 1
    assert "add that file to ARCHSCOPE_MODELS" in capsys.readouterr().err


def test_a_run_without_a_model_record_still_hints_at_archscope_models(student_run, tmp_path):
    run = copy_run(student_run, tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    config["run"].pop("model_source", None)                # a run older than the field
    (run / "config.json").write_text(json.dumps(config))
    use_models()
    with pytest.raises(CheckpointError, match=r"cannot rebuild model 'student_net': unknown model 'student_net'.*"
                                              r"If it is a model of your own, add its file to ARCHSCOPE_MODELS"):
        load_run_model(run)


def test_an_edited_model_file_warns_and_the_weights_decide(student_run, files, tmp_path):
    edited = tmp_path / "student.py"
    edited.write_text(files["student"].read_text())
    run = copy_run(student_run, tmp_path / "run", edited)
    use_models(edited)
    config, info = read_run_info(run)
    assert model_source_warning(config, info) is None            # unchanged: nothing to say
    # A comment changes the sha256, not the weights: warned, then loaded.
    edited.write_text(edited.read_text() + "\n# tried a wider net on Tuesday\n")
    use_models(edited)
    assert "the model file changed since training" in model_source_warning(config, info)
    with pytest.warns(ModelSourceChangedWarning, match=r"model 'student_net' was trained from .*student.py"):
        model, _ = load_run_model(run)
    assert isinstance(model, torch.nn.Module)
    # A wider net: the weights no longer fit, and the error names the tensor and says why.
    edited.write_text(edited.read_text().replace("width: int = 8", "width: int = 16"))
    use_models(edited)
    with pytest.warns(ModelSourceChangedWarning), pytest.raises(CheckpointError) as exc:
        load_run_model(run)
    assert "shape mismatch" in str(exc.value) and "0.weight" in str(exc.value)
    assert "Likely why: model 'student_net' was trained from" in str(exc.value)


def test_a_run_of_a_builtin_model_is_not_checked(student_run, tmp_path):
    config, info = read_run_info(student_run)
    assert info.model_source is None or info.model_source.file.endswith("student.py")
    cfg = TrainConfig(model="cnn3")
    assert model_source_warning(cfg, info.__class__(num_classes=12, in_channels=3)) is None


def test_a_bad_model_source_entry_is_named(student_run, tmp_path):
    run = copy_run(student_run, tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    config["run"]["model_source"] = "student.py"
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"run.model_source = 'student.py' is not valid"):
        read_run_info(run)


# ---- model files are code: never from a run zip ------------------------------------------------
def test_the_run_zip_importer_refuses_a_model_file(student_run, files, tmp_path):
    pytest.importorskip("streamlit")     # dashboard/components is collected with the dashboard extras
    from dashboard.components.run_import import RunImportError, import_run_zip

    archive = tmp_path / "run.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in student_run.iterdir():
            if f.name in ("config.json", "model.safetensors", "status.json"):
                zf.write(f, f"student/{f.name}")
        zf.write(files["student"], "student/student.py")
    with pytest.raises(RunImportError, match=r"entry 'student/student.py' is not a run-folder file"):
        import_run_zip(archive, tmp_path / "imported")
    assert not (tmp_path / "imported" / "student").exists()


# ---- benchmarks/bench_published.py: the student's path, nothing tuned ---------------------------
def test_bench_published_trains_with_the_trainer_defaults_and_reads_the_run(student_run):
    import importlib.util

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_published.py"
    spec = importlib.util.spec_from_file_location("bench_published", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cmd = bench.train_command(12, Path("/tmp/x"), None)
    flags = {a for a in cmd if a.startswith("--")}
    assert flags == {"--model", "--dataset", "--epochs", "--out", "--quiet", "--no-tensorboard"}   # no tuning
    assert cmd[cmd.index("--model") + 1] == "fashion_tf_tutorial" and bench.MODEL_FILE.is_file()
    assert bench.train_command(3, Path("/tmp/x"), 1, resume=True)[2:] == [
        "core.train", "--resume", "/tmp/x", "--epochs", "3", "--quiet", "--num-threads", "1"]
    result = bench.read_result(student_run)
    assert result["epochs_done"] == 1 and 0 <= result["test_acc"] <= 1
    assert result["settings"]["optimizer"] == TrainConfig().optimizer and result["n_train"] == 64
