"""Transfer settings of TrainConfig: classes (a class subset), init_from, train_only 'head' (linear
probe) and loss 'triplet' (embedding only), on tiny CPU runs of the generated shapes dataset."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import DataError, load_dataset
from core.models.registry import create_model
from core.predict import Predictor
from core.train import build_parser, config_from_args
from core.training.checkpoint import load_run_model, load_weights, save_weights, weights_path
from core.training.config import ConfigError, TrainConfig
from core.training.run_info import read_run_info
from core.training.trainer import classifier_head, load_config_for_resume, train

TINY = dict(model="cnn2", dataset="shapes", image_size=32, max_train_samples=64, batch_size=32, epochs=1,
            device="cpu", num_threads=1, eval_at_end=False, tensorboard=False, log_every=1)
SUBSET = ["star", "red circle", "2"]          # names and an index (2 = "blue circle")


@pytest.fixture(autouse=True, scope="module")
def _private_data_cache(tmp_path_factory):
    """A private shapes cache: a concurrent session regenerating the shared one cannot change our data."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ARCHSCOPE_CACHE", str(tmp_path_factory.mktemp("archscope-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A finished 12-class run: the init_from source of the tests below."""
    out = tmp_path_factory.mktemp("src") / "run"
    assert train(TrainConfig(**TINY), out, quiet=True)["state"] == "done"
    return out


def _run(tmp_path, name: str, **changes) -> tuple:
    out = tmp_path / name
    status = train(TrainConfig(**{**TINY, **changes}), out, quiet=True)
    assert status["state"] == "done", status["message"]
    return out, json.loads((out / "config.json").read_text())


# ---- config ----------------------------------------------------------------------------------
def test_new_fields_round_trip_and_reach_the_cli():
    cfg = TrainConfig(classes=["star", "3"], init_from="runs/a", train_only="head", loss="triplet")
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.classes == ["star", "3"] and again.init_from == "runs/a"
    args = build_parser().parse_args(["--classes", "red circle, star,2", "--init-from", "runs/a",
                                      "--train-only", "head", "--loss", "triplet"])
    got = config_from_args(args)
    assert (got.classes, got.init_from, got.train_only, got.loss) == (["red circle", "star", "2"], "runs/a",
                                                                       "head", "triplet")


@pytest.mark.parametrize("changes, words", [
    (dict(train_only="backbone"), "train_only must be one of all, head"),
    (dict(classes="star"), "classes must be a list"),
    (dict(classes=["star"]), "at least 2 classes"),
    (dict(classes=["star", "star"]), "'star' more than once"),
    (dict(loss="triplet", train_only="head"), "nothing would train"),
    (dict(init_from=""), "init_from must be a path"),
])
def test_static_problems_name_the_field(changes, words):
    assert any(words in p for p in TrainConfig(**changes).static_problems())
    with pytest.raises(ConfigError, match="invalid training config"):
        TrainConfig(**changes).validate()


def test_unknown_class_is_an_error_naming_it_and_the_valid_names():
    with pytest.raises(DataError, match=r"unknown class 'hexagon'.*'red circle'.*'diamond'"):
        load_dataset("shapes", image_size=32, classes=["star", "hexagon"])
    with pytest.raises(ConfigError, match=r"unknown class 'hexagon'.*'triangle'"):
        TrainConfig(**TINY, classes=["star", "hexagon"]).validate()
    with pytest.raises(ConfigError, match=r"unknown class 12;.*indices 0..11"):       # indices are 0..11
        TrainConfig(**TINY, classes=["star", 12]).validate()
    with pytest.raises(DataError, match="'star' is listed more than once"):   # a name and its index
        load_dataset("shapes", image_size=32, classes=["star", "10"])


def test_init_from_must_exist(tmp_path, source_run):
    missing = tmp_path / "gone-run"
    with pytest.raises(ConfigError, match=f"init_from '{missing}' does not exist"):
        TrainConfig(**TINY, init_from=str(missing)).validate()
    with pytest.raises(ConfigError, match="does not exist"):
        train(TrainConfig(**TINY, init_from=str(missing)), tmp_path / "out", quiet=True)
    assert not (tmp_path / "out" / "metrics.jsonl").exists()
    with pytest.raises(ConfigError, match="folder without model.safetensors"):
        TrainConfig(**TINY, init_from=str(tmp_path)).validate()
    pickle = tmp_path / "w.pt"
    pickle.write_bytes(b"\x80\x04")
    with pytest.raises(ConfigError, match="not a .safetensors file"):
        TrainConfig(**TINY, init_from=str(pickle)).validate()
    # A run folder and its weights file both pass.
    TrainConfig(**TINY, init_from=str(source_run)).validate()
    TrainConfig(**TINY, init_from=str(weights_path(source_run, "best"))).validate()


# ---- classes ---------------------------------------------------------------------------------
def test_classes_subset_filters_and_relabels_every_split():
    full = load_dataset("shapes", image_size=32)
    sub = load_dataset("shapes", image_size=32, classes=SUBSET, max_train_samples=40, seed=3)
    assert sub.info.classes == ["star", "red circle", "blue circle"] and sub.info.num_classes == 3
    assert "classes subset" in sub.info.notes
    for split in ("val", "test"):
        f, s = full.split(split), sub.split(split)
        for new, old in enumerate([10, 0, 2]):          # star, red circle, blue circle in the source
            assert torch.equal(s.images[s.labels == new], f.images[f.labels == old])
        assert len(s) == int(sum((f.labels == old).sum() for old in (10, 0, 2)))
    # The max_train_samples cut comes after the filter: 40 images, all of the subset.
    assert len(sub.train) == 40 and set(sub.train.labels.tolist()) <= {0, 1, 2}
    assert len(set(sub.train.labels.tolist())) == 3


def test_a_run_on_a_class_subset_has_k_outputs_and_its_names(tmp_path):
    out, cfg = _run(tmp_path, "sub", classes=SUBSET, eval_at_end=True)
    assert cfg["classes"] == SUBSET and cfg["run"]["num_classes"] == 3
    assert cfg["run"]["classes"] == ["star", "red circle", "blue circle"]
    model, _ = load_run_model(out)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    ev = json.loads((out / "eval.json").read_text())
    assert np.array(ev["confusion_matrix"]).shape == (3, 3)
    pred = Predictor(out)
    assert pred.classes == ["star", "red circle", "blue circle"]
    top = pred.predict([Image.new("RGB", (32, 32))], top_k=5)[0]["top"]
    assert len(top) == 3 and {t["class"] for t in top} == set(pred.classes)


# ---- init_from -------------------------------------------------------------------------------
def test_init_from_copies_matching_weights_and_skips_the_other_head(tmp_path, source_run):
    # lr 1e-20: the one Adam step moves no float32 weight, so the trained weights are the loaded ones.
    out, cfg = _run(tmp_path, "b", init_from=str(source_run), classes=SUBSET, lr=1e-20)
    src, got = load_weights(weights_path(source_run)), load_weights(weights_path(out, "last"))
    params = [k for k, _ in create_model("cnn2", num_classes=3).named_parameters()]
    for k in params:
        if k.startswith("fc."):
            assert got[k].shape[0] == 3 and src[k].shape[0] == 12
        else:
            assert torch.equal(got[k], src[k]), k
    record = cfg["run"]["init_from"]
    assert record["init_from"] == str(weights_path(source_run)) and record["skipped"] == ["fc.bias", "fc.weight"]
    assert record["loaded"] == len(src) - 2


def test_init_from_weights_of_another_model_fail_clearly(tmp_path):
    other = tmp_path / "other.safetensors"
    save_weights(other, {"encoder.proj.weight": torch.ones(4, 4), "features.0.conv.weight": torch.ones(1)})
    status = train(TrainConfig(**TINY, init_from=str(other)), tmp_path / "r", quiet=True)
    assert status["state"] == "failed" and "share no tensor" in status["message"] and str(other) in status["message"]


def test_a_run_with_init_from_loads_and_resumes_after_the_source_is_deleted(tmp_path):
    src, _ = _run(tmp_path, "src")
    out, _ = _run(tmp_path, "b", init_from=str(src))
    shutil.rmtree(src)
    model, config = load_run_model(out)
    assert config.init_from == str(src) and model(torch.zeros(1, 3, 32, 32)).shape == (1, 12)
    assert Predictor(out).predict([Image.new("RGB", (32, 32))])[0]["ok"]
    resumed = train(load_config_for_resume(out, epochs=2), out, resume=True, quiet=True)
    assert resumed["state"] == "done", resumed["message"]
    assert json.loads((out / "config.json").read_text())["run"]["init_from"]["init_from"].startswith(str(src))


# ---- train_only 'head' -----------------------------------------------------------------------
def test_classifier_head_is_the_last_linear():
    assert classifier_head(create_model("resnet18", num_classes=5))[0] == "fc"
    name, head = classifier_head(create_model("cnn3", num_classes=5))
    assert name == "fc" and head.out_features == 5


def test_linear_probe_changes_only_the_head(tmp_path, source_run):
    out, cfg = _run(tmp_path, "probe", init_from=str(source_run), train_only="head", lr=0.05)
    src, got = load_weights(weights_path(source_run)), load_weights(weights_path(out, "last"))
    assert set(src) == set(got)
    body = [k for k in src if not k.startswith("fc.")]
    assert any("running_mean" in k for k in body) and any("num_batches_tracked" in k for k in body)
    changed = [k for k in body if not torch.equal(src[k], got[k])]
    assert not changed, f"frozen tensors changed: {changed}"
    assert not torch.equal(src["fc.weight"], got["fc.weight"]) and not torch.equal(src["fc.bias"], got["fc.bias"])
    assert cfg["run"]["head"] == "fc"
    assert cfg["run"]["trainable_params"] == src["fc.weight"].numel() + src["fc.bias"].numel()


# ---- loss 'triplet' --------------------------------------------------------------------------
def test_triplet_trains_the_embedding_not_the_head_and_keeps_the_last_epoch(tmp_path, source_run):
    out, cfg = _run(tmp_path, "trip", init_from=str(source_run), loss="triplet", epochs=3, lr=0.01)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(np.isfinite(r["train_loss"]) for r in rows)
    src, best, last = (load_weights(weights_path(source_run)), load_weights(weights_path(out, "best")),
                       load_weights(weights_path(out, "last")))
    assert all(torch.equal(best[k], last[k]) for k in best)          # best = the last epoch
    status = json.loads((out / "status.json").read_text())
    assert status["best_epoch"] == 3
    assert torch.equal(last["fc.weight"], src["fc.weight"]) and torch.equal(last["fc.bias"], src["fc.bias"])
    convs = [k for k, v in src.items() if v.dim() == 4]
    assert any(not torch.equal(last[k], src[k]) for k in convs)      # the embedding did train
    assert cfg["run"]["head"] == "fc" and cfg["run"]["trainable_params"] < cfg["run"]["total_params"]
    config, _ = read_run_info(out)
    assert config.loss == "triplet"


def test_max_eval_samples_cuts_validation_and_test_the_same_for_every_seed():
    from core.data import load_dataset
    from core.training.config import TrainConfig
    from core.training.run_info import load_dataset_for

    a = load_dataset("shapes", max_eval_samples=100, max_train_samples=50, seed=1)
    b = load_dataset("shapes", max_eval_samples=100, max_train_samples=50, seed=2)
    assert (len(a.val), len(a.test)) == (100, 100)
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.val.labels, b.val.labels)
    cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), "max_eval_samples": 100, "max_train_samples": 50})
    assert len(load_dataset_for(cfg).test) == 100
    assert TrainConfig.from_dict(cfg.to_dict()).max_eval_samples == 100
    assert "max_eval_samples" in " ".join(TrainConfig(max_eval_samples=0).static_problems())
