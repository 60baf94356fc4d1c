"""core.predict on odd image modes, with runs made by hand (untrained weights: the pipeline is tested)."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import core.data
from core.analysis import explain
from core.data import DatasetInfo, LoadedDataset, TensorSplit
from core.predict import Predictor, main as predict_main, predict_images
from core.training.checkpoint import build_model, save_weights
from core.training.config import TrainConfig
from core.training.run_folder import RunFolder
from tests.core.test_images import make_bomb_png

CLASSES = [f"c{i}" for i in range(5)]


def make_run(path, *, channels="RGB", strategy="drop", source_channels=3, in_channels=3, size=32, **config):
    cfg = TrainConfig(model="cnn2", dataset="shapes" if source_channels == 3 else "fashion-mnist",
                      channels=channels, channel_strategy=strategy, image_size=size, **config)
    run = {"num_classes": len(CLASSES), "classes": CLASSES, "in_channels": in_channels,
           "source_channels": source_channels, "image_size": size,
           "normalize_mean": [0.5] * source_channels, "normalize_std": [0.25] * source_channels,
           "eval_channels": channels if channels != "random" else "RGB"}
    RunFolder(path).write_config({**cfg.to_dict(), "run": run})
    torch.manual_seed(0)
    save_weights(RunFolder(path).best_weights_path, build_model(cfg, run))
    return path


def odd_images(tmp_path):
    files = {}
    arr16 = (np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * 40)
    Image.fromarray(arr16).save(files.setdefault("deep16.png", tmp_path / "deep16.png"))
    Image.new("RGBA", (50, 30), (255, 0, 0, 128)).save(files.setdefault("rgba.png", tmp_path / "rgba.png"))
    p = Image.new("P", (20, 20), 2)
    p.putpalette(list(range(256)) * 3)
    p.save(files.setdefault("palette.png", tmp_path / "palette.png"), transparency=0)
    Image.new("CMYK", (33, 33), (0, 200, 200, 0)).save(files.setdefault("cmyk.jpg", tmp_path / "cmyk.jpg"))
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(files.setdefault("anim.gif", tmp_path / "anim.gif"), save_all=True, append_images=frames[1:])
    Image.new("LA", (12, 12), (90, 200)).save(files.setdefault("la.png", tmp_path / "la.png"))
    return files


def bad_images(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[:400])
    (tmp_path / "notes.png").write_text("hello, I am text")
    (tmp_path / "bomb.png").write_bytes(make_bomb_png(30000, 30000))
    return [tmp_path / "cut.jpg", tmp_path / "notes.png", tmp_path / "bomb.png"]


def test_every_mode_predicts_and_bad_files_do_not_stop_the_others(tmp_path):
    run = make_run(tmp_path / "run")
    good = odd_images(tmp_path)
    bad = bad_images(tmp_path)
    sources = [bad[0], *good.values(), bad[1], bad[2]]
    results = predict_images(run, sources, top_k=3)
    assert len(results) == len(sources)
    by_name = {r["image"].split("/")[-1]: r for r in results}
    for name in good:
        r = by_name[name]
        assert r["ok"] and r["error"] is None and len(r["top"]) == 3, name
        probs = [t["prob"] for t in r["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
        assert all(t["class"] in CLASSES for t in r["top"])
    assert "truncated" in by_name["cut.jpg"]["error"] and "cut.jpg" in by_name["cut.jpg"]["error"]
    assert "not an image" in by_name["notes.png"]["error"]
    assert not by_name["bomb.png"]["ok"] and "bomb.png" in by_name["bomb.png"]["error"]


@pytest.mark.parametrize("channels, strategy, in_ch", [("RG", "drop", 2), ("B", "zero-fill", 3), ("random", "mean-fill", 3)])
def test_run_channel_combination_is_applied(tmp_path, channels, strategy, in_ch):
    run = make_run(tmp_path / "run", channels=channels, strategy=strategy, in_channels=in_ch)
    pred = Predictor(run)
    img = Image.new("RGB", (64, 48), (10, 200, 30))
    seen = []
    hook = pred.model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    out = pred.predict([img, img.tobytes() and io.BytesIO(_png(img))], top_k=2)
    hook.remove()
    assert all(r["ok"] for r in out) and out[0]["top"] == out[1]["top"]   # PIL and PNG bytes agree
    assert seen[0] == (2, in_ch, 32, 32)


def test_greyscale_run(tmp_path):
    run = make_run(tmp_path / "run", channels="L", source_channels=1, in_channels=1, size=28)
    out = predict_images(run, [Image.new("RGB", (100, 100), (255, 0, 0))], top_k=10)
    assert out[0]["ok"] and len(out[0]["top"]) == len(CLASSES)        # top-k capped at #classes


def _png(img):
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_cli_json_and_exit_codes(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    good = odd_images(tmp_path)
    assert predict_main([str(run), str(good["rgba.png"]), "--top-k", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["ok"] and len(data[0]["top"]) == 2
    bad = bad_images(tmp_path)
    assert predict_main([str(run), str(good["cmyk.jpg"]), str(bad[1])]) == 1
    text = capsys.readouterr().out
    assert "cmyk.jpg: c" in text and "notes.png: ERROR" in text


def test_cli_broken_run_is_one_clear_line(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    (run / "model.safetensors").write_bytes(b"\x80\x04not really")
    assert predict_main([str(run), "x.png"]) == 1
    err = capsys.readouterr().err
    assert "model.safetensors" in err and "Traceback" not in err


def test_cli_defaults_and_invalid_flags(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    img = odd_images(tmp_path)["rgba.png"]
    assert predict_main([str(run), str(img), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["top"]) == 5       # cli.TOP_K_DEFAULT (was 3 here)
    assert predict_main([str(run), str(img), "--top-k", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --top-k") and err.count("\n") == 1
    assert predict_main(["--help"]) == 0                  # cli.run returns argparse's exit code
    out = " ".join(capsys.readouterr().out.split())         # argparse wraps long help lines
    assert "(default: 5)" in out and "(default: auto)" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cli_cuda_without_a_gpu_is_one_line_exit_2(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    assert predict_main([str(run), "x.png", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device cuda") and err.count("\n") == 1 and "Traceback" not in err


def test_predictions_wait_for_hooks_on_the_same_model_only(tmp_path):
    pred = Predictor(make_run(tmp_path / "a"))
    other = Predictor(make_run(tmp_path / "b"))
    # the lock explain's CAM / tap / deformable extraction holds while its hooks are on the model
    assert pred.lock is explain.model_lock(pred.model) and other.lock is not pred.lock
    img = Image.new("RGB", (40, 40), (200, 10, 10))
    done = threading.Event()
    with pred.lock:
        worker = threading.Thread(target=lambda: (pred.predict([img]), done.set()))
        worker.start()
        assert not done.wait(0.5)                       # blocked while "another session" extracts
        assert other.predict([img])[0]["ok"]            # a different model is not blocked
    worker.join(60)
    assert done.is_set()


def test_model_input_is_the_training_pipeline(tmp_path):
    pred = Predictor(make_run(tmp_path / "run", channels="GB", strategy="zero-fill"))
    img = Image.new("RGB", (32, 32), (255, 128, 0))
    x = pred.model_input([img])
    expected = torch.tensor([(1.0 - 0.5) / 0.25 * 0, (128 / 255 - 0.5) / 0.25, (0.0 - 0.5) / 0.25])
    assert x.shape == (1, 3, 32, 32) and torch.allclose(x[0, :, 5, 5], expected, atol=1e-5)
    assert pred.model_input([img], channels="R", strategy="drop").shape == (1, 1, 32, 32)
    assert pred.as_seen(img).shape == (32, 32, 3)


def fake_dataset(n=6, size=32):
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    split = TensorSplit(images, torch.arange(n, dtype=torch.int64) % len(CLASSES))
    info = DatasetInfo(name="shapes", num_classes=len(CLASSES), classes=CLASSES, channels=3, image_size=size)
    return LoadedDataset(info, split, split, split)


def test_embeddings_use_the_dataset_as_the_run_was_trained(tmp_path, monkeypatch):
    # A run trained on denoised images from its own data root must be embedded on those images.
    calls = []
    monkeypatch.setattr(core.data, "load_dataset", lambda name, **kw: calls.append((name, kw)) or fake_dataset())
    run = make_run(tmp_path / "run", preprocess={"denoise": True, "h": 7.0}, data_root=str(tmp_path / "data"))
    emb, labels = Predictor(run).embed_test_images(4)
    (name, kw), = calls
    assert name == "shapes" and kw["preprocess"].denoise and kw["preprocess"].h == 7.0
    assert kw["root"] == str(tmp_path / "data") and kw["image_size"] == 32
    assert emb.shape[0] == 4 and labels == [0, 1, 2, 3]
