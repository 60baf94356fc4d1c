"""The Compare page's lesson blocks: chosen runs of a suite lesson show its question, finding,
verdict (styled by verdict) and arms table; the numbers are the core's (core.analysis.lesson_view).
Fake run folders and a small suite file ($ARCHSCOPE_SUITE): no training, fast."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.analysis.lesson_view import lesson_result, verdict_sentence
from core.suite import load_suite
from tests.core.test_lessons import fake_run, lesson, write_suite
from tests.dashboard.conftest import table_with

PAGE = Path(__file__).resolve().parents[2] / "dashboard" / "app_pages" / "compare.py"


def _setup(tmp_path, monkeypatch, *, with_b: bool = True) -> tuple[Path, Path]:
    runs = [{"id": "ra", "group": "pair", "seeds": [0, 1, 2], "config": {"model": "cnn3"}},
            {"id": "rb", "group": "pair", "seeds": [0, 1, 2], "config": {"model": "cnn2"}},
            {"id": "loner", "group": "solo", "config": {"model": "cnn2"}}]
    suite = write_suite(tmp_path / "page_suite.json", runs, [
        lesson([{"name": "deep", "run": "ra"}, {"name": "shallow", "run": "rb"}], "deep > shallow", ["model"],
               note="Same data for both arms.")])
    root = tmp_path / "runs"
    for seed, (a, b) in enumerate([(0.80, 0.70), (0.78, 0.71), (0.82, 0.69)]):
        fake_run(root, f"ra-s{seed}", a, val=[0.5, 0.795, 0.80])
        if with_b:
            fake_run(root, f"rb-s{seed}", b, val=[0.5, 0.6, 0.7])
    fake_run(root, "loner", 0.5)
    monkeypatch.setenv("ARCHSCOPE_RUNS", str(root))
    monkeypatch.setenv("ARCHSCOPE_SUITE", str(suite))
    return suite, root


def _page(runs: list[str]) -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.session_state["cmp_runs"] = runs
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_compare_page_shows_the_lesson_of_the_chosen_runs(tmp_path, monkeypatch):
    suite, root = _setup(tmp_path, monkeypatch)
    at = _page(["ra-s0", "rb-s0"])
    assert [s.value for s in at.subheader][0] == "Lesson: l1 (report 001)"       # before "What differs"
    assert any(m.value == "**The report found:** f 0.29 vs 0.02" for m in at.markdown)
    expected = verdict_sentence(lesson_result(load_suite(suite).lessons[0], root), str(suite))
    assert [s.value for s in at.success] == [expected]
    assert expected.startswith("Reproduced: deep - shallow = +0.100 [+0.025, +0.175], 3 seeds")
    assert any(c.value == "Same data for both arms." for c in at.caption)
    arms = table_with(at, "95 % CI").set_index("Arm")
    assert arms.loc["deep", "Runs"] == "3: ra-s0, ra-s1, ra-s2" and arms.loc["deep", "Mean"] == "0.800"
    assert arms.loc["shallow", "Plateau"] == "0/3"
    # a run of no lesson: no lesson block
    at = _page(["loner"])
    assert not any(s.value.startswith("Lesson:") for s in at.subheader) and not at.success


def test_compare_page_lesson_not_run_and_a_broken_suite(tmp_path, monkeypatch):
    _setup(tmp_path, monkeypatch, with_b=False)
    at = _page(["ra-s0"])
    [info] = [i.value for i in at.info if i.value.startswith("Not run")]
    assert "arm 'shallow' has no finished run" in info and "`python -m core.suite" in info and "--only rb" in info
    # a suite file that cannot be loaded: no lesson block, no error
    monkeypatch.setenv("ARCHSCOPE_SUITE", str(tmp_path / "missing.json"))
    at = _page(["ra-s0"])
    assert not any(s.value.startswith("Lesson:") for s in at.subheader) and not at.error
