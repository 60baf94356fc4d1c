"""core.analysis.cost_cache: counts survive a restart, and are made again when the code changes."""

from __future__ import annotations

import json
import os

import pytest

from core import MODEL_FILES_ENV
from core.analysis import compare, cost_cache

ARCH = compare.RunArchitecture("cnn2", "{}", (3, 32, 32), 10)


def _restart() -> None:
    """What a new server process starts with: nothing in memory."""
    cost_cache._MEMORY.clear()
    cost_cache._RUNS.clear()
    cost_cache._LOADED.clear()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(MODEL_FILES_ENV, raising=False)
    _restart()
    yield tmp_path / "cache" / cost_cache.FILE_NAME
    _restart()


def _counting(monkeypatch) -> list:
    calls = []

    def count(arch):
        calls.append(arch)
        return compare.architecture_cost(arch)

    monkeypatch.setattr(cost_cache, "architecture_cost", count)
    return calls


def test_a_count_is_made_once_and_read_back(cache, monkeypatch):
    calls = _counting(monkeypatch)
    first = cost_cache.cached_architecture_cost(ARCH)
    assert first == compare.architecture_cost(ARCH) and first["params"] > 0 and len(calls) == 1
    assert cost_cache.cached_architecture_cost(ARCH) == first and len(calls) == 1      # from memory
    _restart()
    assert cost_cache.cached_architecture_cost(ARCH) == first and len(calls) == 1      # from disk
    other = compare.RunArchitecture("cnn2", "{}", (1, 32, 32), 10)
    assert cost_cache.cached_architecture_cost(other)["params"] < first["params"] and len(calls) == 2
    assert len(json.loads(cache.read_text())["counts"]) == 2


def test_an_edited_model_file_is_counted_again(cache, tmp_path, monkeypatch):
    model_file = tmp_path / "mine.py"
    model_file.write_text("# a student's model file\n")
    monkeypatch.setenv(MODEL_FILES_ENV, str(tmp_path))
    calls = _counting(monkeypatch)
    before = cost_cache.code_fingerprint()
    cost_cache.cached_architecture_cost(ARCH)
    _restart()
    cost_cache.cached_architecture_cost(ARCH)
    assert len(calls) == 1
    model_file.write_text("# a student's model file, edited\n")
    os.utime(model_file, ns=(1, 1))
    assert cost_cache.code_fingerprint() != before
    cost_cache.cached_architecture_cost(ARCH)
    assert len(calls) == 2


@pytest.mark.parametrize("content", [
    "not json", "[1, 2]", '{"code": "x", "counts": {}}',
    # the right code, but values that are not counts: never shown as numbers
    None,
])
def test_a_broken_or_foreign_cache_is_ignored_and_replaced(cache, monkeypatch, content):
    cache.parent.mkdir(parents=True)
    if content is None:
        key = cost_cache._key(ARCH)
        content = json.dumps({"code": cost_cache.code_fingerprint(),
                              "counts": {key: {"params": "9" * 30, "macs": -1, "flops": True, "input": 3}}})
    cache.write_text(content)
    calls = _counting(monkeypatch)
    assert cost_cache.cached_architecture_cost(ARCH) == compare.architecture_cost(ARCH)
    assert len(calls) == 1
    assert json.loads(cache.read_text())["code"] == cost_cache.code_fingerprint()


def test_an_unwritable_cache_still_counts_once_per_process(cache, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("ARCHSCOPE_CACHE", str(blocker / "cache"))
    calls = _counting(monkeypatch)
    assert cost_cache.cached_architecture_cost(ARCH) == compare.architecture_cost(ARCH)
    assert cost_cache.cached_architecture_cost(ARCH) == compare.architecture_cost(ARCH) and len(calls) == 1
    assert not list(tmp_path.glob("**/.costs-*"))


def test_a_run_is_found_by_its_config_file_without_reading_it(cache, tmp_path, monkeypatch):
    """A restarted server reads a counted run's cost with no TrainConfig (no torch) and no model;
    an edited config.json is read again."""
    from core.training.run_info import RUN_SECTION

    run = tmp_path / "run"
    run.mkdir()
    config = {"model": "cnn2", "dataset": "shapes", "channels": "RGB", "image_size": 32,
              RUN_SECTION: {"num_classes": 10, "in_channels": 3, "image_size": 32}}
    (run / "config.json").write_text(json.dumps(config))
    first = cost_cache.cached_run_cost(run)
    assert first == compare.run_cost(run) and first["params"] > 0
    _restart()
    monkeypatch.setattr(cost_cache, "run_architecture", lambda _: pytest.fail("config.json was parsed again"))
    assert cost_cache.cached_run_cost(run) == first
    monkeypatch.undo()
    monkeypatch.setenv("ARCHSCOPE_CACHE", str(cache.parent))
    config[RUN_SECTION]["in_channels"] = 1
    (run / "config.json").write_text(json.dumps(config))
    os.utime(run / "config.json", ns=(2, 2))
    assert cost_cache.cached_run_cost(run)["params"] < first["params"]
    assert "error" in cost_cache.cached_run_cost(tmp_path / "no_such_run")


def test_errors_are_kept_too(cache, monkeypatch):
    calls = _counting(monkeypatch)
    bad = compare.RunArchitecture("no_such_model", "{}", (3, 32, 32), 10)
    assert "error" in cost_cache.cached_architecture_cost(bad)
    assert "error" in cost_cache.cached_architecture_cost(bad) and len(calls) == 1
