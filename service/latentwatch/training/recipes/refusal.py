"""``refusal``: a sparse probe over windows of the response's latents.

Fitted on the model's own answers (from the corpus) and authored refusals in
varied phrasings; calibrated on the model's answers held apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm import tqdm

from latentwatch.detectors.base import DetectorSpec
from latentwatch.detectors.saes import LoadedSAE
from latentwatch.models import LoadedModel
from latentwatch.training.corpus import read_jsonl
from latentwatch.training.evaluate import threshold_at_fpr
from latentwatch.training.probes import (
    HARD_NEGATIVE_WEIGHT,
    fit_sparse_probe,
    is_refusal_calibration,
    refusal_training_rows,
    response_windows,
)
from latentwatch.training.recipes import RecipeInputs, recipe


def train_refusal(lm: LoadedModel, sae: LoadedSAE, spec_path: Path, corpus: list[list[dict]]) -> dict:
    """Fit the refusal probe on response windows; calibrate on model answers held apart."""
    spec = DetectorSpec.from_yaml(spec_path)
    window = int(spec.params.get("window", 8))
    rows = refusal_training_rows(corpus, "train")
    calib = [r for r in rows if is_refusal_calibration(r)]
    fit = [r for r in rows if not is_refusal_calibration(r)]
    feats, ys, ws = [], [], []
    for r in tqdm(fit, desc="refusal windows", unit="response", leave=False):
        z = response_windows(lm, sae, r["messages"], r["response"], window, r.get("refusal_start", 0))
        if r["label"] == 0:
            z = z[::3]  # compliant answers are long; every third window is plenty
        feats.append(z)
        ys += [float(r["label"])] * len(z)
        hard = r["kind"] in ("sorry_lookalike", "compliant_authored")
        ws += [HARD_NEGATIVE_WEIGHT if hard else 1.0] * len(z)
    probe = fit_sparse_probe(torch.cat(feats), torch.tensor(ys), torch.tensor(ws))
    probe.save(spec.artifact(spec.params["probe"]))
    benign = torch.tensor(
        [
            float(probe.scores(response_windows(lm, sae, r["messages"], r["response"], window)).max())
            for r in tqdm(calib, desc="calibrating", unit="response", leave=False)
        ]
    )
    source = "the bundled model's own answers to train-split prompts, held apart from probe fitting"
    spec.calibrated(threshold_at_fpr(benign, spec.target_fpr), len(calib), source)
    spec_path.write_text(spec.to_yaml())
    report = {
        "latents": len(probe.indices),
        "threshold": spec.threshold,
        "fit_responses": len(fit),
        "fit_windows": len(ys),
        "calibration_responses": len(calib),
    }
    print(json.dumps(report, indent=2))
    return report


@recipe("refusal", needs=("corpus",))
def fit(inputs: RecipeInputs) -> dict:
    return train_refusal(inputs.lm, inputs.sae, inputs.spec_path, read_jsonl(inputs.corpus))
