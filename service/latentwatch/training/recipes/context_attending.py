"""``context_attending`` (read by ``rag_ignored``): chosen heads' lookback ratios, latents
and the answer-context token overlap.

Heads are chosen by an L1 probe over every head; needs the RAG sets of
``latentwatch make-eval-sets --sets rag``. The fitting file is split by
question, so a passage and its counterfactual twin land on the same side.
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
from latentwatch.training.rag import RagFeatures, rag_features
from latentwatch.training.recipes import RecipeInputs, recipe


def _standardised_logistic(X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]:
    mean, scale = X.mean(0), X.std(0) + 1e-3
    w, b = _logistic((X - mean) / scale, y, torch.ones_like(y), l1=0.0, l2=1e-2, steps=600)
    return w, float(b), mean, scale


def _features(F: RagFeatures, heads: torch.Tensor, latents: torch.Tensor, overlap: bool) -> torch.Tensor:
    parts = [F.lookback[:, heads], F.latents[:, latents]] + ([F.overlap] if overlap else [])
    return torch.cat(parts, dim=1)


def train_context_attending(
    lm: LoadedModel,
    sae: LoadedSAE,
    spec_path: Path,
    rule_path: Path,
    data_dir: Path,
    n_heads: int = 8,
    n_latents: int = 16,
) -> dict:
    """Choose heads, fit the probe (attending = followed the passage), set thresholds; write spec and artifacts.

    Reads ``rag_train.jsonl`` from ``data_dir`` (``latentwatch make-eval-sets --sets rag``)."""
    train = read_eval_set(data_dir / "rag_train.jsonl", "rag")
    spec, rule = DetectorSpec.from_yaml(spec_path), DetectorSpec.from_yaml(rule_path)
    within = int(rule.params.get("within_tokens", 12))
    overlap = bool(spec.params.get("overlap", False))
    cfg = lm.model.config
    all_heads = [Head(layer, h) for layer in range(cfg.num_hidden_layers) for h in range(cfg.num_attention_heads)]
    questions = sorted({r["messages"][-1]["content"] for r in train})
    random.Random(0).shuffle(questions)
    held = set(questions[: len(questions) // 4])
    calib = [r for r in train if r["messages"][-1]["content"] in held]
    fit = [r for r in train if r["messages"][-1]["content"] not in held]
    y = torch.tensor([1.0 - r["label"] for r in fit])  # 1 = attended (followed)
    F = rag_features(lm, sae, fit, all_heads, within)
    head_probe = fit_sparse_probe(F.lookback, y, max_latents=n_heads, l1=0.01)
    chosen = [all_heads[int(i)] for i in head_probe.indices]
    latent_probe = fit_sparse_probe(F.latents, y, max_latents=n_latents)
    heads_at = head_probe.indices
    X = _features(F, heads_at, latent_probe.indices, overlap)
    w, b, mean, scale = _standardised_logistic(X, y)
    probe_path = spec.artifact(spec.params["probe"])
    LinearProbe(latent_probe.indices, w, b, mean, scale).save(probe_path)
    k = len(chosen)
    w_lb, b_lb, mean_lb, scale_lb = _standardised_logistic(F.lookback[:, heads_at], y)
    lookback_only = probe_path.with_name(f"{rule.name}.lookback_only.safetensors")
    LinearProbe(torch.zeros(0, dtype=torch.long), w_lb, b_lb, mean_lb, scale_lb).save(lookback_only)

    # Threshold: rag_ignored flags when the attending score stays below it, so at most
    # target_fpr of the calibration answers that *followed* their passage may fall below.
    C = rag_features(lm, sae, calib, chosen, within)
    Xc = _features(C, torch.arange(k), latent_probe.indices, overlap)
    sc = torch.sigmoid(((Xc - mean) / scale) @ w + b)
    yc = torch.tensor([1 - r["label"] for r in calib])
    spec.params["heads"] = [str(h) for h in chosen]
    source = "the model's answers that followed their passage (dev RAG fitting source), held apart from fitting"
    spec.calibrated(float(torch.quantile(sc[yc == 1], rule.target_fpr)), int(yc.sum()), source, rule.target_fpr)
    spec_path.write_text(spec.to_yaml())

    def held_auroc(score: torch.Tensor) -> float:  # for *ignored*: low attending score
        return round(auroc(-score[yc == 0], -score[yc == 1]), 4)

    lb = ((C.lookback - mean_lb) / scale_lb) @ w_lb + b_lb
    report = {
        "fit": len(fit), "fit_ignored": int((y == 0).sum()), "calibration": len(calib),
        "calibration_ignored": int((yc == 0).sum()),
        "heads": {str(all_heads[i]): round(auroc(F.lookback[y == 1, i], F.lookback[y == 0, i]), 3)
                  for i in heads_at.tolist()},
        "latents": latent_probe.indices.tolist(), "overlap": overlap, "threshold": spec.threshold,
        "calibration_auroc_ignored": {"probe": held_auroc(sc), "lookback_only": held_auroc(lb),
                                      "overlap_alone": held_auroc(C.overlap[:, 0])},
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    return report


@recipe("context_attending", needs=("data",))
def fit(inputs: RecipeInputs) -> dict:
    return train_context_attending(
        inputs.lm, inputs.sae, inputs.spec_path, inputs.spec_path.parent / "rag_ignored.yaml", inputs.data
    )
