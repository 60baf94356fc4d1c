import os
import subprocess
import sys

from core.training.run_folder import RunFolder, list_runs


def test_dead_pid_reads_as_failed(tmp_path):
    run = RunFolder(tmp_path / "r1")
    run.write_config({"model": "cnn2"})
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    run.write_status("running", pid=proc.pid)
    st = run.read_status()
    assert st["state"] == "failed" and "resume" in st["message"]
    run.write_status("running", pid=os.getpid())
    assert run.read_status()["state"] == "running"


def test_broken_folders_are_listed_with_problems(tmp_path):
    good = RunFolder(tmp_path / "good")
    good.write_config({"model": "cnn2"})
    good.write_status("done")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    (tmp_path / "not_a_run").mkdir()
    runs = list_runs(tmp_path)
    assert [r.run_id for r in runs] == ["bad", "good"]
    assert good.problems() == []
    problems = RunFolder(bad).problems()
    assert any("config.json is not valid JSON" in p for p in problems)
    assert any("status.json is missing" in p for p in problems)


def test_rows_survive_bad_bytes_and_an_unreadable_file(tmp_path):
    run = RunFolder(tmp_path / "r")
    run.path.mkdir()
    # a torn multi-byte character and a binary line between two good rows, then a half-written last line
    run.metrics_path.write_bytes(b'{"epoch": 1}\n\xff\xfe\x00garbage\n{"epoch": 2, "note": "\xc3"}\n{"epoch": 3}\n{"epo')
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2, 3]    # a torn character spoils only itself
    run.steps_path.mkdir()                      # something that cannot be read as a file at all
    assert run.read_steps() == []


def test_waiting_for_slot_is_an_explicit_field_not_a_message(tmp_path):
    from core.training.run_folder import WAITING_FOR_SLOT, waiting_for_slot

    run = RunFolder(tmp_path / "q")
    run.write_status("queued", pid=None, message="anything at all", **{WAITING_FOR_SLOT: True})
    assert waiting_for_slot(run.read_status())
    run.write_status("queued", pid=os.getpid(), message="waiting for a free training slot")
    assert not waiting_for_slot(run.read_status())          # launched: a pid, no longer waiting
    run.write_status("cancelled", pid=None)
    assert not waiting_for_slot(run.read_status())
    run.write_status("queued", pid=None, message="starting", **{WAITING_FOR_SLOT: False})
    assert not waiting_for_slot(run.read_status())


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_pid_is_tested_only_on_its_own_host(tmp_path):
    from core.training.run_folder import owner_alive, this_host

    run = RunFolder(tmp_path / "r")
    dead = _dead_pid()
    # A trainer on a Ray worker: its pid says nothing here, the run is as its status says.
    run.write_status("running", pid=dead, host="worker-7")
    assert run.read_status()["state"] == "running"
    run.write_status("queued", pid=dead, host="worker-7")
    assert run.read_status()["state"] == "queued"
    # This machine (named, or not recorded: runs written before hosts were) -> the pid is tested.
    for host in (this_host(), None):
        run.write_status("running", pid=dead, host=host)
        status = run.read_status()
        assert status["state"] == "failed" and f"is gone (killed?) while running" in status["message"]
        assert run.read_raw_status()["state"] == "running"            # as written
    assert owner_alive(os.getpid()) and owner_alive(dead, "worker-7") and not owner_alive(dead, this_host())
    assert not owner_alive(None, "worker-7")


def test_train_lock_names_its_host_and_a_lock_of_another_host_is_never_taken_over(tmp_path):
    import pytest

    from core.training.run_folder import RunLockedError, this_host

    run = RunFolder(tmp_path / "r")
    run.acquire_lock()
    assert run.lock_path.read_text() == f"{os.getpid()} {this_host()}\n"
    assert run.lock_holder() == (os.getpid(), this_host()) and run.lock_owner() == os.getpid()
    run.release_lock()
    assert not run.lock_path.exists()

    dead = _dead_pid()
    run.lock_path.write_text(f"{dead}\n")               # an older ArchScope's lock: this machine, dead
    assert run.lock_holder() == (dead, None) and not run.lock_alive()
    run.acquire_lock()                                  # stale: taken over
    assert run.lock_owner() == os.getpid()
    run.release_lock()

    run.lock_path.write_text(f"{dead} worker-7\n")      # a trainer of another machine
    assert run.lock_alive()
    with pytest.raises(RunLockedError, match="process .* on host worker-7 .* delete .*train.lock") as info:
        run.acquire_lock()
    assert info.value.exit_code == 3 and info.value.host == "worker-7"
    run.release_lock(pid=dead)                          # not this machine's: left alone
    assert run.lock_path.exists()
