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

import random
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from latentwatch.capture.chat import tokenize_chat
from latentwatch.capture.teacher_forced import batched_rows
from latentwatch.detectors.probe import LinearProbe
from latentwatch.detectors.saes import LoadedSAE
from latentwatch.jsonl import read_rows
from latentwatch.models import LoadedModel
from latentwatch.training.baselines import opens_with_refusal
from latentwatch.training.corpus import DATA_DIR
from latentwatch.training.devdata import JBB_TEST_MODELS, jbb_rows, refusal_instructions, split_of
from latentwatch.v1 import monitor_pb2 as pb

HARD_NEGATIVE_WEIGHT = 5.0
MAX_PROMPT_CHARS = 1500  # longer jailbreak prompts stay out (they would dominate the forwards)


@torch.no_grad()
def prompt_features(lm: LoadedModel, sae: LoadedSAE, prompts: list[str], params) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled SAE latents, pooled raw residual) of each prompt, pooled as a
    prompt-side ``latent_probe`` with ``params`` pools them (``mean`` over the
    roles' tokens, or the ``tail``: their last ``window`` tokens); forwards batched."""
    from latentwatch.detectors.base import ROLE_NAMES

    roles = {ROLE_NAMES[r] for r in params.roles}
    cts = [tokenize_chat(lm.tokenizer, [{"role": "user", "content": p}]) for p in prompts]
    lat: list[torch.Tensor] = [torch.empty(0)] * len(prompts)
    raw: list[torch.Tensor] = [torch.empty(0)] * len(prompts)
    forwards = batched_rows(lm, [ct.input_ids for ct in cts], [sae.hook_name], batch_size=16)
    for i, rows in tqdm(forwards, total=len(prompts), desc="features", unit="prompt", leave=False):
        pos = sorted({t for s in cts[i].spans if s.role in roles for t in range(max(s.start, 1), s.end)})
        if params.pooling == "tail":
            pos = pos[-params.window :]
        x = rows[sae.hook_name][pos]
        lat[i] = sae.encode(x)[0].mean(0)
        raw[i] = x.mean(0)
    return torch.stack(lat), torch.stack(raw)


def fit_probe(X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None, features: str) -> LinearProbe:
    """The probe a spec's ``features`` asks for: sparse over latents, or a dense
    L2-regularised direction over every residual dimension."""
    if features == "latents":
        return fit_sparse_probe(X, y, weight)
    weight = torch.ones_like(y) if weight is None else weight
    mean, scale = X.mean(0), X.std(0) + 1e-3
    w, b = _logistic((X - mean) / scale, y, weight, l1=0.0, l2=1e-3, steps=800)
    return LinearProbe(indices=torch.arange(X.shape[1]), weights=w, bias=float(b), mean=mean, scale=scale)


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
) -> LinearProbe:
    weight = torch.ones_like(y) if weight is None else weight
    mean, scale = X.mean(0), X.std(0) + 1e-3
    Z = (X - mean) / scale
    w, _ = _logistic(Z, y, weight, l1=l1, l2=0.0, steps=600)
    keep = torch.argsort(w.abs(), descending=True)[: min(max_latents, int((w != 0).sum()))]
    keep = keep[w[keep] != 0]
    w2, b2 = _logistic(Z[:, keep], y, weight, l1=0.0, l2=1e-3, steps=600)
    return LinearProbe(indices=keep, weights=w2, bias=float(b2), mean=mean[keep], scale=scale[keep])


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


def authored_responses() -> list[dict]:
    """Authored responses (``detectors/data/responses.jsonl``): teacher-forced refusals and look-alikes."""
    return read_rows(DATA_DIR / "responses.jsonl")


def refusal_template_split(row: dict) -> str:
    """Refusal rows split by their wording's template, so held-out refusals are phrased unseen ways."""
    return split_of(row.get("template", row["response"]))


def response_windows(
    lm: LoadedModel, sae: LoadedSAE, messages: list[dict], response: str, window: int, from_char: int = 0
) -> torch.Tensor:
    """Window-pooled latents of a teacher-forced response, as the ``window``
    pooling of ``latent_probe`` computes them: after each response token, the
    mean of the last ``window`` tokens. Windows ending before ``from_char``
    (where a partial refusal starts) are skipped."""
    row = {"messages": messages, "response": response, "refusal_start": from_char}
    return batched_response_windows(lm, sae, [row], window)[0]


@torch.no_grad()
def batched_response_windows(
    lm: LoadedModel, sae: LoadedSAE, rows: list[dict], window: int, features: str = "latents"
) -> list[torch.Tensor]:
    """``response_windows`` of many rows (``messages``, ``response``, optional
    ``refusal_start`` and ``first_windows``) with batched forwards; ``features``
    ``residual`` pools the raw residual rows instead of the latents."""
    cts = [tokenize_chat(lm.tokenizer, r["messages"], response=r["response"]) for r in rows]
    width = sae.d_in if features == "residual" else sae.d_sae
    out: list[torch.Tensor] = [torch.zeros(0, width)] * len(rows)
    forwards = batched_rows(lm, [ct.input_ids for ct in cts], [sae.hook_name], batch_size=8)
    for i, acts in tqdm(forwards, total=len(rows), desc="response windows", unit="response", leave=False):
        resp = [s for s in cts[i].spans if s.role == pb.SPAN_ROLE_RESPONSE]
        if not resp:
            continue
        x = acts[sae.hook_name][resp[-1].start : resp[-1].end]
        z = x if features == "residual" else sae.encode(x)[0]
        r = rows[i]
        start = r.get("refusal_start", 0)
        skip = len(lm.tokenizer(r["response"][:start], add_special_tokens=False)["input_ids"]) if start else 0
        csum = torch.cat([torch.zeros(1, z.shape[1]), z.double().cumsum(0)])
        ends = torch.arange(skip + 1, z.shape[0] + 1)[: r.get("first_windows")]
        starts = torch.maximum(ends - window, torch.tensor(skip))
        out[i] = ((csum[ends] - csum[starts]) / (ends - starts).unsqueeze(1)).float()
    return out


# Other chat models' answers are long; their first characters hold the refusal or
# the compliance, and a refusal's later windows may already be something else.
OTHER_MODEL_CHARS = 600
REFUSAL_FIRST_WINDOWS = 24


def refusal_training_rows(corpus: list[list[dict]], split: str) -> list[dict]:
    """Response rows for the refusal probe: ``messages`` (prompt), ``response``, ``label``, ``kind``.

    Positives: authored refusals (templates of ``split``), also teacher-forced
    after dev harmful prompts of ``split``; the model's own answers that open
    as a refusal; other chat models' refusals (JailbreakBench, judge-labelled:
    models and categories of ``split``). Negatives: the model's other answers
    from the corpus, authored look-alikes, other models' complied answers.
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
    # The corpus also holds other chat models' answers (for the SAE); they come in below
    # with their judge labels, not as the model's own answers.
    others = {r["response"] for sp in ("train", "test") for r in jbb_rows(sp)}
    for t in corpus:
        user, answer = t[0]["content"], t[-1]
        if answer["role"] != "assistant" or not answer["content"] or split_of(user) != split:
            continue
        if answer["content"] in others:
            continue
        if opens_with_refusal(answer["content"]):
            rows.append({"messages": t[:-1], "response": answer["content"], "label": 1, "kind": "model_refusal",
                         "first_windows": REFUSAL_FIRST_WINDOWS})  # fmt: skip
        else:
            rows.append({"messages": t[:-1], "response": answer["content"], "label": 0, "kind": "model_answer"})
    held_models = split == "test"
    for r in jbb_rows(split):
        if (r["model"] in JBB_TEST_MODELS) != held_models or len(r["prompt"]) > MAX_PROMPT_CHARS:
            continue
        refused = not r["jailbroken"]
        kind = "other_model_refusal" if refused else "other_model_compliance"
        row = {"messages": [{"role": "user", "content": r["prompt"]}], "response": r["response"][:OTHER_MODEL_CHARS],
               "label": int(refused), "kind": kind}  # fmt: skip
        if refused:
            row["first_windows"] = REFUSAL_FIRST_WINDOWS
        if row["response"].strip():
            rows.append(row)
    return rows


def is_refusal_calibration(row: dict) -> bool:
    """A quarter of the model's own train-split answers (by prompt hash) calibrate the refusal threshold."""
    return row["kind"] == "model_answer" and split_of(row["messages"][0]["content"], 4) == "test"


def _resp(r: dict) -> dict:
    out = {"response": r["response"], "label": r["label"], "kind": r["kind"]}
    if "refusal_start" in r:
        out["refusal_start"] = r["refusal_start"]
    return out
