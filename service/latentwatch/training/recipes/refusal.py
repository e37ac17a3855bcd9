"""``refusal``: a sparse probe over windows of the response's latents.

Fitted on the model's own answers (from the corpus: its refusals and its
compliant answers), authored refusals in varied phrasings and other chat
models' refusals and compliances (JailbreakBench, two models held apart);
calibrated on the model's compliant answers held apart. Features (latents or
the residual) and the window come from the spec.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from latentwatch.detectors.base import DetectorSpec
from latentwatch.detectors.kinds import kind_of
from latentwatch.detectors.saes import LoadedSAE
from latentwatch.models import LoadedModel
from latentwatch.training.corpus import read_jsonl
from latentwatch.training.evaluate import threshold_at_fpr
from latentwatch.training.probes import (
    HARD_NEGATIVE_WEIGHT,
    batched_response_windows,
    fit_probe,
    is_refusal_calibration,
    refusal_training_rows,
)
from latentwatch.training.recipes import RecipeInputs, recipe


def train_refusal(lm: LoadedModel, sae: LoadedSAE, spec_path: Path, corpus: list[list[dict]]) -> dict:
    """Fit the refusal probe on response windows; calibrate on model answers held apart."""
    spec = DetectorSpec.from_yaml(spec_path)
    params = kind_of(spec).parse_params(spec)
    rows = refusal_training_rows(corpus, "train")
    calib = [r for r in rows if is_refusal_calibration(r)]
    fit = [r for r in rows if not is_refusal_calibration(r)]
    feats, ys, ws = [], [], []
    for r, z in zip(fit, batched_response_windows(lm, sae, fit, params.window, params.features), strict=True):
        if r["label"] == 0:
            z = z[::3]  # compliant answers are long; every third window is plenty
        feats.append(z)
        ys += [float(r["label"])] * len(z)
        hard = r["kind"] in ("sorry_lookalike", "compliant_authored")
        ws += [HARD_NEGATIVE_WEIGHT if hard else 1.0] * len(z)
    probe = fit_probe(torch.cat(feats), torch.tensor(ys), torch.tensor(ws), params.features)
    probe.save(spec.artifact(params.probe))
    windows = batched_response_windows(lm, sae, calib, params.window, params.features)
    benign = torch.tensor([float(probe.scores(z).max()) for z in windows if len(z)])
    source = "the model's own answers to train-split prompts, held apart from probe fitting"
    spec.calibrated(threshold_at_fpr(benign, spec.target_fpr), len(benign), source)
    spec_path.write_text(spec.to_yaml())
    kinds = sorted({r["kind"] for r in fit})
    report = {
        "features": params.features,
        "threshold": spec.threshold,
        "fit_responses": {k: sum(r["kind"] == k for r in fit) for k in kinds},
        "fit_windows": len(ys),
        "calibration_responses": len(benign),
    }
    print(json.dumps(report, indent=2))
    return report


@recipe("refusal", needs=("corpus",))
def fit(inputs: RecipeInputs) -> dict:
    return train_refusal(inputs.lm, inputs.sae, inputs.spec_path, read_jsonl(inputs.corpus))
