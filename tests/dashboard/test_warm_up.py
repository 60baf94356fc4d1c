"""dashboard/components/warm_up.py: the model code is imported in the background, and a page that
needs it waits for that import instead of importing beside it."""

import sys
import threading

from dashboard.components import warm_up


def test_wait_starts_the_delayed_import_at_once_and_returns_when_it_is_done(monkeypatch):
    # a process of its own, as far as the warm-up knows (the app's tests have run it already)
    for name in ("_started", "_start_now", "_done"):
        monkeypatch.setattr(warm_up, name, threading.Event())
    monkeypatch.setattr(warm_up, "DELAY_S", 60.0)        # a page comes before the delay is over
    warm_up.wait()                                       # nothing started: returns at once
    assert not warm_up._start_now.is_set() and not warm_up._done.is_set()
    warm_up._start_thread()
    warm_up.wait()
    assert warm_up._start_now.is_set() and warm_up._done.is_set()   # the delay was cut, the import is done
    assert "core.models.registry" in sys.modules and "torch" in sys.modules
