"""Rules of the code base that a reader relies on, checked on the source (no imports, fast).

- A module's private names (`_x`) are its own: no `from m import _x`, no `m._x` across modules.
- One owner per mechanism: atomic renames only in `files.py`, media extension lists only in
  `media.py`, `git rev-parse` only in `files.py`.
- Paths come from the caller or the working directory, never from where the package lives.
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("l3_keras", "recipes", "benchmarks", "tests")
SOURCES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
OURS = ("l3_keras", "recipes", "benchmarks", "tests")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str) -> list:
    """(line, text) of every use of another module's private name in `source`."""
    tree = ast.parse(source)
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in OURS:
            for alias in node.names:
                if _private(alias.name):
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in OURS:
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in modules):
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return found


def test_the_private_name_check_finds_both_forms():
    source = ("from l3_keras.data.prepare import _jobs\nfrom l3_keras.data import pairs\n"
              "pairs._key(1)\nimport os\nos._exit(0)\nself._x = 1\n")
    assert [text for _, text in private_uses(source)] == [
        "from l3_keras.data.prepare import _jobs", "pairs._key"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_uses_another_modules_private_names(path):
    assert private_uses(path.read_text()) == [], (
        f"{path.relative_to(ROOT)} uses private names of other modules: move the thing to its "
        "real owner and make it public")


def _files_containing(text: str, under: str = "l3_keras") -> set:
    return {str(p.relative_to(ROOT)) for p in (ROOT / under).rglob("*.py") if text in p.read_text()}


def test_one_owner_for_atomic_writes_extensions_and_version_stamps():
    assert _files_containing("os.replace(") <= {"l3_keras/files.py", "l3_keras/export.py"}
    assert _files_containing('".mp4"') == {"l3_keras/media.py"}
    assert _files_containing('".wav"') == {"l3_keras/media.py"}
    assert _files_containing('".png"') <= {"l3_keras/media.py", "l3_keras/train/rundir.py"}
    assert _files_containing('"rev-parse"') == {"l3_keras/files.py"}
    assert _files_containing("__version__ =") == {"l3_keras/__init__.py"}


def test_no_paths_from_the_package_location():
    # Outputs go under the caller's paths or the working directory, also for a pip-installed
    # package; only files.git_commit looks at the package folder (to stamp the source commit).
    users = _files_containing("__file__") | _files_containing("__file__", "recipes")
    assert users <= {"l3_keras/files.py"}, users
    assert not _files_containing("sys.path", "recipes")
