"""Static rules the code keeps, checked on the source with ``ast`` (a grep would miss aliases and
match comments):

1. no ``torch.load`` without ``weights_only=True`` in core/ and dashboard/;
2. no pickle/marshal/shelve/dill/joblib loads, ``eval(``/``exec(``, or ``numpy.load(allow_pickle=True)``;
3. uploaded files are never written outside a temp folder: in dashboard/ the only code that writes a
   file is the zip import, and it writes into a ``tempfile.mkdtemp`` folder (checked statically and by
   recording every file it opens for writing);
4. the zip import resolves its paths and checks they stay inside their root;
5. every write in core/training goes through core.io's atomic helpers (safetensors and torch.save only
   inside ``atomic_write``'s callback); the few exceptions are named with their reason.
"""

from __future__ import annotations

import ast
import builtins
import io
import json
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCANNED = sorted([*REPO.glob("core/**/*.py"), *REPO.glob("dashboard/**/*.py")])
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "joblib", "cloudpickle"}


def _tree(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _dotted(node: ast.AST) -> str:
    """'torch.load' for Attribute(Name('torch'), 'load'); '' when not a plain dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _aliases(tree: ast.AST) -> dict[str, str]:
    """local name -> what it was imported as ('np' -> 'numpy', 'tload' -> 'torch.load')."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _calls(tree: ast.AST):
    aliases = _aliases(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            head, _, rest = name.partition(".")
            full = aliases.get(head, head) + (f".{rest}" if rest else "")
            yield node, full


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def test_sources_were_found():
    names = {p.relative_to(REPO).as_posix() for p in SCANNED}
    assert {"core/training/checkpoint.py", "dashboard/components/run_import.py", "core/images.py"} <= names


def unsafe_loading(path: Path, base: Path = REPO) -> list[str]:
    """Every forbidden load / eval / exec call in ``path``, as 'file:line: what'."""
    tree = _tree(path)
    rel = path.relative_to(base)
    bad = []
    for call, full in _calls(tree):
        where = f"{rel}:{call.lineno}"
        if full in ("torch.load", "torch.serialization.load"):
            wo = _kw(call, "weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                bad.append(f"{where}: {full} without weights_only=True")
        elif full.split(".")[0] in UNSAFE_MODULES and full.split(".")[-1] in ("load", "loads", "Unpickler", "open"):
            bad.append(f"{where}: {full} unpickles")
        elif full in ("eval", "exec", "builtins.eval", "builtins.exec", "compile"):
            bad.append(f"{where}: {full}(")
        elif full == "numpy.load":
            ap = _kw(call, "allow_pickle")
            if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                bad.append(f"{where}: numpy.load with allow_pickle")
        elif full in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            bad.append(f"{where}: {full} can build arbitrary objects; use yaml.safe_load")
    # `from torch import load` would hide a torch.load behind a bare name: refuse the import itself
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("torch", "pickle", "marshal"):
            for a in node.names:
                if a.name in ("load", "loads", "Unpickler"):
                    bad.append(f"{rel}:{node.lineno}: from {node.module} import {a.name}")
    return bad


# Calls the rule would refuse, allowed here with the reason. Model files are Python code by design:
# they are read only from paths the server's operator names (ARCHSCOPE_MODELS or the dashboard's
# server-side setting), never from an upload or a run zip (the zip importer refuses .py files).
UNSAFE_LOADING_EXCEPTIONS = {
    "core/models/user_models.py": {"compile(", "exec("},
}


@pytest.mark.parametrize("path", SCANNED, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_unsafe_loading(path):
    allowed = UNSAFE_LOADING_EXCEPTIONS.get(path.relative_to(REPO).as_posix(), set())
    assert not [b for b in unsafe_loading(path) if b.rsplit(": ", 1)[-1] not in allowed]


def test_rule_checker_catches_violations(tmp_path):
    """The checker itself can fail: a file with each forbidden call is caught, a safe one is not."""
    src = tmp_path / "evil.py"
    src.write_text("import torch, pickle as pk\nimport numpy as np\n"
                   "torch.load('x')\ntorch.load('x', weights_only=False)\npk.loads(b'')\neval('1')\n"
                   "np.load('a.npy', allow_pickle=True)\nfrom torch import load\n"
                   "torch.load('x', weights_only=True)\nnp.load('a.npy')\nmodel.eval()\n")
    found = unsafe_loading(src, tmp_path)
    assert found == ["evil.py:3: torch.load without weights_only=True",
                     "evil.py:4: torch.load without weights_only=True",
                     "evil.py:5: pickle.loads unpickles", "evil.py:6: eval(",
                     "evil.py:7: numpy.load with allow_pickle", "evil.py:8: from torch import load"], found


# ---- writes -------------------------------------------------------------------------------------------
WRITE_METHODS = {"write_text", "write_bytes", "mkdir", "touch", "rename", "replace", "unlink", "symlink_to",
                 "hardlink_to", "rmdir"}


def _writes(tree: ast.AST):
    """(line, description, enclosing function name) of every call that writes to the file system."""
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node

    def enclosing(node):
        while node in parents:
            node = parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return node.name
        return "<module>"

    for call, full in _calls(tree):
        desc = None
        if full in ("open", "builtins.open", "io.open", "os.fdopen"):
            mode = call.args[1] if len(call.args) > 1 else _kw(call, "mode")
            if isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax+"):
                desc = f"{full}(..., {mode.value!r})"
        elif full in ("os.open",):
            desc = "os.open"
        elif full.startswith("shutil.") and full.split(".")[1] in ("copy", "copy2", "copyfile", "copytree", "move"):
            desc = full
        elif full in ("json.dump", "torch.save", "safetensors.torch.save_file", "numpy.save", "pickle.dump"):
            desc = full
        elif isinstance(call.func, ast.Attribute) and call.func.attr in ("write_text", "write_bytes", "save",
                                                                         "save_file", "extract", "extractall"):
            desc = f".{call.func.attr}("
        if desc:
            yield call, desc, enclosing(call)


def test_dashboard_writes_only_in_the_zip_import():
    """Every file write in dashboard/ is inside import_run_zip (into its mkdtemp folder) or goes through
    RunFolder's atomic helpers. Streamlit keeps uploads in memory; nothing else touches the disk."""
    found = []
    for path in sorted(REPO.glob("dashboard/**/*.py")):
        for call, desc, func in _writes(_tree(path)):
            found.append((path.relative_to(REPO).as_posix(), func, desc))
    allowed = {("dashboard/components/run_import.py", "import_run_zip", 'open(..., \'wb\')')}
    # PIL/plotly .save( on in-memory buffers would be listed here too: there are none today.
    assert set(found) <= allowed, sorted(set(found) - allowed)
    tree = _tree(REPO / "dashboard/components/run_import.py")
    func = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "import_run_zip")
    mkdtemp_vars = {t.id for n in ast.walk(func) if isinstance(n, ast.Assign)
                    for t in n.targets if isinstance(t, ast.Name) and "tempfile.mkdtemp" in ast.unparse(n.value)}
    assert mkdtemp_vars, "import_run_zip extracts into a tempfile.mkdtemp folder"
    for call, full in _calls(func):
        if full == "open":
            target = ast.unparse(call.args[0])
            # the target is built from the temp folder (directly or through a variable assigned from it)
            assigned = {ast.unparse(n.value) for n in ast.walk(func) if isinstance(n, ast.Assign)
                        and any(isinstance(t, ast.Name) and t.id == target for t in n.targets)}
            assert any(v in target for v in mkdtemp_vars) or any(v in a for a in assigned for v in mkdtemp_vars), target


def test_zip_import_opens_files_for_writing_only_in_its_temp_folder(tmp_path, monkeypatch):
    """The same rule, observed: every open() for writing during an import is under a '.import-' temp
    folder (later renamed into place), for a good zip and for a refused one."""
    from safetensors.torch import save
    import torch

    from dashboard.components.run_import import RunImportError, import_run_zip

    opened = []
    real_open = builtins.open

    def spy(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+"):
            opened.append(Path(file))
        return real_open(file, mode, *a, **k)

    def zipped(extra=()):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("run/config.json", json.dumps({"model": "cnn2"}))
            zf.writestr("run/model.safetensors", save({"w": torch.zeros(2)}))
            for name in extra:
                zf.writestr(name, b"{}")
        buf.seek(0)
        return buf

    monkeypatch.setattr(builtins, "open", spy)
    import_run_zip(zipped(), tmp_path / "runs")
    with pytest.raises(RunImportError):
        import_run_zip(zipped(["run/../../x.json"]), tmp_path / "runs2")
    monkeypatch.undo()
    data_files = [p for p in opened if not p.name.startswith(".status.json.")]   # RunFolder's atomic temp
    assert data_files, "the spy saw the extraction"
    for p in opened:
        assert p.parent.name.startswith(".import-run-") and p.parent.parent == tmp_path / "runs", p


def test_zip_import_resolves_paths_inside_its_root():
    tree = _tree(REPO / "dashboard/components/run_import.py")
    func = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "import_run_zip")
    compares = [ast.unparse(n) for n in ast.walk(func) if isinstance(n, ast.Compare)]
    assert any(".resolve().parent" in c and "root.resolve()" in c for c in compares), compares
    assert any(".resolve().parent" in c and "tmp.resolve()" in c for c in compares), compares
    src = ast.unparse(func)
    for refusal in ("absolute path", "'..'", "symbolic link"):
        assert refusal in src


# writes in core/training that do not go through core.io, each with its reason
TRAINING_WRITE_EXCEPTIONS = {
    ("core/training/run_folder.py", "acquire_lock", "os.open"): "train.lock is created with O_CREAT|O_EXCL: atomic by itself",
    ("core/training/run_folder.py", "acquire_lock", "os.fdopen(..., 'w')"): "the pid into the lock it just created exclusively",
    ("core/training/launch.py", "_start", "open(..., 'ab')"): "train.log: the child's stdout, append-only text",
    ("core/training/run_folder.py", "acquire_lock", ".mkdir("): "the run folder itself",
}


def test_training_writes_go_through_atomic_helpers():
    found = {}
    for path in sorted(REPO.glob("core/training/*.py")):
        tree = _tree(path)
        rel = path.relative_to(REPO).as_posix()
        for call, desc, func in _writes(tree):
            key = (rel, func, desc)
            if desc in ("torch.save", "safetensors.torch.save_file", ".save_file("):
                # allowed only as the callback of atomic_write (temp file in the same folder + os.replace)
                parent_call = next((c for c, f in _calls(tree) if f.endswith("atomic_write")
                                    and any(n is call for n in ast.walk(c))), None)
                assert parent_call is not None, f"{rel}:{call.lineno}: {desc} outside atomic_write"
                continue
            found[key] = call.lineno
    unexpected = {k: v for k, v in found.items() if k not in TRAINING_WRITE_EXCEPTIONS}
    assert not unexpected, unexpected
    # and the helpers really are atomic: temp file in the same folder, fsync, os.replace
    src = (REPO / "core/io.py").read_text()
    assert "tempfile.mkstemp" in src and "os.fsync" in src and "os.replace(tmp, path)" in src
