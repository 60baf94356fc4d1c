"""dashboard.components.train_form: the Train page's values -> TrainConfig and run folder, without Streamlit."""

from __future__ import annotations

import pytest

from core.data import DatasetInfo, describe
from core.data.channels import CHANNEL_COMBOS
from core.errors import InvalidInputError
from core.training.run_folder import RUN_ID_RULE, InvalidRunIdError
from dashboard.components import train_form

SHAPES = describe("shapes")


def _form(**kw) -> train_form.TrainForm:
    values = dict(model="cnn2", dataset="shapes", channels="RG", strategy="zero-fill", image_size=32)
    values.update(kw)
    return train_form.TrainForm(**values)


def test_dataset_info_and_channel_choices():
    assert isinstance(SHAPES, DatasetInfo) and SHAPES.num_classes > 1 and SHAPES.channels == 3
    grey = DatasetInfo(name="g", num_classes=2, classes=["a", "b"], channels=1, image_size=28,
                       splits={"train": 10})
    assert grey.image_size == 28 and train_form.channel_choices(grey) == ["L"]
    assert train_form.channel_choices(SHAPES) == [*CHANNEL_COMBOS, "random"]
    pairs = DatasetInfo(name="p", num_classes=2, classes=["a", "b"], channels=6, image_size=32)
    assert train_form.channel_choices(pairs) == ["ALL"]         # 6-channel image pairs: no colour combination


def test_build_config_carries_every_form_value_and_validates():
    form = _form(max_train=256, augment_preset="crop-flip", denoise=True, denoise_h=7.0, epochs=2, batch_size=32,
                 lr=0.01, seed=3, weight_decay=0.0005, model_options_text='{"dropout": 0.1}')
    result = train_form.build_config(form, SHAPES)
    assert result.problems == [] and result.resolved is not None
    c = result.config
    assert (c.model, c.dataset, c.channels, c.channel_strategy, c.image_size) == ("cnn2", "shapes", "RG", "zero-fill", 32)
    assert c.model_options == {"dropout": 0.1} and c.max_train_samples == 256 and c.seed == 3
    assert c.preprocess == {"denoise": True, "h": 7.0, "h_color": 7.0} and c.augment
    assert c.weight_decay == 0.0005 and c.tensorboard is False
    assert c.log_every == max(1, min(10, (256 // 32) // 20))
    plain = train_form.build_config(_form(), SHAPES).config
    assert plain.weight_decay is None and plain.max_train_samples is None and plain.augment == {}


def test_bad_options_and_bad_values_are_problems_not_exceptions():
    result = train_form.build_config(_form(model_options_text="{not json"), SHAPES)
    assert any("JSON object" in p for p in result.problems)
    assert result.config.model_options == {}
    assert any("JSON object" in p for p in train_form.build_config(_form(model_options_text="[1]"), SHAPES).problems)
    bad = train_form.build_config(_form(model="no_such_model"), SHAPES)
    assert bad.resolved is None and any("no_such_model" in p for p in bad.problems)


def test_log_every_gives_short_runs_points_every_few_batches():
    assert train_form.log_every(SHAPES, 256, 64) == 1
    assert train_form.log_every(SHAPES, 1_000_000, 64) == 10


def test_run_folder_for_applies_the_run_id_rule_before_touching_the_disk(tmp_path):
    assert train_form.run_folder_for("  my_run-1 ", tmp_path) == tmp_path / "my_run-1"
    for name in ("x" * 300, "../evil", ".hidden", "a/b", ""):
        with pytest.raises(InvalidRunIdError) as err:
            train_form.run_folder_for(name, tmp_path)
        assert RUN_ID_RULE in str(err.value)
    (tmp_path / "taken").mkdir()
    with pytest.raises(InvalidInputError, match="already exists"):
        train_form.run_folder_for("taken", tmp_path)
    name = train_form.default_run_name(_form(), now=0)
    assert name.startswith("cnn2-shapes-RG-") and train_form.run_folder_for(name, tmp_path).name == name


def test_every_number_field_is_checked_against_its_limits_and_reported_once():
    assert train_form.field_problems(_form()) == []
    bad = train_form.build_config(_form(epochs=0, batch_size=999999, image_size=4, lr=0.0, max_train=-1), SHAPES)
    assert bad.resolved is None
    starts = [p.split(":")[0] for p in bad.problems]
    assert starts == ["Image size (px) is 4", "Max train images (0 = all) is -1", "Epochs is 0",
                      "Batch size is 999999", "Learning rate is 0"], bad.problems
    # config.validate()'s own lines about the same fields are not repeated
    assert not any(p.startswith(("epochs must", "batch_size must", "image_size must", "lr must")) for p in bad.problems)
    # a problem of another field still shows next to them
    other = train_form.build_config(_form(epochs=0, model="no_such_model"), SHAPES)
    assert any("no_such_model" in p for p in other.problems) and any(p.startswith("Epochs is 0") for p in other.problems)
    assert train_form.build_config(_form(device="cpu"), SHAPES).config.device == "cpu"


def test_run_name_problem_names_the_rule_or_the_existing_folder(tmp_path):
    assert train_form.run_name_problem("fine-name_1", tmp_path) is None
    for name in ("with space", "back\\slash", "c:colon", "star*", "what?", "x" * 300):
        assert RUN_ID_RULE in train_form.run_name_problem(name, tmp_path)
    (tmp_path / "taken").mkdir()
    assert "already exists" in train_form.run_name_problem("taken", tmp_path)


def test_plain_markdown_escapes_outside_code_spans():
    assert train_form.plain_markdown("use '_' or '*'") == "use '\\_' or '\\*'"
    assert train_form.plain_markdown("`a_b` exists_") == "`a_b` exists\\_"
    assert train_form.plain_markdown("odd ` a_b") == "odd ' a\\_b"


def test_run_rows_order_and_label_by_state(tmp_path):
    import os

    from core.training.run_folder import WAITING_FOR_SLOT, RunFolder

    def run(name, state, **fields):
        RunFolder(tmp_path / name).write_status(state, **fields)
        return RunFolder(tmp_path / name)

    runs = [run("a_done_old", "done", finished=1.0), run("b_done_new", "done", finished=2.0),
            run("c_second", "queued", pid=None, queued_at=5.0, **{WAITING_FOR_SLOT: True}),
            run("d_first", "queued", pid=None, queued_at=4.0, **{WAITING_FOR_SLOT: True}),
            run("e_cancelled", "cancelled", finished=3.0),
            run("f_starting", "queued", pid=os.getpid(), message="starting", **{WAITING_FOR_SLOT: False}),
            run("g_running", "running", pid=os.getpid(), epoch=2, epochs=5)]
    rows = train_form.run_rows(runs, queue_order=[str(tmp_path / "d_first"), str(tmp_path / "c_second")])
    assert [r.run.run_id for r in rows] == ["g_running", "f_starting", "d_first", "c_second", "e_cancelled",
                                           "b_done_new", "a_done_old"]
    labels = {r.run.run_id: r.label for r in rows}
    assert labels["g_running"] == "running · epoch 2/5" and labels["f_starting"].startswith("starting")
    assert labels["d_first"] == "queued · 1 of 2 in line" and labels["c_second"] == "queued · 2 of 2 in line"
    # resumable: a stopped run with its config, even without last_state.pt (it starts from epoch 0)
    cancelled = next(r for r in rows if r.run.run_id == "e_cancelled")
    assert not cancelled.resumable
    cancelled.run.write_config({"model": "cnn2"})
    assert cancelled.resumable and not cancelled.run.resume_state_path.exists()


def test_delete_run_refuses_live_runs_and_folders_outside_the_root(tmp_path):
    import os

    from core.training.run_folder import RunFolder

    root = tmp_path / "runs"
    RunFolder(root / "stopped").write_status("cancelled")
    RunFolder(root / "live").write_status("running", pid=os.getpid())
    rows = {r.run.run_id: r for r in train_form.run_rows([RunFolder(root / "stopped"), RunFolder(root / "live")])}
    with pytest.raises(InvalidInputError, match="cancel it first"):
        train_form.delete_run(rows["live"], root)
    with pytest.raises(InvalidInputError, match="not a run folder of"):
        train_form.delete_run(rows["stopped"], tmp_path / "elsewhere")
    train_form.delete_run(rows["stopped"], root)
    assert not (root / "stopped").exists() and (root / "live").exists()


def test_preview_shows_what_the_model_sees():
    """RGB without normalisation: the stored pixels exactly; zero-fill with normalisation: the
    missing channel at the train mean; drop of one channel: that channel as grey."""
    import numpy as np

    from core.data import compute_normalization, load_dataset

    def resolved(**kw):
        return train_form.build_config(_form(**kw), SHAPES).resolved

    ds = load_dataset("shapes", image_size=32)
    first = ds.train.images[int(np.flatnonzero(ds.train.labels.numpy() == 0)[0])].permute(1, 2, 0).numpy()
    raw = train_form.preview_images(resolved(channels="RGB", strategy="drop", normalize=False), per_class=2, scale_to=32)
    assert len(raw) == SHAPES.num_classes and raw[0].name == SHAPES.classes[0]
    assert raw[0].image.shape == (32, 32 * 2 + 2, 3) and np.array_equal(raw[0].image[:, :32], first)
    zero = train_form.preview_images(resolved(channels="RG", strategy="zero-fill"), per_class=2, scale_to=32)
    mean_b = compute_normalization(ds.train)[0][2]
    assert np.all(np.abs(zero[0].image[:, :32, 2].astype(int) - round(mean_b * 255)) <= 1)
    assert np.all(np.abs(zero[0].image[:, :32, :2].astype(int) - first[:, :, :2]) <= 1)
    grey = train_form.preview_images(resolved(channels="G", strategy="drop", normalize=False), per_class=1, scale_to=64)
    assert grey[0].image.shape == (64, 64) and np.array_equal(grey[0].image[::2, ::2], first[:, :, 1])
    mixed = train_form.preview_images(resolved(channels="random", strategy="mean-fill"), per_class=3)
    assert mixed[0].combos == ("RGB", "RG", "RB")
    # 'random' with drop mixes 1-, 2- and 3-channel inputs in one strip (all shown as colour images)
    dropped = train_form.preview_images(train_form.build_config(_form(model="pca_cnn", channels="random",
                                                                      strategy="drop"), SHAPES).resolved, per_class=7)
    assert dropped[0].combos == ("RGB", "RG", "RB", "GB", "R", "G", "B") and dropped[0].image.ndim == 3
