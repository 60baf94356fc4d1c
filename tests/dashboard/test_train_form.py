"""dashboard.components.train_form: the Train page's values -> TrainConfig and run folder, without Streamlit."""

from __future__ import annotations

import pytest

from core.data import DatasetInfo, describe
from core.data.channels import CHANNEL_COMBOS
from core.errors import InvalidInputError
from core.training.run_folder import RUN_ID_RULE, InvalidRunIdError
from dashboard.components import train_form

SHAPES = train_form.as_dataset_info(describe("shapes"))


def _form(**kw) -> train_form.TrainForm:
    values = dict(model="cnn2", dataset="shapes", channels="RG", strategy="zero-fill", image_size=32)
    values.update(kw)
    return train_form.TrainForm(**values)


def test_dataset_info_from_either_form_and_channel_choices():
    assert isinstance(SHAPES, DatasetInfo) and SHAPES.num_classes > 1 and SHAPES.channels == 3
    grey = train_form.as_dataset_info({"name": "g", "num_classes": 2, "classes": ["a", "b"], "channels": 1,
                                       "image_size": [28, 28], "splits": {"train": 10}})
    assert grey.image_size == 28 and train_form.channel_choices(grey) == ["L"]
    assert train_form.channel_choices(SHAPES) == [*CHANNEL_COMBOS, "random"]


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
