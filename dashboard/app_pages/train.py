"""Train: build a TrainConfig with a form, launch it as a background process, watch it live, load runs."""

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from core.analysis import complexity, figures
from core.data import AugmentConfig, describe, list_sources
from core.data.channels import STRATEGIES
from core.errors import ArchScopeError
from core.models import registry
from core.training import config as config_mod
from core.training.run_folder import RunFolder, list_runs
from dashboard.components import train_form
from dashboard.components.jobs import job_registry
from dashboard.components.run_import import RunImportError, import_run_zip
from dashboard.components.runs import ROOT_KEY, runs_root
from dashboard.components.tables import show_table

st.title("Train a model")

root = runs_root()
jobs = job_registry()
jobs.watch(root)


@st.cache_data(show_spinner=False)
def _describe(name: str):
    return train_form.as_dataset_info(describe(name))


@st.cache_data(show_spinner=False, max_entries=64)
def _cost(name: str, shape: tuple[int, int, int], classes: int, opts_json: str) -> tuple[int, int]:
    rep = complexity.model_complexity(name, shape, classes, json.loads(opts_json), cross_check=False)
    return rep.params_total, rep.macs


# =====================================================================================================
# The form
# =====================================================================================================
sources = list_sources()
specs = {s.name: s for s in registry.list_models()}
st.subheader("1. Data")
c = st.columns(4)
dataset = c[0].selectbox("Dataset", sources, index=sources.index("shapes") if "shapes" in sources else 0,
                         key="tr_dataset")
try:
    info = _describe(dataset)
except ArchScopeError as exc:      # a data source names its missing file
    st.error(f"Dataset {dataset!r} is not available: {exc}")
    st.stop()
channels = c[1].selectbox("Channel combination", train_form.channel_choices(info), key="tr_channels",
                          help="Which colour channels the model sees. 'random': a random combination per batch.")
strategy = c[2].selectbox("Strategy for missing channels", list(STRATEGIES), key="tr_strategy",
                          help="drop: the model gets only these channels; fills keep 3 inputs.")
image_size = c[3].number_input("Image size (px)", 8, 512, int(info.image_size or 32), step=4, key="tr_size")
c = st.columns(4)
max_train = c[0].number_input("Max train images (0 = all)", 0, 10_000_000, 0, step=256, key="tr_max",
                              help=f"The train split has {info.splits.get('train', '?')} images.")
augment_preset = c[1].selectbox("Augmentation", list(AugmentConfig.PRESETS), key="tr_aug")
denoise = c[2].checkbox("Denoise (OpenCV non-local means)", key="tr_denoise")
normalize = c[3].checkbox("Normalise (train mean/std)", value=True, key="tr_norm")
denoise_h = 10.0
if denoise:
    denoise_h = st.slider("Denoising strength h (OpenCV)", 1.0, 30.0, 10.0, key="tr_denoise_h",
                          help="Larger removes more noise and more detail. Results are cached per dataset.")
st.caption(f"{info.num_classes} classes: {', '.join(map(str, info.classes[:12]))}"
           + (" ..." if len(info.classes) > 12 else ""))

st.subheader("2. Model")
c = st.columns([1, 2])
model = c[0].selectbox("Architecture", list(specs), index=list(specs).index("cnn2") if "cnn2" in specs else 0,
                       key="tr_model")
spec = specs[model]
c[1].markdown(f"**{model}** — {spec.description}  \n*Reproduces:* {spec.source}"
              + ("  \n*Variable input:* one model for 1, 2 or 3 channels." if spec.variable_input else ""))
options_text = st.text_input("Model options (JSON)", json.dumps(spec.options) if spec.options else "{}",
                             key=f"tr_opts_{model}", help="Documented options and their defaults.")

st.subheader("3. Optimisation")
c = st.columns(6)
epochs = c[0].number_input("Epochs", 1, 1000, 5, key="tr_epochs")
batch_size = c[1].number_input("Batch size", 1, 4096, 64, key="tr_bs")
optimizer = c[2].selectbox("Optimizer", list(config_mod.OPTIMIZERS), key="tr_opt")
lr = c[3].number_input("Learning rate", 1e-6, 10.0, 1e-3, format="%.5f", key="tr_lr")
scheduler = c[4].selectbox("Scheduler", list(config_mod.SCHEDULERS), key="tr_sched")
seed = c[5].number_input("Seed", 0, 2**31 - 1, 0, key="tr_seed")
c = st.columns(4)
loss = c[0].selectbox("Loss", list(config_mod.LOSSES), key="tr_loss",
                      help="ce+triplet adds a triplet loss on the embedding (seed 002); enables the PCA view.")
label_smoothing = c[1].number_input("Label smoothing", 0.0, 0.99, 0.0, key="tr_ls")
weight_decay = c[2].number_input("Weight decay (-1 = default)", -1.0, 1.0, -1.0, format="%.5f", key="tr_wd")
form = train_form.TrainForm(
    model=model, dataset=dataset, channels=channels, strategy=strategy, image_size=int(image_size),
    model_options_text=options_text, max_train=int(max_train), augment_preset=augment_preset, denoise=denoise,
    denoise_h=float(denoise_h), normalize=normalize, epochs=int(epochs), batch_size=int(batch_size),
    optimizer=optimizer, lr=float(lr), scheduler=scheduler, seed=int(seed), loss=loss,
    label_smoothing=float(label_smoothing), weight_decay=float(weight_decay))
default_name = train_form.default_run_name(form)
run_name = c[3].text_input("Run name", "", placeholder=default_name, key="tr_name")

result = train_form.build_config(form, info)
problems = list(result.problems)

# ---- what will be trained: complexity before launching ---------------------------------------
if result.resolved is not None:
    in_ch = config_mod.input_channels(result.resolved.channels, strategy, spec.variable_input)
    try:
        params, macs = _cost(model, (in_ch, int(image_size), int(image_size)), int(info.num_classes),
                             json.dumps(result.config.model_options, sort_keys=True))
    except ArchScopeError as exc:      # ComplexityError: options the model refuses, too small an input
        problems.append(f"The model cannot be built with these settings: {exc}")
    else:
        m = st.columns(4)
        m[0].metric("Input", f"{in_ch}x{image_size}x{image_size}")
        m[1].metric("Parameters", f"{params:,}")
        m[2].metric("MACs / image", f"{macs:,}")
        m[3].metric("FLOPs / image", f"{2 * macs:,}")
for p in problems:
    st.error(p)

c = st.columns([1, 1, 3])
jobs.max_parallel = int(c[1].number_input("Parallel trainings", 1, 8, jobs.max_parallel, key="tr_parallel",
                                          help="More launches than this wait in a queue."))
if c[0].button("Launch", type="primary", disabled=bool(problems), key="tr_launch"):
    try:
        run_dir = train_form.run_folder_for(run_name or default_name, root)
        outcome = jobs.submit(result.config, run_dir)
    except ArchScopeError as exc:   # the run-name rule, a folder that exists, ConfigError, RunLockedError
        st.error(f"Could not launch: {exc}")
    else:
        st.session_state["tr_watch"] = str(run_dir)
        if outcome == "started":
            st.success(f"Started `{run_dir.name}` in the background. It keeps running if you reload or close this tab.")
        else:
            st.info(f"`{run_dir.name}` is queued: {len(jobs.active())} training(s) already running.")

# =====================================================================================================
# Live progress (a fragment: refreshes itself without rerunning the page)
# =====================================================================================================
st.subheader("Trainings")


def _eta(status: dict, metrics: list[dict]) -> str:
    epochs, done = status.get("epochs"), len(metrics)
    secs = [m["seconds"] for m in metrics if isinstance(m.get("seconds"), (int, float))]
    if not epochs or not secs:
        return "estimating..."
    remaining = max(0, int(epochs) - done) * (sum(secs) / len(secs))
    return f"about {remaining:.0f} s left" if remaining < 120 else f"about {remaining / 60:.1f} min left"


def _curves(run: RunFolder, key: str) -> None:
    fig = figures.live_curves_figure(run.read_metrics(), run.read_steps())
    if fig.data:
        st.plotly_chart(fig, key=key)
    else:
        st.caption("No curve yet: the first points appear after a few batches.")


@st.fragment(run_every=2.0)
def live_runs() -> None:
    runs = list_runs(runs_root())
    if not runs:
        st.info("No run yet in this folder. Fill in the form above and press **Launch**.")
        return
    statuses = {r.run_id: r.read_status() for r in runs}
    live = [r for r in runs if statuses[r.run_id].get("state") in ("running", "queued")]
    watched = st.session_state.get("tr_watch")
    shown = live + [r for r in runs if str(r.path) == watched and r not in live]
    for run in shown:
        status = statuses[run.run_id]
        metrics = run.read_metrics()
        with st.container(border=True):
            state = status.get("state")
            st.markdown(f"**{run.run_id}** — `{state}` · {status.get('message') or ''}")
            epochs = int(status.get("epochs") or 0)
            done = len(metrics)
            if epochs:
                st.progress(min(1.0, done / epochs), text=f"epoch {done}/{epochs} · {_eta(status, metrics)}"
                            if state == "running" else f"epoch {done}/{epochs}")
            if state == "failed":
                st.error(f"Training failed: {status.get('message')}. Fix the setting it names and launch again, "
                         "or press Resume if it was killed.")
            _curves(run, key=f"tr_curve_{run.run_id}")
            b = st.columns(6)
            if state in ("running", "queued") and b[0].button("Cancel", key=f"tr_cancel_{run.run_id}"):
                if jobs.cancel(run.path):
                    st.toast(f"Cancelled {run.run_id}; its last completed epoch is kept.")
                else:
                    st.warning("The trainer did not stop within 15 s; it will stop after the current batch.")
            if state in ("failed", "cancelled") and run.resume_state_path.exists() \
                    and b[0].button("Resume", key=f"tr_resume_{run.run_id}"):
                try:
                    jobs.resume(run.path)
                    st.toast(f"Resuming {run.run_id} from its last completed epoch.")
                except ArchScopeError as exc:     # ConfigError (no config.json), RunLockedError
                    st.error(f"Could not resume: {exc}")
    table = pd.DataFrame([{
        "run": r.run_id, "state": statuses[r.run_id].get("state"),
        "epoch": statuses[r.run_id].get("epoch"), "epochs": statuses[r.run_id].get("epochs"),
        "message": statuses[r.run_id].get("message"),
    } for r in runs])
    show_table(table, key="tr_runs_table", hide_index=True)
    resumable = [r for r in runs if statuses[r.run_id].get("state") in ("failed", "cancelled")
                 and r.resume_state_path.exists() and r not in shown]
    if resumable:
        c1, c2 = st.columns([3, 1])
        pick = c1.selectbox("Resume a stopped run", [r.run_id for r in resumable], key="tr_resume_pick")
        if c2.button("Resume", key="tr_resume_any"):
            try:
                jobs.resume(runs_root() / pick)
                st.session_state["tr_watch"] = str(runs_root() / pick)
            except ArchScopeError as exc:         # ConfigError (no config.json), RunLockedError
                st.error(f"Could not resume {pick}: {exc}")


live_runs()
st.caption("This section refreshes every 2 s. Queued runs start automatically when a slot frees.")

# =====================================================================================================
# Load runs trained elsewhere
# =====================================================================================================
st.subheader("Load runs")


def _use_folder() -> None:
    folder = st.session_state.get("tr_other_root", "").strip()
    if folder:
        st.session_state[ROOT_KEY] = folder


c1, c2 = st.columns(2)
with c1:
    st.text_input("Another runs folder", key="tr_other_root", placeholder="/data/archscope-runs")
    st.button("Use this folder", on_click=_use_folder, key="tr_use_root")
    other = st.session_state.get("tr_other_root", "").strip()
    if other and not Path(other).expanduser().is_dir():
        st.error(f"`{other}` is not a folder on this machine. Enter the path of a folder holding run folders.")
with c2:
    upload = st.file_uploader("Upload a zipped run folder", type=["zip"], key="tr_zip",
                              help="A zip of one run folder (config.json, model.safetensors, ...). "
                                   "Nothing is unpickled: weights must be safetensors.")
    if upload is not None and st.session_state.get("tr_zip_done") != upload.file_id:
        try:
            res = import_run_zip(upload, root, run_id=Path(upload.name).stem if upload.name else None)
        except RunImportError as exc:
            st.error(f"`{upload.name}` was not imported: {exc}")
        else:
            st.session_state["tr_zip_done"] = upload.file_id
            st.success(f"Imported `{res.run_dir.name}` ({len(res.files)} files"
                       + (f"; skipped {', '.join(res.skipped)}" if res.skipped else "") + ").")
