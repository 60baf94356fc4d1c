import json

import pytest

from core.io import append_jsonl, atomic_write_json, read_jsonl


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    atomic_write_json(tmp_path / "a.json", {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_write_failure_keeps_old_content(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "a.json", {"x": object()})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_read_jsonl_tolerates_half_written_last_line(tmp_path):
    p = tmp_path / "m.jsonl"
    append_jsonl(p, {"epoch": 1})
    append_jsonl(p, {"epoch": 2})
    with open(p, "a") as fh:
        fh.write('{"epoch": 3, "tra')
    assert [r["epoch"] for r in read_jsonl(p)] == [1, 2]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_atomic_write_respects_umask_not_mkstemp_0600(tmp_path):
    import os
    import stat

    atomic_write_json(tmp_path / "a.json", {"x": 1})
    mode = stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_read_jsonl_survives_non_utf8_bytes(tmp_path):
    p = tmp_path / "m.jsonl"
    append_jsonl(p, {"epoch": 1})
    with open(p, "ab") as fh:
        fh.write(b'{"epoch": 2, "note": "\xff\xfe"}\n')
    append_jsonl(p, {"epoch": 3})
    assert [r["epoch"] for r in read_jsonl(p)] == [1, 2, 3]
