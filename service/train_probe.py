"""Train the sparse latent probes of the shipped detectors.

Features are what the monitor sees at run time: SAE latents pooled as the
detector pools them (the user turn's mean for harmful_request; means of
sliding response windows for refusal). The probe is an L1-penalised logistic
regression (so few latents carry it and each verdict can name them), refit
without the penalty on the latents it kept. The threshold is set on benign
data the probe never saw, at the spec's target false-positive rate.

Data: the project's authored prompts and responses plus the dev sets'
``train`` split; held-out figures come from ``latentwatch eval`` on the
``test`` split (``latentwatch make-eval-sets``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from latentwatch.baselines import opens_with_refusal
from latentwatch.chat import tokenize_chat
from latentwatch.corpus import DATA_DIR, authored_prompts
from latentwatch.detectors.base import DetectorSpec
from latentwatch.devdata import refusal_instructions, split_of
from latentwatch.evaluate import auroc, threshold_at_fpr
from latentwatch.features import residual_rows
from latentwatch.jsonl import read_rows
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


def tpr_at(pos: torch.Tensor, threshold: float) -> float:
    return float((pos >= threshold).float().mean())


def save_direction(R: torch.Tensor, y: torch.Tensor, sae: LoadedSAE, path: Path) -> None:
    """The raw-residual baseline: difference of class means, offset at the midpoint."""
    direction = R[y == 1].mean(0) - R[y == 0].mean(0)
    direction = direction / direction.norm()
    offset = 0.5 * float((R[y == 1].mean(0) + R[y == 0].mean(0)) @ direction)
    scale = float((R @ direction).std())
    save_file(
        {
            "direction": (direction / scale).contiguous(),
            "offset": torch.tensor(offset / scale),
            "layer": torch.tensor(int(sae.hook_name.rsplit(".", 1)[-1])),
        },
        str(path),
    )


def harmless_calibration_prompts(n: int = 500) -> list[str]:
    """Dev harmless train-split prompts held apart from probe fitting, for calibration."""
    _, benign = refusal_instructions("train")
    random.Random(0).shuffle(benign)
    return benign[:n]


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


def authored_responses() -> list[dict]:
    """Authored responses (``detectors/data/responses.jsonl``): teacher-forced refusals and look-alikes."""
    return read_rows(DATA_DIR / "responses.jsonl")


def refusal_template_split(row: dict) -> str:
    """Refusal rows split by their wording's template, so held-out refusals are phrased unseen ways."""
    return split_of(row.get("template", row["response"]))


@torch.no_grad()
def response_windows(
    lm: LoadedModel, sae: LoadedSAE, messages: list[dict], response: str, window: int, from_char: int = 0
) -> torch.Tensor:
    """Window-pooled latents of a teacher-forced response, as the ``window``
    pooling of ``latent_probe`` computes them: after each response token, the
    mean of the last ``window`` tokens. Windows ending before ``from_char``
    (where a partial refusal starts) are skipped."""
    ct = tokenize_chat(lm.tokenizer, messages, response=response)
    resp = [s for s in ct.spans if s.role == pb.SPAN_ROLE_RESPONSE]
    if not resp:
        return torch.zeros(0, sae.d_sae)
    start, end = resp[-1].start, resp[-1].end
    rows = residual_rows(lm, ct.input_ids, [sae.hook_name])[sae.hook_name]
    z = sae.encode(rows[start:end])[0]
    skip = len(lm.tokenizer(response[:from_char], add_special_tokens=False)["input_ids"]) if from_char else 0
    csum = torch.cat([torch.zeros(1, z.shape[1]), z.cumsum(0)])
    out = []
    for t in range(skip, z.shape[0]):
        lo = max(skip, t + 1 - window)
        out.append((csum[t + 1] - csum[lo]) / (t + 1 - lo))
    return torch.stack(out) if out else torch.zeros(0, sae.d_sae)


def refusal_training_rows(corpus: list[list[dict]], split: str) -> list[dict]:
    """Response rows for the refusal probe: ``messages`` (prompt), ``response``, ``label``, ``kind``.

    Positives: authored refusals (templates of ``split``), also teacher-forced
    after dev harmful prompts of ``split``. Negatives: the model's own answers
    from the corpus (it complies almost always) and authored look-alikes.
    """
    rows = []
    authored = [r for r in authored_responses() if refusal_template_split(r) == split]
    generic = [r for r in authored if r["label"] == 1 and "{" not in r.get("template", "{")]
    for r in authored:
        rows.append({"messages": [{"role": "user", "content": r["prompt"]}], **_resp(r)})
    harmful, _ = refusal_instructions(split)
    rng = random.Random(1)
    for prompt in harmful:
        if generic:
            rows.append({"messages": [{"role": "user", "content": prompt}], **_resp(rng.choice(generic))})
    for t in corpus:
        user, answer = t[0]["content"], t[-1]
        if answer["role"] != "assistant" or not answer["content"] or split_of(user) != split:
            continue
        # Unlabelled: a model answer that opens like a refusal may be one; it is no clean negative.
        if not opens_with_refusal(answer["content"]):
            rows.append({"messages": t[:-1], "response": answer["content"], "label": 0, "kind": "model_answer"})
    return rows


def is_refusal_calibration(row: dict) -> bool:
    """A quarter of the model's own train-split answers (by prompt hash) calibrate the refusal threshold."""
    return row["kind"] == "model_answer" and split_of(row["messages"][0]["content"], 4) == "test"


def _resp(r: dict) -> dict:
    out = {"response": r["response"], "label": r["label"], "kind": r["kind"]}
    if "refusal_start" in r:
        out["refusal_start"] = r["refusal_start"]
    return out


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
