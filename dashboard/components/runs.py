"""Where runs live, which are picked, and cached loading of their tables and models.

Caches are keyed by the run folder and the modification times of its files, so a run that is
still training (its metrics.jsonl grows) is re-read, and a finished run never is.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import streamlit as st

from core.analysis import compare, cost_cache
from core.errors import ArchScopeError
from core.training.run_folder import RunFolder, list_runs

REPO = Path(__file__).resolve().parents[2]
ROOT_KEY = "runs_root"

FIRST_RUN_HELP = (
    "No runs yet. Train a first one on the **Train** page (a 1-epoch `cnn2` on `shapes` takes "
    "about a minute on a laptop CPU), or from a shell:\n\n"
    "`python -m core.train --model cnn2 --dataset shapes --epochs 1 --out checkpoints/first`\n\n"
    "You can also point the sidebar's *Runs folder* at another folder, or upload a zipped run on the Train page."
)


# ---------------------------------------------------------------------------------------------
# Runs root
# ---------------------------------------------------------------------------------------------
def default_runs_root() -> Path:
    """$ARCHSCOPE_RUNS when set, else <repo>/checkpoints."""
    env = os.environ.get("ARCHSCOPE_RUNS")
    return Path(env).expanduser() if env else REPO / "checkpoints"


def runs_root() -> Path:
    """The folder of runs this session looks at (sidebar field, else $ARCHSCOPE_RUNS, else checkpoints/)."""
    value = st.session_state.get(ROOT_KEY)
    return Path(value).expanduser() if value else default_runs_root()


def sidebar_runs_root() -> Path:
    """The sidebar field choosing the runs folder (shown on every page)."""
    if ROOT_KEY not in st.session_state:
        st.session_state[ROOT_KEY] = str(default_runs_root())
    st.sidebar.text_input("Runs folder", key=ROOT_KEY,
                          help="A folder holding one sub-folder per run. Default: $ARCHSCOPE_RUNS or <repo>/checkpoints.")
    root = runs_root()
    if not root.exists():
        st.sidebar.warning(f"`{root}` does not exist yet; it will be created when a run is trained or imported.")
    elif not root.is_dir():
        st.sidebar.error(f"`{root}` is a file, not a folder. Enter a folder path.")
    return root


def mtime_of(p: Path) -> float:
    """Modification time of ``p``, 0.0 when it is missing (a cache key that changes when it appears)."""
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def run_signature(run: RunFolder) -> tuple:
    """Changes whenever a file the dashboard reads changes."""
    return (str(run.path), mtime_of(run.config_path), mtime_of(run.status_path), mtime_of(run.metrics_path),
            mtime_of(run.eval_path), mtime_of(run.best_weights_path))


def root_signature(root: Path) -> tuple:
    """``run_signature`` of every run under ``root``: changes when any run changes, appears or goes."""
    return tuple(run_signature(r) for r in list_runs(root))


# ---------------------------------------------------------------------------------------------
# Cached tables
# ---------------------------------------------------------------------------------------------
def run_architecture_or_none(run: RunFolder) -> compare.RunArchitecture | None:
    """The run's model, options, input shape and classes from config.json; None for a run whose
    config cannot tell (missing or broken, or a training that never started)."""
    try:
        return compare.run_architecture(run.path)
    except ArchScopeError:
        return None


@st.cache_data(show_spinner=False, max_entries=64)
def _summaries(signature: tuple, with_cost: bool = True) -> tuple[list[dict], list[dict | None]]:
    runs = [RunFolder(sig[0]) for sig in signature]
    configs = [run.read_config() for run in runs]    # raw: seed groups compare every key a config holds
    # Params, MACs and FLOPs of each run's architecture (an untrained model built from config.json,
    # no weights read), or {error} saying why they cannot be counted: counted once per architecture
    # and version of the model code, kept in memory and on disk between server starts
    # (core.analysis.cost_cache), so a restarted server fills the costs without torch.
    with_config = [run.path for run, cfg in zip(runs, configs) if cfg]
    costs = dict(zip(with_config, cost_cache.cached_run_costs(with_config))) if with_cost else {}
    rows = []
    for run in runs:
        row = compare.run_summary(run, cost=costs.get(run.path, {}))
        row.update(weights_status(run))
        rows.append(row)
    return rows, configs


def summaries(root: Path | None = None, with_cost: bool = True) -> tuple[list[dict], list[dict | None]]:
    """(run_summary rows, configs) for every run under the root, cached by file mtimes.

    with_cost=False skips counting params and MACs (which builds every model, so imports torch):
    the Overview draws its leaderboard from that first, then fills the costs in. Each row also
    has ``weights_status``'s keys (has_weights, weights_note, regenerate)."""
    root = root or runs_root()
    return _summaries(root_signature(root), with_cost)


# The command core.ship writes into status.json for a run shipped without its weights.
_REGENERATE = re.compile(r"python -m core\.suite [^\n]*?--only \S+")


def weights_status(run: RunFolder) -> dict:
    """{has_weights, weights_note, regenerate}: whether model.safetensors is there and, if not,
    why (status.json's message from ``core.ship``) and the command that regenerates it."""
    if run.best_weights_path.exists():
        return {"has_weights": True, "weights_note": "", "regenerate": ""}
    status = run.read_status()
    message = str(status.get("message") or "")
    found = _REGENERATE.search(message)
    if status.get("weights_shipped") is False:
        note = "results only: the weights were not shipped (size budget)"
    elif status.get("state") in ("queued", "running", "starting"):
        note = "still training: no weights saved yet (wait for its first epoch)"
    else:
        note = "no saved weights (model.safetensors is missing)"
    command = found.group(0) if found else f"python -m core.train --config {run.path / 'config.json'} --out {run.path}"
    return {"has_weights": False, "weights_note": note, "regenerate": command}


def single_image_problem(run: RunFolder) -> str | None:
    """Why the run cannot take one uploaded image (a model of stacked image pairs), else None."""
    config = run.read_config() or {}
    info = config.get("run") if isinstance(config.get("run"), dict) else {}
    channels = info.get("source_channels")
    if isinstance(channels, int) and channels not in (1, 3):
        return (f"takes image pairs ({channels} channels: two images stacked, dataset "
                f"`{config.get('dataset')}`), not single images: evaluate it with "
                f"`python -m core.evaluate {run.path}`")
    return None


@st.cache_data(show_spinner=False, max_entries=256)
def _metrics(path: str, mtime: float) -> list[dict]:
    return RunFolder(path).read_metrics()


def metrics_of(run: RunFolder) -> list[dict]:
    """The run's metrics.jsonl rows, cached until the file changes."""
    return _metrics(str(run.path), mtime_of(run.metrics_path))


@st.cache_data(show_spinner=False, max_entries=256)
def _eval(path: str, mtime: float) -> dict | None:
    return RunFolder(path).read_eval()


def eval_of(run: RunFolder) -> dict | None:
    """The run's eval.json (None when absent or broken), cached until the file changes."""
    return _eval(str(run.path), mtime_of(run.eval_path))


# ---------------------------------------------------------------------------------------------
# Run picker
# ---------------------------------------------------------------------------------------------
def available_runs(need: str | None = None) -> list[RunFolder]:
    """Runs under the root; need='weights' keeps those with model.safetensors, 'eval' those with eval.json."""
    runs = list_runs(runs_root())
    if need == "weights":
        runs = [r for r in runs if r.best_weights_path.exists()]
    elif need == "eval":
        runs = [r for r in runs if r.eval_path.exists()]
    return runs


def run_label(run: RunFolder) -> str:
    """"run_id (model · dataset · channels)", or the bare run id while its config cannot tell."""
    from core.training.run_info import read_run_info   # imports torch (via the config's channel list)

    try:
        config, _ = read_run_info(run.path)
    except ArchScopeError:
        return run.run_id
    bits = [config.model, config.dataset, config.channels]
    extra = " · ".join(str(b) for b in bits if b)
    return f"{run.run_id} ({extra})" if extra else run.run_id


def unusable_reason(run: RunFolder, need: str | None) -> tuple[str, str] | None:
    """(short flag, full reason with the fix) when a run cannot be used on a page that needs
    ``need`` ('weights': a model to run on single images; 'eval': an eval.json), else None."""
    if need == "weights":
        status = weights_status(run)
        if not status["has_weights"]:
            return "no weights", f"{status['weights_note']}. Regenerate them with `{status['regenerate']}`"
        pairs = single_image_problem(run)
        return ("takes image pairs", pairs) if pairs else None
    if need == "eval" and not run.eval_path.exists():
        return "no evaluation", "no evaluation yet (eval.json is written when a training finishes)"
    return None


def pick_runs(key: str, need: str | None = None, default_n: int = 2, label: str = "Runs") -> list[RunFolder]:
    """Multiselect of runs; returns the chosen runs that can be used.

    Runs that cannot serve this page (no weights, a pair model on an image page, no eval) stay in
    the list, flagged "⚠ ... (no weights)", so a search finds them; choosing one shows why and
    what regenerates it instead of silently doing nothing. Shows what to do when there are none.
    """
    all_runs = list_runs(runs_root())
    if not all_runs:
        st.info(FIRST_RUN_HELP)
        return []
    problems = {r.run_id: unusable_reason(r, need) for r in all_runs}
    usable = [r for r in all_runs if not problems[r.run_id]]
    if need and not usable:
        what = {"weights": "saved weights (model.safetensors)", "eval": "an evaluation (eval.json)"}[need]
        st.info(f"None of the {len(all_runs)} run(s) in `{runs_root()}` has {what} yet. "
                "Wait for a training to finish its first epoch, or train one on the Train page.")
    by_id = {r.run_id: r for r in all_runs}
    if key in st.session_state:
        # Set by a previous run or a page's callback (e.g. Compare's course groups): keep what still
        # exists, and pass no default (Streamlit warns when a keyed widget gets both).
        st.session_state[key] = [rid for rid in st.session_state[key] if rid in by_id]
        default = None
    else:
        default = [r.run_id for r in usable[:default_n]]
    # Usable runs first; the others after them, flagged, so they are found but not chosen by accident.
    options = [r.run_id for r in usable] + [r.run_id for r in all_runs if problems[r.run_id]]

    def label_of(rid: str) -> str:
        flag = problems[rid]
        return f"⚠ {run_label(by_id[rid])} — {flag[0]}" if flag else run_label(by_id[rid])

    # While no run is usable, the picker only shows the flagged ones under another key, so the
    # first usable run to appear is preselected instead of an empty selection being remembered.
    if not usable:
        key, default = f"{key}_unusable", None
    chosen = st.multiselect(label, options, default=default, key=key, format_func=label_of,
                            help="Runs marked ⚠ cannot be used on this page; choose one to see why and how to fix it.")
    for rid in chosen:
        if problems[rid]:
            st.warning(f"`{rid}` cannot be used here: {problems[rid][1]}.")
            if is_results_only(by_id[rid]):
                _retrain_button(by_id[rid], key)
    return [by_id[rid] for rid in chosen if not problems[rid]]


def is_results_only(run: RunFolder) -> bool:
    """A run shipped without its weights (core.ship --without-weights): its results are all there."""
    return not run.best_weights_path.exists() and run.read_status().get("weights_shipped") is False


def retrain_for_weights(run: RunFolder) -> tuple[str, Path | None]:
    """Queue the run's own config again into its folder, on this server's training queue, to get its
    weights. The results-only folder moves aside to ``.<id>.previous`` first (put back if the queue
    refuses). Returns ('started' | 'queued', where the old results are). Raises ArchScopeError
    (e.g. a config whose init_from folder is not here) before anything moves."""
    from core.training.run_folder import set_aside
    from core.training.run_info import read_run_info
    from dashboard.components.jobs import job_registry

    config, _ = read_run_info(run.path)
    config = config.validate()
    aside = set_aside(run.path)
    try:
        return job_registry().submit(config, run.path), aside
    except ArchScopeError:
        if aside is not None and not run.path.exists():
            aside.rename(run.path)
        raise


def _retrain_button(run: RunFolder, key: str) -> None:
    if not st.button(f"Train `{run.run_id}` again for its weights", key=f"{key}_retrain_{run.run_id}",
                     help="Queues the run's own config on this server's training queue (one job; follow it on "
                          "the Train page). Its shipped results are kept in a hidden folder next to it."):
        return
    try:
        outcome, aside = retrain_for_weights(run)
    except ArchScopeError as exc:
        st.error(f"`{run.run_id}` cannot be trained here: {exc}")
        return
    st.success(f"`{run.run_id}` {outcome}: follow it on the Train page; it is usable here once its first epoch "
               f"has saved weights. Its previous results are kept in `{aside}`.")
