"""The trainer's default CPU thread count (core/training/device.py) follows the cores idle *now*, not the lagging load average."""

from __future__ import annotations

import os

import pytest

from core.training import device


def test_busy_cores_reads_proc_stat():
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat (not Linux)")
    busy = device.busy_cores(0.1)
    assert busy is not None and 0.0 <= busy <= (os.cpu_count() or 1) + 1e-9


@pytest.mark.parametrize("cores,busy,world,expected", [
    (2, 0.0, 1, 2),     # idle machine: every core
    (2, 1.0, 1, 1),     # one core taken by another process
    (2, 3.5, 1, 1),     # overloaded: never fewer than one
    (16, 0.2, 4, 4),    # torchrun: cores split between the processes
    (16, 13.0, 4, 3),   # ... and still capped by what is idle
])
def test_default_threads_from_idle_cores(monkeypatch, cores, busy, world, expected):
    monkeypatch.setattr(device.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(device, "busy_cores", lambda interval=0.25: busy)
    assert device.default_cpu_threads(world) == expected


def test_load_average_is_the_fallback(monkeypatch):
    monkeypatch.setattr(device.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(device, "busy_cores", lambda interval=0.25: None)
    monkeypatch.setattr(device.os, "getloadavg", lambda: (1.2, 0.0, 0.0))
    assert device.default_cpu_threads() == 1
