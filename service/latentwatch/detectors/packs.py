"""Detector packs: everything that ties detectors to one model, in one folder per model.

A pack holds the model's detector specs (``specs/``, with ``specs/experimental/``
for detectors not good enough to enable by default), their probe artifacts
(``probes/``), its SAEs in sae-lens format with their cards (``saes/``) and a
pack card (``README.md``). The repository keeps the packs in the top-level
``detectors/`` folder; ``service/latentwatch/packs`` links to it, so the same
path works from a checkout, an editable install and a wheel in site-packages
(which holds a copy as package data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PACKS_DIR = Path(__file__).resolve().parent.parent / "packs"
DEFAULT_PACK = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Pack:
    """One model's detectors on disk."""

    model: str
    root: Path

    @property
    def specs_dir(self) -> Path:
        return self.root / "specs"

    @property
    def experimental_dir(self) -> Path:
        return self.specs_dir / "experimental"

    @property
    def saes_dir(self) -> Path:
        return self.root / "saes"

    def spec_paths(self, experimental: bool = False) -> list[Path]:
        """The pack's default specs in name order (or its experimental ones)."""
        return sorted((self.experimental_dir if experimental else self.specs_dir).glob("*.yaml"))

    def spec_path(self, name: str) -> Path:
        """A detector's spec, default or experimental, by name."""
        for d in (self.specs_dir, self.experimental_dir):
            if (p := d / f"{name}.yaml").exists():
                return p
        known = [p.stem for p in self.spec_paths() + self.spec_paths(experimental=True)]
        raise ValueError(f"pack {self.model!r} has no detector {name!r}; it has {', '.join(known)}")


def packs() -> list[Pack]:
    """Every bundled pack, in name order."""
    return [Pack(d.name, d) for d in sorted(PACKS_DIR.iterdir()) if (d / "specs").is_dir()]


def pack(model: str = DEFAULT_PACK) -> Pack:
    """The bundled pack of ``model``; a sentence naming the bundled packs if there is none."""
    root = PACKS_DIR / model
    if not (root / "specs").is_dir():
        raise ValueError(f"no detector pack for {model!r}; bundled packs: {', '.join(p.model for p in packs())}")
    return Pack(model, root)


def pack_name(model_id: str) -> str | None:
    """The bundled pack that serves ``model_id``, or None. A model id matches a pack
    by name, or by its last path component, case-insensitively: a hub id
    (``Qwen/Qwen2.5-Coder-0.5B-Instruct``) or a checkpoint folder named after the
    model (what vLLM reports as the served model) finds its pack."""
    names = {p.model.lower(): p.model for p in packs()}
    key = model_id.rstrip("/").rsplit("/", 1)[-1].lower()
    return names.get(model_id.lower()) or names.get(key)


def pack_for_model(model_id: str) -> Pack:
    """``pack(pack_name(model_id))``, or a sentence saying which packs exist and how to make one."""
    name = pack_name(model_id)
    if name is None:
        raise ValueError(
            f"no detector pack for model {model_id!r}; bundled packs: {', '.join(p.model for p in packs())} "
            "(fit one with `latentwatch fit --model MODEL`, or name spec files with detector_specs)"
        )
    return pack(name)


def sae_dirs() -> list[Path]:
    """Where SAE references in specs are looked up, after the spec's own folder."""
    return [p.saes_dir for p in packs()]
