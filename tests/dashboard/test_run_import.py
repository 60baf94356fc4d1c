import io
import json
import stat
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from dashboard.components.run_import import RunImportError, import_run_zip
from core.training.run_folder import RunFolder


def _weights(tmp_path):
    p = tmp_path / "w.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2)}, str(p))
    return p.read_bytes()


def _zip(entries: dict, symlink: str | None = None) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    buf.seek(0)
    return buf


def _good(tmp_path, prefix="myrun/"):
    return {
        f"{prefix}config.json": json.dumps({"model": "cnn2", "dataset": "shapes"}),
        f"{prefix}status.json": json.dumps({"state": "running", "pid": 1}),
        f"{prefix}metrics.jsonl": '{"epoch": 1, "val_acc": 0.5}\n',
        f"{prefix}model.safetensors": _weights(tmp_path),
        f"{prefix}last_state.pt": b"\x80\x04pickle",
    }


def test_good_zip_is_imported_with_status_fixed_and_pickle_skipped(tmp_path):
    res = import_run_zip(_zip(_good(tmp_path)), tmp_path / "runs")
    assert res.run_dir == tmp_path / "runs" / "myrun"
    assert "model.safetensors" in res.files and any("last_state.pt" in s for s in res.skipped)
    assert not (res.run_dir / "last_state.pt").exists()
    st = RunFolder(res.run_dir).read_status()
    assert st["state"] == "cancelled" and st.get("pid") is None  # a foreign pid is not a live run here
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["myrun"]  # no temp folder left
    with pytest.raises(RunImportError, match="already exists"):
        import_run_zip(_zip(_good(tmp_path)), tmp_path / "runs")


def test_flat_zip_gets_given_name(tmp_path):
    res = import_run_zip(_zip(_good(tmp_path, prefix="")), tmp_path / "runs", run_id="flat")
    assert res.run_dir.name == "flat" and (res.run_dir / "config.json").exists()


@pytest.mark.parametrize("entries,match", [
    ({"../evil/config.json": "{}"}, r"'\.\.'"),
    ({"/abs/config.json": "{}"}, "absolute path"),
    ({"run/sub/config.json": "{}"}, "nested too deep"),
    ({"run/config.json": "{}", "run/run.py": "import os"}, "not a run-folder file"),
    ({"a/config.json": "{}", "b/model.safetensors": "x"}, "several folders"),
    ({"run/model.safetensors": b"x"}, "no config.json"),
    ({"run/config.json": '{"model": "cnn2"}'}, "no weights"),
])
def test_bad_zips_are_refused(tmp_path, entries, match):
    with pytest.raises(RunImportError, match=match):
        import_run_zip(_zip(entries), tmp_path / "runs")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_pickle_named_safetensors_and_symlink_are_refused(tmp_path):
    entries = _good(tmp_path)
    entries["myrun/model.safetensors"] = b"\x80\x04\x95" + b"\x00" * 64  # a pickle in disguise
    with pytest.raises(RunImportError, match="not a valid safetensors"):
        import_run_zip(_zip(entries), tmp_path / "runs")
    assert not any((tmp_path / "runs").iterdir())   # the temp folder was cleaned up
    with pytest.raises(RunImportError, match="symbolic link"):
        import_run_zip(_zip(_good(tmp_path), symlink="myrun/eval.json"), tmp_path / "runs2")
    with pytest.raises(RunImportError, match="not a zip"):
        import_run_zip(io.BytesIO(b"not a zip"), tmp_path / "runs3")


def test_size_limit(tmp_path):
    with pytest.raises(RunImportError, match="expands to more than"):
        import_run_zip(_zip(_good(tmp_path)), tmp_path / "runs", max_total_bytes=100)


@pytest.mark.parametrize("name", [".hidden", "..", "a/b", "x" * 101, "-dash"])
def test_run_name_follows_the_one_run_id_rule(tmp_path, name):
    from core.training.run_folder import RUN_ID_RULE

    with pytest.raises(RunImportError, match="is not allowed") as info:
        import_run_zip(_zip(_good(tmp_path, prefix="")), tmp_path / "runs", run_id=name)
    assert RUN_ID_RULE in str(info.value)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_model_file_in_a_run_zip_is_refused_and_nothing_is_extracted(tmp_path):
    """Model files are code: they come only from paths on the server (ARCHSCOPE_MODELS), never from a zip,
    even next to a complete run of that very model."""
    entries = _good(tmp_path)
    entries["myrun/config.json"] = json.dumps({"model": "cool_model", "dataset": "shapes"})
    entries["myrun/cool_model.py"] = "from core.models import register_model\nimport os\nos.system('id')\n"
    with pytest.raises(RunImportError, match="cool_model.py.*not a run-folder file"):
        import_run_zip(_zip(entries), tmp_path / "runs")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert not list(tmp_path.rglob("cool_model.py"))
