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

import random
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from latentwatch.capture.chat import tokenize_chat
from latentwatch.capture.lookback import Head
from latentwatch.capture.teacher_forced import monitored_rows
from latentwatch.detectors.saes import LoadedSAE
from latentwatch.jsonl import write_rows
from latentwatch.models import LoadedModel
from latentwatch.training.corpus import MAX_CONTEXT_CHARS, authored_prompts, generate_responses, user_turn
from latentwatch.training.devdata import rag_rows
from latentwatch.v1 import monitor_pb2 as pb

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
