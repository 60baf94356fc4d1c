"""core.training.checkpoint: safetensors round trip, clear errors, and nothing is ever unpickled."""

import pickle

import pytest
import torch
from torch import nn

from core.training import checkpoint as ckpt


class _Evil:
    """Unpickling this runs os.system-like code: here it writes a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _model():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    return m


def test_weights_round_trip_and_metadata(tmp_path):
    m = _model()
    path = tmp_path / "model.safetensors"
    ckpt.save_weights(path, m, {"epoch": 3})
    assert ckpt.read_weights_metadata(path) == {"epoch": "3"}
    m2 = _model()
    ckpt.load_into(m2, ckpt.load_weights(path), path)
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    assert not list(tmp_path.glob(".*.tmp"))            # atomic: no temp file left behind


def test_tied_weights_can_be_saved(tmp_path):
    lin = nn.Linear(4, 4)
    m = nn.ModuleDict({"a": lin, "b": lin})             # shared tensors under two names
    ckpt.save_weights(tmp_path / "t.safetensors", m)
    assert set(ckpt.load_weights(tmp_path / "t.safetensors")) == set(m.state_dict())


def test_mismatched_weights_explain_themselves(tmp_path):
    path = tmp_path / "model.safetensors"
    ckpt.save_weights(path, nn.Conv2d(3, 4, 3))
    with pytest.raises(ckpt.CheckpointError, match=r"model.safetensors.*shape mismatch.*weight"):
        ckpt.load_into(nn.Conv2d(2, 4, 3), ckpt.load_weights(path), path)
    with pytest.raises(ckpt.CheckpointError, match=r"missing 1 tensor"):
        ckpt.load_into(nn.Conv2d(3, 4, 3, bias=True), {"weight": torch.zeros(4, 3, 3, 3)}, path)


def test_truncated_weights(tmp_path):
    path = tmp_path / "model.safetensors"
    ckpt.save_weights(path, nn.Linear(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match=r"model.safetensors.*truncated or corrupt"):
        ckpt.load_weights(path)
    path.write_bytes(b"abc")
    with pytest.raises(ckpt.CheckpointError, match="too short"):
        ckpt.load_weights(path)


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_named_safetensors_is_refused_without_side_effect(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.safetensors"
    if writer == "pickle":
        path.write_bytes(pickle.dumps({"w": _Evil(str(marker))}))
    else:
        torch.save({"w": _Evil(str(marker))}, path)
    with pytest.raises(ckpt.CheckpointError, match=r"model.safetensors.*(pickle|zip).*never unpickles"):
        ckpt.load_weights(path)
    assert not marker.exists()


def test_evil_resume_state_is_refused_without_side_effect(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "last_state.pt"
    torch.save({"epoch": 1, "x": _Evil(str(marker))}, path)
    with pytest.raises(ckpt.CheckpointError, match=r"last_state.pt.*NOT unpickled"):
        ckpt.load_resume_state(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"epoch": 1, "x": _Evil(str(marker))}))
    with pytest.raises(ckpt.CheckpointError, match="last_state.pt"):
        ckpt.load_resume_state(path)
    assert not marker.exists()


def test_resume_state_round_trip_and_truncation(tmp_path):
    opt = torch.optim.Adam(_model().parameters())
    state = {"epoch": 2, "optimizer": opt.state_dict(), "rng_cpu": torch.get_rng_state(), "best": 0.5}
    path = tmp_path / "last_state.pt"
    ckpt.save_resume_state(path, state)
    back = ckpt.load_resume_state(path)
    assert back["epoch"] == 2 and torch.equal(back["rng_cpu"], state["rng_cpu"])
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    with pytest.raises(ckpt.CheckpointError, match="last_state.pt"):
        ckpt.load_resume_state(path)


def test_load_run_model_needs_config(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="config.json: missing"):
        ckpt.load_run_model(tmp_path)
    (tmp_path / "config.json").write_text('{"model": "cnn2"}')
    with pytest.raises(ckpt.CheckpointError, match="no 'run' section"):
        ckpt.load_run_model(tmp_path)
