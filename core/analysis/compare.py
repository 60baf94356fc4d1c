"""Tables behind the Compare and Overview pages, computed from run folders.

Everything here is pure (dicts, numpy arrays, pandas DataFrames in; the same out) so the
dashboard only draws what these functions return and the numbers are tested here:

    rows = [run_summary(r) for r in list_runs("checkpoints")]
    leaderboard(rows)                      # one row per run, best test accuracy first
    cost_table(rows, reference="resnet34_run", target=0.9)
    normalize_confusion(cm, "true")        # rows sum to 1
    confusion_difference(cm_a, cm_b, classes)
    pareto_front(costs, accuracies)        # boolean mask of non-dominated runs
    group_by_seed(rows)                    # runs differing only in seed -> mean +- std
    channel_robustness_matrix(evals)       # trained combination x tested combination
    robustness_by_run([(run_id, ev), ...]) # one row per run x tested combination
    run_cost(run_dir)                      # params / MACs / FLOPs at the run's input shape

The figures drawn from these tables live in core/analysis/figures.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from core.errors import ArchScopeError
from core.training.run_folder import RunFolder



def combo_order() -> tuple[str, ...]:
    """Column / row order of every robustness matrix: the seven colour combinations, then grayscale
    and passthrough; any other name (e.g. "random" as a trained row) follows."""
    # Imported here: core.data imports torch, and the Overview leaderboard (which imports this
    # module) must draw without paying for torch.
    from core.data.channels import ALL_COMBO, CHANNEL_COMBOS, GRAYSCALE_COMBO

    return (*CHANNEL_COMBOS, GRAYSCALE_COMBO, ALL_COMBO)


def __getattr__(name: str):
    # ``compare.COMBO_ORDER`` still works, computed on first use (see combo_order).
    if name == "COMBO_ORDER":
        return combo_order()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# A robustness cell reads "at chance" up to this many accuracy points (as a fraction) above
# 1 / number of classes: guessing plus a little luck on a 1000-image test set.
AT_CHANCE_MARGIN = 0.05

# Config keys that name a run or its bookkeeping, not an experimental condition: two runs whose
# configs differ only in these (and the seed) are repeats of one experiment.
_NON_CONDITION_KEYS = {
    "seed", "out", "out_dir", "run_dir", "run_id", "run_name", "name", "resume", "versions",
    "created", "created_at", "notes", "device", "num_workers", "log_every", "save_every",
    "run", "data_root", "num_threads", "checkpoint_every", "tensorboard", "eval_at_end", "compile",
}


# ---------------------------------------------------------------------------------------------
# One run -> one flat row
# ---------------------------------------------------------------------------------------------
def _first(d: dict | None, *keys: str, default: Any = None) -> Any:
    """The first present, non-None value among ``keys`` in ``d`` (configs name things differently)."""
    if not d:
        return default
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return default


def _channels_of(config: dict | None) -> str | None:
    ch = _first(config, "channels", "channel_combo", "combo")
    if isinstance(ch, (list, tuple)):
        return ",".join(map(str, ch))
    return ch


def run_summary(run: RunFolder, cost: dict | None = None) -> dict:
    """Flatten one run folder into a leaderboard row (never raises on a broken run).

    ``cost`` optionally holds ``params``, ``macs`` (computed elsewhere, e.g. by
    ``core.analysis.complexity``) so this module stays free of model code.
    Row keys: run_id, path, state, model, dataset, num_classes, chance_acc (1 / classes), channels, strategy, seed, epochs,
    epochs_done, test_acc, best_val_acc, final_train_loss, params, macs, flops, train_seconds,
    train_images_per_s, inference_images_per_s, macro_f1, input, cost_error, problems.
    """
    config = run.read_config() or {}
    status = run.read_status()
    metrics = run.read_metrics()
    ev = run.read_eval() or {}
    model_cfg = config.get("model")
    model_name = model_cfg.get("name") if isinstance(model_cfg, dict) else model_cfg
    data_cfg = config.get("data") if isinstance(config.get("data"), dict) else {}
    val_accs = [m["val_acc"] for m in metrics if isinstance(m.get("val_acc"), (int, float))]
    seconds = [m["seconds"] for m in metrics if isinstance(m.get("seconds"), (int, float))]
    ips = [m["images_per_s"] for m in metrics if isinstance(m.get("images_per_s"), (int, float))]
    cost = cost or {}
    macs = cost.get("macs")
    run_cfg = config.get("run") if isinstance(config.get("run"), dict) else {}
    num_classes = run_cfg.get("num_classes") or (len(ev["classes"]) if ev.get("classes") else None)
    return {
        "run_id": run.run_id,
        "path": str(run.path),
        "state": status.get("state", "unknown"),
        "model": model_name or _first(data_cfg, "model"),
        "dataset": _first(config, "dataset") or _first(data_cfg, "dataset", "name"),
        "num_classes": num_classes,
        "chance_acc": 1.0 / num_classes if isinstance(num_classes, int) and num_classes > 0 else None,
        "channels": _channels_of(config) or _channels_of(data_cfg),
        "strategy": _first(config, "strategy", "channel_strategy") or _first(data_cfg, "strategy"),
        "seed": _first(config, "seed"),
        "epochs": _first(config, "epochs"),
        "epochs_done": len(metrics),
        "test_acc": ev.get("test_acc"),
        "best_val_acc": max(val_accs) if val_accs else None,
        "final_train_loss": metrics[-1].get("train_loss") if metrics else None,
        "params": cost.get("params"),
        "macs": macs,
        "flops": 2 * macs if isinstance(macs, (int, float)) else None,
        "train_seconds": float(sum(seconds)) if seconds else None,
        "train_images_per_s": float(np.mean(ips)) if ips else None,
        "inference_images_per_s": ev.get("inference_images_per_s"),
        "macro_f1": (ev.get("macro") or {}).get("f1") if isinstance(ev.get("macro"), dict) else None,
        "input": cost.get("input"),
        "cost_error": cost.get("error"),
        "problems": "; ".join(run.problems()),
    }


# ---------------------------------------------------------------------------------------------
# Leaderboard and cost table
# ---------------------------------------------------------------------------------------------
# The accuracy sits next to the run and its dataset's chance level: the columns read first.
LEADERBOARD_COLUMNS = [
    "run_id", "dataset", "test_acc", "chance_acc", "best_val_acc", "model", "channels", "strategy", "state",
    "params", "macs", "train_seconds", "train_images_per_s", "inference_images_per_s",
]


def leaderboard(rows: Iterable[dict], by_dataset: bool = False) -> pd.DataFrame:
    """One row per run, best test accuracy first (runs without eval.json last, by val accuracy).

    by_dataset: runs grouped by dataset first (accuracies on 7, 10 and 12 classes are not one
    ranking), best first within each dataset."""
    df = pd.DataFrame(list(rows))
    if df.empty:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    for col in LEADERBOARD_COLUMNS:
        if col not in df.columns:
            df[col] = None
    df = df[LEADERBOARD_COLUMNS].copy()
    df = df.sort_values(["test_acc", "best_val_acc"], ascending=False, na_position="last", kind="stable")
    if by_dataset:
        df = df.sort_values("dataset", na_position="last", kind="stable")
    return df.reset_index(drop=True)


def cost_table(rows: Iterable[dict], reference: str | None = None, target: float | None = None) -> pd.DataFrame:
    """Cost and accuracy per run, with each run's accuracy and cost as a percent of ``reference``.

    Columns: run_id, model, params, macs, flops, train_seconds, inference_images_per_s, test_acc,
    acc_per_gmac (test accuracy points per 10^9 MACs), acc_pct_of_ref, params_pct_of_ref,
    macs_pct_of_ref and, when ``target`` (a fraction such as 0.9) is given, reaches_target
    (acc_pct_of_ref >= 100 * target). Percent columns are NaN when the reference lacks the value.
    """
    df = pd.DataFrame(list(rows))
    cols = ["run_id", "model", "params", "macs", "flops", "train_seconds", "inference_images_per_s", "test_acc"]
    if df.empty:
        return pd.DataFrame(columns=cols + ["acc_per_gmac", "acc_pct_of_ref", "params_pct_of_ref", "macs_pct_of_ref"])
    for col in cols:
        if col not in df.columns:
            df[col] = None
    df = df[cols].copy()
    for col in cols[2:]:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["acc_per_gmac"] = 100.0 * df["test_acc"] / (df["macs"] / 1e9)
    if reference is not None:
        if reference not in set(df["run_id"]):
            raise ValueError(f"reference run {reference!r} is not among the compared runs")
        ref = df.loc[df["run_id"] == reference].iloc[0]
        for col, out in (("test_acc", "acc_pct_of_ref"), ("params", "params_pct_of_ref"), ("macs", "macs_pct_of_ref")):
            denom = ref[col]
            df[out] = 100.0 * df[col] / denom if pd.notna(denom) and denom != 0 else np.nan
        if target is not None:
            df["reaches_target"] = df["acc_pct_of_ref"] >= 100.0 * target
    return df.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Confusion matrices
# ---------------------------------------------------------------------------------------------
def normalize_confusion(cm: Sequence[Sequence[float]] | np.ndarray, mode: str = "true") -> np.ndarray:
    """Confusion matrix [K, K] (rows true, columns predicted) as float.

    mode "true": each row divided by its sum (recall on the diagonal; empty rows stay 0);
    "pred": each column divided by its sum (precision on the diagonal); "none": raw counts.
    """
    m = np.asarray(cm, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {m.shape}")
    if mode == "none":
        return m
    axis = {"true": 1, "pred": 0}.get(mode)
    if axis is None:
        raise ValueError(f"mode must be 'true', 'pred' or 'none', got {mode!r}")
    sums = m.sum(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(sums > 0, m / np.where(sums == 0, 1, sums), 0.0)
    return out


def confusion_difference(cm_a, cm_b, classes: Sequence[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Row-normalised A - B confusion difference [K, K] and the per-class accuracy change.

    Both matrices are normalised by their true-class rows first, so runs evaluated on different
    numbers of images compare fairly. The table has class, acc_a, acc_b, change (= acc_a - acc_b,
    in fractions), sorted as ``classes``.
    """
    a = normalize_confusion(cm_a, "true")
    b = normalize_confusion(cm_b, "true")
    if a.shape != b.shape:
        raise ValueError(f"confusion matrices have different shapes {a.shape} and {b.shape}: the runs use different classes")
    if len(classes) != a.shape[0]:
        raise ValueError(f"{len(classes)} class names for a {a.shape[0]}-class matrix")
    diff = a - b
    table = pd.DataFrame({
        "class": list(classes),
        "acc_a": np.diag(a),
        "acc_b": np.diag(b),
        "change": np.diag(diff),
    })
    return diff, table


def confusions(cm: Sequence[Sequence[float]] | np.ndarray) -> list[tuple[int, int, int]]:
    """The non-zero off-diagonal cells of a confusion matrix [K, K], most images first:
    [(true index, predicted index, count)] (what a misclassified gallery offers to open)."""
    m = np.asarray(cm)
    cells = [(int(t), int(p), int(m[t, p])) for t, p in zip(*np.nonzero(m)) if t != p]
    return sorted(cells, key=lambda c: (-c[2], c[0], c[1]))


def per_class_table(ev: dict) -> pd.DataFrame:
    """eval.json's per_class list as a DataFrame: class, precision, recall, f1, support."""
    rows = ev.get("per_class") or []
    df = pd.DataFrame(rows)
    for col in ("class", "precision", "recall", "f1", "support"):
        if col not in df.columns:
            df[col] = None
    return df[["class", "precision", "recall", "f1", "support"]]


# ---------------------------------------------------------------------------------------------
# Pareto front
# ---------------------------------------------------------------------------------------------
def pareto_front(costs: Sequence[float], accuracies: Sequence[float]) -> np.ndarray:
    """Boolean mask [N]: True where no other run is at least as cheap AND at least as accurate
    while strictly better in one of the two. NaN entries are never on the front."""
    c = np.asarray(costs, dtype=float)
    a = np.asarray(accuracies, dtype=float)
    if c.shape != a.shape:
        raise ValueError("costs and accuracies must have the same length")
    valid = np.isfinite(c) & np.isfinite(a)
    mask = np.zeros(c.shape, dtype=bool)
    for i in np.flatnonzero(valid):
        others = valid.copy()
        others[i] = False
        dominated = others & (c <= c[i]) & (a >= a[i]) & ((c < c[i]) | (a > a[i]))
        mask[i] = not dominated.any()
    return mask


# ---------------------------------------------------------------------------------------------
# Seed groups
# ---------------------------------------------------------------------------------------------
def seed_group_key(config: dict | None) -> str:
    """A string equal for two configs that differ only in seed / output folder / bookkeeping."""
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in sorted(obj.items()) if k not in _NON_CONDITION_KEYS}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    return json.dumps(strip(config or {}), sort_keys=True, default=str)


def group_by_seed(rows: Sequence[dict], configs: Sequence[dict | None],
                  value_columns: Sequence[str] = ("test_acc", "best_val_acc", "train_seconds")) -> pd.DataFrame:
    """Runs whose configs differ only in seed collapse to one row: mean and std per value column.

    ``rows`` (from ``run_summary``) and ``configs`` are parallel lists. Output columns: group (the
    first run id of the group), model, dataset, channels, n_runs, seeds, runs, and for each value
    column ``<col>_mean``, ``<col>_std`` (sample std, NaN for one run) and ``<col>`` as the text
    "mean ± std".
    """
    if len(rows) != len(configs):
        raise ValueError("rows and configs must be parallel lists")
    groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(configs):
        groups.setdefault(seed_group_key(cfg), []).append(i)
    out = []
    for idx in groups.values():
        members = [rows[i] for i in idx]
        rec = {
            "group": members[0]["run_id"],
            "model": members[0].get("model"),
            "dataset": members[0].get("dataset"),
            "channels": members[0].get("channels"),
            "n_runs": len(members),
            "seeds": ",".join(str(m.get("seed")) for m in members),
            "runs": ",".join(m["run_id"] for m in members),
        }
        for col in value_columns:
            vals = np.array([m.get(col) for m in members if isinstance(m.get(col), (int, float))], dtype=float)
            mean = float(vals.mean()) if vals.size else math.nan
            std = float(vals.std(ddof=1)) if vals.size > 1 else math.nan
            rec[f"{col}_mean"] = mean
            rec[f"{col}_std"] = std
            rec[col] = _pm(mean, std)
        out.append(rec)
    return pd.DataFrame(out)


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    if math.isnan(std):
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {std:.2g}"


def curves_mean_std(metric_lists: Sequence[list[dict]], column: str) -> pd.DataFrame:
    """Per-epoch mean and std of ``column`` over several runs' metrics.jsonl rows.

    Returns columns epoch, mean, std, n (runs that reached that epoch); std is 0 for one run.
    """
    by_epoch: dict[int, list[float]] = {}
    for metrics in metric_lists:
        for i, m in enumerate(metrics):
            v = m.get(column)
            if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                by_epoch.setdefault(int(m.get("epoch", i + 1)), []).append(float(v))
    rows = []
    for epoch in sorted(by_epoch):
        vals = np.array(by_epoch[epoch])
        rows.append({"epoch": epoch, "mean": float(vals.mean()),
                     "std": float(vals.std(ddof=1)) if vals.size > 1 else 0.0, "n": int(vals.size)})
    return pd.DataFrame(rows, columns=["epoch", "mean", "std", "n"])


# ---------------------------------------------------------------------------------------------
# Channel robustness
# ---------------------------------------------------------------------------------------------
def channel_robustness_matrix(evals: Sequence[dict], models: Sequence[str | None] | None = None) -> pd.DataFrame:
    """Assemble eval.json ``channel_robustness`` rows into a trained x tested accuracy matrix.

    Each eval contributes one row, labelled "model · trained combination (strategy)" when ``models``
    (parallel to ``evals``) is given, else by its trained combination (or "random") and strategy.
    Only repeats of the same model on the same combination with the same fill (seeds) are averaged:
    two different models trained "random", or zero-fill and sigmoid-fill on R, are two rows. Columns follow ``COMBO_ORDER`` then any other tested combination (e.g. "L"); untested
    cells are NaN. Index name "trained", columns name "tested".
    """
    if models is not None and len(models) != len(evals):
        raise ValueError("evals and models must be parallel lists")
    acc: dict[str, dict[str, list[float]]] = {}
    order_key: dict[str, tuple] = {}
    tested_seen: list[str] = []
    for i, ev in enumerate(evals):
        cr = (ev or {}).get("channel_robustness") or {}
        trained = cr.get("trained")
        tested = cr.get("tested") or {}
        if trained is None or not isinstance(tested, dict):
            continue
        model = models[i] if models is not None else None
        strategy = cr.get("strategy")
        label = (f"{model} · {trained}" if model else str(trained)) + (f" ({strategy})" if strategy else "")
        order = combo_order()
        rank = order.index(trained) if trained in order else len(order)
        order_key.setdefault(label, (rank, str(trained), str(model or "")))
        row = acc.setdefault(label, {})
        for combo, value in tested.items():
            if combo not in tested_seen:
                tested_seen.append(combo)
            if isinstance(value, (int, float)):
                row.setdefault(combo, []).append(float(value))
    columns = _in_combo_order(tested_seen)
    index_order = sorted(acc, key=lambda k: order_key[k])
    data = [[float(np.mean(acc[t][c])) if acc[t].get(c) else np.nan for c in columns] for t in index_order]
    df = pd.DataFrame(data, index=pd.Index(index_order, name="trained"), columns=pd.Index(columns, name="tested"))
    return df


def _in_combo_order(names: Sequence[str]) -> list[str]:
    """``names`` in ``COMBO_ORDER``, any other name after them in the order seen."""
    order = combo_order()
    return [c for c in order if c in names] + [c for c in names if c not in order]


def robustness_by_run(runs: Sequence[tuple[str, dict | None]],
                      models: dict[str, str | None] | None = None) -> tuple[list[str], list[str], list[list[float | None]]]:
    """One row per run, unlike ``channel_robustness_matrix`` (which averages seeds of one model).

    runs: (run id, its eval.json or None); models: run id -> model name. Returns (row labels
    "model · X (strategy)" for a run trained on X, with the run id added when two rows would read the same, or
    "run (trained X, strategy)" without ``models``; tested combinations in ``COMBO_ORDER``;
    accuracies [rows, combinations] with None where a combination was not tested). Runs without a
    channel-robustness row are left out.
    """
    labels, rows, combos = [], [], []
    for run_id, ev in runs:
        cr = (ev or {}).get("channel_robustness") or {}
        tested = cr.get("tested") if isinstance(cr, dict) else None
        if not tested or not isinstance(tested, dict):
            continue
        combos.extend(c for c in tested if c not in combos)
        model = (models or {}).get(run_id)
        labels.append((f"{model} · {cr.get('trained')} ({cr.get('strategy')})" if model
                       else f"{run_id} (trained {cr.get('trained')}, {cr.get('strategy')})", run_id))
        rows.append(tested)
    order = _in_combo_order(combos)
    z = [[(t.get(c) if isinstance(t.get(c), (int, float)) else None) for c in order] for t in rows]
    texts = [label for label, _ in labels]
    # A heatmap merges rows with the same label: two seeds of one model stay two rows.
    unique = [f"{label} [{rid}]" if texts.count(label) > 1 else label for label, rid in labels]
    return unique, order, z


def seed_mean_evals(evals: dict[str, dict | None], groups: dict[str, list[str]]) -> dict[str, dict]:
    """{group name: an eval-like dict} whose channel-robustness accuracies are the mean over the
    group's runs (``group_runs``: runs differing only in seed), for a heatmap with one row per
    condition instead of one per seed. Groups whose runs have no channel-robustness row are left out."""
    out: dict[str, dict] = {}
    for name, members in groups.items():
        rows = [((evals.get(m) or {}).get("channel_robustness") or {}) for m in members]
        rows = [r for r in rows if isinstance(r.get("tested"), dict) and r["tested"]]
        if not rows:
            continue
        combos = _in_combo_order(sorted({c for r in rows for c in r["tested"]}))
        tested = {}
        for c in combos:
            vals = [float(r["tested"][c]) for r in rows if isinstance(r["tested"].get(c), (int, float))]
            tested[c] = float(np.mean(vals)) if vals else None
        out[name] = {"channel_robustness": {**rows[0], "tested": tested, "runs": len(rows)},
                     "classes": (evals.get(members[0]) or {}).get("classes")}
    return out


def robustness_notes(runs: Sequence[tuple[str, dict | None]]) -> list[str]:
    """Why a run has cells it could not be tested on: one sentence per such run (what 'drop' means
    for it and its eval's own reasons), for the note under the robustness heatmap."""
    notes = []
    all_tested = {c for _, ev in runs for c in (((ev or {}).get("channel_robustness") or {}).get("tested") or {})}
    for run_id, ev in runs:
        cr = (ev or {}).get("channel_robustness") or {}
        tested = cr.get("tested") or {}
        missing = _in_combo_order(sorted(all_tested - set(tested)))
        if not tested or not missing:
            continue
        reasons = cr.get("untested") or {}
        if isinstance(reasons, dict) and reasons:
            why = "; ".join(f"{c}: {r}" for c, r in reasons.items())
        elif cr.get("strategy") == "drop" and len(tested) == 1:
            why = (f"it was trained on {cr.get('trained')} with strategy 'drop', which removes missing channels "
                   "instead of zero-filling them, so its fixed-input model only takes inputs with exactly its own "
                   "number of channels; train it with 'zero-fill' (or a variable-input model) to test it on others")
        else:
            why = "its evaluation has no such combination (they come from another run's dataset or channels)"
        notes.append(f"`{run_id}` is not tested on {', '.join(missing)}: {why}.")
    return notes


def chance_level(ev: dict | None) -> float | None:
    """1 / number of classes of an eval.json (the accuracy of guessing), None when it has no classes."""
    classes = (ev or {}).get("classes") or (ev or {}).get("confusion_matrix")
    return 1.0 / len(classes) if classes else None


# ---------------------------------------------------------------------------------------------
# What differs between runs' configs
# ---------------------------------------------------------------------------------------------
# Recorded by the trainer about the machine and the data it found, not chosen by the user.
_NOT_CHOSEN_PREFIXES = ("run.",)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out      # an empty dict (no options) adds no row: the same as the key absent
    return {prefix[:-1]: obj}


def config_differences(run_ids: Sequence[str], configs: Sequence[dict | None]) -> pd.DataFrame:
    """The config keys whose values differ between the runs: index the key (nested keys joined
    with "."), one column per run, values as text ("–" where a run's config lacks the key).

    What the trainer recorded about the machine (the ``run`` section) is left out: the table shows
    only what a user chose (model, channels, strategy, epochs, samples, lr, seed...), so two runs
    are never compared confounded by a setting nobody sees.
    """
    if len(run_ids) != len(configs):
        raise ValueError("run_ids and configs must be parallel lists")
    flat = [{k: v for k, v in _flatten(c or {}).items() if not k.startswith(_NOT_CHOSEN_PREFIXES)}
            for c in configs]
    keys = list(dict.fromkeys(k for f in flat for k in f))

    def text(v: Any) -> str:
        return "–" if v is None else (json.dumps(v) if isinstance(v, (list, dict)) else str(v))

    rows = {k: [text(f.get(k)) for f in flat] for k in keys}
    differing = {k: v for k, v in rows.items() if len(set(v)) > 1}
    return pd.DataFrame.from_dict(differing, orient="index", columns=list(run_ids)).rename_axis("setting")


# ---------------------------------------------------------------------------------------------
# Groups of runs (for curves with seed bands)
# ---------------------------------------------------------------------------------------------
def group_runs(run_ids: Sequence[str], configs: Sequence[dict | None], *, by_seed: bool = True) -> dict[str, list[str]]:
    """Display name -> member run ids. With ``by_seed``, runs whose configs differ only in seed share
    one group named after its first run ("run (+2 seeds)"); otherwise every run is its own group."""
    if len(run_ids) != len(configs):
        raise ValueError("run_ids and configs must be parallel lists")
    groups: dict[str, list[str]] = {}
    for run_id, cfg in zip(run_ids, configs):
        groups.setdefault(seed_group_key(cfg) if by_seed else run_id, []).append(run_id)
    return {(v[0] if len(v) == 1 else f"{v[0]} (+{len(v) - 1} seeds)"): v for v in groups.values()}


# ---------------------------------------------------------------------------------------------
# Cost of a run's architecture
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunArchitecture:
    """What decides a run's parameters and MACs (not its seed or optimiser): runs that share one
    count the same. options_json: the model options as sorted JSON (hashable, a cache key)."""

    model: str
    options_json: str
    input_shape: tuple[int, int, int]      # C, H, W of one image at the model's input
    num_classes: int

    @property
    def options(self) -> dict:
        return json.loads(self.options_json)

    @property
    def input(self) -> str:
        return "x".join(map(str, self.input_shape))


def run_architecture(run_dir: str | Path) -> RunArchitecture:
    """The architecture of the run in ``run_dir``, from its config.json.

    Raises CheckpointError naming the file when config.json is missing, broken or has no ``run``
    section (training never started), and when the image size is unknown.
    """
    from core.training.checkpoint import CheckpointError
    from core.training.run_info import read_run_info

    config, info = read_run_info(run_dir)
    size = info.image_size or config.image_size
    if not size:
        raise CheckpointError(f"{Path(run_dir) / 'config.json'}: records no image size, so the cost cannot be counted")
    return RunArchitecture(model=config.model, options_json=json.dumps(dict(config.model_options or {}), sort_keys=True),
                           input_shape=(info.in_channels, int(size), int(size)), num_classes=info.num_classes)


def architecture_cost(arch: RunArchitecture) -> dict:
    """{params, macs, flops, input} of one image through ``arch``, or {error} when it cannot be
    counted (unknown model, options the model refuses, an input too small for it: model_complexity
    turns each into a ComplexityError naming the model and shape)."""
    # Imported here: counting builds models; the tables above stay free of model code.
    from core.analysis.complexity import model_complexity

    try:
        rep = model_complexity(arch.model, arch.input_shape, arch.num_classes, arch.options, cross_check=False)
    except ArchScopeError as exc:
        return {"error": str(exc)}
    return {"params": int(rep.params_total), "macs": int(rep.macs), "flops": int(rep.flops), "input": arch.input}


def run_cost(run_dir: str | Path) -> dict:
    """``architecture_cost`` of the run in ``run_dir``; {error} for a run whose config cannot say
    (never raises for a broken run)."""
    try:
        arch = run_architecture(run_dir)
    except ArchScopeError as exc:
        return {"error": str(exc)}
    return architecture_cost(arch)
