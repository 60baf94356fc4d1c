"""Train: build a TrainConfig with a form, launch it as a background process, watch it live, load runs."""

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from core.analysis import complexity, figures
from core.data import AugmentConfig, describe, list_sources, source_specs
from core.data.channels import STRATEGIES
from core.errors import ArchScopeError
from core.models import registry
from core.training import config as config_mod
from core.training.run_folder import RunFolder, list_runs
from dashboard.components import train_form, user_models
from dashboard.components.jobs import job_registry
from dashboard.components.run_import import RunImportError, import_run_zip
from dashboard.components.runs import ROOT_KEY, runs_root
from dashboard.components.tables import show_table

st.title("Train a model")

root = runs_root()
jobs = job_registry()
jobs.watch(root)
LIMITS = train_form.FIELD_LIMITS


@st.cache_data(show_spinner=False)
def _describe(name: str):
    return describe(name)


@st.cache_data(show_spinner=False, max_entries=64)
def _cost(name: str, source_sha256: str | None, shape: tuple[int, int, int], classes: int, opts_json: str) -> dict:
    """Parameters, MACs, output shape and the layers the counter could not count. ``source_sha256``
    (a user model's file) is only a cache key: an edited file is counted anew."""
    rep = complexity.model_complexity(name, shape, classes, json.loads(opts_json), cross_check=False)
    return {"params": rep.params_total, "macs": rep.macs, "output_shape": rep.output_shape,
            "flagged": [(r.name or "(model)", r.type, r.note or r.counted_by) for r in rep.flagged]}


@st.cache_data(show_spinner="Loading sample images...", max_entries=16)
def _preview(config_json: str) -> list:
    return train_form.preview_images(config_mod.TrainConfig.from_dict(json.loads(config_json)))


def _number(column, field: str, value, key: str, **kw):
    """A number field without widget bounds (see train_form.FIELD_LIMITS: what it shows is what is checked)."""
    return column.number_input(LIMITS[field].label, value=value, key=key, **kw)


# =====================================================================================================
# 1. Data
# =====================================================================================================
def train_form_section() -> None:
    """Sections 1-4 and Launch. A function so that a dataset that cannot be read returns from it and
    the rest of the page (the runs, loading runs) stays."""
    sources = list_sources()
    st.subheader("1. Data")
    c = st.columns(4)
    dataset = c[0].selectbox("Dataset", sources, index=sources.index("shapes") if "shapes" in sources else 0,
                             key="tr_dataset")
    if {s.name: s for s in source_specs()}[dataset].needs_path:     # imagefolder / listfile: a folder
        folder = st.text_input(f"Folder of the {dataset} data (on the server)", key=f"tr_folder_{dataset}",
                               placeholder="/data/my_images")
        if not folder.strip():
            st.info(f"`{dataset}` reads images from a folder on the server: enter its path.")
            return
        dataset = f"{dataset}:{folder.strip()}"
    try:
        info = _describe(dataset)
    except ArchScopeError as exc:      # a data source names its missing file
        st.error(f"Dataset {dataset!r} is not available: {exc}")
        return
    channels = c[1].selectbox("Channel combination", train_form.channel_choices(info), key="tr_channels",
                              help="Which colour channels the model sees. 'random': a random combination per batch.")
    strategy = c[2].selectbox("Strategy for missing channels", list(STRATEGIES), key="tr_strategy",
                              help="drop: the model gets only these channels; fills keep 3 inputs.")
    image_size = _number(c[3], "image_size", int(info.image_size or 32), "tr_size", step=4)
    c = st.columns(3)
    max_train = _number(c[0], "max_train", 0, "tr_max", step=256,
                        help=f"The train split has {info.splits.get('train', '?')} images.")
    augment_preset = c[1].selectbox("Augmentation", list(AugmentConfig.PRESETS), key="tr_aug")
    normalize = c[2].checkbox("Normalise", value=True, key="tr_norm",
                              help="Subtract the train split's mean and divide by its std, per channel.")
    denoise = c[2].checkbox("Denoise", key="tr_denoise",
                            help="OpenCV's non-local means (fastNlMeansDenoising) on every image before training.")
    denoise_h = 10.0
    if denoise:
        denoise_h = st.slider("Denoising strength h (OpenCV)", 1.0, 30.0, 10.0, key="tr_denoise_h",
                              help="Larger removes more noise and more detail. Results are cached per dataset.")
    st.caption(f"{info.num_classes} classes: {', '.join(map(str, info.classes[:12]))}"
               + (" ..." if len(info.classes) > 12 else ""))

    # ---- what the model will see: sample images after the channel combination and strategy ---------
    with st.expander(f"Dataset preview: {dataset} as the model sees it ({channels}, {strategy})", expanded=True):
        size_limit = LIMITS["image_size"]
        if not size_limit.low <= image_size <= size_limit.high:
            st.caption(f"Shown once the image size is between {size_limit.low:g} and {size_limit.high:g} px.")
        else:
            # Only the data settings matter here; the full train split (the normalisation of a
            # max_train subset differs from it by a fraction of a grey level).
            data_config = config_mod.TrainConfig(dataset=dataset, image_size=int(image_size), channels=channels,
                                                 channel_strategy=strategy, normalize=normalize)
            try:
                previews = _preview(json.dumps(data_config.to_dict(), sort_keys=True))
            except Exception as exc:  # noqa: BLE001 - the preview is an aid: it never takes the form down with it
                st.warning(f"No preview: {type(exc).__name__}: {exc}")
            else:
                st.caption(train_form.preview_note(channels, strategy, info.channels)
                           + f" The first {len(previews[0].combos) if previews else 0} training images of each class, "
                           f"{int(image_size)}x{int(image_size)} px, shown enlarged; no augmentation or denoising.")
                grid = st.columns(3)
                for i, cls in enumerate(previews):
                    combos = f" · {' '.join(cls.combos)}" if channels == train_form.RANDOM_COMBO else ""
                    grid[i % 3].image(cls.image, caption=f"{cls.name}{combos}", width="stretch")

    # =====================================================================================================
    # 2. Model: the built-ins and the user's own model files
    # =====================================================================================================
    st.subheader("2. Model")
    ours, built_in = user_models.split_models(registry.list_models())
    with st.expander(f"Your models ({len(ours)}) · model files from {user_models.ENV_VAR}", expanded=bool(ours)):
        user_models.show_model_problems()
        if ours:
            show_table(user_models.user_models_table(ours), key="tr_user_models", hide_index=True)
        else:
            st.caption("No model of yours is loaded. Put .py files with `@register_model` models on the server and "
                       f"name them (or their folder) in the sidebar's **Model files** or in `{user_models.ENV_VAR}`; "
                       "see README, 'Your own model'.")
        if st.button("Reload model files", key="tr_reload_models",
                     help="Reads every model file again: an edited model is picked up without restarting the server."):
            st.session_state[user_models.RESULT_KEY] = user_models.reload_model_files()
            st.rerun()
    specs = {s.name: s for s in [*ours, *built_in]}
    if st.session_state.get("tr_model") not in specs:     # a model file was removed or renamed a model
        st.session_state.pop("tr_model", None)
    c = st.columns([1, 2])
    model = c[0].selectbox("Architecture", list(specs), index=list(specs).index("cnn2") if "cnn2" in specs else 0,
                           key="tr_model", format_func=lambda n: f"{n} (yours)" if specs[n].source_file else n)
    spec = specs[model]
    c[1].markdown(f"**{model}** — {spec.description}  \n*Reproduces:* {spec.source}"
                  + ("  \n*Variable input:* one model for 1, 2 or 3 channels." if spec.variable_input else "")
                  + (f"  \n*File:* `{spec.source_file}`" if spec.source_file else ""))
    # Keyed by the file's hash too: after an edit of a model file, the field shows the file's new defaults.
    options_key = f"tr_opts_{model}" + (f"_{spec.source_sha256[:12]}" if spec.source_sha256 else "")
    options_text = st.text_input("Model options (JSON)", json.dumps(spec.options) if spec.options else "{}",
                                 key=options_key, help="Documented options and their defaults.")

    # =====================================================================================================
    # 3. Optimisation and 4. where it runs
    # =====================================================================================================
    st.subheader("3. Optimisation")
    c = st.columns(3)
    epochs = _number(c[0], "epochs", 5, "tr_epochs", step=1)
    batch_size = _number(c[1], "batch_size", 64, "tr_bs", step=1)
    optimizer = c[2].selectbox("Optimizer", list(config_mod.OPTIMIZERS), key="tr_opt")
    c = st.columns(3)
    lr = _number(c[0], "lr", 1e-3, "tr_lr", format="%.5f", step=1e-4)
    scheduler = c[1].selectbox("Scheduler", list(config_mod.SCHEDULERS), key="tr_sched")
    seed = _number(c[2], "seed", 0, "tr_seed", step=1)
    c = st.columns(3)
    loss = c[0].selectbox("Loss", list(config_mod.LOSSES), key="tr_loss",
                          help="ce+triplet adds a triplet loss on the embedding (seed 002); enables the PCA view.")
    label_smoothing = _number(c[1], "label_smoothing", 0.0, "tr_ls", step=0.05)
    weight_decay = _number(c[2], "weight_decay", -1.0, "tr_wd", format="%.5f", step=1e-4)

    st.subheader("4. Where it runs, and its name")
    c = st.columns(3)
    device_choices = ["auto", "cpu"] + (["cuda"] if jobs.gpus else [])
    device = c[0].selectbox("Device", device_choices, key="tr_device",
                            help="auto: a GPU when the server has one, else the CPU. cuda: GPUs only. The queue gives "
                                 "each training GPUs of its own (a free one per process), so two never share a card.")
    nproc = 1
    if len(jobs.gpus) > 1 and device != "cpu":
        nproc = int(c[1].number_input("Processes (torchrun, one GPU each)", value=1, step=1, key="tr_nproc",
                                      help=f"1 to {len(jobs.gpus)}: data-parallel training over that many GPUs."))
    parallel_column = c[2] if len(jobs.gpus) > 1 else c[1]
    parallel = int(parallel_column.number_input("Parallel trainings", value=int(jobs.max_parallel), step=1,
                                                key="tr_parallel", help="At most this many trainings run at once "
                                                                        "(1 to 8); more launches wait in a queue."))
    if 1 <= parallel <= 8:
        jobs.max_parallel = parallel
    else:
        st.error(f"Parallel trainings is {parallel}: it must be between 1 and 8. The queue keeps "
                 f"{jobs.max_parallel} until this is fixed.")
    if jobs.gpus:
        free = set(jobs.free_gpus())
        st.caption("GPUs of this server: " + ", ".join(f"{g} ({'free' if g in free else 'busy'})" for g in jobs.gpus))
    else:
        st.caption("This server has no CUDA GPU: trainings run on the CPU (auto = cpu).")

    form = train_form.TrainForm(
        model=model, dataset=dataset, channels=channels, strategy=strategy, image_size=int(image_size),
        model_options_text=options_text, max_train=int(max_train), augment_preset=augment_preset, denoise=denoise,
        denoise_h=float(denoise_h), normalize=normalize, epochs=int(epochs), batch_size=int(batch_size),
        optimizer=optimizer, lr=float(lr), scheduler=scheduler, seed=int(seed), loss=loss,
        label_smoothing=float(label_smoothing), weight_decay=float(weight_decay), device=device)
    default_name = train_form.default_run_name(form)
    run_name = st.columns([2, 1])[0].text_input("Run name", "", placeholder=default_name, key="tr_name",
                               help=f"Empty: {default_name}. Allowed: {train_form.RUN_ID_RULE}.")

    result = train_form.build_config(form, info)
    problems = list(result.problems)
    name_problem = train_form.run_name_problem(run_name or default_name, root)
    if name_problem:
        problems.append(name_problem)
    if nproc < 1:
        problems.append(f"Processes is {nproc}: it must be between 1 and {len(jobs.gpus)}.")
    try:
        jobs.gpus_needed(result.config, nproc)
    except ArchScopeError as exc:       # more processes than GPUs, cuda on a CPU server
        problems.append(str(exc))

    # ---- what will be trained: complexity before launching ---------------------------------------
    if result.resolved is not None:
        in_ch = config_mod.input_channels(result.resolved.channels, strategy, spec.variable_input, info.channels)
        where = f" (model file {spec.source_file})" if spec.source_file else ""
        try:
            cost = _cost(model, spec.source_sha256, (in_ch, int(image_size), int(image_size)), int(info.num_classes),
                         json.dumps(result.config.model_options, sort_keys=True))
        except ArchScopeError as exc:      # ComplexityError: options the model refuses, too small an input
            problems.append(f"The model cannot be built or run with these settings{where}: {exc}")
        else:
            expected = [1, int(info.num_classes)]
            if cost["output_shape"] != expected:
                problems.append(f"Model {model!r}{where} returns {cost['output_shape']} for one image; training needs "
                                f"{expected} (one score per class of {dataset}).")
            flagged = cost["flagged"]
            # Two per row: a 10-digit count in full still fits at 1000 px with the sidebar open.
            m = st.columns(2) + st.columns(2)
            m[0].metric("Input (C x H x W)", f"{in_ch}x{image_size}x{image_size}")
            m[1].metric("Parameters", f"{cost['params']:,}")
            m[2].metric("MACs / image" + (" (at least)" if flagged else ""), f"{cost['macs']:,}")
            m[3].metric("FLOPs / image" + (" (at least)" if flagged else ""), f"{2 * cost['macs']:,}")
            if flagged:
                st.warning("The counter could not fully count these layers; their uncounted part is not in the totals "
                           "above (a lower bound, never a zero): "
                           + "; ".join(f"`{name}` ({kind}): {why}" for name, kind, why in flagged))

    for p in problems:
        st.error(train_form.plain_markdown(p))
    c = st.columns([1, 4])
    clicked = c[0].button("Launch", type="primary", disabled=bool(problems), key="tr_launch")
    if problems:
        c[1].caption(f"Launch is disabled: {len(problems)} problem(s) above.")
    if clicked and not problems:
        try:
            run_dir = train_form.run_folder_for(run_name or default_name, root)
            outcome = jobs.submit(result.config, run_dir, nproc=nproc)
        except ArchScopeError as exc:   # a folder made meanwhile, ConfigError, RunLockedError, GPUs
            st.error(f"Could not launch: {exc}")
        else:
            st.session_state["tr_watch"] = str(run_dir)
            if outcome == "started":
                st.success(f"Started `{run_dir.name}` in the background. It keeps running if you reload or close "
                           "this tab.")
            else:
                st.info(f"`{run_dir.name}` is queued: {len(jobs.active())} training(s) already running.")


train_form_section()

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


def _resume(row: train_form.RunRow) -> None:
    try:
        outcome = jobs.resume(row.run.path)
    except ArchScopeError as exc:         # ConfigError (no config.json), RunLockedError
        st.error(f"Could not resume {row.run.run_id}: {exc}")
        return
    st.session_state["tr_watch"] = str(row.run.path)
    start = "from its last completed epoch" if row.run.resume_state_path.exists() else "from epoch 0"
    st.toast(f"{row.run.run_id}: {outcome}, {start}.")


def _run_card(row: train_form.RunRow) -> None:
    run, status = row.run, row.status
    metrics = run.read_metrics()
    with st.container(border=True):
        st.markdown(f"**{run.run_id}** — `{row.label}` · {status.get('message') or ''}")
        epochs = int(status.get("epochs") or 0)
        if epochs:
            done = len(metrics)
            st.progress(min(1.0, done / epochs), text=f"epoch {done}/{epochs} · {_eta(status, metrics)}"
                        if row.state == "running" else f"epoch {done}/{epochs}")
        if row.state == "failed":
            st.error(f"Training failed: {status.get('message')}. Fix the setting it names and launch again, "
                     "or press Resume if it was killed.")
        _curves(run, key=f"tr_curve_{run.run_id}")
        if row.live and st.button("Cancel", key=f"tr_cancel_{run.run_id}"):
            if jobs.cancel(run.path):
                st.toast(f"Cancelled {run.run_id}; its last completed epoch is kept.")
            else:
                st.warning("The trainer did not stop within 15 s; it will stop after the current batch.")
        if row.resumable and st.button("Resume", key=f"tr_resume_{run.run_id}"):
            _resume(row)


def _manage_stopped(rows: list[train_form.RunRow]) -> None:
    """Resume or delete (with a confirmation) a run that is not running."""
    stopped = [r for r in rows if not r.live]
    if not stopped:
        return
    by_id = {r.run.run_id: r for r in stopped}
    c1, c2, c3 = st.columns([3, 1, 1], vertical_alignment="bottom")
    pick = by_id[c1.selectbox("A stopped run", list(by_id), key="tr_resume_pick",
                              format_func=lambda r: f"{r} ({by_id[r].label})")]
    if c2.button("Resume", key="tr_resume_any", disabled=not pick.resumable,
                 help="Continues from the last completed epoch; a run that never trained starts from epoch 0."
                 if pick.resumable else "Only a failed or cancelled run with its config.json can be resumed."):
        _resume(pick)
    c3.button("Delete", key="tr_delete", on_click=st.session_state.__setitem__,
              args=("tr_delete_pending", pick.run.run_id),
              help="Deletes the run folder (weights, metrics, config). Asks first.")
    outcome = st.session_state.pop("tr_delete_outcome", None)
    if outcome:
        (st.error if outcome.startswith("Not deleted") else st.success)(outcome)
    pending = by_id.get(st.session_state.get("tr_delete_pending", ""))
    if pending is not None:
        st.warning(f"Delete `{pending.run.run_id}` ({pending.label}) and every file in `{pending.run.path}`? "
                   "This cannot be undone.")
        y, n, _ = st.columns([1, 1, 3])
        # Callbacks run before the fragment draws again, so the list below never shows a deleted run.
        y.button("Yes, delete it", key="tr_delete_yes", type="primary", on_click=_delete,
                 args=(pending,))
        n.button("Keep it", key="tr_delete_no", on_click=st.session_state.pop, args=("tr_delete_pending", None))


def _delete(row: train_form.RunRow) -> None:
    st.session_state.pop("tr_delete_pending", None)
    try:
        train_form.delete_run(row, runs_root())
    except ArchScopeError as exc:       # a trainer took it meanwhile; not a run folder of this root
        st.session_state["tr_delete_outcome"] = f"Not deleted: {exc}"
    else:
        st.session_state["tr_delete_outcome"] = f"Deleted `{row.run.run_id}`."


def _text(value) -> str:
    """A status field as table text: '' when not recorded yet (never 'None')."""
    return "" if value is None else str(value)


@st.fragment(run_every=2.0)
def live_runs() -> None:
    runs = list_runs(runs_root())
    if not runs:
        st.info("No run yet in this folder. Fill in the form above and press **Launch**.")
        return
    rows = train_form.run_rows(runs, [str(r.path) for r in jobs.queued()])
    watched = st.session_state.get("tr_watch")
    for row in rows:
        if row.live or str(row.run.path) == watched:
            _run_card(row)
    table = pd.DataFrame([{
        "Run": r.run.run_id, "State": r.label, "Epoch": _text(r.status.get("epoch")),
        "Epochs": _text(r.status.get("epochs")), "Message": r.status.get("message") or "",
    } for r in rows])
    show_table(table, key="tr_runs_table", hide_index=True)
    _manage_stopped(rows)


live_runs()
st.caption("This section refreshes every 2 s: running runs first, then the queue in the order it starts them, "
           "then stopped runs, most recent first. Queued runs start automatically when a slot frees.")

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
    limit_mb = int(st.get_option("server.maxUploadSize"))
    upload = st.file_uploader(f"Upload a zipped run folder (at most {limit_mb} MB)", type=["zip"], key="tr_zip",
                              help="A zip of one run folder (config.json, model.safetensors, ...). "
                                   "Nothing is unpickled: weights must be safetensors.")
    st.caption(f"The server takes zips up to {limit_mb} MB (`server.maxUploadSize` in .streamlit/config.toml); "
               "the browser refuses a larger file before it is sent. For a larger run, copy its folder to the "
               "server and use **Another runs folder**.")
    if upload is not None and upload.size > limit_mb * 1024 * 1024:     # a server started with another limit
        st.error(f"`{upload.name}` is {upload.size / 2**20:.1f} MB, over the {limit_mb} MB limit.")
    elif upload is not None and st.session_state.get("tr_zip_done") != upload.file_id:
        try:
            res = import_run_zip(upload, root, run_id=Path(upload.name).stem if upload.name else None)
        except RunImportError as exc:
            st.error(f"`{upload.name}` was not imported: {exc}")
        else:
            st.session_state["tr_zip_done"] = upload.file_id
            st.success(f"Imported `{res.run_dir.name}` ({len(res.files)} files"
                       + (f"; skipped {', '.join(res.skipped)}" if res.skipped else "") + ").")
