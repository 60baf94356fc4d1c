import math

import numpy as np
import pytest

from core.analysis.compare import (
    channel_robustness_matrix,
    confusion_difference,
    cost_table,
    curves_mean_std,
    group_by_seed,
    leaderboard,
    normalize_confusion,
    pareto_front,
    per_class_table,
    run_summary,
    seed_group_key,
)
from core.analysis import compare
from core.io import append_jsonl
from core.training.run_folder import RunFolder


def _make_run(root, name, *, model="cnn2", seed=0, test_acc=None, metrics=(), channels="RGB", broken_last_line=False):
    run = RunFolder(root / name)
    run.write_config({"model": model, "dataset": "shapes", "channels": channels, "strategy": "drop", "seed": seed,
                      "epochs": 2, "out": str(root / name)})
    run.write_status("done")
    for m in metrics:
        append_jsonl(run.metrics_path, m)
    if broken_last_line:
        with open(run.metrics_path, "a") as fh:
            fh.write('{"epoch": 3, "val_a')
    if test_acc is not None:
        run.write_eval({"test_acc": test_acc, "inference_images_per_s": 1000.0})
    return run


def test_run_summary_reads_all_files_and_tolerates_half_written_metrics(tmp_path):
    run = _make_run(tmp_path, "a", test_acc=0.8, broken_last_line=True, metrics=[
        {"epoch": 1, "train_loss": 1.0, "val_acc": 0.5, "seconds": 2.0, "images_per_s": 100.0},
        {"epoch": 2, "train_loss": 0.7, "val_acc": 0.6, "seconds": 3.0, "images_per_s": 300.0},
    ])
    row = run_summary(run, cost={"params": 10, "macs": 1000})
    assert row["model"] == "cnn2" and row["dataset"] == "shapes" and row["channels"] == "RGB"
    assert row["epochs_done"] == 2
    assert row["best_val_acc"] == 0.6
    assert row["train_seconds"] == 5.0
    assert row["train_images_per_s"] == 200.0
    assert row["final_train_loss"] == 0.7
    assert row["flops"] == 2000
    assert row["test_acc"] == 0.8 and row["problems"] == ""


def test_run_summary_of_broken_folder_does_not_raise(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{nope")
    row = run_summary(RunFolder(tmp_path / "bad"))
    assert row["state"] == "unknown" and "config.json is not valid JSON" in row["problems"]
    assert row["test_acc"] is None


def test_leaderboard_sorts_by_test_accuracy_missing_last():
    rows = [{"run_id": "a", "test_acc": 0.5}, {"run_id": "b", "test_acc": None, "best_val_acc": 0.9},
            {"run_id": "c", "test_acc": 0.7}]
    assert list(leaderboard(rows)["run_id"]) == ["c", "a", "b"]
    assert leaderboard([]).empty


def test_cost_table_percent_of_reference_and_target():
    rows = [
        {"run_id": "big", "model": "resnet34", "params": 2_000_000, "macs": 4e9, "test_acc": 0.90},
        {"run_id": "small", "model": "cnn4", "params": 500_000, "macs": 1e9, "test_acc": 0.84},
        {"run_id": "tiny", "model": "cnn2", "params": 100_000, "macs": 0.5e9, "test_acc": 0.72},
    ]
    df = cost_table(rows, reference="big", target=0.9).set_index("run_id")
    assert df.loc["big", "acc_pct_of_ref"] == pytest.approx(100.0)
    assert df.loc["small", "acc_pct_of_ref"] == pytest.approx(100 * 0.84 / 0.90)
    assert df.loc["small", "params_pct_of_ref"] == pytest.approx(25.0)
    assert df.loc["tiny", "macs_pct_of_ref"] == pytest.approx(12.5)
    assert df.loc["small", "acc_per_gmac"] == pytest.approx(84.0)
    assert bool(df.loc["small", "reaches_target"]) is True    # 93.3 % >= 90 %
    assert bool(df.loc["tiny", "reaches_target"]) is False    # 80 % < 90 %
    with pytest.raises(ValueError, match="reference run 'nope'"):
        cost_table(rows, reference="nope")


def test_normalize_confusion_rows_and_columns():
    cm = [[8, 2], [0, 0]]
    t = normalize_confusion(cm, "true")
    assert t.tolist() == [[0.8, 0.2], [0.0, 0.0]]  # empty row stays zero, no NaN
    p = normalize_confusion(cm, "pred")
    assert p[:, 0].tolist() == [1.0, 0.0]
    assert normalize_confusion(cm, "none").tolist() == [[8, 2], [0, 0]]
    with pytest.raises(ValueError, match="square"):
        normalize_confusion([[1, 2, 3]])


def test_confusion_difference_per_class_change():
    a = [[9, 1], [3, 7]]
    b = [[45, 5], [10, 40]]   # different n: compared after row normalisation
    diff, table = confusion_difference(a, b, ["cat", "dog"])
    assert diff[0, 0] == pytest.approx(0.9 - 0.9)
    assert diff[1, 1] == pytest.approx(0.7 - 0.8)
    assert diff[1, 0] == pytest.approx(0.3 - 0.2)
    assert table["change"].tolist() == pytest.approx([0.0, -0.1])
    assert np.allclose(diff.sum(axis=1), 0)  # rows of two stochastic matrices: differences sum to 0
    with pytest.raises(ValueError, match="different shapes"):
        confusion_difference(a, np.eye(3), ["a", "b"])


def test_pareto_front():
    costs = [1, 2, 3, 2, float("nan")]
    accs = [0.5, 0.7, 0.69, 0.6, 0.99]
    assert pareto_front(costs, accs).tolist() == [True, True, False, False, False]
    # ties: two identical points are both on the front (neither strictly better)
    assert pareto_front([1, 1], [0.5, 0.5]).tolist() == [True, True]


def test_group_by_seed_mean_std():
    cfg = lambda seed, model="cnn2", out="x": {"model": model, "seed": seed, "out": out, "lr": 0.1}
    configs = [cfg(0, out="r0"), cfg(1, out="r1"), cfg(0, model="cnn4")]
    rows = [{"run_id": "r0", "model": "cnn2", "seed": 0, "test_acc": 0.8},
            {"run_id": "r1", "model": "cnn2", "seed": 1, "test_acc": 0.9},
            {"run_id": "r2", "model": "cnn4", "seed": 0, "test_acc": 0.7}]
    assert seed_group_key(configs[0]) == seed_group_key(configs[1]) != seed_group_key(configs[2])
    df = group_by_seed(rows, configs).set_index("group")
    assert df.loc["r0", "n_runs"] == 2
    assert df.loc["r0", "test_acc_mean"] == pytest.approx(0.85)
    assert df.loc["r0", "test_acc_std"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert "±" in df.loc["r0", "test_acc"]
    assert df.loc["r2", "n_runs"] == 1 and math.isnan(df.loc["r2", "test_acc_std"])


def test_curves_mean_std():
    m1 = [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.7}]
    m2 = [{"epoch": 1, "val_acc": 0.7}]
    df = curves_mean_std([m1, m2], "val_acc")
    assert df["mean"].tolist() == pytest.approx([0.6, 0.7])
    assert df["n"].tolist() == [2, 1]
    assert df["std"].iloc[0] == pytest.approx(np.std([0.5, 0.7], ddof=1))


def test_channel_robustness_matrix_assembles_rows_and_averages():
    e1 = {"channel_robustness": {"trained": "RG", "strategy": "zero-fill", "tested": {"RGB": 0.5, "RG": 0.9, "B": None}}}
    e2 = {"channel_robustness": {"trained": "RG", "strategy": "zero-fill", "tested": {"RGB": 0.7, "RG": 0.8}}}
    e3 = {"channel_robustness": {"trained": "random", "tested": {"RGB": 0.6, "R": 0.4}}}
    m = channel_robustness_matrix([e1, e2, e3, {}])
    assert list(m.index) == ["RG (zero-fill)", "random"]
    assert list(m.columns) == ["RGB", "RG", "R", "B"]
    assert m.loc["RG (zero-fill)", "RGB"] == pytest.approx(0.6)
    assert m.loc["RG (zero-fill)", "RG"] == pytest.approx(0.85)
    assert math.isnan(m.loc["RG (zero-fill)", "B"]) and math.isnan(m.loc["random", "RG"])
    # the same model on the same combination with another fill is another row, never averaged in
    e4 = {"channel_robustness": {"trained": "RG", "strategy": "sigmoid-fill", "tested": {"RGB": 0.1, "RG": 0.2}}}
    m = channel_robustness_matrix([e1, e4], ["cnn3", "cnn3"])
    assert sorted(m.index) == ["cnn3 · RG (sigmoid-fill)", "cnn3 · RG (zero-fill)"]


def test_per_class_table():
    df = per_class_table({"per_class": [{"class": "a", "precision": 1, "recall": 0.5, "f1": 0.66, "support": 3}]})
    assert df.columns.tolist() == ["class", "precision", "recall", "f1", "support"]
    assert df["support"].tolist() == [3]
    assert per_class_table({}).empty


# ---- classroom: rows per model, what differs, confusions ---------------------------------------------
def _cr(trained, tested, strategy="zero-fill"):
    return {"classes": ["a", "b", "c", "d"], "channel_robustness": {"trained": trained, "strategy": strategy,
                                                                     "tested": tested}}


def test_robustness_rows_never_average_two_models():
    evs = [_cr("random", {"RGB": 0.6, "R": 0.4}, "drop"), _cr("random", {"RGB": 0.8, "R": 0.2}, "drop"),
           _cr("RG", {"RGB": 0.5, "R": 0.3}), _cr("RG", {"RGB": 0.7, "R": 0.5})]
    m = compare.channel_robustness_matrix(evs, ["pca_cnn", "dyconv", "cnn3", "cnn3"])
    assert list(m.index) == ["cnn3 · RG (zero-fill)", "dyconv · random (drop)", "pca_cnn · random (drop)"]
    assert m.loc["pca_cnn · random (drop)", "RGB"] == pytest.approx(0.6)
    assert m.loc["dyconv · random (drop)", "RGB"] == pytest.approx(0.8)
    assert m.loc["cnn3 · RG (zero-fill)", "RGB"] == pytest.approx(0.6)     # two seeds of one model: averaged
    labels, combos, z = compare.robustness_by_run([("p", evs[0]), ("d", evs[1]), ("s1", evs[2]), ("s2", evs[3])],
                                                  {"p": "pca_cnn", "d": "dyconv", "s1": "cnn3", "s2": "cnn3"})
    assert labels == ["pca_cnn · random (drop)", "dyconv · random (drop)",
                      "cnn3 · RG (zero-fill) [s1]", "cnn3 · RG (zero-fill) [s2]"]
    assert len(set(labels)) == 4 and combos == ["RGB", "R"]
    assert compare.chance_level(evs[0]) == 0.25 and compare.chance_level(None) is None


def test_seed_mean_evals_give_one_row_per_condition():
    evs = {"s0": _cr("RG", {"RGB": 0.5, "R": 0.3}), "s1": _cr("RG", {"RGB": 0.7, "R": 0.5}),
           "sig": _cr("RG", {"RGB": 0.1, "R": 0.1}, "sigmoid-fill"), "none": None}
    merged = compare.seed_mean_evals(evs, {"zf (+1 seeds)": ["s0", "s1"], "sig": ["sig"], "none": ["none"]})
    assert list(merged) == ["zf (+1 seeds)", "sig"]
    assert merged["zf (+1 seeds)"]["channel_robustness"]["tested"] == {"RGB": pytest.approx(0.6), "R": pytest.approx(0.4)}
    labels, combos, z = compare.robustness_by_run(list(merged.items()), {"zf (+1 seeds)": "cnn3", "sig": "cnn3"})
    assert labels == ["cnn3 · RG (zero-fill)", "cnn3 · RG (sigmoid-fill)"] and z[0] == [pytest.approx(0.6), pytest.approx(0.4)]


def test_robustness_notes_explain_what_drop_cannot_test():
    runs = [("zf", _cr("RG", {"RGB": 0.5, "RG": 0.7, "R": 0.3})), ("dropped", _cr("RGB", {"RGB": 0.8}, "drop"))]
    [note] = compare.robustness_notes(runs)
    assert note.startswith("`dropped` is not tested on RG, R:") and "'drop'" in note and "zero-fill" in note
    assert compare.robustness_notes(runs[:1]) == []


def test_config_differences_keeps_only_differing_chosen_keys():
    a = {"model": "cnn3", "channels": "RG", "lr": 0.001, "seed": 0, "epochs": 6, "augment": {"flip": True},
         "run": {"device_name": "cpu-a", "num_classes": 12}}
    b = {"model": "cnn3", "channels": "R", "lr": 0.001, "seed": 1, "epochs": 6, "augment": {"flip": False},
         "run": {"device_name": "cpu-b", "num_classes": 12}}
    c = {k: v for k, v in a.items() if k != "epochs"}
    d = compare.config_differences(["a", "b", "c"], [a, b, c])
    assert list(d.index) == ["channels", "seed", "epochs", "augment.flip"]
    assert d.loc["channels"].tolist() == ["RG", "R", "RG"] and d.loc["epochs"].tolist() == ["6", "6", "–"]
    assert compare.config_differences(["a", "a2"], [a, dict(a)]).empty
    # no options ({}) and options: only the option rows differ, no extra "model_options" row
    opts = compare.config_differences(["p", "q"], [{"model_options": {"base": "cnn3"}}, {"model_options": {}}])
    assert list(opts.index) == ["model_options.base"] and opts.loc["model_options.base"].tolist() == ["cnn3", "–"]
    with pytest.raises(ValueError):
        compare.config_differences(["a"], [a, b])


def test_confusions_lists_off_diagonal_cells_most_first():
    assert compare.confusions([[5, 2, 0], [7, 3, 1], [0, 0, 9]]) == [(1, 0, 7), (0, 1, 2), (1, 2, 1)]
    assert compare.confusions(np.eye(3)) == []


def test_leaderboard_groups_by_dataset_and_carries_chance():
    rows = [{"run_id": "a", "dataset": "shapes", "test_acc": 0.7, "chance_acc": 1 / 12},
            {"run_id": "b", "dataset": "fashion-mnist", "test_acc": 0.6, "chance_acc": 0.1},
            {"run_id": "c", "dataset": "shapes", "test_acc": 0.8, "chance_acc": 1 / 12}]
    assert compare.leaderboard(rows)["run_id"].tolist() == ["c", "a", "b"]
    board = compare.leaderboard(rows, by_dataset=True)
    assert board["run_id"].tolist() == ["b", "c", "a"] and board["chance_acc"].tolist()[0] == 0.1
