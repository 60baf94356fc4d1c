"""The runs shipped in checkpoints/ are complete, and their eval.json reproduces from their weights."""

from pathlib import Path

import pytest

from core.training.evaluation import evaluate_run
from core.models.registry import get_spec
from core.training.run_folder import list_runs

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
SHIPPED = list_runs(CHECKPOINTS)
EVAL_KEYS = {"test_acc", "test_loss", "confusion_matrix", "per_class", "macro", "channel_robustness", "classes"}


def test_the_seeds_suite_is_shipped():
    from core.suite import suite_groups

    assert {r.run_id for r in SHIPPED} == {i for ids in suite_groups("seeds").values() for i in ids}


@pytest.mark.parametrize("run", SHIPPED, ids=[r.run_id for r in SHIPPED])
def test_shipped_run_is_complete(run):
    assert run.problems() == []
    assert run.read_status()["state"] == "done"
    config = run.read_config()
    get_spec(config["model"])  # the model still exists in this checkout
    assert len(run.read_metrics()) == config["epochs"]
    evaluation = run.read_eval()
    assert EVAL_KEYS <= set(evaluation)
    confusion = evaluation["confusion_matrix"]
    correct = sum(confusion[i][i] for i in range(len(confusion)))
    assert correct / sum(map(sum, confusion)) == pytest.approx(evaluation["test_acc"], abs=1e-6)
    assert not run.resume_state_path.exists() and not run.last_weights_path.exists()
    if not run.best_weights_path.exists():  # results only: it must say so and say how to regenerate
        status = run.read_status()
        assert status.get("weights_shipped") is False
        assert f"python -m core.suite seeds --only {run.run_id}" in status["message"]


WITH_WEIGHTS = [r for r in SHIPPED if r.best_weights_path.exists()]


@pytest.mark.parametrize("run", WITH_WEIGHTS, ids=[r.run_id for r in WITH_WEIGHTS])
def test_shipped_eval_reproduces_from_shipped_weights(run):
    shipped = run.read_eval()
    again = evaluate_run(run.path, device="cpu", write=False)
    assert abs(again["test_acc"] - shipped["test_acc"]) <= 0.005
    assert abs(again["test_acc"] - shipped["fp32_test_acc"]) <= 0.005
