"""AppTest of every page on real fixture runs: no exception, widgets present, the fixture's numbers shown."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.training.run_folder import RunFolder
from tests.dashboard.conftest import APP, goto, table_with


def _eval(root: Path, run: str) -> dict:
    return json.loads((root / run / "eval.json").read_text())


def _png(colour=(200, 30, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (40, 40), colour if mode == "RGB" else colour[0]).save(buf, "PNG")
    return buf.getvalue()


def test_overview_leaderboard_holds_fixture_numbers(app, runs_env):
    from core.analysis.compare import run_cost

    board = table_with(app, "Test accuracy").set_index("Run")
    assert set(board.index) == {"cnn2_rg", "deform"}
    for run in ("cnn2_rg", "deform"):
        assert board.loc[run, "Test accuracy"] == f"{_eval(runs_env, run)['test_acc']:.3f}"
        cost = run_cost(runs_env / run)
        assert board.loc[run, "Params"] == f"{cost['params']:,}" and board.loc[run, "MACs"] == f"{cost['macs']:,}"
        assert board.loc[run, "Weights"] == "yes"
    assert board.loc["cnn2_rg", "Channels"] == "RG"
    assert board.loc["cnn2_rg", "Dataset"] == "shapes" and board.loc["cnn2_rg", "Chance accuracy"] == f"{1 / 12:.3f}"
    assert any("shapes" in c.value and "12 classes, chance accuracy 0.083" in c.value for c in app.caption)
    assert len(app.get("page_link")) == 5
    assert not app.error


# The Train page's form, run-name and run-list tests are in test_train_page.py.


def test_train_page_imports_a_zipped_run_and_refuses_a_bad_one(app, runs_env, tmp_path):
    import zipfile

    at = goto(app, "train")
    src = runs_env / "cnn2_rg"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in ("config.json", "status.json", "metrics.jsonl", "eval.json", "model.safetensors"):
            zf.write(src / f, f"gpu_run/{f}")
    [up] = at.file_uploader
    up.upload("gpu_run.zip", buf.getvalue(), "application/zip").run()
    assert not at.exception
    try:
        assert any("Imported `gpu_run`" in s.value for s in at.success), [e.value for e in at.error]
        assert (runs_env / "gpu_run" / "model.safetensors").exists()
        bad = io.BytesIO()
        with zipfile.ZipFile(bad, "w") as zf:
            zf.writestr("../../evil.py", "print('x')")
        at.file_uploader[0].upload("evil.zip", bad.getvalue(), "application/zip").run()
        assert not at.exception
        assert any("was not imported" in e.value and ".." in e.value for e in at.error)
    finally:
        import shutil
        shutil.rmtree(runs_env / "gpu_run", ignore_errors=True)


def _compare_tab(at, name: str):
    """Open one of Compare's tabs (only the open tab's part of the page runs)."""
    at.session_state["cmp_tab"] = name
    return at.run()


def test_compare_page_tables(app, runs_env):
    at = goto(app, "compare")
    assert not any("f1" in d.value.columns for d in at.dataframe)          # only the open tab (Summary) ran
    costs = table_with(at, "Accuracy (% of ref)").set_index("Run")
    ref = at.selectbox(key="cmp_ref").value
    for run in ("cnn2_rg", "deform"):
        assert costs.loc[run, "Test accuracy"] == f"{_eval(runs_env, run)['test_acc']:.3f}"
        assert costs.loc[run, "Params"].replace(",", "").isdigit()          # a count in full, as text
    assert costs.loc[ref, "Accuracy (% of ref)"] == "100.0"
    differs = table_with(at, "setting").set_index("setting")               # what differs: model, channels...
    assert {"model", "channels"} <= set(differs.index) and "seed" not in differs.index
    _compare_tab(at, "Confusions")
    change = table_with(at, "change")
    a, b = at.selectbox(key="cmp_a").value, at.selectbox(key="cmp_b").value
    cm_a = np.array(_eval(runs_env, a)["confusion_matrix"], float)
    cm_b = np.array(_eval(runs_env, b)["confusion_matrix"], float)
    expected = np.diag(cm_a / cm_a.sum(1, keepdims=True).clip(1)) - np.diag(cm_b / cm_b.sum(1, keepdims=True).clip(1))
    assert all(len(v.split(".")[1]) == 3 for v in change["change"])          # shown to 3 decimals, as text
    assert change["change"].astype(float).to_numpy() == pytest.approx(expected, abs=5e-4)
    # the misclassified gallery: a confusion of the first run, its images with probabilities
    from core.analysis.compare import confusions

    gallery_run = at.selectbox(key="cmp_gallery_run").value
    picker = at.selectbox(key=f"cmp_gallery_cell_{gallery_run}")
    assert picker.value is None                     # nothing classified until a confusion is chosen
    picker.set_value(confusions(_eval(runs_env, gallery_run)["confusion_matrix"])[0]).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    shown = [c for im in at.image for c in im.captions if c.startswith("#")]
    assert shown and all("p(" in c for c in shown)
    # the normalised/raw toggle, kept while another tab is open
    at.toggle(key="cmp_norm").set_value(False).run()
    assert not at.exception
    _compare_tab(at, "Per class")
    per_class = table_with(at, "f1")                                      # one run's table at a time
    assert "run" not in per_class and len(per_class) == 12 and at.selectbox(key="cmp_pc_run").value == "cnn2_rg"
    at.selectbox(key="cmp_pc_run").set_value("deform").run()
    assert table_with(at, "f1")["f1"].tolist() != per_class["f1"].tolist()
    _compare_tab(at, "Robustness")
    robust = table_with(at, "RGB").set_index("trained")
    tested = _eval(runs_env, "cnn2_rg")["channel_robustness"]["tested"]
    assert robust.loc["cnn2 · RG (zero-fill)", "RG"] == f"{tested['RG']:.3f}"
    _compare_tab(at, "Confusions")
    assert at.toggle(key="cmp_norm").value is False
    for tab in ("Curves", "Accuracy vs cost", "Report"):
        _compare_tab(at, tab)
        assert not at.exception, tab
    assert not at.error


def test_compare_page_builds_the_report(app, runs_env):
    at = _compare_tab(goto(app, "compare"), "Report")
    at.button(key="cmp_build_report").click().run(timeout=300)
    assert not at.exception and not at.error
    _, html = at.session_state["cmp_report"]
    assert "<html" in html.lower() and "cnn2_rg" in html and "deform" in html
    assert f"test accuracy {_eval(runs_env, 'cnn2_rg')['test_acc']:.3f}" in html


def test_predict_page_test_images_and_uploads(app, runs_env):
    at = goto(app, "predict")
    assert at.multiselect(key="pr_runs").value == ["cnn2_rg", "deform"]
    at.file_uploader(key="pr_upload").set_value([
        ("red.png", _png(), "image/png"),
        ("grey.png", _png((90, 0, 0), mode="L"), "image/png"),
        ("broken.png", b"\x89PNG\r\n\x1a\n not really", "image/png"),
    ]).run()
    assert not at.exception
    assert any("broken.png" in e.value for e in at.error), "a bad file gets a clear st.error"
    table = table_with(at, "prob")
    assert set(table["image"]) == {"red.png", "grey.png"} and set(table["run"]) == {"cnn2_rg", "deform"}
    assert (table.groupby(["image", "run"]).size() == 3).all()          # top-3 per image and run
    probs = table[table["rank"] == 1]["prob"]
    assert ((probs > 0) & (probs <= 1)).all()
    at.radio(key="pr_source").set_value("test images").run()
    assert not at.exception and not at.error
    table = table_with(at, "correct")
    assert table["true"].notna().all() and len(table) == 4 * 2 * 3


def _explain_tab(at, name: str):
    """Open one of Explain's tabs (only the open tab's part of the page runs)."""
    at.session_state["ex_tab"] = name
    return at.run()


def test_explain_page_cams_attention_and_deformable(app, runs_env):
    at = goto(app, "explain")
    assert not at.error, [e.value for e in at.error]
    captions = [c for im in at.image for c in im.captions]
    cams = [c for c in captions if c.startswith("Grad-CAM for")]
    assert len(cams) == 2, captions
    assert not any(c.startswith("spatial attention") for c in captions)   # only the open tab is drawn
    at.selectbox(key="ex_method").set_value("Grad-CAM++").run()
    _explain_tab(at, "Attention")
    captions = [c for im in at.image for c in im.captions]
    assert any(c.startswith("spatial attention") for c in captions), "CBAM map of the deform run"
    assert not any("CAM for" in c for c in captions)
    _explain_tab(at, "Deformable conv")
    pts = table_with(at, "dy")
    assert len(pts) == 9       # 3x3 kernel taps of the chosen output location
    _explain_tab(at, "CAMs")
    assert at.selectbox(key="ex_method").value == "Grad-CAM++"             # kept while another tab was open
    for method in ("Grad-CAM++", "Layer-CAM"):
        at.selectbox(key="ex_method").set_value(method).run()
        assert not at.exception and not at.error
        assert sum(c.startswith(f"{method} for") for im in at.image for c in im.captions) == 2
    at.selectbox(key="ex_class").set_value("triangle").run()
    assert all("'triangle'" in c for im in at.image for c in im.captions if "CAM for" in c)
    at.radio(key="ex_source").set_value("upload").run()
    assert any("Upload an image" in i.value for i in at.info)
    at.file_uploader(key="ex_upload").upload("odd.png", _png(mode="L"), "image/png").run()
    assert not at.exception and not at.error
    assert sum("CAM for 'triangle'" in c for im in at.image for c in im.captions) == 2
    at.file_uploader(key="ex_upload").upload("bad.png", b"GIF89a garbage", "image/png").run()
    assert not at.exception and any("bad.png" in e.value for e in at.error)


def test_architecture_page_matches_core_and_calculator(app):
    at = goto(app, "architecture")
    from core.analysis.complexity import model_complexity
    from core.analysis.conv_cost import compare_conv_costs

    rep = model_complexity("cnn2", (3, 32, 32), 10, {}, cross_check=False)
    headline = "\n".join(m.value for m in at.markdown)
    assert f"**{rep.params_total:,}**" in headline and f"**{rep.macs:,}**" in headline   # in full, never cut
    layers = table_with(at, "Counted by")
    assert sum(int(v.replace(",", "")) for v in layers["MACs"]) == rep.macs
    calc = table_with(at, "MACs formula").set_index("layout")
    cmp_ = compare_conv_costs(32, 64, 3, 56)
    assert calc.loc["regular", "MACs"] == f"{cmp_.regular.macs:,}"
    assert calc.loc["depthwise separable", "MACs"] == f"{cmp_.separable.macs:,}"
    assert any(cmp_.ratio_formula in m.value for m in at.markdown)
    at.radio(key="arch_source").set_value("a run").run()
    assert not at.exception and not at.error


PAGES = ["overview", "train", "compare", "predict", "explain", "architecture"]


def test_every_page_on_an_empty_and_a_broken_runs_folder(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("ARCHSCOPE_RUNS", str(root))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert any("No runs yet" in i.value for i in at.info)
    for page in PAGES[1:]:
        goto(at, page)
    # a broken run (unreadable config, no weights) and a run still training
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text("{oops")
    live = RunFolder(root / "live")
    live.write_config({"model": "cnn2", "dataset": "shapes"})
    live.write_status("running", pid=__import__("os").getpid(), epoch=0, epochs=3)
    for page in PAGES:
        goto(at, page)
    goto(at, "overview")
    assert any("broken" in w.value for w in at.warning)
    goto(at, "predict")
    assert any("saved weights" in i.value for i in at.info)
    # weights that are not safetensors (a pickle in disguise): a clear error, the page keeps working
    fake = RunFolder(root / "fake")
    fake.write_config({"model": "cnn2", "dataset": "shapes", "run": {"num_classes": 12, "in_channels": 3,
                                                                      "classes": [str(i) for i in range(12)],
                                                                      "image_size": 32}})
    fake.write_status("done")
    fake.best_weights_path.write_bytes(b"\x80\x04\x95" + b"\x00" * 100)
    for page in ("predict", "explain"):
        goto(at, page)
        assert any("cannot be loaded" in e.value and "fake" in e.value for e in at.error), page


def test_missing_runs_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHSCOPE_RUNS", str(tmp_path / "does-not-exist"))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert not at.exception
    assert any("does not exist yet" in w.value for w in at.sidebar.warning)
    for page in PAGES[1:]:
        goto(at, page)


def test_explain_kernel_attention_of_a_dynamic_conv_run(app, runs_env):
    """A dyconv run (untrained weights are enough: the page reads the kernel-attention taps)."""
    import shutil

    from core.models.registry import create_model
    from core.training.checkpoint import save_weights

    src, dst = runs_env / "cnn2_rg", runs_env / "dyconv"
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(model="dyconv_resnet18", model_options={}, channels="RGB", channel_strategy="drop")
    cfg["run"]["in_channels"] = 3
    dst.mkdir()
    try:
        (dst / "config.json").write_text(json.dumps(cfg))
        RunFolder(dst).write_status("done")
        save_weights(dst / "model.safetensors", create_model("dyconv_resnet18", num_classes=12, in_channels=3))
        at = goto(app, "explain")
        at.multiselect(key="ex_runs").set_value(["dyconv"]).run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        _explain_tab(at, "Dynamic conv")
        assert not at.exception and not at.error, [e.value for e in at.error]
        ka = table_with(at, "kernel")
        assert set(ka["combo"]) == {"RGB", "RG", "RB", "GB", "R", "G", "B"}
        assert all(len(w.split(".")[1]) == 3 for w in ka["weight"])          # three decimals, as text
        assert not any(".tap" in x for x in ka["layer"])                       # layers as words
        sums = ka.assign(weight=ka["weight"].astype(float)).groupby(["combo", "layer"])["weight"].sum()
        assert np.allclose(sums, 1.0, atol=2e-3)          # a softmax over the kernels per combination (rounded)
        assert not any("no dynamic convolution" in i.value for i in at.info)
    finally:
        shutil.rmtree(dst, ignore_errors=True)


def test_train_page_cancel_and_resume_buttons(app, runs_env):
    """Cancel signals the trainer's process group; Resume relaunches a stopped run with --resume."""
    import shutil
    import subprocess
    import sys

    stopped, live = runs_env / "stopped", runs_env / "live"
    shutil.copytree(runs_env / "cnn2_rg", stopped)
    RunFolder(stopped).write_status("cancelled", message="cancelled by a test", pid=None)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    RunFolder(live).write_config({"model": "cnn2", "dataset": "shapes"})
    RunFolder(live).write_status("running", pid=sleeper.pid, epoch=0, epochs=3)
    try:
        at = goto(app, "train")
        [cancel] = [b for b in at.button if b.key == "tr_cancel_live"]
        cancel.click().run()
        assert not at.exception
        assert sleeper.wait(timeout=20) != 0, "the trainer's process got SIGTERM"
        # The job registry is one per process (st.cache_resource), shared by every AppTest here, and it
        # still watches the runs folders of earlier tests, one of which holds a "running" run whose pid
        # is this very process: give the queue enough slots that Resume starts at once, whatever ran before.
        at.number_input(key="tr_parallel").set_value(8).run()
        at.selectbox(key="tr_resume_pick").set_value("stopped")
        [resume] = [b for b in at.button if b.key == "tr_resume_any"]
        resume.click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        from dashboard.components.jobs import job_registry
        job = job_registry().processes.get(str(stopped))
        assert job is not None, "Resume launched a trainer"
        assert job.wait(timeout=120) == 0, (stopped / "train.log").read_text()[-2000:]
        assert "--resume" in " ".join(job.process.args)
        assert RunFolder(stopped).read_status()["state"] == "done"
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
        shutil.rmtree(stopped, ignore_errors=True)
        shutil.rmtree(live, ignore_errors=True)


def test_explain_pca_of_a_triplet_run(app, runs_env):
    import shutil

    dst = runs_env / "triplet"
    shutil.copytree(runs_env / "cnn2_rg", dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["loss"] = "ce+triplet"
    (dst / "config.json").write_text(json.dumps(cfg))
    try:
        at = goto(app, "explain")
        at.multiselect(key="ex_runs").set_value(["triplet"]).run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        _explain_tab(at, "Embeddings")
        assert not at.exception and not at.error, [e.value for e in at.error]
        pts = table_with(at, "pc1")
        assert len(pts) == 500 and pts["class"].nunique() > 1
        assert abs(pts["pc1"].mean()) < 1e-6     # PCA points are centred
    finally:
        shutil.rmtree(dst, ignore_errors=True)


def test_compare_loads_a_course_group_of_the_shipped_runs(monkeypatch):
    """The Compare page offers the seeds suite's groups present in the runs folder; choosing one
    selects exactly its runs (here the shipped checkpoints/: small networks vs ResNet-34)."""
    from core.suite import suite_groups

    monkeypatch.setenv("ARCHSCOPE_RUNS", str(APP.parents[1] / "checkpoints"))
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.run()
    at = goto(at, "compare")
    picker = at.selectbox(key="cmp_suite_group")
    assert picker.value is None and any(o.startswith("small-vs-resnet34 (12 runs)") for o in picker.options)
    picker.set_value("small-vs-resnet34").run()
    assert not at.exception, [e.value for e in at.exception]
    expected = suite_groups("seeds")["small-vs-resnet34"]
    assert list(at.multiselect(key="cmp_runs").value) == expected
    assert list(table_with(at, "Test accuracy")["Run"]) == expected      # the cost table shows that group
    costs = table_with(at, "Test accuracy").set_index("Run")
    assert costs.loc["small-resnet34-s0", "Params"] == "21,290,828"     # every digit, as the issue saw it cut
    # the group's lessons, with our verdict computed over the shipped runs
    assert any(h.value.startswith("Lesson: spatial-attn-vs-resnet34") for h in at.subheader)
