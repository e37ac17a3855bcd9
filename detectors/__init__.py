"""Detector definitions: the interface and registry (base), kinds, specs and artifacts."""

from pathlib import Path

SPECS_DIR = Path(__file__).resolve().parent / "specs"
SAES_DIR = Path(__file__).resolve().parent / "saes"


def bundled_spec_paths() -> list[Path]:
    """The YAML specs shipped with latentwatch, in name order."""
    return sorted(SPECS_DIR.glob("*.yaml"))
