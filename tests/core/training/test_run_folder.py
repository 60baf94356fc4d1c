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
