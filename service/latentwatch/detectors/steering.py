"""Steering as a detector's action: what to add to the residual stream, and where.

A spec with ``act: steer`` and ``steer: {toward: refusal, strength: 0.6}``
asks captures that can act (HF capture, the vLLM worker extension) to add a
direction at the ``toward`` detector's layer, to every later token of the
flagged request only, once it flags. The direction is a saved file when the
spec names one (``steer.direction``: a difference of means from the model's
own refusals and compliances, written by ``latentwatch steer-direction``;
measured best on Qwen), else the linear probe's own, in residual space: a
dense probe's weights over the standardised residual, or a sparse probe's
weights carried through its latents' decoder rows. ``strength`` is in units of
each row's own norm, so one setting means the same across models. The sidecar
decides (its verdict and alert say ``action: steered``) and hands the edit over
in the verdict; the capture applies it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from safetensors import SafetensorError, safe_open

from latentwatch.detectors.base import Detector

ACTS = ("observe", "steer")
STEER_KEYS = {"toward", "strength", "direction"}


@dataclass(frozen=True)
class SteerEdit:
    hook_name: str  # the module whose output is edited (the toward detector's SAE hook)
    direction: torch.Tensor  # [d_model], unit length
    strength: float  # added per row: strength * ||row|| * direction


def steer_edits(detectors: list[Detector]) -> dict[str, SteerEdit]:
    """The edit of every detector whose spec says ``act: steer``, refused with a sentence
    when the spec is incomplete or names a detector that is not a latent probe."""
    by_name = {d.name: d for d in detectors}
    edits = {}
    for d in detectors:
        spec = d.spec
        if spec.act not in ACTS:
            raise ValueError(f"{spec.path}: act must be one of {', '.join(ACTS)}, not {spec.act!r}")
        if spec.act != "steer":
            continue
        steer = spec.steer or {}
        toward, strength = steer.get("toward"), steer.get("strength")
        if not isinstance(toward, str) or not isinstance(strength, int | float) or set(steer) - STEER_KEYS:
            raise ValueError(
                f"{spec.path}: act: steer needs steer: {{toward: DETECTOR, strength: NUMBER[, direction: FILE]}}"
            )
        target = by_name.get(toward)
        if target is None or target.kind != "latent_probe":
            raise ValueError(f"{spec.path}: steer.toward must name a latent_probe detector of the pack, not {toward!r}")
        if "direction" in steer:
            direction = _direction_file(spec, steer["direction"], target.sae.hook_name)
        else:
            direction = target.residual_direction()
        edits[d.name] = SteerEdit(target.sae.hook_name, direction / direction.norm().clamp(min=1e-12), float(strength))
    return edits


def _direction_file(spec, name: object, hook_name: str) -> torch.Tensor:
    """A saved direction (``latentwatch steer-direction``), refused with a sentence when it
    is missing, malformed, or was read at another layer than the one it would be added to."""
    path = spec.artifact(str(name))
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            direction = f.get_tensor("direction").float()
    except (OSError, KeyError, SafetensorError) as exc:
        raise ValueError(f"{spec.path}: steer.direction {path} is not a readable direction file ({exc})") from exc
    if meta.get("hook_name") != hook_name:
        raise ValueError(
            f"{spec.path}: steer.direction {path} was read at {meta.get('hook_name')!r}, "
            f"but the edit goes in at {hook_name!r} (the toward detector's layer)"
        )
    return direction
