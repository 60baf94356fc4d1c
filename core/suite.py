"""``python -m core.suite NAME``: train a suite of runs (a JSON file of TrainConfigs), skipping what is done.

    python -m core.suite seeds --dry-run                 # the plan: what would run, estimated minutes
    python -m core.suite seeds                           # train what is missing, resume what was killed
    python -m core.suite seeds --only 'chan-*,metric-*'  # a subset (fnmatch on run id or group)
    python -m core.suite seeds --device cuda --epochs-scale 4 --runs-root runs/gpu

A suite file (core/suites/NAME.json, or any path) holds ``name``, ``description``, ``defaults``
(TrainConfig fields shared by every run), ``speeds`` (measured training/evaluation images per
second per model, for the time estimates) and ``runs``: a list of {id, group, note, config,
speed?}; each run's config is ``defaults`` updated by its ``config``.

What happens to each run (folder ``<runs-root>/<id>``), decided from the folder alone:

    skip      status done and eval.json present
    evaluate  status done, weights present, eval.json missing -> core.evaluate
    resume    a run that stopped (killed, cancelled, failed) after writing its config -> trainer resume
              (continues after the last completed epoch, or from epoch 1 when none completed)
    train     no folder, or a folder without config.json (stopped before training started)
    busy      another live process holds train.lock -> left alone

Runs go one after another, each in its own ``python -m core.train`` process by default (a crash or
a leak stays in that process; Ctrl-C stops the run as 'cancelled', and the next suite call resumes
it), or in this process with ``--in-process``. At the end a table is printed and
``<runs-root>/suite-NAME.json`` records, per run, the action, state, test accuracy and wall time.
Exit status: 0 every run done, 1 some run failed, 2 a bad suite file or arguments (an invalid run, a
lesson naming a missing run or comparing arms that differ in a key it does not allow: nothing is
trained), 130 interrupted.

A run entry with ``"seeds": [0, 1, 2]`` becomes one run per seed (folders ``ID-s0``, ``ID-s1``, ...).
``"init_from": "@OTHER"`` in a config starts the run from the weights of suite run OTHER (same seed),
which trains first. ``--jobs 2`` trains two runs at a time (each trainer gets cores // 2 threads).
The suite's ``lessons`` (see core.lessons) are checked when the file is loaded.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from core import cli
from core.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, InvalidInputError
from core.io import parse_json
from core.training.config import ConfigError, TrainConfig
from core.training.launch import child_env, resume_nproc, train_command
from core.training.run_folder import InvalidRunIdError, set_aside, validate_run_id

SUITES_DIR = Path(__file__).resolve().parent / "suites"
SUITE_KEYS = {"name", "description", "defaults", "speeds", "runs", "calibration", "lessons"}
RUN_KEYS = {"id", "group", "note", "config", "speed", "seeds"}
RUN_REF = "@"                # config "init_from": "@ID" = the suite run ID (same seed) -> trained first
OVERHEAD_S = 10.0            # process start, imports, data load, writing: measured 6-12 s per run here


class SuiteError(InvalidInputError):
    """A suite file that cannot be used; the message names the file and the run."""


@dataclass
class SuiteRun:
    run_id: str
    group: str
    note: str
    config: TrainConfig            # defaults + the run's config, epochs already scaled
    base_epochs: int               # epochs in the file, before --epochs-scale
    speed: dict = field(default_factory=dict)   # {"train": images/s, "eval": images/s}
    problem: str = ""              # why the config is invalid (only with load_suite(strict=False))
    base_id: str = ""              # the id in the file; run_id adds "-s<seed>" when the entry lists seeds
    seed: int | None = None        # the seed of a seed-repeated entry (None: a single run)
    depends_on: str | None = None  # run id whose weights this run starts from (init_from "@ID")

    def __post_init__(self) -> None:
        self.base_id = self.base_id or self.run_id


@dataclass
class Suite:
    name: str
    description: str
    path: Path
    runs: list[SuiteRun]
    calibration: str = ""
    lessons: list = field(default_factory=list)    # core.lessons.Lesson, checked against the runs


# ==== loading ================================================================================
def find_suite_file(name: str | os.PathLike) -> Path:
    """A path to an existing file, or core/suites/NAME.json (.yaml/.yml when PyYAML is installed)."""
    p = Path(name)
    if p.is_file():
        return p
    for ext in (".json", ".yaml", ".yml"):
        candidate = SUITES_DIR / f"{name}{ext}"
        if candidate.is_file():
            return candidate
    known = sorted(f.stem for f in SUITES_DIR.glob("*.json")) if SUITES_DIR.is_dir() else []
    raise SuiteError(f"suite {str(name)!r} not found: not a file, and not one of {', '.join(known) or '(none)'} "
                     f"in {SUITES_DIR}")


def _parse(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise SuiteError(f"{path}: a YAML suite needs PyYAML (pip install pyyaml), or write it as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SuiteError(f"{path}: not valid YAML ({exc})") from None
    else:
        data = parse_json(text, path, SuiteError)
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: expected an object with 'runs', got {type(data).__name__}")
    return data


def seeded_id(base_id: str, seed: int | None) -> str:
    """The folder name of one seed of a seed-repeated suite entry: ``ID-s<seed>`` (``ID`` for a single run)."""
    return base_id if seed is None else f"{base_id}-s{seed}"


def entry_seeds(item: dict) -> list[int | None]:
    """The seeds a suite entry expands to: its ``seeds`` list, or [None] (one run, the config's seed)."""
    seeds = item.get("seeds")
    if seeds is None:
        return [None]
    if (not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds)
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds)):
        raise SuiteError(f"run {item.get('id')!r}: 'seeds' must be a list of distinct integers >= 0, got {seeds!r}")
    return list(seeds)


def suite_groups(name_or_path: str | os.PathLike = "seeds") -> dict[str, list[str]]:
    """{group: [run id, ...]} of a suite, in file order (no configs built: cheap enough for a page).

    A run trained by ``python -m core.suite`` lives in RUNS_ROOT/<id>, so these ids are run folder
    names: the Compare page offers each group as one click ("small-vs-resnet34", ...). An entry
    with ``seeds`` contributes one id per seed (``ID-s0``, ``ID-s1``, ...)."""
    data = _parse(find_suite_file(name_or_path))
    groups: dict[str, list[str]] = {}
    for entry in data.get("runs") or []:
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            ids = [seeded_id(entry["id"], seed) for seed in entry_seeds(entry)]
            groups.setdefault(str(entry.get("group") or "other"), []).extend(ids)
    return groups


def scaled_epochs(epochs: int, scale: float) -> int:
    """``epochs * scale`` rounded, at least 1."""
    return max(1, int(round(epochs * scale)))


def load_suite(name_or_path: str | os.PathLike, *, epochs_scale: float = 1.0, device: str | None = None,
               validate: bool = False, strict: bool = True) -> Suite:
    """Read and check a suite file. ``epochs_scale`` multiplies every run's epochs; ``device``
    overrides every run's device. With ``validate`` every config is also checked against the model
    and data registries (TrainConfig.validate). An entry with ``seeds: [0, 1, 2]`` becomes one run
    per seed (ids ``ID-s0``...). The ``lessons`` are checked against the runs (core.lessons): a lesson
    naming a missing run or whose arms differ in a key it does not allow (confounded) is refused.
    Raises SuiteError listing every problem found; with ``strict=False`` a run whose config is
    invalid is kept with its ``problem`` set (the suite runs the others and reports it) and only
    problems of the file itself raise."""
    if not (isinstance(epochs_scale, (int, float)) and epochs_scale > 0):
        raise SuiteError(f"--epochs-scale must be > 0, got {epochs_scale!r}")
    path = find_suite_file(name_or_path)
    data = _parse(path)
    problems: list[str] = []
    unknown = sorted(set(data) - SUITE_KEYS)
    if unknown:
        problems.append(f"unknown top-level key(s) {unknown}; known: {sorted(SUITE_KEYS)}")
    defaults = data.get("defaults") or {}
    speeds = data.get("speeds") or {}
    raw_runs = data.get("runs")
    if not isinstance(defaults, dict):
        problems.append("'defaults' must be an object of TrainConfig fields")
        defaults = {}
    if not isinstance(raw_runs, list) or not raw_runs:
        raise SuiteError(f"{path}: 'runs' must be a non-empty list")
    runs: list[SuiteRun] = []
    seen: set[str] = set()
    opts = {"epochs_scale": epochs_scale, "device": device, "validate": validate, "strict": strict}
    for i, item in enumerate(raw_runs):
        where = f"run #{i + 1}"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected an object, got {type(item).__name__}")
            continue
        run_id = item.get("id")
        try:
            validate_run_id(run_id)     # the id is the run's folder name
            seeds = entry_seeds(item)
        except InvalidRunIdError as exc:
            problems.append(f"{where}: 'id' must be a folder name: {exc}")
            continue
        except SuiteError as exc:
            problems.append(str(exc))
            continue
        where = f"run {run_id!r}"
        extra = sorted(set(item) - RUN_KEYS)
        if extra:
            problems.append(f"{where}: unknown key(s) {extra}; known: {sorted(RUN_KEYS)}")
        cfg = item.get("config") or {}
        if not isinstance(cfg, dict):
            problems.append(f"{where}: 'config' must be an object")
            continue
        for seed in seeds:
            sid = seeded_id(run_id, seed)
            if sid in seen:
                problems.append(f"run {sid!r}: id used twice")
            seen.add(sid)
            merged = {**defaults, **cfg} if seed is None else {**defaults, **cfg, "seed": seed}
            speed = item.get("speed") or speeds.get(merged.get("model")) or {}
            run = _build_run(path, item, sid, seed, merged, dict(speed), problems, **opts)
            if run is not None:
                runs.append(run)
    _check_dependencies(runs, problems)
    lessons = _load_lessons(data, runs, problems)
    if problems:
        raise SuiteError(f"{path}: " + ("\n  - ".join([""] + problems) if len(problems) > 1 else problems[0]))
    return Suite(str(data.get("name") or path.stem), str(data.get("description", "")), path, runs,
                 str(data.get("calibration", "")), lessons)


def _build_run(path: Path, item: dict, run_id: str, seed: int | None, merged: dict, speed: dict,
               problems: list[str], *, epochs_scale: float, device: str | None, validate: bool,
               strict: bool) -> SuiteRun | None:
    """One SuiteRun from a merged config; a problem goes to ``problems`` (strict) or the run's ``problem``."""
    where = f"run {run_id!r}"
    base_id = str(item["id"])
    depends_on = None
    ref = merged.get("init_from")
    if isinstance(ref, str) and ref.startswith(RUN_REF):
        # the referenced suite run of the same seed; its folder is only known when the suite runs
        target = ref[len(RUN_REF):]
        depends_on = seeded_id(target, seed) if seed is not None else target
        merged = {k: v for k, v in merged.items() if k != "init_from"}
    group, note = str(item.get("group", "")), str(item.get("note", ""))
    try:
        config = TrainConfig.from_dict(merged, source=f"{path}: {where}")
        static = config.static_problems()
        if static:
            raise ConfigError("; ".join(static))
        base_epochs = config.epochs
        changes = {"epochs": scaled_epochs(base_epochs, epochs_scale)}
        if device:
            changes["device"] = device
        config = config.replace(**changes)
        if validate:
            config.validate()
    except ConfigError as exc:
        if strict:
            problems.append(f"{where}: {exc}")
            return None
        try:   # keep what can be shown (model, dataset) for the tables
            shown = TrainConfig.from_dict({k: v for k, v in merged.items() if k in TrainConfig.field_names()})
        except (ConfigError, TypeError):
            shown = TrainConfig()
        base_epochs = shown.epochs
        if isinstance(shown.epochs, int):
            shown.epochs = scaled_epochs(shown.epochs, epochs_scale)
        shown.device = device or shown.device
        return SuiteRun(run_id, group, note, shown, base_epochs, speed, problem=" ".join(str(exc).split()),
                        base_id=base_id, seed=seed, depends_on=depends_on)
    return SuiteRun(run_id, group, note, config, base_epochs, speed, base_id=base_id, seed=seed,
                    depends_on=depends_on)


def _check_dependencies(runs: list[SuiteRun], problems: list[str]) -> None:
    """Every ``init_from "@ID"`` names a run listed before it (so a plain top-to-bottom run works)."""
    order = {r.run_id: i for i, r in enumerate(runs)}
    for i, r in enumerate(runs):
        if r.depends_on is None:
            continue
        j = order.get(r.depends_on)
        if j is None:
            problems.append(f"run {r.run_id!r}: init_from '{RUN_REF}{r.depends_on}' names no run of this suite")
        elif j >= i:
            problems.append(f"run {r.run_id!r}: init_from '{RUN_REF}{r.depends_on}' must be listed before it")


def _load_lessons(data: dict, runs: list[SuiteRun], problems: list[str]) -> list:
    """The suite's lessons (core.lessons.parse_lessons), checked against its runs; problems appended."""
    raw = data.get("lessons")
    if raw is None:
        return []
    from core.lesson_spec import LessonError, parse_lessons

    try:
        return parse_lessons(raw, runs)
    except LessonError as exc:
        problems.extend(exc.problems)
        return []


def select_runs(runs: list[SuiteRun], only: str | None) -> list[SuiteRun]:
    """Runs whose id or group matches one of the comma-separated fnmatch patterns in ``only``."""
    if not only:
        return list(runs)
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    return [r for r in runs if any(fnmatch.fnmatchcase(r.run_id, p) or fnmatch.fnmatchcase(r.group, p)
                                   for p in patterns)]


# ==== what to do with a folder ===============================================================
def plan_action(run_dir: str | os.PathLike) -> tuple[str, str]:
    """(action, why) for a run folder: skip, evaluate, resume, train or busy (see module docstring)."""
    from core.training.run_folder import RunFolder, is_this_host, owner_alive

    run = RunFolder(run_dir)
    if not run.path.exists():
        return "train", "new"
    owner, host = run.lock_holder()
    if owner is not None and not (owner == os.getpid() and is_this_host(host)) and owner_alive(owner, host):
        where = "" if is_this_host(host) else f" on {host}"
        return "busy", f"process {owner}{where} is training into it"
    status = run.read_status()
    state = status.get("state")
    if state == "done":
        if status.get("weights_shipped") is False and not run.best_weights_path.exists():
            # a shipped results-only run (core.ship): its status says this command regenerates the weights
            return "train", "results only (weights not shipped): trained again for its weights"
        if run.eval_path.exists() and run.read_eval() is not None:
            return "skip", "done"
        if run.best_weights_path.exists():
            return "evaluate", "done, eval.json missing"
        if run.resume_state_path.exists():
            return "resume", "done but model.safetensors missing"
        return "train", "done but no weights: retrained"
    if not run.config_path.exists():
        return "train", f"{state or 'empty'} folder without config.json"
    done_epochs = len(run.read_metrics())
    return "resume", f"{state}, {done_epochs} epoch(s) completed"


def _stored_config_drift(run_dir: Path, config: TrainConfig) -> str:
    """Fields (besides device/threads/bookkeeping) where the folder's config.json differs from the suite's."""
    try:
        stored = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return ""
    ignore = {"device", "num_threads", "log_every", "tensorboard", "compile", "channels", "run"}
    want = config.to_dict()
    diffs = [f"{k} {stored.get(k)!r} (suite: {want[k]!r})" for k in want
             if k not in ignore and k in stored and stored.get(k) != want[k]]
    return "; ".join(diffs)


# ==== estimates ==============================================================================
def estimate_seconds(run: SuiteRun) -> float | None:
    """Wall seconds of a run from its measured speeds: training images / train speed + validation
    each epoch and the test split (once per channel combination evaluated) / eval speed + overhead.
    None when the suite file has no speed for the run's model."""
    tr, ev = run.speed.get("train"), run.speed.get("eval")
    if not tr or not ev:
        return None
    from core.data import describe

    cfg = run.config
    try:
        d = describe(cfg.dataset, image_size=cfg.image_size, root=cfg.data_root)
    except Exception:  # noqa: BLE001 - an estimate must not stop a dry run
        return None
    n_train = d.splits["train"] if cfg.max_train_samples is None else min(cfg.max_train_samples, d.splits["train"])
    n_val, n_test = d.splits["val"], d.splits["test"]
    if cfg.max_eval_samples:
        n_val, n_test = min(n_val, cfg.max_eval_samples), min(n_test, cfg.max_eval_samples)
    combos = 1
    if d.channels == 3 and (cfg.channel_strategy != "drop" or cfg.channels == "random" or _variable(cfg.model)):
        combos = 7
    # scale: the stored speeds are for the file's image size (or the source's native one)
    return (n_train * cfg.epochs / tr + n_val * cfg.epochs / ev + n_test * combos / ev + OVERHEAD_S)


def _variable(model: str) -> bool:
    from core.models.registry import get_spec

    try:
        return get_spec(model).variable_input
    except KeyError:
        return False


def weights_megabytes(run: SuiteRun) -> float | None:
    """Size of the run's model.safetensors in fp32 MB (parameters + buffers), from a fresh model."""
    from core.data import describe
    from core.models.registry import create_model

    try:
        cfg = run.config.validate()
        d = describe(cfg.dataset)
        ch = cfg.channels
        if ch == "L":
            in_ch = 1
        elif ch == "ALL":
            in_ch = int(d.channels)
        elif cfg.channel_strategy != "drop" or ch == "random" or _variable(cfg.model):
            in_ch = 3
        else:
            in_ch = len(ch)
        model = create_model(cfg.model, num_classes=d.num_classes, in_channels=in_ch, **cfg.model_options)
    except Exception:  # noqa: BLE001 - an estimate must not stop a dry run
        return None
    n = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    return n / 1e6


# ==== running ================================================================================
def _train_subprocess(run: SuiteRun, run_dir: Path, action: str, quiet: bool, threads: int | None = None) -> int:
    """Train or resume ``run`` in a child ``python -m core.train`` (torchrun when the run was trained
    with several processes), with ``threads`` CPU threads when given; its exit code."""
    if action == "resume":
        cmd = train_command(resume=run_dir, nproc=resume_nproc(run_dir), epochs=run.config.epochs,
                            device=run.config.device, num_threads=threads, quiet=quiet)
        tmp = None
    else:
        fd, tmp = tempfile.mkstemp(prefix=f"suite-{run.run_id}-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(run.config.to_dict(), fh)
        cmd = train_command(config=tmp, out=run_dir, num_threads=threads, quiet=quiet)
    try:
        proc = subprocess.Popen(cmd, env=child_env())
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # The child got the same SIGINT (same process group): let it save and mark 'cancelled'.
            proc.wait()
            raise
    finally:
        if tmp:
            os.unlink(tmp)


def _train_in_process(run: SuiteRun, run_dir: Path, action: str, quiet: bool, threads: int | None = None) -> int:
    from core.training.trainer import load_config_for_resume, train

    if action == "resume":
        config = load_config_for_resume(run_dir, epochs=run.config.epochs, device=run.config.device)
    else:
        config = run.config
    status = train(config, run_dir, resume=(action == "resume"), quiet=quiet)
    state = status.get("state")
    if state == "cancelled":
        raise KeyboardInterrupt
    return 0 if state == "done" else 1


def _evaluate(run_dir: Path, device: str, in_process: bool) -> tuple[bool, str]:
    if in_process:
        from core.training.evaluation import evaluate_run

        try:
            evaluate_run(run_dir, device=device)
            return True, ""
        except Exception as exc:  # noqa: BLE001 - reported in the table, the suite goes on
            return False, f"evaluation failed: {type(exc).__name__}: {exc}"
    proc = subprocess.run([sys.executable, "-m", "core.evaluate", str(run_dir), "--device", device],
                          env=child_env(), capture_output=True, text=True)
    return proc.returncode == 0, (proc.stderr.strip().splitlines() or [""])[-1]


def _resolve_dependency(run: SuiteRun, runs_root: Path) -> tuple[SuiteRun, str]:
    """``run`` with ``init_from`` set to its dependency's folder, and why it cannot start ('' when it can)."""
    from dataclasses import replace

    from core.training.run_folder import RunFolder

    dep_dir = runs_root / str(run.depends_on)
    resolved = replace(run, config=run.config.replace(init_from=str(dep_dir.resolve())))
    if RunFolder(dep_dir).read_status().get("state") != "done":
        return resolved, f"starts from run {run.depends_on!r}, which is not done"
    return resolved, ""


def execute_run(run: SuiteRun, runs_root: Path, *, in_process: bool = False, quiet: bool = True,
                threads: int | None = None) -> dict:
    """Bring one run to 'done with eval.json' (``threads``: CPU threads of its trainer, None: the
    trainer's default). Returns a summary row (see run_suite)."""
    from core.training.run_folder import RunFolder

    run_dir = runs_root / run.run_id
    action, why = ("invalid", run.problem) if run.problem else plan_action(run_dir)
    if run.depends_on is not None and not run.problem:
        run, blocked = _resolve_dependency(run, runs_root)
        if blocked and action in ("train", "resume"):
            action, why = "blocked", blocked
    row = {"run_id": run.run_id, "group": run.group, "model": run.config.model, "dataset": run.config.dataset,
           "channels": run.config.channels or "", "strategy": run.config.channel_strategy,
           "epochs": run.config.epochs, "action": action, "why": why, "state": None, "test_acc": None,
           "seconds": 0.0, "estimated_seconds": estimate_seconds(run), "message": ""}
    if action == "blocked":
        row.update(state="blocked", message=why)
        return row
    drift = _stored_config_drift(run_dir, run.config) if run_dir.exists() else ""
    if drift:
        row["message"] = f"folder's config differs: {drift}" + (
            "; kept (use another --runs-root or delete the folder to retrain)" if action == "skip" else "")
    start = time.time()
    kept_aside = set_aside(run_dir) if action == "train" else None
    if action in ("train", "resume"):
        trainer = _train_in_process if in_process else _train_subprocess
        code = trainer(run, run_dir, action, quiet, threads)
        if code == 2:
            row["message"] = (row["message"] + "; " if row["message"] else "") + "invalid config (see above)"
    folder = RunFolder(run_dir)
    status = folder.read_status()
    if kept_aside is not None:
        if status.get("state") == "done":
            shutil.rmtree(kept_aside, ignore_errors=True)
        else:
            row["message"] = f"the previous results are kept in {kept_aside}"
    if action not in ("busy", "invalid") and status.get("state") == "done" and folder.read_eval() is None:
        ok, msg = _evaluate(run_dir, run.config.device, in_process)
        if not ok:
            row["message"] = (row["message"] + "; " if row["message"] else "") + msg
    row["seconds"] = round(time.time() - start, 1)
    status = folder.read_status()
    ev = folder.read_eval()
    row["state"] = "invalid" if run.problem else (status.get("state") if run_dir.exists() else "missing")
    if row["state"] == "done" and ev is None:
        row["state"] = "done (no eval)"
    if ev is not None:
        row["test_acc"] = ev.get("test_acc")
    if run.problem:
        row["message"] = run.problem
    elif row["state"] not in ("done",) and not row["message"]:
        row["message"] = str(status.get("message") or "")
    return row


def run_suite(suite: Suite, runs_root: str | os.PathLike, *, only: str | None = None, in_process: bool = False,
              quiet: bool = True, echo=print, jobs: int = 1) -> list[dict]:
    """Run the selected runs of ``suite``, ``jobs`` at a time (each trainer then gets cores // jobs
    CPU threads; a run that starts from another run's weights waits for it); returns one row per run,
    in file order: run_id, group, model, dataset, channels, strategy, epochs, action, why, state,
    test_acc, seconds, estimated_seconds, message. Writes <runs_root>/suite-<name>.json after every run."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InvalidInputError(f"--jobs must be an integer >= 1, got {jobs!r}")
    if jobs > 1 and in_process:
        raise InvalidInputError("--jobs > 1 trains each run in its own process: drop --in-process")
    runs_root = Path(runs_root)
    runs_root.mkdir(parents=True, exist_ok=True)
    selected = select_runs(suite.runs, only)
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    order = {r.run_id: i for i, r in enumerate(selected)}
    pending, running, rows = list(selected), {}, {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        try:
            while pending or running:
                waiting_on = {r.run_id for r in pending} | {r.run_id for r in running.values()}
                for run in [r for r in pending if r.depends_on not in waiting_on][:jobs - len(running)]:
                    pending.remove(run)
                    action, why = ("invalid", run.problem) if run.problem else plan_action(runs_root / run.run_id)
                    echo(f"[{order[run.run_id] + 1}/{len(selected)}] {run.run_id}: {action} ({why})", flush=True)
                    running[pool.submit(execute_run, run, runs_root, in_process=in_process, quiet=quiet,
                                        threads=threads)] = run
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in finished:
                    run = running.pop(fut)
                    row = rows[run.run_id] = fut.result()
                    acc = "" if row["test_acc"] is None else f", test_acc {row['test_acc']:.4f}"
                    echo(f"    {run.run_id} -> {row['state']}{acc} in {row['seconds']:.0f} s"
                         + (f"  [{row['message']}]" if row["message"] else ""), flush=True)
                    _write_summary(suite, runs_root, [rows[k] for k in sorted(rows, key=order.get)])
        except KeyboardInterrupt:
            # the children got the same SIGINT: each saves its run as 'cancelled'; wait for them
            for fut, run in running.items():
                try:
                    rows[run.run_id] = fut.result()
                    continue
                except BaseException:  # noqa: BLE001 - a cancelled child is reported, not re-raised
                    pass
                rows[run.run_id] = {"run_id": run.run_id, "group": run.group, "model": run.config.model,
                                    "dataset": run.config.dataset, "epochs": run.config.epochs,
                                    "action": "cancelled", "state": "cancelled",
                                    "message": "interrupted; run the suite again to resume"}
            _write_summary(suite, runs_root, [rows[k] for k in sorted(rows, key=order.get)])
            raise
    return [rows[k] for k in sorted(rows, key=order.get)]


def _write_summary(suite: Suite, runs_root: Path, rows: list[dict]) -> None:
    from core.io import atomic_write_json

    atomic_write_json(runs_root / f"suite-{suite.name}.json", {
        "suite": suite.name, "file": str(suite.path), "command": " ".join([Path(sys.executable).name] + sys.argv),
        "updated": time.time(), "runs": rows})


# ==== tables =================================================================================
def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def plan_table(suite: Suite, runs: list[SuiteRun], runs_root: Path, *, with_size: bool = True,
               jobs: int = 1) -> str:
    rows, total, total_mb = [], 0.0, 0.0
    for r in runs:
        est = estimate_seconds(r)
        mb = weights_megabytes(r) if with_size else None
        action, why = ("invalid", r.problem) if r.problem else plan_action(runs_root / r.run_id)
        total += est or 0.0
        total_mb += mb or 0.0
        rows.append([r.run_id, r.group, r.config.model, r.config.dataset,
                     f"{r.config.channels or 'default'}/{r.config.channel_strategy}", str(r.config.epochs),
                     str(r.config.max_train_samples or "all"), "?" if est is None else f"{est / 60:.1f}",
                     "?" if mb is None else f"{mb:.1f}", f"{action} ({why})"])
    out = format_table(["run id", "group", "model", "dataset", "channels", "epochs", "train n", "est. min",
                        "MB fp32", "action"], rows)
    out += f"\n{len(runs)} runs, estimated {total / 60:.0f} min of training"
    if jobs > 1:
        out += f" (about {total / 60 / jobs:.0f} min wall with --jobs {jobs})"
    if with_size:
        out += f", weights {total_mb:.0f} MB fp32 ({total_mb / 2:.0f} MB fp16)"
    if suite.calibration:
        out += f"\nestimates: {suite.calibration}"
    return out


def result_table(rows: list[dict]) -> str:
    body = []
    for r in rows:
        est = r.get("estimated_seconds")
        body.append([r["run_id"], str(r.get("model", "")), str(r.get("dataset", "")), str(r.get("epochs", "")),
                     str(r.get("action", "")), str(r.get("state", "")),
                     "" if r.get("test_acc") is None else f"{r['test_acc']:.4f}",
                     f"{r.get('seconds', 0) / 60:.1f}", "" if est is None else f"{est / 60:.1f}",
                     str(r.get("message", ""))[:80]])
    return format_table(["run id", "model", "dataset", "epochs", "action", "state", "test acc", "min", "est. min",
                         "note"], body)


# ==== CLI ====================================================================================
def build_parser() -> argparse.ArgumentParser:
    """The ``python -m core.suite`` parser."""
    p = cli.parser("python -m core.suite", __doc__)
    p.add_argument("suite", help="a suite name (core/suites/NAME.json) or a path to a suite file")
    p.add_argument("--device", choices=cli.DEVICE_CHOICES, default=None,
                   help="override every run's device (None: each config's own, normally auto)")
    p.add_argument("--epochs-scale", type=float, default=1.0, metavar="F",
                   help="multiply every run's epochs by F (rounded, at least 1), e.g. 4 on a GPU")
    p.add_argument("--runs-root", default="checkpoints", help="folder of the run folders")
    p.add_argument("--only", metavar="PATTERN", help="comma-separated fnmatch patterns on run id or group")
    p.add_argument("--dry-run", action="store_true", help="print the plan and estimates; train nothing")
    p.add_argument("--in-process", action="store_true", help="train in this process instead of a subprocess per run")
    p.add_argument("--skip-invalid", action="store_true",
                   help="train the valid runs of a suite file in which some runs are invalid (default: refuse, exit 2)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="train N runs at a time, each with cores // N CPU threads (small models on a 2-core CPU: "
                        "2 jobs of 1 thread train more images per second than 1 job of 2)")
    p.add_argument("--verbose", action="store_true", help="show each trainer's progress bar")
    return p


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    cli.check_device(args.device)          # --device cuda without a GPU: one line, before any run
    suite = load_suite(args.suite, epochs_scale=args.epochs_scale, device=args.device, validate=True, strict=False)
    runs = select_runs(suite.runs, args.only)
    if not runs:
        raise InvalidInputError(f"--only {args.only!r} matches no run id or group of suite {suite.name!r}")
    root = Path(args.runs_root)
    invalid = [r for r in runs if r.problem]
    if invalid and not (args.skip_invalid or args.dry_run):
        # nothing is trained from a file with a mistake in it: fix it, or say to go on without those runs
        raise SuiteError(f"{suite.path}: {len(invalid)} invalid run(s), nothing trained "
                         f"(--skip-invalid trains the others):"
                         + "".join(f"\n  - run {r.run_id!r}: {r.problem}" for r in invalid))
    for r in invalid:
        print(f"warning: run {r.run_id!r} is invalid and will be skipped: {r.problem}", file=sys.stderr)
    print(f"suite {suite.name} ({suite.path}): {len(runs)} of {len(suite.runs)} runs -> {root}")
    if args.dry_run:
        print(plan_table(suite, runs, root, jobs=args.jobs))
        return EXIT_OK
    start = time.time()
    try:
        rows = run_suite(suite, root, only=args.only, in_process=args.in_process, quiet=not args.verbose,
                         jobs=args.jobs)
    except KeyboardInterrupt:
        print("\ninterrupted: the current run is saved as cancelled; run the same command again to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print()
    print(result_table(rows))
    print(f"{len(rows)} runs in {(time.time() - start) / 60:.1f} min; summary in {root / f'suite-{suite.name}.json'}")
    return EXIT_OK if all(r["state"] == "done" for r in rows) else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 every run done, 1 some run failed, 2 bad
    suite file or arguments, 130 interrupted)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
