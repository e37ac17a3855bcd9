"""The registry of detector kinds, one module per kind.

Adding a kind: write one module here with a ``Detector`` subclass, its typed
``Params`` dataclass and ``@register``, and import it at the bottom of this file.
"""

from __future__ import annotations

from pathlib import Path

from latentwatch.detectors.base import Detector, DetectorSpec
from latentwatch.detectors.saes import LoadedSAE

_REGISTRY: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator adding a detector kind to the registry."""
    if cls.kind in _REGISTRY:
        raise ValueError(f"detector kind {cls.kind!r} registered twice")
    _REGISTRY[cls.kind] = cls
    return cls


def kinds() -> dict[str, type[Detector]]:
    return dict(_REGISTRY)


def kind_of(spec: DetectorSpec) -> type[Detector]:
    if spec.kind not in _REGISTRY:
        raise ValueError(
            f"{spec.path}: detector {spec.name!r} has unknown kind {spec.kind!r}; known: {sorted(_REGISTRY)}"
        )
    return _REGISTRY[spec.kind]


def load_spec(path: Path) -> DetectorSpec:
    """Read a spec and check its kind and parameters, so a typo fails on load, not on first use."""
    spec = DetectorSpec.from_yaml(path)
    kind_of(spec).parse_params(spec)
    return spec


def build(spec: DetectorSpec, sae: LoadedSAE | None) -> Detector:
    return kind_of(spec)(spec, sae)


from latentwatch.detectors.kinds import absence, latent_probe, lookback_probe  # noqa: E402, F401  (registers them)
