"""One run = one folder: the only contract between the trainer and everything that reads runs.

    checkpoints/<run_id>/
      config.json         everything needed to rebuild model + data pipeline (TrainConfig.to_dict())
      status.json         {"state": queued|running|done|failed|cancelled, "pid", "host", "message",
                           "started", "finished", "epoch", "epochs", "updated",
                           "waiting_for_slot": true while the job queue holds it back}  (atomic writes)
      metrics.jsonl       one object per epoch: epoch, train_loss, train_acc, val_loss, val_acc,
                          lr, seconds, images_per_s                            (append-only)
      steps.jsonl         train loss every few batches: epoch, step, global_step, loss, images_per_s
      model.safetensors   best weights;  last.safetensors: last completed epoch
      last_state.pt       optimizer/scheduler/epoch/rng for resume (torch.load(weights_only=True))
      epoch_NNNN.safetensors  kept every N-th epoch when asked
      eval.json           test metrics, confusion matrix, channel-robustness row
      train.lock          present while a trainer owns the folder: "PID HOST" (older runs: "PID")

Any tool can read a run without ArchScope; this module only adds tolerance for runs that
are being written, half-written or broken, and never unpickles anything.

Runs on other hosts. A pid means something only on the machine that wrote it: a trainer placed on a
Ray worker has a pid of that worker. So a pid is always recorded with its ``host``
(socket.gethostname()), and a pid is tested (``owner_alive``) only when its host is this machine; a
run owned by another host is taken as alive while its status says queued/running (its launcher,
e.g. Ray, reconciles it when it ends without saying so). A missing host means this machine: runs
written before hosts were recorded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import EXIT_LOCKED, ArchScopeError, InvalidInputError
from core.io import atomic_write_json, atomic_write_text, read_jsonl

STATES = ("queued", "running", "done", "failed", "cancelled")
# status.json field set by the job queue (core/training/queue.py) on a run that waits for a free
# slot: such a run is 'queued' with no trainer process yet. A run the launcher has just started is
# also 'queued' (until the trainer writes 'running'), so the state alone cannot tell them apart.
WAITING_FOR_SLOT = "waiting_for_slot"


# The one rule for a run id (= its folder name), used by the suite, the zip importer and the Train
# page: portable on every file system, no path separators, no leading dot, at most 100 characters.
RUN_ID_RULE = "letters, digits, '.', '_' and '-', starting with a letter, digit or '_', at most 100 characters"
_RUN_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")


class InvalidRunIdError(InvalidInputError):
    """A run name that cannot be a run folder's name."""


def validate_run_id(run_id: object) -> str:
    """Return ``run_id`` unchanged if it is a valid run folder name, else raise InvalidRunIdError."""
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        shown = run_id if not isinstance(run_id, str) or len(run_id) <= 40 else run_id[:37] + "..."
        length = f" ({len(run_id)} characters)" if isinstance(run_id, str) and len(run_id) > 100 else ""
        raise InvalidRunIdError(f"run name {shown!r}{length} is not allowed: use {RUN_ID_RULE}")
    return run_id


def waiting_for_slot(status: dict) -> bool:
    """True when ``status`` (a status.json object) is a run the job queue holds back for a free slot."""
    return status.get("state") == "queued" and status.get(WAITING_FOR_SLOT) is True and not status.get("pid")


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` exists and is not a zombie (False for None, 0 or a negative pid)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (exited, not yet reaped) still answers kill(0): check /proc.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def this_host() -> str:
    """This machine's name as recorded next to a pid (socket.gethostname())."""
    return socket.gethostname()


def is_this_host(host: str | None) -> bool:
    """Whether ``host`` (as recorded next to a pid) is this machine; None/"" (older runs) counts as this one."""
    return not host or host == this_host()


def owner_alive(pid: int | None, host: str | None = None) -> bool:
    """Whether the process ``pid`` recorded on ``host`` may still be alive: tested with pid_alive on
    this machine; a pid of another host cannot be tested from here and counts as alive."""
    if not pid:
        return False
    return pid_alive(int(pid)) if is_this_host(host) else True


def _read_json(path: Path) -> tuple[dict | None, str | None]:
    """(object, None) or (None, problem) — never raises for a missing or broken file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, f"{path.name} is missing"
    except OSError as exc:
        return None, f"{path.name} cannot be read: {exc}"
    except UnicodeDecodeError as exc:
        return None, f"{path.name} is not UTF-8 text (byte {exc.start} is {exc.object[exc.start:exc.start + 1]!r})"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"{path.name} is not valid JSON ({exc.msg} at line {exc.lineno})"
    if not isinstance(obj, dict):
        return None, f"{path.name} does not hold a JSON object"
    return obj, None


def _read_rows(path: Path) -> list[dict]:
    """read_jsonl, but a file that cannot be opened at all (permissions, a folder under that name)
    reads as no rows instead of raising into the dashboard.

    Bad bytes need no handling here: read_jsonl decodes with ``errors="replace"``, so a
    UnicodeDecodeError cannot reach this function (a garbled line is skipped like a torn one)."""
    try:
        return read_jsonl(path)
    except OSError:
        return []


@dataclass
class RunFolder:
    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    # ---- names -------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self.path.name

    config_path = property(lambda self: self.path / "config.json")
    status_path = property(lambda self: self.path / "status.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    steps_path = property(lambda self: self.path / "steps.jsonl")
    best_weights_path = property(lambda self: self.path / "model.safetensors")
    last_weights_path = property(lambda self: self.path / "last.safetensors")
    resume_state_path = property(lambda self: self.path / "last_state.pt")
    eval_path = property(lambda self: self.path / "eval.json")
    lock_path = property(lambda self: self.path / "train.lock")

    def epoch_weights_path(self, epoch: int) -> Path:
        return self.path / f"epoch_{epoch:04d}.safetensors"

    # ---- reading (tolerant) ------------------------------------------------------------
    def read_config(self) -> dict | None:
        return _read_json(self.config_path)[0]

    def read_status(self) -> dict:
        """Status with a dead trainer reported as failed, never 'running' forever.

        The pid is tested only when its ``host`` is this machine (or is not recorded: older runs).
        A queued/running run whose trainer is on another host (a Ray worker) is reported as its
        status says: this machine cannot see that process; its launcher reconciles it."""
        status, problem = _read_json(self.status_path)
        if status is None:
            return {"state": "unknown", "message": problem}
        if status.get("state") in ("running", "queued") and status.get("pid"):
            if not owner_alive(int(status["pid"]), status.get("host")):
                was = status["state"]
                status = dict(status)
                status["state"] = "failed"
                status["message"] = (
                    f"trainer process {status['pid']} is gone (killed?) while {was}; "
                    f"resume with --resume {self.path}"
                )
        return status

    def read_raw_status(self) -> dict:
        """status.json exactly as written ({} when missing or unreadable): no pid check, for the code
        that must see the state a writer left (a 'running' whose pid is gone is still 'running' here)."""
        return _read_json(self.status_path)[0] or {}

    def read_metrics(self) -> list[dict]:
        return _read_rows(self.metrics_path)

    def read_steps(self) -> list[dict]:
        return _read_rows(self.steps_path)

    def read_eval(self) -> dict | None:
        return _read_json(self.eval_path)[0]

    def problems(self) -> list[str]:
        """What is wrong with this folder as a run (empty list: a readable run)."""
        out = []
        cfg, p = _read_json(self.config_path)
        if cfg is None:
            out.append(p)
        st, p = _read_json(self.status_path)
        if st is None:
            out.append(p)
        elif st.get("state") not in STATES:
            out.append(f"status.json has unknown state {st.get('state')!r}")
        if self.eval_path.exists() and self.read_eval() is None:
            out.append(_read_json(self.eval_path)[1])
        return out

    # ---- writing (trainer side) ----------------------------------------------------------
    def write_config(self, config: dict) -> None:
        atomic_write_json(self.config_path, config)

    def write_status(self, state: str, **fields: Any) -> None:
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        current, _ = _read_json(self.status_path)
        status = dict(current or {})
        status.update(fields)
        status["state"] = state
        status["updated"] = time.time()
        atomic_write_json(self.status_path, status)

    def write_eval(self, result: dict) -> None:
        atomic_write_json(self.eval_path, result)

    def truncate_rows_after(self, epoch: int) -> None:
        """Drop metrics.jsonl / steps.jsonl rows of epochs > ``epoch`` (and a half-written last line).

        Used on resume: rows written for an epoch that did not complete (or completed after the
        resume state was saved) are removed, so that re-running it neither loses nor duplicates it.
        """
        for path in (self.metrics_path, self.steps_path):
            if not path.exists():
                continue
            rows = [r for r in read_jsonl(path) if int(r.get("epoch", 0)) <= epoch]
            atomic_write_text(path, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))

    # ---- ownership (train.lock) -----------------------------------------------------------
    def lock_holder(self) -> tuple[int | None, str | None]:
        """(pid, host) written in train.lock; (None, None) when there is no lock or it holds no pid
        yet. A lock of an older ArchScope holds the pid alone: host None (this machine)."""
        try:
            words = self.lock_path.read_text(encoding="ascii").split()
        except (FileNotFoundError, UnicodeDecodeError):
            return None, None
        if not words or not words[0].isdigit():
            return None, None
        return int(words[0]), (words[1] if len(words) > 1 else None)

    def lock_owner(self) -> int | None:
        """pid written in train.lock, or None when there is no lock (or it holds no pid yet)."""
        return self.lock_holder()[0]

    def lock_alive(self) -> bool:
        """Whether train.lock names an owner that may be alive (owner_alive: another host's counts as alive)."""
        return owner_alive(*self.lock_holder())

    def acquire_lock(self, pid: int | None = None) -> None:
        """Create train.lock exclusively (O_CREAT|O_EXCL) holding ``pid`` and this host; raise
        RunLockedError if a live process owns the folder. A lock left by a dead process of this
        machine (kill -9) is taken over; one of another host is never (its pid cannot be tested
        here): the error says to delete train.lock if that trainer is gone."""
        pid = pid or os.getpid()
        self.path.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner, host = self.lock_holder()
                if owner is None:
                    # Another trainer may be between creating the file and writing its pid.
                    try:
                        fresh = time.time() - self.lock_path.stat().st_mtime < 10
                    except FileNotFoundError:
                        continue
                    if fresh:
                        raise RunLockedError(self.path, None) from None
                elif (owner == pid and is_this_host(host)) or owner_alive(owner, host):
                    raise RunLockedError(self.path, owner, host) from None
                try:  # stale: its owner (a process of this machine) is dead
                    os.unlink(self.lock_path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(f"{pid} {this_host()}\n")
            return
        raise RunLockedError(self.path, *self.lock_holder())

    def release_lock(self, pid: int | None = None) -> None:
        """Remove train.lock if ``pid`` (default: this process) of this machine owns it."""
        owner, host = self.lock_holder()
        if owner == (pid or os.getpid()) and is_this_host(host):
            try:
                os.unlink(self.lock_path)
            except FileNotFoundError:
                pass


class RunLockedError(ArchScopeError, RuntimeError):
    """Another live process is training into this run folder (exit code 3)."""

    exit_code = EXIT_LOCKED

    def __init__(self, path: Path, pid: int | None, host: str | None = None) -> None:
        self.path, self.pid, self.host = Path(path), pid, host
        who = f"process {pid}" if pid else "another process"
        if is_this_host(host):
            super().__init__(
                f"{path} is in use: {who} is training into it (train.lock). Wait for it, cancel it, "
                f"or choose another --out folder"
            )
        else:
            # Its pid cannot be tested from here: only a person (or that host) can tell it is gone.
            super().__init__(
                f"{path} is in use: {who} on host {host} is training into it (train.lock). Wait for it, "
                f"cancel it, or choose another --out folder; if that trainer is gone, delete {path}/train.lock"
            )


def list_runs(root: str | os.PathLike) -> list[RunFolder]:
    """Every sub-folder of ``root`` that looks like a run (has config.json or status.json), sorted by
    name; hidden folders (``.name``: e.g. a results-only run kept aside while it retrains) are not runs."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir() and ((p / "config.json").exists() or (p / "status.json").exists()):
            runs.append(RunFolder(p))
    return runs


def set_aside(run_dir: str | os.PathLike) -> Path | None:
    """Move a finished folder that is about to be trained again from scratch (results only, or done
    without weights) to the hidden sibling ``.<id>.previous`` (``list_runs`` skips it), so nothing is
    lost if the new training fails; returns that path, or None when the folder holds no run."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists() and not (run_dir / "eval.json").exists():
        return None
    aside = run_dir.parent / f".{run_dir.name}.previous"
    shutil.rmtree(aside, ignore_errors=True)
    run_dir.rename(aside)
    return aside
