"""Train the sparse latent probe of the harmful_request detector.

Features are what the monitor sees at run time: the SAE latents of the user
turn's tokens, mean-pooled. The probe is an L1-penalised logistic regression
(so few latents carry it and each verdict can name them), refit without the
penalty on the latents it kept. The threshold is set on benign prompts the
probe never saw, at the spec's target false-positive rate. A raw-residual
difference-of-means direction is evaluated beside it as a baseline.

Data: the project's authored prompts plus the dev sets' ``train`` split;
every figure printed comes from the dev ``test`` split.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from latentwatch.chat import tokenize_chat
from latentwatch.corpus import authored_prompts
from latentwatch.detectors.base import DetectorSpec
from latentwatch.devdata import refusal_instructions, split_of
from latentwatch.features import residual_rows
from latentwatch.models import LoadedModel
from latentwatch.saes import LoadedSAE
from latentwatch.v1 import monitor_pb2 as pb
from safetensors.torch import save_file
from tqdm import tqdm

HARD_NEGATIVE_WEIGHT = 5.0


@torch.no_grad()
def user_features(lm: LoadedModel, sae: LoadedSAE, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pooled (SAE latents, raw residual) of each prompt's user tokens."""
    lat, raw = [], []
    for p in tqdm(prompts, desc="features", unit="prompt", leave=False):
        ct = tokenize_chat(lm.tokenizer, [{"role": "user", "content": p}])
        rows = residual_rows(lm, ct.input_ids, [sae.hook_name])[sae.hook_name]
        pos = [i for s in ct.spans if s.role == pb.SPAN_ROLE_USER for i in range(max(s.start, 1), s.end)]
        x = rows[pos]
        lat.append(sae.encode(x)[0].mean(0))
        raw.append(x.mean(0))
    return torch.stack(lat), torch.stack(raw)


@dataclass
class SparseProbe:
    indices: torch.Tensor
    weights: torch.Tensor
    bias: float
    mean: torch.Tensor
    scale: torch.Tensor

    def logits(self, X: torch.Tensor) -> torch.Tensor:
        return ((X[:, self.indices] - self.mean) / self.scale) @ self.weights + self.bias

    def scores(self, X: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(X))

    def save(self, path: Path) -> None:
        save_file(
            {
                "indices": self.indices.int(),
                "weights": self.weights,
                "bias": torch.tensor(self.bias),
                "mean": self.mean,
                "scale": self.scale,
            },
            str(path),
        )


def _logistic(X, y, weight, l1: float, l2: float, steps: int, lr: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced, weighted logistic regression by proximal gradient (ISTA) for the L1 term."""
    w = torch.zeros(X.shape[1])
    b = torch.zeros(())
    pos_share = weight[y == 1].sum() / weight.sum()
    sample_w = weight * torch.where(y == 1, 0.5 / pos_share, 0.5 / (1 - pos_share))
    for _ in range(steps):
        w.requires_grad_(True)
        b.requires_grad_(True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(X @ w + b, y, weight=sample_w)
        loss = loss + l2 * w.pow(2).sum()
        gw, gb = torch.autograd.grad(loss, (w, b))
        with torch.no_grad():
            w = w - lr * gw
            w = torch.sign(w) * torch.clamp(w.abs() - lr * l1, min=0)
            b = b - lr * gb
    return w.detach(), b.detach()


def fit_sparse_probe(
    X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None, l1: float = 0.02, max_latents: int = 48
) -> SparseProbe:
    weight = torch.ones_like(y) if weight is None else weight
    mean, scale = X.mean(0), X.std(0) + 1e-3
    Z = (X - mean) / scale
    w, _ = _logistic(Z, y, weight, l1=l1, l2=0.0, steps=600)
    keep = torch.argsort(w.abs(), descending=True)[: min(max_latents, int((w != 0).sum()))]
    keep = keep[w[keep] != 0]
    w2, b2 = _logistic(Z[:, keep], y, weight, l1=0.0, l2=1e-3, steps=600)
    return SparseProbe(indices=keep, weights=w2, bias=float(b2), mean=mean[keep], scale=scale[keep])


def auroc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    p, n = pos[:, None], neg[None, :]
    return float((p > n).float().mean() + 0.5 * (p == n).float().mean())


def threshold_at_fpr(benign: torch.Tensor, fpr: float) -> float:
    """The smallest threshold that flags at most ``fpr`` of the benign scores."""
    return float(torch.quantile(benign, 1.0 - fpr).item()) + 1e-6


def tpr_at(pos: torch.Tensor, threshold: float) -> float:
    return float((pos >= threshold).float().mean())


def train_harmful_request(lm: LoadedModel, sae: LoadedSAE, spec_path: Path, seed: int = 0) -> dict:
    """Fit, calibrate and evaluate; write the probe and update the spec's threshold."""
    rng = random.Random(seed)
    spec = DetectorSpec.from_yaml(spec_path)
    # Half the authored look-alikes ("kill a Python process") train the probe as
    # hard negatives (weighted up); the other half only measure it.
    held = [a for a in authored_prompts() if a["kind"] == "lookalike" and split_of(a["text"], 2) == "test"]
    authored = [a for a in authored_prompts() if a not in held]
    lookalike_test = [a["text"] for a in held]
    harm_tr, benign_tr = refusal_instructions("train")
    harm_te, benign_te = refusal_instructions("test")
    rng.shuffle(benign_tr)
    calib = benign_tr[:500]
    benign_fit = benign_tr[500:1300]
    fit_texts = [a["text"] for a in authored] + harm_tr + benign_fit
    fit_y = torch.tensor([float(a["label"]) for a in authored] + [1.0] * len(harm_tr) + [0.0] * len(benign_fit))
    weight = torch.tensor([HARD_NEGATIVE_WEIGHT if a["kind"] == "lookalike" else 1.0 for a in authored]
                          + [1.0] * (len(harm_tr) + len(benign_fit)))

    X, R = user_features(lm, sae, fit_texts)
    probe = fit_sparse_probe(X, fit_y, weight)
    probe_path = spec.artifact(spec.params["probe"])
    probe.save(probe_path)

    Xc, _ = user_features(lm, sae, calib)
    threshold = threshold_at_fpr(probe.scores(Xc), spec.target_fpr)
    spec.threshold = round(threshold, 6)
    spec.calibration = {
        "benign_examples": len(calib),
        "target_fpr": spec.target_fpr,
        "date": dt.date.today().isoformat(),
        "source": "dev harmless_train (train split), held apart from probe fitting",
    }
    spec_path.write_text(spec.to_yaml())

    report = {"latents": len(probe.indices), "threshold": spec.threshold, "fit_examples": len(fit_texts)}
    if harm_te:
        Xh, Rh = user_features(lm, sae, harm_te)
        Xb, Rb = user_features(lm, sae, benign_te[:400])
        sh, sb = probe.scores(Xh), probe.scores(Xb)
        direction = R[fit_y == 1].mean(0) - R[fit_y == 0].mean(0)
        report.update(
            test_harmful=len(harm_te),
            test_harmless=len(Xb),
            probe_auroc=round(auroc(sh, sb), 4),
            probe_tpr_at_threshold=round(tpr_at(sh, threshold), 4),
            probe_fpr_at_threshold=round(tpr_at(sb, threshold), 4),
            raw_direction_auroc=round(auroc(Rh @ direction, Rb @ direction), 4),
        )
    Xl, _ = user_features(lm, sae, lookalike_test)
    report["held_out_lookalikes"] = len(lookalike_test)
    report["held_out_lookalike_flag_rate"] = round(tpr_at(probe.scores(Xl), threshold), 4)
    print(json.dumps(report, indent=2))
    return report
