"""``python -m core.ship SRC_ROOT DEST_ROOT``: copy finished runs into a folder meant for git.

A shipped run is the run folder a teacher needs to see results at once, made small:
- config.json, status.json, metrics.jsonl, steps.jsonl copied as they are;
- model.safetensors (best weights) stored in fp16, which halves it; nothing else of the
  weights (last.safetensors, last_state.pt, epoch_*.safetensors are for resuming, not showing);
- eval.json recomputed by ``core.evaluate`` from the shipped fp16 weights, so it is exactly what
  ``python -m core.evaluate`` reproduces; the fp32 accuracy is kept beside it as
  ``fp32_test_acc`` and a run whose fp16 accuracy moves by more than ``--max-drift`` points keeps
  fp32 weights instead.
- ``--without-weights PATTERN``: runs whose weights would break the size budget ship their
  results only (config, curves, eval.json); status.json then says how to regenerate the weights.
"""

from __future__ import annotations

import fnmatch
import shutil
import sys
from pathlib import Path

import torch

from core import cli
from core.errors import EXIT_FAILED, EXIT_OK, InvalidInputError
from core.training.checkpoint import load_weights, read_weights_metadata, save_weights
from core.training.run_folder import RunFolder, list_runs

COPIED = ("config.json", "status.json", "metrics.jsonl", "steps.jsonl")


def _size_mb(path: Path) -> float:
    return path.stat().st_size / 2**20 if path.exists() else 0.0


def ship_run(src: str | Path, dest: str | Path, *, weights: bool = True, max_drift: float = 0.5,
             regenerate_hint: str = "") -> dict:
    """Copy one finished run from ``src`` to ``dest`` (replacing it). Returns a summary dict."""
    from core.training.evaluation import evaluate_run

    source, target = RunFolder(src), RunFolder(dest)
    status = source.read_status()
    original = source.read_eval()
    if status.get("state") != "done" or original is None:
        raise InvalidInputError(f"{source.path}: only finished, evaluated runs are shipped "
                         f"(state {status.get('state')!r}, eval.json {'present' if original else 'missing'})")
    if target.path.exists():
        shutil.rmtree(target.path)
    target.path.mkdir(parents=True)
    for name in COPIED:
        if (source.path / name).exists():
            shutil.copy2(source.path / name, target.path / name)

    summary = {"run_id": target.run_id, "test_acc_fp32": original.get("test_acc"), "weights": "none"}
    if not weights:
        shutil.copy2(source.eval_path, target.eval_path)
        target.write_status("done", message=(
            f"{status.get('message', '')} Results only: the weights are not shipped (size budget). "
            f"{regenerate_hint}").strip(), weights_shipped=False)
        summary["test_acc"] = original.get("test_acc")
        return summary

    state = load_weights(source.best_weights_path)
    meta = read_weights_metadata(source.best_weights_path)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    save_weights(target.best_weights_path, half, metadata={**meta, "shipped_dtype": "float16"})
    result = evaluate_run(target.path, device="cpu")
    drift = abs(result["test_acc"] - original["test_acc"]) * 100
    summary.update(weights="fp16", test_acc=result["test_acc"], drift_points=round(drift, 3))
    if drift > max_drift:  # fp16 changed the answers: ship the exact weights instead
        save_weights(target.best_weights_path, state, metadata={**meta, "shipped_dtype": "float32"})
        result = evaluate_run(target.path, device="cpu")
        summary.update(weights="fp32", test_acc=result["test_acc"])
    result["fp32_test_acc"] = original["test_acc"]
    target.write_eval(result)
    summary["mb"] = round(_size_mb(target.best_weights_path), 2)
    return summary


def _main(argv: list[str] | None) -> int:
    ap = cli.parser("python -m core.ship", __doc__)
    ap.add_argument("src_root", help="folder of finished runs (e.g. the suite's --runs-root)")
    ap.add_argument("dest_root", help="where to put the shipped copies (e.g. checkpoints)")
    ap.add_argument("--only", nargs="*", default=None, metavar="PATTERN", help="run ids to ship (glob; None: all)")
    ap.add_argument("--without-weights", nargs="*", default=[], metavar="PATTERN",
                    help="ship these runs' results only (glob)")
    ap.add_argument("--max-drift", type=float, default=0.5, help="accuracy points fp16 may move before fp32 weights are shipped instead")
    ap.add_argument("--suite", default="seeds", help="suite name, for the regenerate hint")
    args = ap.parse_args(argv)

    torch.set_num_threads(max(1, torch.get_num_threads()))
    runs = [r for r in list_runs(args.src_root)
            if args.only is None or any(fnmatch.fnmatch(r.run_id, p) for p in args.only)]
    if not runs:
        raise InvalidInputError(f"no runs found in {args.src_root}"
                                + (f" matching --only {' '.join(args.only)}" if args.only else ""))
    total = 0.0
    failed = 0
    for run in runs:
        no_weights = any(fnmatch.fnmatch(run.run_id, p) for p in args.without_weights)
        hint = f"Regenerate with: python -m core.suite {args.suite} --only {run.run_id}"
        try:
            s = ship_run(run.path, Path(args.dest_root) / run.run_id, weights=not no_weights, max_drift=args.max_drift,
                         regenerate_hint=hint)
        except Exception as exc:  # noqa: BLE001 - one bad run must not stop the others
            print(f"{run.run_id:34s} NOT shipped: {exc}", file=sys.stderr)
            failed += 1
            continue
        total += s.get("mb", 0.0)
        print(f"{s['run_id']:34s} weights {s['weights']:5s} {s.get('mb', 0):7.2f} MB  "
              f"test_acc {s['test_acc']:.4f} (fp32 {s['test_acc_fp32']:.4f})")
    print(f"total weights shipped: {total:.1f} MB")
    return EXIT_FAILED if failed else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 all shipped, 1 some run not shipped,
    2 no runs found)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
