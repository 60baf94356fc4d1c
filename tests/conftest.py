"""Repository-wide pytest settings.

The dashboard's tests need Streamlit; a GPU server often has torch but not the dashboard's extras.
Without Streamlit those modules are left out of collection (named in the summary), so that e.g.
``pytest -k cuda`` still runs there instead of stopping with collection errors.
"""

from __future__ import annotations

import os
import tempfile

# The dashboard keeps params/MACs counts on disk (core.analysis.cost_cache): tests (and the
# Streamlit servers they start, which inherit the environment) count into a folder of their own,
# never reading or filling a developer's ~/.cache.
os.environ["ARCHSCOPE_CACHE"] = tempfile.mkdtemp(prefix="archscope-test-cache-")

try:
    import streamlit  # noqa: F401
except ImportError:
    HAVE_STREAMLIT = False
else:
    HAVE_STREAMLIT = True

# Modules that import Streamlit at module level (directly or through dashboard/).
STREAMLIT_TEST_MODULES = ["dashboard/*", "security/test_dashboard_hostile.py"]
collect_ignore_glob = [] if HAVE_STREAMLIT else list(STREAMLIT_TEST_MODULES)


def pytest_report_header(config):  # noqa: ARG001 - pytest hook signature
    if not HAVE_STREAMLIT:
        return f"streamlit not installed: not collected: {', '.join(STREAMLIT_TEST_MODULES)}"
    return None
