"""The probe artifact: one standardised logistic probe, one reader and one writer.

Every probe-based kind reads this file beside its spec and every training
recipe writes it. Fields (safetensors): ``indices`` of the features it reads
(SAE latents; for ``lookback_probe`` the heads' columns come first and only
the latents are indexed), ``weights``, ``bias``, and the features'
standardisation ``mean`` and ``scale``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class LinearProbe:
    indices: torch.Tensor  # the latents it reads
    weights: torch.Tensor
    bias: float
    mean: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def load(cls, path: Path) -> LinearProbe:
        from safetensors.torch import load_file

        raw = load_file(str(path))
        return cls(raw["indices"].long(), raw["weights"].float(), float(raw["bias"]), raw["mean"].float(),
                   raw["scale"].float())  # fmt: skip

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        save_file(
            {"indices": self.indices.int().contiguous(), "weights": self.weights.float().contiguous(),
             "bias": torch.tensor(float(self.bias)), "mean": self.mean.float().contiguous(),
             "scale": self.scale.float().contiguous()},
            str(path),
        )  # fmt: skip

    def contributions(self, x: torch.Tensor) -> torch.Tensor:
        """Each feature's share of the logit (the bias aside), for already-selected features."""
        return self.weights * (x - self.mean) / self.scale

    def logits(self, X: torch.Tensor) -> torch.Tensor:
        """Logits of rows of the full feature matrix (columns indexed by ``indices``)."""
        return ((X[:, self.indices] - self.mean) / self.scale) @ self.weights + self.bias

    def scores(self, X: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(X))
