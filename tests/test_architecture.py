"""The code keeps the shape docs/architecture.md draws: parts import only from the parts below
them and no module takes part in an import cycle (import-linter's contracts in .importlinter)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(config: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    return subprocess.run([exe, "--config", str(config), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_the_layers_hold_and_nothing_imports_in_a_cycle():
    proc = lint_imports(ROOT / ".importlinter")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout


def test_the_contract_catches_an_upward_import(tmp_path):
    """The contract can fail: the same contract, with the data layer put above the models layer,
    is broken by models' imports of data."""
    text = (ROOT / ".importlinter").read_text()
    swapped = text.replace("    diycnn.models\n    diycnn.data\n", "    diycnn.data\n    diycnn.models\n")
    assert swapped != text
    (tmp_path / "swapped.ini").write_text(swapped)
    proc = lint_imports(tmp_path / "swapped.ini")
    assert proc.returncode != 0 and "diycnn.models is not allowed to import diycnn.data" in proc.stdout


def private_imports(root: Path) -> list[str]:
    """`from x import _name` anywhere under `root`: a module reaching into another's private parts."""
    import ast

    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                found += [f"{path.relative_to(root)}:{node.lineno} {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_module_imports_another_modules_private_names(tmp_path):
    assert private_imports(ROOT / "src" / "diycnn") == []
    (tmp_path / "m.py").write_text("from .images import _open\n")  # and the check can fail
    assert private_imports(tmp_path) == ["m.py:1 _open"]
