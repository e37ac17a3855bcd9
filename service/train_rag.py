"""Train the context_attending probe behind ``rag_ignored``, and build its evaluation sets.

Data: the bundled model's own greedy answers to questions with a supplied
passage. Label: the answer *followed* the passage if it contains one of the
passage's answers, else it *ignored* it. Training uses the dev RAG sets'
``train`` split only; the dev ``test`` split and the project's authored
passages (invented facts and counterfactuals, never trained on) measure it.

Features are the ones the monitor streams, over the first ``within_tokens``
response tokens (the absence rule judges there): each attention head's mean
lookback ratio, and the SAE's mean latents. Heads are chosen by measurement
(an L1 probe over all heads' lookback ratios picks a few), then a sparse
probe over those heads plus a few latents gives the context-attending score.
A lookback-only probe on the same heads (plain Lookback Lens) is saved as a
baseline.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from latentwatch.chat import tokenize_chat
from latentwatch.corpus import MAX_CONTEXT_CHARS, authored_prompts, generate_responses, user_turn
from latentwatch.detectors.base import DetectorSpec
from latentwatch.devdata import rag_rows
from latentwatch.evaluate import auroc, read_eval_set
from latentwatch.features import monitored_rows
from latentwatch.jsonl import write_rows
from latentwatch.lookback import Head
from latentwatch.models import LoadedModel
from latentwatch.saes import LoadedSAE
from latentwatch.train_probe import _logistic, fit_sparse_probe
from latentwatch.v1 import monitor_pb2 as pb
from safetensors.torch import save_file
from tqdm import tqdm

ANSWER_TOKENS = 32


def followed(answer: str, answers: list[str]) -> bool:
    """The answer uses the passage: it contains one of the passage's answers."""
    a = answer.lower()
    return any(x.lower() in a for x in answers if x.strip())


def rag_questions(split: str, limit: int, seed: int = 0) -> list[dict]:
    """Dev RAG rows of a split (passages up to MAX_CONTEXT_CHARS), as ``{question, context, answers}``."""
    rows = [r for r in rag_rows(split) if len(r["context"]) <= MAX_CONTEXT_CHARS]
    rows = random.Random(seed).sample(rows, min(limit, len(rows)))
    return [{"question": r["question"], "context": r["context"], "answers": r["answers"], "kind": "dev"} for r in rows]


def authored_questions() -> list[dict]:
    return [
        {"question": a["text"], "context": a["context"], "answers": [a["answer"]],
         "kind": "counterfactual" if a["counterfactual"] else "invented"}
        for a in authored_prompts()
        if a["kind"] == "rag"
    ]  # fmt: skip


def answer_and_label(lm: LoadedModel, questions: list[dict]) -> list[dict]:
    """Records in ``score`` format: the model's answer, ``label`` 1 if it ignored the passage."""
    # the passage in place, exactly as the monitor sees the request
    prompts = [user_turn(q["question"], q["context"]) for q in questions]
    out = []
    for q, t in zip(questions, generate_responses(lm, prompts, ANSWER_TOKENS), strict=True):
        answer = t[-1]["content"]
        out.append(
            {
                "messages": [{"role": "user", "content": q["question"]}],
                "context": q["context"],
                "response": answer,
                "label": 0 if followed(answer, q["answers"]) else 1,
                "kind": q["kind"],
            }
        )
    return out


@dataclass
class RagFeatures:
    lookback: torch.Tensor  # [n, n_heads] mean lookback ratio over the first response tokens
    latents: torch.Tensor  # [n, d_sae] mean latents over the same tokens


@torch.no_grad()
def rag_features(lm: LoadedModel, sae: LoadedSAE, records: list[dict], heads: list[Head], within: int) -> RagFeatures:
    """Teacher-forced features of each record over its first ``within`` response tokens."""
    names = [str(h) for h in heads]
    lookback, latents = [], []
    for rec in tqdm(records, desc="rag features", unit="record", leave=False):
        ct = tokenize_chat(lm.tokenizer, rec["messages"], context=rec["context"], response=rec["response"])
        resp = next(s for s in ct.spans if s.role == pb.SPAN_ROLE_RESPONSE)
        rows, ratios = monitored_rows(lm, ct.input_ids, ct.spans, [sae.hook_name], names)
        span = slice(resp.start, min(resp.end, resp.start + within))
        lookback.append(ratios[span].mean(0))
        latents.append(sae.encode(rows[sae.hook_name][span])[0].mean(0))
    return RagFeatures(torch.stack(lookback), torch.stack(latents))


def _save_probe(
    path: Path, latent_idx: torch.Tensor, w: torch.Tensor, b: float, mean: torch.Tensor, scale: torch.Tensor
) -> None:
    save_file(
        {"indices": latent_idx.int().contiguous(), "weights": w.contiguous(), "bias": torch.tensor(b),
         "mean": mean.contiguous(), "scale": scale.contiguous()},
        str(path),
    )  # fmt: skip


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
    _save_probe(probe_path, latent_probe.indices, w, float(b), mean, scale)
    k = len(chosen)
    w_lb, b_lb = _logistic((X[:, :k] - mean[:k]) / scale[:k], y, torch.ones_like(y), l1=0.0, l2=1e-3, steps=600)
    lookback_only = probe_path.with_name(f"{rule.name}.lookback_only.safetensors")
    _save_probe(lookback_only, torch.zeros(0, dtype=torch.long), w_lb, float(b_lb), mean[:k], scale[:k])

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


def build_rag_sets(lm: LoadedModel, out_dir: Path, train_limit: int = 240, test_limit: int = 160) -> dict[str, int]:
    """Answer and label the RAG questions; write train (for fitting), test and authored files."""
    files = {
        "rag_train.jsonl": answer_and_label(lm, rag_questions("train", train_limit)),
        "rag_test.jsonl": answer_and_label(lm, rag_questions("test", test_limit)),
        "rag_authored.jsonl": answer_and_label(lm, authored_questions()),
    }
    for name, recs in files.items():
        write_rows(out_dir / name, recs)
    return {name: len(r) for name, r in files.items()}
