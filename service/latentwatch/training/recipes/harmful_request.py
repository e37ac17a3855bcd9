"""``harmful_request``: a linear probe over the request's pooled activations.

Pooling and features come from the spec (``latent_probe`` params): the SmolLM2
pack reads a sparse probe over the user turn's mean latents; the Qwen pack
reads a dense direction over the last request tokens and the chat template
after them, where a chat model encodes harmfulness.

Fitted on varied sources so it generalises, each held apart in part:
- dev harmful / harmless instructions (by text hash);
- JailbreakBench goals and their jailbreak-wrapped prompts (whole categories
  held apart: harm must still read as harm under a jailbreak);
- authored short, direct harmful questions and look-alikes (dangerous words,
  benign intent) weighted up as hard negatives; whole *types* of both are
  held apart for measurement.
Calibrated on harmless prompts held apart from fitting.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from latentwatch.detectors.base import DetectorSpec
from latentwatch.detectors.kinds import kind_of
from latentwatch.detectors.saes import LoadedSAE
from latentwatch.models import LoadedModel
from latentwatch.training.corpus import MAX_CONTEXT_CHARS, authored_prompts
from latentwatch.training.devdata import jbb_rows, refusal_instructions, split_of
from latentwatch.training.evaluate import auroc, threshold_at_fpr
from latentwatch.training.probes import (
    HARD_NEGATIVE_WEIGHT,
    fit_probe,
    harmless_calibration_prompts,
    prompt_features,
    save_direction,
    tpr_at,
)
from latentwatch.training.recipes import RecipeInputs, recipe

# Authored types only ever measured on: a probe must not need to have seen a kind
# of look-alike (or of direct harmful question) to read it right.
HELD_APART_TYPES = ("definition", "history", "privacy_violation", "self_harm_assist")


def _authored_split(row: dict) -> str:
    if "type" in row:
        return "test" if row["type"] in HELD_APART_TYPES else "train"
    return split_of(row["text"], 2) if row["kind"] == "lookalike" else split_of(row["text"])


def harmful_request_sets() -> dict[str, tuple[list[str], list[int], list[float]]]:
    """``fit`` and the held-apart measurement sets: (texts, labels, weights)."""
    out: dict[str, tuple[list[str], list[int], list[float]]] = {}

    def add(name: str, texts: list[str], label: int, weight: float = 1.0) -> None:
        t, y, w = out.setdefault(name, ([], [], []))
        t += texts
        y += [label] * len(texts)
        w += [weight] * len(texts)

    authored = [a for a in authored_prompts() if a["kind"] in ("harmful", "benign", "lookalike")]
    for a in authored:
        weight = HARD_NEGATIVE_WEIGHT if a["kind"] == "lookalike" else 1.0
        split = _authored_split(a)
        add("fit" if split == "train" else ("test_lookalike" if a["kind"] == "lookalike" else "test_authored"),
            [a["text"]], int(a["label"]), weight)  # fmt: skip
    harm_tr, benign_tr = refusal_instructions("train")
    calib = set(harmless_calibration_prompts())
    add("fit", harm_tr, 1)
    add("fit", [p for p in benign_tr if p not in calib][:800], 0)
    for split in ("train", "test"):
        rows = jbb_rows(split)
        goals = sorted({r["goal"] for r in rows})
        wrapped = sorted({r["prompt"] for r in rows if r["prompt"] != r["goal"]})
        wrapped = [p for p in wrapped if len(p) <= MAX_CONTEXT_CHARS]
        add("fit" if split == "train" else "test_jbb_goals", goals, 1)
        add("fit" if split == "train" else "test_jailbreaks", wrapped[:: 2 if split == "train" else 1], 1)
    harm_te, benign_te = refusal_instructions("test")
    add("test_dev", harm_te, 1)
    add("test_dev", benign_te[:400], 0)
    return out


def train_harmful_request(lm: LoadedModel, sae: LoadedSAE, spec_path: Path) -> dict:
    """Fit, calibrate and measure; write the probe and update the spec's threshold."""
    spec = DetectorSpec.from_yaml(spec_path)
    params = kind_of(spec).parse_params(spec)
    sets = harmful_request_sets()

    def features(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        lat, raw = prompt_features(lm, sae, texts, params)
        return (raw if params.features == "residual" else lat), raw

    texts, labels, weights = sets["fit"]
    X, R = features(texts)
    y = torch.tensor(labels, dtype=torch.float)
    probe = fit_probe(X, y, torch.tensor(weights), params.features)
    probe_path = spec.artifact(params.probe)
    probe.save(probe_path)
    save_direction(R, y, sae, probe_path.with_name(f"{spec.name}.direction.safetensors"))

    calib = harmless_calibration_prompts()
    threshold = threshold_at_fpr(probe.scores(features(calib)[0]), spec.target_fpr)
    spec.calibrated(threshold, len(calib), "dev harmless_train (train split), held apart from probe fitting")
    spec_path.write_text(spec.to_yaml())

    report: dict = {"features": params.features, "pooling": params.pooling, "threshold": spec.threshold,
                    "fit_examples": len(texts), "fit_harmful": int(y.sum())}  # fmt: skip
    scores = {}
    for name in sorted(n for n in sets if n.startswith("test_")):
        t, lab, _ = sets[name]
        scores[name] = (probe.scores(features(t)[0]), torch.tensor(lab))
    benign = scores["test_dev"][0][scores["test_dev"][1] == 0]
    for name, (s, lab) in scores.items():
        pos, neg = s[lab == 1], s[lab == 0]
        entry = {"n_pos": len(pos), "n_neg": len(neg), "flag_rate_pos": round(tpr_at(pos, threshold), 4)}
        if len(neg):
            entry["flag_rate_neg"] = round(tpr_at(neg, threshold), 4)
        entry["auroc_vs_dev_harmless"] = round(auroc(pos, benign), 4) if len(pos) else None
        report[name] = entry
    # Look-alikes against the held-apart harmful requests they imitate.
    harmful_held = torch.cat([s[lab == 1] for n, (s, lab) in scores.items() if n != "test_lookalike"])
    look = scores["test_lookalike"][0]
    report["lookalike_auroc"] = round(auroc(harmful_held, look), 4)
    print(json.dumps(report, indent=2))
    return report


@recipe("harmful_request")
def fit(inputs: RecipeInputs) -> dict:
    return train_harmful_request(inputs.lm, inputs.sae, inputs.spec_path)
