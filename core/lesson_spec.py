"""Lessons as data: the dataclasses, the parser of a suite file's ``lessons`` and the confounding
check (arms may differ only in the config keys a lesson allows). The file format and the verdict
rule are documented in core.lessons, which evaluates these over run folders; core.suite loads them
(this module imports neither, so neither import makes a cycle)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from core.errors import InvalidInputError

LESSON_KEYS = {"id", "seed_report", "question", "finding", "metric", "arms", "expected", "allowed_differences",
               "headline", "budget", "margin", "note"}
ARM_KEYS = {"name", "run", "metric", "scale", "model", "options", "input", "classes", "value", "source"}
EXACT_METRICS = ("params", "macs")
DEFAULT_MARGIN = 0.02
# config keys that never make a comparison unfair (bookkeeping, hardware, the seed being repeated)
NEUTRAL_KEYS = {"seed", "device", "num_threads", "log_every", "tensorboard", "compile", "checkpoint_every",
                "eval_at_end", "channels_last"}
_EXPECTED = re.compile(r"^\s*(\S+)\s*([<>=])\s*(\S+)\s*$")


def parse_expected(text: str) -> tuple[str, str, str] | None:
    """``"A > B"`` -> ("A", ">", "B"); None when the text is not ``ARM (<|>|=) ARM``."""
    m = _EXPECTED.match(str(text))
    return (m.group(1), m.group(2), m.group(3)) if m else None


class LessonError(InvalidInputError):
    """Lessons that cannot be used; ``problems`` lists each one, naming the lesson and the key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(problems))


@dataclass
class Arm:
    name: str
    run: str | None = None              # suite entry id (its seeds' runs)
    run_ids: list[str] = field(default_factory=list)
    seeds: list[int | None] = field(default_factory=list)
    metric: str | None = None
    scale: float = 1.0
    model: str | None = None
    options: dict = field(default_factory=dict)
    input: tuple[int, int, int] | None = None
    classes: int | None = None
    value: float | None = None
    source: str = ""
    budget: str = ""                    # training images x epochs and schedule (run arms)
    related_run_ids: list[str] = field(default_factory=list)   # model arms: the suite's runs of that model

    @property
    def kind(self) -> str:
        return "run" if self.run else "model" if self.model else "value"


@dataclass
class Lesson:
    id: str
    seed_report: str
    question: str
    finding: str
    metric: str
    arms: list[Arm]
    expected: str
    relation: tuple[str, str, str]      # (first arm, "<" | ">" | "=", second arm)
    allowed_differences: list[str] = field(default_factory=list)
    headline: bool = False
    budget: str = ""
    margin: float = DEFAULT_MARGIN
    note: str = ""

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    def run_ids(self) -> list[str]:
        return [rid for a in self.arms for rid in a.run_ids]


# ==== parsing and the confounding check ======================================================
def parse_lessons(raw: Any, runs: Sequence[Any]) -> list[Lesson]:
    """Lessons from a suite file's ``lessons`` list, checked against its runs (core.suite.SuiteRun):
    every arm's run exists, and arms differ only in ``allowed_differences``. Raises LessonError."""
    if not isinstance(raw, list):
        raise LessonError(["'lessons' must be a list of objects"])
    by_base: dict[str, list[Any]] = {}
    for r in runs:
        by_base.setdefault(r.base_id, []).append(r)
    problems: list[str] = []
    lessons: list[Lesson] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        lesson = _parse_lesson(item, i, by_base, problems)
        if lesson is None:
            continue
        if lesson.id in seen:
            problems.append(f"lesson {lesson.id!r}: id used twice")
        seen.add(lesson.id)
        problems.extend(confounding_problems(lesson, by_base))
        lessons.append(lesson)
    if problems:
        raise LessonError(problems)
    return lessons


def _parse_lesson(item: Any, i: int, by_base: dict[str, list[Any]], problems: list[str]) -> Lesson | None:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
        problems.append(f"lesson #{i + 1}: expected an object with a string 'id'")
        return None
    where = f"lesson {item['id']!r}"
    bad = len(problems)
    extra = sorted(set(item) - LESSON_KEYS)
    if extra:
        problems.append(f"{where}: unknown key(s) {extra}; known: {sorted(LESSON_KEYS)}")
    for key in ("seed_report", "question", "finding", "expected"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            problems.append(f"{where}: key {key!r} must be a non-empty string")
    metric = item.get("metric", "test_acc")
    problems.extend(f"{where}: {p}" for p in _metric_problems(metric, "metric"))
    raw_arms = item.get("arms")
    if not isinstance(raw_arms, list) or len(raw_arms) < 2:
        problems.append(f"{where}: key 'arms' must list at least two arms")
        return None
    arms = [a for a in (_parse_arm(a, j, where, by_base, problems) for j, a in enumerate(raw_arms)) if a]
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        problems.append(f"{where}: arm names must be distinct, got {names}")
    relation = parse_expected(item.get("expected", ""))
    if relation is None:
        problems.append(f"{where}: key 'expected' must read 'ARM > ARM', 'ARM < ARM' or 'ARM = ARM', "
                        f"got {item.get('expected')!r}")
    elif len(arms) == len(raw_arms):         # (a broken arm is reported once, above)
        for name in (relation[0], relation[2]):
            if name not in names:
                problems.append(f"{where}: key 'expected' names arm {name!r}, which is not one of {names}")
    allowed = item.get("allowed_differences", [])
    if not isinstance(allowed, list) or not all(isinstance(k, str) for k in allowed):
        problems.append(f"{where}: key 'allowed_differences' must be a list of config keys")
        allowed = []
    margin = item.get("margin", DEFAULT_MARGIN)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0:
        problems.append(f"{where}: key 'margin' must be a number >= 0, got {margin!r}")
    if len(problems) > bad:
        return None
    return Lesson(item["id"], item["seed_report"], item["question"], item["finding"], metric, arms,
                  item["expected"], relation, list(allowed), bool(item.get("headline", False)),
                  str(item.get("budget", "")), float(margin), str(item.get("note", "")))


def _metric_problems(metric: Any, key: str) -> list[str]:
    if not isinstance(metric, str):
        return [f"key {key!r} must be a string"]
    if metric in ("test_acc",) + EXACT_METRICS:
        return []
    if metric.startswith("acc_on:"):
        from core.data.channels import CHANNEL_COMBOS as COMBOS

        combos = [c for c in metric[len("acc_on:"):].split(",") if c]
        bad = [c for c in combos if c not in COMBOS]
        if combos and not bad:
            return []
        return [f"key {key!r}: {metric!r} names unknown combination(s) {bad}; known: {list(COMBOS)}"]
    return [f"key {key!r}: unknown metric {metric!r}; known: test_acc, acc_on:COMBO[,COMBO...], params, macs"]


def _parse_arm(raw: Any, j: int, where: str, by_base: dict[str, list[Any]], problems: list[str]) -> Arm | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        problems.append(f"{where}: arm #{j + 1} must be an object with a string 'name'")
        return None
    at = f"{where}, arm {raw['name']!r}"
    extra = sorted(set(raw) - ARM_KEYS)
    if extra:
        problems.append(f"{at}: unknown key(s) {extra}; known: {sorted(ARM_KEYS)}")
    kinds = [k for k in ("run", "model", "value") if k in raw]
    if len(kinds) != 1:
        problems.append(f"{at}: give exactly one of 'run', 'model' or 'value', got {kinds or 'none'}")
        return None
    if "metric" in raw:
        problems.extend(f"{at}: {p}" for p in _metric_problems(raw["metric"], "metric"))
    scale = raw.get("scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        problems.append(f"{at}: key 'scale' must be a number > 0, got {scale!r}")
        scale = 1.0
    arm = Arm(raw["name"], metric=raw.get("metric"), scale=float(scale), source=str(raw.get("source", "")))
    if "run" in raw:
        runs = by_base.get(raw["run"]) if isinstance(raw["run"], str) else None
        if not runs:
            problems.append(f"{at}: key 'run' names {raw['run']!r}, which is not a run of this suite")
            return None
        arm.run, arm.run_ids, arm.seeds = raw["run"], [r.run_id for r in runs], [r.seed for r in runs]
        arm.budget = budget_text(runs[0].config)
    elif "model" in raw:
        from core.models.registry import UnknownModelError, get_spec

        try:
            get_spec(raw["model"])
        except (UnknownModelError, TypeError):
            problems.append(f"{at}: key 'model' names unknown model {raw['model']!r}")
            return None
        shape, classes = raw.get("input"), raw.get("classes")
        if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(s, int) and s > 0 for s in shape)):
            problems.append(f"{at}: key 'input' must be [C, H, W] positive integers, got {shape!r}")
            return None
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
            problems.append(f"{at}: key 'classes' must be a positive integer, got {classes!r}")
            return None
        arm.model, arm.options, arm.input, arm.classes = raw["model"], dict(raw.get("options") or {}), tuple(shape), classes
        # the suite's trained runs of this model (and options): choosing one on Compare shows this lesson
        arm.related_run_ids = [r.run_id for rs in by_base.values() for r in rs
                               if r.config.model == arm.model
                               and all((r.config.model_options or {}).get(k) == v for k, v in arm.options.items())]
    else:
        if isinstance(raw["value"], bool) or not isinstance(raw["value"], (int, float)):
            problems.append(f"{at}: key 'value' must be a number, got {raw['value']!r}")
            return None
        arm.value = float(raw["value"])
    return arm


def budget_text(config: Any) -> str:
    """``3,000 images x 10 epochs, cosine schedule`` of a TrainConfig: what a lesson's arms must share."""
    n = f"{config.max_train_samples:,}" if config.max_train_samples else "all"
    sched = {"none": "constant lr", "cosine": "cosine schedule to its end"}.get(config.scheduler,
                                                                               f"{config.scheduler} schedule")
    return f"{n} images x {config.epochs} epochs, {sched}"


def _comparable(run: Any) -> dict:
    """The config a lesson compares: every TrainConfig field but the neutral ones, plus where the
    weights started from (the suite run ``init_from`` names, or none)."""
    d = {k: v for k, v in run.config.to_dict().items() if k not in NEUTRAL_KEYS and k != "init_from"}
    dep = getattr(run, "depends_on", None)
    d["init_from"] = None if dep is None else dep.rsplit("-s", 1)[0] if run.seed is not None else dep
    return d


def confounding_problems(lesson: Lesson, by_base: dict[str, list[Any]]) -> list[str]:
    """One message per pair of run arms (against the first) that differ in a config key the lesson
    does not allow: a confounded comparison."""
    run_arms = [a for a in lesson.arms if a.kind == "run"]
    if len(run_arms) < 2:
        return []
    ref = run_arms[0]
    ref_cfg = _comparable(by_base[ref.run][0])
    out = []
    for arm in run_arms[1:]:
        cfg = _comparable(by_base[arm.run][0])
        diff = sorted(k for k in set(ref_cfg) | set(cfg) if ref_cfg.get(k) != cfg.get(k))
        bad = [k for k in diff if k not in lesson.allowed_differences]
        if bad:
            detail = ", ".join(f"{k}: {ref_cfg.get(k)!r} vs {cfg.get(k)!r}" for k in bad)
            out.append(f"lesson {lesson.id!r}: arms {ref.name!r} and {arm.name!r} differ in key(s) {bad} that "
                       f"'allowed_differences' {lesson.allowed_differences} does not allow ({detail}): confounded")
    return out


def lessons_for_runs(lessons: Sequence[Lesson], run_ids: Sequence[str]) -> list[Lesson]:
    """The lessons a selection of runs shows (the Compare page): those whose arm under study (the
    first compared arm made of runs, e.g. 'ce+triplet' in 'ce+triplet = ce', or of a model, whose
    suite runs of that model count) has a run in ``run_ids``. Sharing a baseline run is not
    enough: the RGB baseline is the second arm of the triplet lesson, and choosing the channel
    group must not bring that lesson in."""
    chosen = set(run_ids)
    shown = []
    for lesson in lessons:
        compared = [lesson.arm(name) for name in (lesson.relation[0], lesson.relation[2])]
        studied = [a.run_ids or a.related_run_ids for a in compared if a.kind in ("run", "model")]
        if studied and chosen & set(studied[0]):
            shown.append(lesson)
    return shown
