"""The import layers of pyproject.toml's import-linter contracts: they hold on the tree,
and an import that points up the layers breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path, source_root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    return subprocess.run(
        [str(LINT_IMPORTS), str(cwd / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_tree_keeps_its_layers():
    out = _lint(ROOT, ROOT / "service")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_an_import_up_the_layers_breaks_the_contracts(tmp_path):
    shutil.copytree(
        ROOT / "service" / "latentwatch",
        tmp_path / "service" / "latentwatch",
        ignore=shutil.ignore_patterns("packs", "__pycache__"),
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    engine = tmp_path / "service" / "latentwatch" / "sidecar" / "engine.py"
    engine.write_text(engine.read_text() + "\nimport latentwatch.training.corpus  # noqa: E402  (the broken fixture)\n")
    out = _lint(tmp_path, tmp_path / "service")
    assert out.returncode != 0
    assert "latentwatch.sidecar.engine -> latentwatch.training.corpus" in out.stdout
    assert "BROKEN" in out.stdout
