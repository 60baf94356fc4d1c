#!/usr/bin/env bash
# One pass over ArchScope's CUDA paths on a GPU server, in at most ~8 minutes.
#
#     bash benchmarks/gpu_check.sh                       # on a machine with one CUDA GPU
#     GPU_CHECK_DEVICE=cpu bash benchmarks/gpu_check.sh  # dry run of every command on a CPU machine
#
# Steps (each under `timeout`, each printed PASS / FAIL / SKIP with its seconds, a summary table at
# the end): CUDA tests; a 2-epoch bf16 + channels_last training (crop-flip, RG zero-fill, shapes) and
# its resume (+1 epoch); a deformable model, evaluated and queried (core.evaluate, core.predict); a
# dynamic-conv model on random channels with the triplet loss; a one-process torchrun (a real nccl
# group); a host-sync count of the training loop (torch.cuda.set_sync_debug_mode); a --compile run;
# the trainer and layer benchmarks. Each step's limit is cut to what is left of the budget
# (GPU_CHECK_BUDGET_S, default 470 s), and steps are skipped once it is spent. A step whose Python imports are missing (the server may lack pytest,
# safetensors, ...) is SKIPped with the reason; nothing needs the network.
#
# Everything printed also goes to $OUT/gpu_check/ (when OUT is set): one log per step, the run
# folders' small JSON files, summary.txt.
set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 1
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-470}"          # the whole script; each step gets min(its limit, what is left)
PY="${PYTHON:-python3}"
START=$(date +%s)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
RESULTS="${OUT:-$WORK}/gpu_check"
mkdir -p "$RESULTS"
export ARCHSCOPE_CACHE="$WORK/cache"             # generated datasets: private, fresh
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
SUMMARY=()

# Sizes: small on the GPU (first CUDA init and cuDNN autotuning dominate), tiny for the CPU dry run.
if [ "$DEVICE" = "cuda" ]; then
    N=4096; BS=128; BENCH="--samples 4096 --epochs 2 --batch-size 256"; LAYERS="--batch 64 --repeats 5 --tv-repeats 3"
else
    N=256; BS=64; BENCH="--samples 256 --epochs 1 --batch-size 64 --threads 1"
    LAYERS="--batch 4 --repeats 1 --tv-repeats 1 --skip-torchvision"
fi
COMMON="--dataset shapes --image-size 32 --max-train-samples $N --batch-size $BS --device $DEVICE --seed 0 --quiet --no-tensorboard"
RUNS="$WORK/runs"; mkdir -p "$RUNS"
export PY DEVICE WORK RUNS RESULTS COMMON N BS BENCH LAYERS

log() { echo "$*" | tee -a "$RESULTS/summary.txt"; }

# missing_modules MOD... : prints the ones that do not import (a broken install counts as missing)
missing_modules() {
    "$PY" - "$@" <<'PYEOF' 2>/dev/null
import importlib, sys
missing = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as exc:
        missing.append(f"{name} ({type(exc).__name__})")
print(", ".join(missing))
PYEOF
}

declare -A MISSING_CACHE          # "MODULES" -> what did not import (checked once: importing torch takes seconds)
# step NAME LIMIT_S "MODULES" FUNCTION : run the exported shell FUNCTION under timeout, log to NAME.log
step() {
    local name="$1" limit="$2" modules="$3" fn="$4"
    local now left missing t0 rc secs verdict note=""
    now=$(date +%s); left=$((BUDGET_S - (now - START)))
    if [ "$left" -lt 15 ]; then
        SUMMARY+=("$(printf '%-18s %-5s %6s  %s' "$name" SKIP 0 "time budget spent")"); log "== $name: SKIP (time budget spent)"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    # shellcheck disable=SC2086
    if [ -z "${MISSING_CACHE[$modules]+set}" ]; then MISSING_CACHE[$modules]=$(missing_modules $modules); fi
    missing="${MISSING_CACHE[$modules]}"
    if [ -n "$missing" ]; then
        SUMMARY+=("$(printf '%-18s %-5s %6s  %s' "$name" SKIP 0 "cannot import: $missing")"); log "== $name: SKIP (cannot import: $missing)"
        return
    fi
    log "== $name (limit ${limit}s)"
    t0=$(date +%s%N)
    timeout --kill-after=10 "$limit" bash -c "$fn" >"$RESULTS/$name.log" 2>&1
    rc=$?
    secs=$(( ($(date +%s%N) - t0) / 100000000 )); secs="$((secs / 10)).$((secs % 10))"
    if [ $rc -eq 0 ]; then verdict=PASS
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then verdict=FAIL; note="timed out after ${limit}s, see $name.log"
    else verdict=FAIL; note="exit $rc, see $name.log"; fi
    tail -n 25 "$RESULTS/$name.log"
    SUMMARY+=("$(printf '%-18s %-5s %6s  %s' "$name" "$verdict" "$secs" "$note")")
    log "== $name: $verdict in ${secs}s"
}

# check_run DIR STATE [PYTHON EXPRESSION over cfg, metrics, status, ev] : prints the run and asserts on it
cat >"$WORK/check_run.py" <<'PYEOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1]); want = sys.argv[2]; expr = sys.argv[3] if len(sys.argv) > 3 else "True"
status = json.loads((run / "status.json").read_text())
cfg = json.loads((run / "config.json").read_text())
metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
ev = json.loads((run / "eval.json").read_text()) if (run / "eval.json").exists() else None
print("status:", status["state"], "-", status.get("message"))
print("run:", {k: cfg["run"].get(k) for k in ("device", "device_name", "amp", "world_size", "process_group")})
for m in metrics:
    print("epoch", m["epoch"], {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items() if k != "epoch"})
if ev:
    print("eval:", {k: ev.get(k) for k in ("test_acc", "dtype", "device", "inference_images_per_s")})
assert status["state"] == want, f"state {status['state']} != {want}"
assert eval(expr), f"check failed: {expr}"
print("check passed:", expr)
PYEOF
check_run() { "$PY" "$WORK/check_run.py" "$@"; }

save_run() {  # a run folder's small files into the results
    local dst="$RESULTS/runs/$(basename "$1")"
    [ -d "$1" ] && mkdir -p "$dst" && cp "$1"/*.json "$1"/*.jsonl "$dst"/ 2>/dev/null
    return 0
}

# ---- the steps ---------------------------------------------------------------------------------
cuda_tests() {   # explicit files: the dashboard tests import streamlit at module level
    "$PY" -m pytest -q -p no:cacheprovider -rs tests/core/training/test_cuda.py tests/core/data/test_channels.py \
        tests/core/models/test_layers.py tests/core/training/test_device.py -k "cuda or speed_settings or autocast"
}
train_bf16() {   # bf16 autocast + channels_last on CUDA; crop-flip; a partial combination with zero-fill
    "$PY" -m core.train --model cnn3 $COMMON --epochs 2 --augment crop-flip --channels RG \
        --channel-strategy zero-fill --out "$RUNS/bf16" &&
    check_run "$RUNS/bf16" done "len(metrics) == 2 and ev['dtype'] == 'float32' and cfg['run']['amp'] == \
('bf16' if cfg['run']['device'].startswith('cuda') else None) and cfg['channels'] == 'RG'"
}
resume() {
    "$PY" -m core.train --resume "$RUNS/bf16" --epochs 3 --quiet &&
    check_run "$RUNS/bf16" done "[m['epoch'] for m in metrics] == [1, 2, 3]"
}
compiled() {     # torch.compile: its time is reported apart (compile_seconds), not in images_per_s
    "$PY" -m core.train --model cnn3 $COMMON --epochs 2 --compile --no-eval --out "$RUNS/compiled" &&
    check_run "$RUNS/compiled" done "'compile_seconds' in metrics[0] and 'compile_seconds' not in metrics[1]"
}
deformable() {
    "$PY" -m core.train --model deform_cnn2 --model-options '{"modulated": true}' $COMMON --epochs 1 \
        --out "$RUNS/deform" &&
    check_run "$RUNS/deform" done "ev['dtype'] == 'float32'"
}
evaluate_deform() {
    "$PY" -m core.evaluate "$RUNS/deform" --device "$DEVICE" --json >"$RESULTS/eval_deform.json" &&
    "$PY" -c "import json, sys; r = json.load(open('$RESULTS/eval_deform.json')); \
print({k: r[k] for k in ('test_acc', 'dtype', 'device', 'inference_images_per_s')}); sys.exit(r['dtype'] != 'float32')"
}
predict_deform() {
    "$PY" -c "from PIL import Image; import numpy as np; \
Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype('uint8')).save('$WORK/probe.png')" &&
    "$PY" -m core.predict "$RUNS/deform" "$WORK/probe.png" --device "$DEVICE" --json
}
cams_deform() {   # the four CAMs (torchcam) on the deformable run, on the GPU
    "$PY" - "$RUNS/deform" "$DEVICE" "$WORK/probe.png" <<'PYEOF'
import sys, time
import numpy as np
from PIL import Image
from core.analysis.explain import CAM_METHODS, compute_cam, default_target_layer
from core.predict import Predictor

pred = Predictor(sys.argv[1], device=sys.argv[2])
x = pred.model_input([Image.open(sys.argv[3]).convert("RGB")]).to(pred.device)
layer = default_target_layer(pred.model, tuple(x.shape[1:]))
for method in CAM_METHODS:
    t0 = time.perf_counter()
    r = compute_cam(pred.model, x, method, layer)
    assert r.cam.shape == tuple(x.shape[-2:]) and np.isfinite(r.cam).all(), (method, r.cam.shape)
    print(f"{method:11s} layer {layer}: class {r.class_idx} p={r.probs[r.class_idx]:.3f}, "
          f"cam {r.cam.shape} in [{r.cam.min():.2f}, {r.cam.max():.2f}], {1000 * (time.perf_counter() - t0):.0f} ms")
PYEOF
}
dynconv_triplet() {   # a variable-input model on random combinations, with the in-batch triplet loss
    "$PY" -m core.train --model dyconv_resnet18 --model-options '{"small_input": true}' $COMMON --epochs 1 \
        --channels random --channel-strategy drop --loss ce+triplet --no-eval --out "$RUNS/dyconv" &&
    check_run "$RUNS/dyconv" done "metrics[0]['train_loss'] > 0"
}
torchrun_1proc() {    # one process under torchrun still creates a real process group
    "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m core.train --model cnn3 $COMMON --epochs 1 \
        --out "$RUNS/torchrun" &&
    check_run "$RUNS/torchrun" done "cfg['run']['process_group'] == ('nccl' if '$DEVICE' == 'cuda' else 'gloo')"
}
sync_check() {
    "$PY" - "$DEVICE" "$RUNS/sync" "$N" "$BS" <<'PYEOF'
"""Count synchronising CUDA calls made while epochs run (torch.cuda.set_sync_debug_mode("warn")),
by source line. By design: one per log interval (the NaN check + steps.jsonl row) and a few per
epoch (totals, validation, checkpoint); none per step. Fails when a line syncs on every step."""
import collections, sys, warnings
import torch
from core.training import trainer
from core.training.config import TrainConfig

device, out, n, bs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cuda = device == "cuda"
where = collections.Counter()
steps = {"n": 0}
real_epoch, real_step = trainer._train_epoch, trainer._train_step

def counted_step(*a, **k):
    steps["n"] += 1
    return real_step(*a, **k)

def watched_epoch(*a, **k):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            return real_epoch(*a, **k)
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
            for w in caught:
                if "synchroniz" in str(w.message).lower():
                    where[f"{w.filename.split('/core/')[-1]}:{w.lineno}"] += 1

trainer._train_epoch, trainer._train_step = watched_epoch, counted_step
failed = []
for combo, strategy, loss, model in (("RG", "zero-fill", "ce", "cnn3"), ("random", "drop", "ce+triplet", "pca_cnn"),
                                     ("random", "drop", "ce+triplet", "dyconv_resnet18")):
    where.clear(); steps["n"] = 0
    cfg = TrainConfig(model=model, dataset="shapes", image_size=32, max_train_samples=n, batch_size=bs, epochs=1,
                      device=device, channels=combo, channel_strategy=strategy, loss=loss, augment="crop-flip",
                      log_every=10, eval_at_end=False, tensorboard=False,
                      model_options={"small_input": True} if model.startswith("dyconv") else {})
    status = trainer.train(cfg, f"{out}-{model}", quiet=True)
    total = sum(where.values())
    print(f"{model} {combo}/{strategy}/{loss}: {status['state']}, {steps['n']} steps, log every 10 steps, "
          f"{total} synchronising calls in the epoch (train + validation)")
    for line, count in where.most_common():
        print(f"   {count:5d}  {line}")
    per_step = [line for line, count in where.items() if count >= steps["n"] > 2]
    if status["state"] != "done" or per_step:
        failed.append((model, status["state"], per_step))
if not cuda:
    print("(CPU dry run: set_sync_debug_mode needs CUDA, so nothing is counted)")
if failed:
    sys.exit(f"per-step syncs or failed runs: {failed}")
PYEOF
}
bench_trainer() {
    "$PY" benchmarks/bench_trainer.py --device "$DEVICE" --model cnn3 $BENCH --seeds 0 \
        --json-out "$RESULTS/bench_trainer.json"
}
bench_layers() { "$PY" benchmarks/bench_layers.py --device "$DEVICE" $LAYERS; }
export -f check_run cuda_tests train_bf16 resume compiled deformable evaluate_deform predict_deform cams_deform dynconv_triplet \
    torchrun_1proc sync_check bench_trainer bench_layers

log "gpu_check on $(hostname) at $(date -u +%FT%TZ), device $DEVICE, budget ${BUDGET_S}s, results in $RESULTS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$RESULTS/summary.txt"
"$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', \
torch.version.cuda, 'available', torch.cuda.is_available())" 2>&1 | tee -a "$RESULTS/summary.txt"
# The project itself, without touching dependencies (no network: no build isolation either);
# PYTHONPATH covers a failure. Not in the CPU dry run (it would reinstall the developer's checkout).
if [ "$DEVICE" = "cuda" ]; then
    timeout 30 "$PY" -m pip install -e . --no-deps --no-build-isolation -q >"$RESULTS/pip.log" 2>&1 \
        || log "(pip install -e . --no-deps failed: using PYTHONPATH; see pip.log)"
fi

CORE="torch torchvision numpy PIL safetensors core.training.trainer"
# Most important first: when the budget runs out, the benchmarks are what is skipped.
step cuda_tests      120 "$CORE pytest" cuda_tests
step train_bf16       90 "$CORE" train_bf16
step resume           60 "$CORE" resume;            save_run "$RUNS/bf16"
step deformable       90 "$CORE" deformable;        save_run "$RUNS/deform"
step evaluate_deform  60 "$CORE" evaluate_deform
step predict_deform   60 "$CORE" predict_deform
step cams_deform      60 "$CORE torchcam" cams_deform
step dynconv_triplet  90 "$CORE" dynconv_triplet;   save_run "$RUNS/dyconv"
step torchrun_1proc   90 "$CORE" torchrun_1proc;    save_run "$RUNS/torchrun"
step sync_check      120 "$CORE" sync_check
step compile         150 "$CORE" compiled;          save_run "$RUNS/compiled"
step bench_trainer   120 "$CORE" bench_trainer
step bench_layers     90 "$CORE" bench_layers

# ---- summary ---------------------------------------------------------------------------------
log ""
log "== summary ($(( $(date +%s) - START ))s in all, device $DEVICE)"
log "$(printf '%-18s %-5s %6s  %s' step result secs note)"
for line in "${SUMMARY[@]}"; do log "$line"; done
fails=$(printf '%s\n' "${SUMMARY[@]}" | grep -c " FAIL ")
log "failed steps: $fails; logs in $RESULTS"
[ -z "${OUT:-}" ] && echo "(set OUT to keep the logs; this run's are in $RESULTS)"
exit $(( fails > 0 ))
