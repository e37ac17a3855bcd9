"""``harmful_request``: a sparse probe over the user turn's mean layer latents.

Fitted on authored prompts (look-alikes weighted up as hard negatives) and the
dev harmful/harmless train split; calibrated on harmless prompts held apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from latentwatch.detectors.base import DetectorSpec
from latentwatch.detectors.saes import LoadedSAE
from latentwatch.models import LoadedModel
from latentwatch.training.corpus import authored_prompts
from latentwatch.training.devdata import refusal_instructions, split_of
from latentwatch.training.evaluate import auroc, threshold_at_fpr
from latentwatch.training.probes import (
    HARD_NEGATIVE_WEIGHT,
    fit_sparse_probe,
    harmless_calibration_prompts,
    save_direction,
    tpr_at,
    user_features,
)
from latentwatch.training.recipes import RecipeInputs, recipe


def train_harmful_request(lm: LoadedModel, sae: LoadedSAE, spec_path: Path) -> dict:
    """Fit, calibrate and evaluate; write the probe and update the spec's threshold."""
    spec = DetectorSpec.from_yaml(spec_path)
    # Half the authored look-alikes ("kill a Python process") train the probe as
    # hard negatives (weighted up); the other half only measure it.
    held = [a for a in authored_prompts() if a["kind"] == "lookalike" and split_of(a["text"], 2) == "test"]
    authored = [a for a in authored_prompts() if a not in held]
    lookalike_test = [a["text"] for a in held]
    harm_tr, benign_tr = refusal_instructions("train")
    harm_te, benign_te = refusal_instructions("test")
    calib = harmless_calibration_prompts()
    benign_fit = [p for p in benign_tr if p not in set(calib)][:800]
    fit_texts = [a["text"] for a in authored] + harm_tr + benign_fit
    fit_y = torch.tensor([float(a["label"]) for a in authored] + [1.0] * len(harm_tr) + [0.0] * len(benign_fit))
    weight = torch.tensor(
        [HARD_NEGATIVE_WEIGHT if a["kind"] == "lookalike" else 1.0 for a in authored]
        + [1.0] * (len(harm_tr) + len(benign_fit))
    )

    X, R = user_features(lm, sae, fit_texts)
    probe = fit_sparse_probe(X, fit_y, weight)
    probe_path = spec.artifact(spec.params["probe"])
    probe.save(probe_path)
    save_direction(R, fit_y, sae, probe_path.with_name(f"{spec.name}.direction.safetensors"))

    Xc, _ = user_features(lm, sae, calib)
    threshold = threshold_at_fpr(probe.scores(Xc), spec.target_fpr)
    spec.calibrated(threshold, len(calib), "dev harmless_train (train split), held apart from probe fitting")
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


@recipe("harmful_request")
def fit(inputs: RecipeInputs) -> dict:
    return train_harmful_request(inputs.lm, inputs.sae, inputs.spec_path)
