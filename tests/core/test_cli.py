"""Every ``python -m core.X``: --help shows the defaults and exits 0; an ArchScopeError is one line and its
exit code; --device cuda without a GPU is refused before any work."""

from __future__ import annotations

import importlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core import cli
from core.errors import FailedError, InvalidInputError
from core.training.run_folder import RunFolder, RunLockedError

# module -> extra words before --help (core.data's options live on its subcommands)
COMMANDS = {"train": [], "evaluate": [], "predict": [], "complexity": [], "models": [], "data": ["describe"],
            "suite": [], "report": [], "ship": []}
MAIN_MODULES = {"models": "core.models.__main__", "data": "core.data.__main__"}   # packages run as -m core.X
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: --device cuda is valid")
TINY = ["--model", "cnn2", "--dataset", "shapes", "--image-size", "32", "--max-train-samples", "64",
        "--batch-size", "32", "--device", "cpu", "--num-threads", "1", "--no-tensorboard", "--quiet"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("module", COMMANDS)
def test_help_shows_defaults_and_exits_0(module):
    proc = run("-m", f"core.{module}", *COMMANDS[module], "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"python -m core.{module}" in proc.stdout
    assert "(default: " in proc.stdout, proc.stdout


def test_every_train_flag_names_its_default():
    """core.train's flags are absent unless given (so --config values survive); their help still
    states the TrainConfig default."""
    from core.train import build_parser
    from core.training.config import TrainConfig

    parser = build_parser()
    missing = [a.option_strings[0] for a in parser._actions
               if a.option_strings and a.dest not in ("help", "quiet") and "default:" not in (a.help or "")]
    assert missing == []
    text = parser.format_help()
    for flag, value in (("--epochs", TrainConfig.epochs), ("--lr", TrainConfig.lr), ("--model", TrainConfig.model),
                        ("--channel-strategy", TrainConfig.channel_strategy)):
        help_of = next(a.help for a in parser._actions if flag in a.option_strings)
        assert f"default: {value}" in " ".join(help_of.split()) and flag in text
    # and still nothing given means nothing set: a --config file is only overridden by given flags
    assert vars(parser.parse_args(["--epochs", "3"])) == {"quiet": False, "epochs": 3}


@NO_GPU
@pytest.mark.parametrize("how", ["flag", "config"])
def test_train_device_cuda_without_gpu_is_one_line_exit_2(tmp_path, how):
    out = tmp_path / "run"
    if how == "flag":
        proc = run("-m", "core.train", "--device", "cuda", "--epochs", "1", "--out", str(out))
    else:
        (tmp_path / "c.json").write_text(json.dumps({"device": "cuda"}))
        proc = run("-m", "core.train", "--config", str(tmp_path / "c.json"), "--out", str(out))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --device cuda: no CUDA GPU"), proc.stderr
    assert not out.exists()


@NO_GPU
def test_suite_device_cuda_without_gpu_is_refused_before_any_run(tmp_path):
    proc = run("-m", "core.suite", "seeds", "--device", "cuda", "--runs-root", str(tmp_path / "runs"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: --device cuda"), proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("error, code", [
    (InvalidInputError("bad flag"), 2),
    (FailedError("training diverged"), 1),
    (RunLockedError(Path("checkpoints/r"), 4242), 3),
])
@pytest.mark.parametrize("module", COMMANDS)
def test_archscope_error_in_main_becomes_its_exit_code(module, error, code, monkeypatch, capsys):
    mod = importlib.import_module(MAIN_MODULES.get(module, f"core.{module}"))

    def failing_main(argv):
        raise error

    monkeypatch.setattr(mod, "_main", failing_main)
    assert mod.main([]) == code
    err = capsys.readouterr().err
    assert err == f"error: {error}\n"


def test_cli_run_maps_ctrl_c_and_leaves_bugs_alone(capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    def buggy(argv):
        raise ZeroDivisionError("a bug keeps its traceback")

    assert cli.run(interrupted) == 130
    assert capsys.readouterr().err == "interrupted\n"
    with pytest.raises(ZeroDivisionError):
        cli.run(buggy)
    assert cli.run(lambda argv: None) == 0


def test_argparse_usage_errors_exit_2_in_one_line():
    proc = run("-m", "core.train", "--epochs", "ten")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: argument --epochs")
    with pytest.raises(SystemExit) as info:
        cli.parser("python -m core.x", "doc").parse_args(["--nope"])
    assert info.value.code == 2


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_train_interrupted_130_cancelled_143_and_resumable(tmp_path, sig, code):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "core.train", *TINY, "--epochs", "100000", "--log-every", "1",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_folder = RunFolder(out)
    deadline = time.time() + 120
    while time.time() < deadline and not run_folder.read_steps():
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == code, output
    status = run_folder.read_status()
    assert status["state"] == "cancelled" and f"--resume {out}" in status["message"]


def test_train_exit_code_reads_the_signal_field_before_the_message():
    from core.train import _exit_code

    assert _exit_code({"state": "cancelled", "signal": "SIGINT", "message": "cancelled"}) == 130
    assert _exit_code({"state": "cancelled", "signal": "SIGTERM", "message": "cancelled (SIGINT) by mistake"}) == 143
    assert _exit_code({"state": "cancelled", "message": "cancelled (SIGINT) during epoch 3"}) == 130   # older trainers
    assert _exit_code({"state": "cancelled", "message": "cancelled (SIGTERM) during epoch 3"}) == 143
    assert _exit_code({"state": "done"}) == 0
    with pytest.raises(FailedError, match="training failed: diverged"):
        _exit_code({"state": "failed", "message": "diverged"})


def _wait_until_it_catches(pid: int, timeout: float = 30) -> None:
    """Wait until core.train's first handlers are in place: SIGTERM caught (its bit in SigCgt of
    /proc/PID/status; it installs SIGINT's first, and Python catches SIGINT from its start anyway)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            caught = int(next(line for line in fh if line.startswith("SigCgt:")).split()[1], 16)
        if caught >> (signal.SIGTERM - 1) & 1:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} installed no SIGTERM handler")


def test_train_signalled_during_its_imports_is_cancelled_with_the_signals_exit_code(tmp_path):
    """Ctrl-C / SIGTERM before the trainer's own handler: the run is cancelled (not failed, not left
    queued) with the signal's exit code; a folder nobody created yet is not created."""
    out = tmp_path / "run"
    RunFolder(out).write_config({"model": "cnn2"})
    RunFolder(out).write_status("queued", pid=None, message="starting")      # as a launcher leaves it
    proc = subprocess.Popen([sys.executable, "-m", "core.train", *TINY, "--epochs", "5", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_until_it_catches(proc.pid)      # core.train's first line (its imports take a second or more)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    status = RunFolder(out).read_status()
    assert status["state"] == "cancelled" and status["signal"] == "SIGINT", status
    assert f"--resume {out}" in status["message"]

    nowhere = tmp_path / "never-created"
    proc = subprocess.Popen([sys.executable, "-m", "core.train", *TINY, "--epochs", "5", "--out", str(nowhere)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_until_it_catches(proc.pid)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, output
    assert not nowhere.exists()


def test_run_dir_is_found_in_the_arguments_before_they_are_parsed():
    from core.train import _run_dir_from_argv

    assert _run_dir_from_argv(["--config", "c.json", "--out", "runs/a"]) == Path("runs/a")
    assert _run_dir_from_argv(["--resume=runs/b", "--epochs", "3"]) == Path("runs/b")
    assert _run_dir_from_argv(["--model", "cnn2"]) is None
