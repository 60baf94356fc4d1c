"""``python -m core.training.ray_entry --run-dir RUN_DIR --submission-id ID --gpus N -- TRAINER ARGV...``

The entrypoint of an ArchScope Ray job (core/training/ray_jobs.py builds it). It records where Ray
placed the job (host, pid, the CUDA_VISIBLE_DEVICES Ray assigned) under ``worker`` in
RUN_DIR/launcher.json, then replaces itself with the trainer's command (os.execvp): Ray's SIGTERM
on cancel reaches the trainer itself, and the trainer's exit code is the job's.

It starts no trainer when the run folder is not visible on this worker (run folders must be on
storage shared by the dashboard and every worker: Ray copies nothing back), when launcher.json
names a newer submission of the run, or when the run was cancelled while the job waited for
resources (Ray cannot stop a pending job before it is placed: ray-project/ray#58353).

Imports neither torch nor ray: it runs in milliseconds before the trainer starts.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

from core.errors import EXIT_FAILED, EXIT_INVALID, InvalidInputError
from core.training.launcher_base import read_handle, read_status_file, write_handle
from core.training.run_folder import RunFolder, this_host


def cuda_visible_devices(environ: dict | os._Environ | None = None) -> list[str]:
    """The CUDA_VISIBLE_DEVICES entries of ``environ`` (default os.environ); [] when unset or empty."""
    value = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES") or ""
    return [g.strip() for g in value.split(",") if g.strip()]


def reason_not_to_start(run_dir: str, submission_id: str) -> tuple[int, str] | None:
    """(exit code, why) when this job must not start the trainer, else None."""
    host = socket.gethostname()
    if not (os.path.isfile(os.path.join(run_dir, "config.json")) or os.path.isfile(os.path.join(run_dir, "launcher.json"))):
        return EXIT_INVALID, (f"{run_dir} is not visible on {host}: run folders must be on storage that the "
                              f"dashboard and every Ray worker share, at the same path (Ray copies nothing back)")
    try:
        handle = read_handle(run_dir)
    except InvalidInputError as exc:
        return EXIT_INVALID, str(exc)
    if handle is None or handle.get("submission_id") != submission_id:
        newer = (handle or {}).get("submission_id")
        return 0, f"launcher.json of {run_dir} names job {newer!r}, not this one ({submission_id}): not starting"
    if read_status_file(run_dir).get("state") == "cancelled":
        return 0, f"{run_dir} was cancelled while this job waited for resources: not starting"
    return None


def record_worker(run_dir: str, submission_id: str, gpus: list[str]) -> None:
    """Add ``worker`` {host, pid, gpus, started} to the run's handle (this job's: checked before), and
    the pid with its host to a still-queued status.json: after exec this pid is the trainer's, and
    its host tells every reader that the pid belongs to this worker (the trainer's own status
    writes merge into status.json, so the host stays next to the pid it writes later)."""
    handle = read_handle(run_dir) or {}
    if handle.get("submission_id") == submission_id:
        handle["worker"] = {"host": socket.gethostname(), "pid": os.getpid(), "gpus": gpus, "started": time.time()}
        write_handle(run_dir, handle)
        if read_status_file(run_dir).get("state") == "queued":
            # pgid: torchrun's workers share this process's group; a worker that is signalled
            # before the trainer runs knows the run by it (core.train's record_early_cancel).
            RunFolder(run_dir).write_status("queued", pid=os.getpid(), host=this_host(), pgid=os.getpgrp(),
                                            message=f"starting on {socket.gethostname()}")


def main(argv: list[str] | None = None) -> int:
    """Record the placement, then exec the trainer; returns only on an error (exit code)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    own, command = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="python -m core.training.ray_entry", description=__doc__.split("\n")[2])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--submission-id", required=True)
    parser.add_argument("--gpus", type=int, required=True, help="GPUs the job asked Ray for")
    args = parser.parse_args(own)
    if not command:
        parser.error("give the trainer's command after --")

    refusal = reason_not_to_start(args.run_dir, args.submission_id)
    if refusal is not None:
        code, why = refusal
        print(f"{'error' if code else 'ray_entry'}: {why}", file=sys.stderr if code else sys.stdout, flush=True)
        return code

    if args.gpus == 0:
        # Ray sets CUDA_VISIBLE_DEVICES only for a job that asks for GPUs: a job that asks for none
        # would see every GPU of its node, and could train on a card another job holds.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    gpus = cuda_visible_devices()
    if len(gpus) != args.gpus:
        message = (f"the Ray job asked for {args.gpus} GPU(s) but runs with CUDA_VISIBLE_DEVICES="
                   f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r} (is RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES "
                   f"set on the cluster?); refusing to share GPUs with other jobs")
        print(f"error: {message}", file=sys.stderr)
        RunFolder(args.run_dir).write_status("failed", message=message, finished=time.time())
        return EXIT_FAILED
    try:
        record_worker(args.run_dir, args.submission_id, gpus)
    except (OSError, ValueError) as exc:
        # The placement is informative only: a run folder we cannot write will fail the trainer
        # with its own, clearer message.
        print(f"warning: could not record the job's placement in {args.run_dir}: {exc}", file=sys.stderr)
    print(f"ray_entry: host {socket.gethostname()}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}",
          flush=True)
    sys.stderr.flush()
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        message = f"cannot start the trainer {command[0]!r} on {socket.gethostname()}: {exc}"
        print(f"error: {message}", file=sys.stderr)
        RunFolder(args.run_dir).write_status("failed", message=message, finished=time.time())
        return EXIT_INVALID
    return EXIT_FAILED  # not reached: execvp replaced this process


if __name__ == "__main__":
    sys.exit(main())
