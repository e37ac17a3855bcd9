"""Measure an SAE on held-out chat text: the four quality figures of its card.

- **FVU**: fraction of variance unexplained, squared reconstruction error over
  squared deviation from the training activation mean, summed over tokens
  (the same quantity the monitor exports per chunk).
- **L0**: mean number of active latents per token.
- **dead fraction**: latents that never fire on the held-out tokens.
- **CE increase ratio**: next-token cross-entropy with the SAE's
  reconstruction spliced into the residual stream, as a fraction of the gap
  between the clean model and zero-ablating that residual stream:
  ``(CE_sae - CE_clean) / (CE_zero - CE_clean)``.

Position 0 (the attention sink, never seen in training nor by the monitor)
is left untouched in every run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from latentwatch.detectors.saes import LoadedSAE
from latentwatch.models import LoadedModel

# Targets from the SAE quality requirements; the card reports each against them.
TARGETS = {"fvu": 0.15, "l0_min": 16.0, "l0_max": 64.0, "dead_fraction": 0.10, "ce_increase_ratio": 0.10}


@dataclass
class SAEQuality:
    tokens: int
    fvu: float
    l0: float
    dead_fraction: float
    ce_clean: float
    ce_sae: float
    ce_zero: float

    @property
    def ce_increase_ratio(self) -> float:
        return (self.ce_sae - self.ce_clean) / max(self.ce_zero - self.ce_clean, 1e-9)

    def meets_targets(self) -> dict[str, bool]:
        return {
            "fvu": self.fvu <= TARGETS["fvu"],
            "l0": TARGETS["l0_min"] <= self.l0 <= TARGETS["l0_max"],
            "dead_fraction": self.dead_fraction < TARGETS["dead_fraction"],
            "ce_increase_ratio": self.ce_increase_ratio <= TARGETS["ce_increase_ratio"],
        }

    def as_dict(self) -> dict:
        out = {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}
        out["ce_increase_ratio"] = round(self.ce_increase_ratio, 4)
        out["meets_targets"] = self.meets_targets()
        return out


@torch.no_grad()
def evaluate_sae(lm: LoadedModel, sae: LoadedSAE, sequences: list[list[int]]) -> SAEQuality:
    """Run every held-out token sequence clean, SAE-spliced and zero-ablated."""
    module = lm.model.get_submodule(sae.hook_name)
    mode = {"run": "clean"}
    stats = {"err": 0.0, "dev": 0.0, "active": 0, "tokens": 0}
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)

    def splice(_module, _args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if mode["run"] == "clean":
            return None
        x = hidden[0, 1:].float()
        if mode["run"] == "zero":
            new = torch.zeros_like(x)
        else:
            feats, err, dev = sae.encode(x)
            new = sae.reconstruct(feats)
            stats["err"] += err
            stats["dev"] += dev
            active = feats > 0
            stats["active"] += int(active.sum())
            stats["tokens"] += x.shape[0]
            fired.logical_or_(active.any(0))
        hidden = hidden.clone()
        hidden[0, 1:] = new.to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    ce = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    predicted = 0
    handle = module.register_forward_hook(splice)
    try:
        for ids in sequences:
            if len(ids) < 3:
                continue
            tokens = torch.tensor([ids])
            for run in ce:
                mode["run"] = run
                logits = lm.model(tokens).logits[0, :-1].float()
                ce[run] += float(torch.nn.functional.cross_entropy(logits, tokens[0, 1:], reduction="sum"))
            predicted += len(ids) - 1
    finally:
        handle.remove()
    if not stats["tokens"]:
        raise ValueError("no held-out sequence long enough to evaluate")
    return SAEQuality(
        tokens=stats["tokens"],
        fvu=stats["err"] / max(stats["dev"], 1e-12),
        l0=stats["active"] / stats["tokens"],
        dead_fraction=1.0 - float(fired.float().mean()),
        ce_clean=ce["clean"] / predicted,
        ce_sae=ce["sae"] / predicted,
        ce_zero=ce["zero"] / predicted,
    )
