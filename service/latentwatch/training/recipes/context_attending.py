"""``context_attending`` (read by ``rag_ignored``): lookback ratios of chosen heads plus latents.

Heads are chosen by an L1 probe over every head; needs the RAG sets of
``latentwatch make-eval-sets --sets rag``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from latentwatch.capture.lookback import Head
from latentwatch.detectors.base import DetectorSpec
from latentwatch.detectors.probe import LinearProbe
from latentwatch.detectors.saes import LoadedSAE
from latentwatch.models import LoadedModel
from latentwatch.training.evaluate import auroc, read_eval_set
from latentwatch.training.probes import _logistic, fit_sparse_probe
from latentwatch.training.rag import rag_features
from latentwatch.training.recipes import RecipeInputs, recipe


def train_context_attending(
    lm: LoadedModel, sae: LoadedSAE, spec_path: Path, rule_path: Path, data_dir: Path, n_heads: int = 8
) -> dict:
    """Choose heads, fit the probe (attending = followed the passage), set thresholds; write spec and artifacts.

    Reads ``rag_train.jsonl`` from ``data_dir`` (``latentwatch make-eval-sets --sets rag``)."""
    train = read_eval_set(data_dir / "rag_train.jsonl", "rag")
    spec, rule = DetectorSpec.from_yaml(spec_path), DetectorSpec.from_yaml(rule_path)
    within = int(rule.params.get("within_tokens", 12))
    cfg = lm.model.config
    all_heads = [Head(layer, h) for layer in range(cfg.num_hidden_layers) for h in range(cfg.num_attention_heads)]
    rng = random.Random(0)
    train = list(train)
    rng.shuffle(train)
    n_cal = len(train) // 4
    calib, fit = train[:n_cal], train[n_cal:]
    y = torch.tensor([1.0 - r["label"] for r in fit])  # 1 = attended (followed)
    F = rag_features(lm, sae, fit, all_heads, within)
    head_probe = fit_sparse_probe(F.lookback, y, max_latents=n_heads, l1=0.01)
    chosen = [all_heads[int(i)] for i in head_probe.indices]
    per_head = {str(all_heads[i]): round(auroc(F.lookback[y == 1, i], F.lookback[y == 0, i]), 3)
                for i in head_probe.indices.tolist()}  # fmt: skip
    latent_probe = fit_sparse_probe(F.latents, y, max_latents=16)
    X = torch.cat([F.lookback[:, head_probe.indices], F.latents[:, latent_probe.indices]], dim=1)
    mean, scale = X.mean(0), X.std(0) + 1e-3
    w, b = _logistic((X - mean) / scale, y, torch.ones_like(y), l1=0.0, l2=1e-3, steps=600)
    probe_path = spec.artifact(spec.params["probe"])
    LinearProbe(latent_probe.indices, w, float(b), mean, scale).save(probe_path)
    k = len(chosen)
    w_lb, b_lb = _logistic((X[:, :k] - mean[:k]) / scale[:k], y, torch.ones_like(y), l1=0.0, l2=1e-3, steps=600)
    lookback_only = probe_path.with_name(f"{rule.name}.lookback_only.safetensors")
    LinearProbe(torch.zeros(0, dtype=torch.long), w_lb, float(b_lb), mean[:k], scale[:k]).save(lookback_only)

    # Threshold: rag_ignored flags when the attending score stays below it, so at most
    # target_fpr of the calibration answers that *followed* their passage may fall below.
    C = rag_features(lm, sae, calib, chosen, within)
    Xc = torch.cat([C.lookback, C.latents[:, latent_probe.indices]], dim=1)
    sc = torch.sigmoid(((Xc - mean) / scale) @ w + b)
    yc = torch.tensor([1 - r["label"] for r in calib])
    spec.params["heads"] = [str(h) for h in chosen]
    source = "the model's answers that followed their passage (dev RAG train split), held apart from fitting"
    spec.calibrated(float(torch.quantile(sc[yc == 1], rule.target_fpr)), int(yc.sum()), source, rule.target_fpr)
    spec_path.write_text(spec.to_yaml())
    report = {
        "fit": len(fit), "fit_ignored": int((y == 0).sum()), "calibration": len(calib),
        "heads": per_head, "latents": latent_probe.indices.tolist(), "threshold": spec.threshold,
        "calibration_auroc_ignored": round(auroc(1 - sc[yc == 0], 1 - sc[yc == 1]), 4),
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    return report


@recipe("context_attending", needs=("data",))
def fit(inputs: RecipeInputs) -> dict:
    return train_context_attending(
        inputs.lm, inputs.sae, inputs.spec_path, inputs.spec_path.parent / "rag_ignored.yaml", inputs.data
    )
