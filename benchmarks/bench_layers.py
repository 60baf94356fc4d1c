"""Forward+backward cost of our custom layers relative to a plain convolution of the same shape.

    python3 benchmarks/bench_layers.py                 # full run (torchvision's CPU kernel is slow: ~1 min)
    python3 benchmarks/bench_layers.py --repeats 3 --skip-torchvision

All candidates of one shape are timed round-robin inside each repeat (so a burst of load from
other processes hits them alike); each figure is the median over repeats, with the spread
(max - min) / median of wall time printed as a noise indicator. Both wall time and process CPU
time are reported: on a shared machine wall time swings with other people's load, while CPU time
(what this process actually computed, all threads) is the steadier measure of the work.
Targets (issue 3): deformable conv <= 5x, dynamic conv (K=4) <= 1.5x a plain nn.Conv2d.
``--device cuda``: the same cases on the GPU (every timer reads after torch.cuda.synchronize(); the
DeformConv2d module calls torchvision's CUDA kernel there); without a GPU it stops at once with
one line (exit 2).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable, Sequence

import torch
from torch import nn


from core import cli
from core.errors import InvalidInputError
from core.models.layers.deform import DeformConv2d, deform_conv2d_grid_sample
from core.models.layers.dynamic_conv import DynamicConv2d


def _zero_grads(tensors: list[torch.Tensor]) -> None:
    for t in tensors:
        t.grad = None


Timings = dict[str, tuple[list[float], list[float]]]  # case -> (wall seconds, CPU seconds) per call


DEVICE = torch.device("cpu")


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def time_round_robin(cases: dict[str, Callable[[], None]], repeats: int) -> Timings:
    """Run every case once as warm-up, then ``repeats`` rounds of one call each."""
    for fn in cases.values():
        fn()
    _sync()
    times: Timings = {name: ([], []) for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            wall0, cpu0 = time.perf_counter(), time.process_time()
            fn()
            _sync()
            times[name][0].append(time.perf_counter() - wall0)
            times[name][1].append(time.process_time() - cpu0)
    return times


def report(title: str, times: Timings, baseline: str, target: float | None) -> None:
    base_wall = statistics.median(times[baseline][0])
    base_cpu = statistics.median(times[baseline][1])
    print(f"\n== {title}")
    base_min = min(times[baseline][0])
    print(f"{'case':<48}{'wall ms':>9}{'spread':>8}{'x plain':>9}{'min ms':>9}{'x plain':>9}"
          f"{'cpu ms':>9}{'x plain':>9}")
    for name, (wall, cpu) in times.items():
        med_wall, med_cpu = statistics.median(wall), statistics.median(cpu)
        spread = (max(wall) - min(wall)) / med_wall if med_wall > 0 else 0.0
        # The minimum is the run least disturbed by other processes (noise only adds time).
        print(f"{name:<48}{med_wall * 1e3:>9.1f}{spread:>7.0%} {med_wall / base_wall:>8.2f}"
              f"{min(wall) * 1e3:>9.1f}{min(wall) / base_min:>9.2f}"
              f"{med_cpu * 1e3:>9.1f}{med_cpu / base_cpu:>9.2f}")
    if target is not None:
        print(f"(target: <= {target}x plain; n={len(times[baseline][0])} rounds, medians)")


def bench_deform(batch: int, repeats: int, tv_repeats: int, skip_torchvision: bool) -> None:
    c_in, c_out, size = 64, 128, 32
    torch.manual_seed(0)
    x = torch.randn(batch, c_in, size, size, device=DEVICE, requires_grad=True)
    conv = nn.Conv2d(c_in, c_out, 3, padding=1).to(DEVICE)
    # Offsets of a few pixels (some samples land outside the image) and a random modulation.
    offset = (2.0 * torch.randn(batch, 18, size, size, device=DEVICE)).requires_grad_()
    mask = torch.rand(batch, 9, size, size, device=DEVICE).requires_grad_()
    module = DeformConv2d(c_in, c_out, 3, padding=1).to(DEVICE)
    leaves = [x, offset, mask, conv.weight, conv.bias] + list(module.parameters())

    def plain() -> None:
        _zero_grads(leaves)
        conv(x).sum().backward()

    def ours() -> None:
        _zero_grads(leaves)
        deform_conv2d_grid_sample(x, offset, conv.weight, conv.bias, padding=(1, 1), mask=mask).sum().backward()

    def ours_module() -> None:
        _zero_grads(leaves)
        module(x).sum().backward()

    def theirs() -> None:
        import torchvision.ops

        _zero_grads(leaves)
        torchvision.ops.deform_conv2d(
            x, offset, conv.weight, conv.bias, padding=(1, 1), mask=mask
        ).sum().backward()

    cases = {
        "plain nn.Conv2d": plain,
        "ours deform_conv2d_grid_sample (fn, mask)": ours,
        # On CUDA the module dispatches to torchvision's kernel, hence the label.
        "DeformConv2d module (+offset/mask convs)": ours_module,
    }
    title = f"deformable conv v2, fwd+bwd, batch {batch}, {c_in}->{c_out}, {size}x{size}, 3x3, {DEVICE}"
    report(title, time_round_robin(cases, repeats), "plain nn.Conv2d", 5.0)
    if not skip_torchvision:
        # Fewer rounds (one CPU call takes seconds), with plain conv re-timed in the same rounds
        # so the ratio compares like with like.
        tv = time_round_robin({"plain nn.Conv2d": plain, "torchvision deform_conv2d (fn, mask)": theirs}, tv_repeats)
        report(title + ", torchvision", tv, "plain nn.Conv2d", None)


def bench_dynamic(batch: int, repeats: int, c_in: int, c_out: int) -> None:
    size = 32
    torch.manual_seed(0)
    x = torch.randn(batch, c_in, size, size, device=DEVICE, requires_grad=True)
    conv = nn.Conv2d(c_in, c_out, 3, padding=1).to(DEVICE)
    dyn = DynamicConv2d(c_out, 3, padding=1, max_in_channels=c_in, num_kernels=4).to(DEVICE)
    leaves = [x] + list(conv.parameters()) + list(dyn.parameters())

    def plain() -> None:
        _zero_grads(leaves)
        conv(x).sum().backward()

    def dynamic() -> None:
        _zero_grads(leaves)
        dyn(x).sum().backward()

    times = time_round_robin({"plain nn.Conv2d": plain, "DynamicConv2d K=4 (module)": dynamic}, repeats)
    report(f"dynamic conv, fwd+bwd, batch {batch}, {c_in}->{c_out}, {size}x{size}, 3x3, {DEVICE}", times,
           "plain nn.Conv2d", 1.5)


def _main(argv: Sequence[str] | None) -> int:
    parser = cli.parser("python3 benchmarks/bench_layers.py", __doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7, help="rounds for our layers (median taken)")
    parser.add_argument("--tv-repeats", type=int, default=3, help="rounds for torchvision's slow CPU kernel")
    parser.add_argument("--skip-torchvision", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    cli.add_device(parser, default="cpu")
    args = parser.parse_args(argv)
    cli.check_device(args.device)             # --device cuda without a GPU: one line, exit 2
    if args.batch <= 0 or args.repeats <= 0 or args.tv_repeats <= 0 or args.threads < 0:
        raise InvalidInputError("--batch, --repeats, --tv-repeats must be positive, --threads >= 0")
    global DEVICE
    DEVICE = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average (1 min) at start: {load:.2f}")
    name = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else f"cpu count {os.cpu_count()}"
    print(f"torch {torch.__version__}, device {DEVICE} ({name}), threads {torch.get_num_threads()}")
    bench_deform(args.batch, args.repeats, args.tv_repeats, args.skip_torchvision)
    bench_dynamic(args.batch, args.repeats, 3, 64)
    bench_dynamic(args.batch, args.repeats, 64, 64)
    if hasattr(os, "getloadavg"):
        print(f"\nload average (1 min) at end: {os.getloadavg()[0]:.2f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit code (2 for bad flags)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
