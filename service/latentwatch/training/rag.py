"""Train the context_attending probe behind ``rag_ignored``, and build its evaluation sets.

Data: the model's own greedy answers to questions with a supplied passage.
Label: the answer *followed* the passage if it names one of the passage's
answers (``followed``), else it *ignored* it. Whole sources are held apart:
fitting reads one dev source's ``train`` split, measurement another source's
``test`` split, each with counterfactual twins made here (``counterfactual``:
the answer entity swapped inside the passage, so it contradicts memory), plus
the project's authored passages (never trained on).

Features are the ones the monitor streams, over the first ``within_tokens``
response tokens (the absence rule judges there): each attention head's mean
lookback ratio, the SAE's mean latents, and the share of answer tokens found
in the context (``context_overlap``). Heads are chosen by measurement
(an L1 probe over all heads' lookback ratios picks a few), then a sparse
probe over those heads plus a few latents gives the context-attending score.
A lookback-only probe on the same heads (plain Lookback Lens) is saved as a
baseline.
"""

from __future__ import annotations

import random
import re
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


_STOP = frozenset("a an the of in on at to for by and or is was are were with from as its it".split())


def _words(text: str) -> list[str]:
    """Lower-case words and numbers, punctuation dropped (so "9 , 2017" reads as "9 2017")."""
    return re.findall(r"[a-z0-9]+", text.lower())


def followed(answer: str, answers: list[str]) -> bool:
    """The answer states the passage's answer: one of ``answers`` appears in it, compared
    word by word without case or punctuation; for a gold answer longer than three words
    (a clause copied from the passage), a run of two or more of its words that holds a
    word other than a stop word is enough, since the model names the entity, not the clause."""
    said = _words(answer)
    text = " " + " ".join(said) + " "
    for gold in answers:
        words = _words(gold)
        if not words:
            continue
        if f" {' '.join(words)} " in text:
            return True
        if len(words) > 3:
            for n in range(len(words) - 1, 1, -1):
                for i in range(len(words) - n + 1):
                    run = words[i : i + n]
                    if set(run) - _STOP and f" {' '.join(run)} " in text:
                        return True
    return False


# Whole sources are held apart: detectors are fitted on SQuAD passages and measured on
# Natural Questions ones (other writers, other topics), each from its own hash split.
FIT_SOURCE, TEST_SOURCE = "coconflictqa_squad", "coconflictqa_nq"


def rag_questions(source: str, split: str, limit: int, seed: int = 0) -> list[dict]:
    """Dev RAG rows of one source file and split (passages up to MAX_CONTEXT_CHARS),
    as ``{question, context, answers, kind}``."""
    rows = [r for r in rag_rows(split, source) if len(r["context"]) <= MAX_CONTEXT_CHARS]
    rows = random.Random(seed).sample(rows, min(limit, len(rows)))
    return [{"question": r["question"], "context": r["context"], "answers": r["answers"], "kind": "dev"} for r in rows]


def _entity_type(answer: str) -> str | None:
    """A coarse type for swapping answers: a year, another number, or a short proper name."""
    a = answer.strip()
    if re.fullmatch(r"1[0-9]{3}|20[0-9]{2}", a):
        return "year"
    if re.fullmatch(r"[0-9][0-9,.]*", a):
        return "number"
    words = a.split()
    if 1 <= len(words) <= 4 and all(w[:1].isupper() for w in words) and a.replace(" ", "").isalpha():
        return "name"
    return None


def counterfactual(questions: list[dict], seed: int = 0) -> list[dict]:
    """Knowledge-conflict items made here: the answer entity inside the passage replaced
    (every occurrence) by another question's answer of the same type, so the passage now
    states something the model's memory contradicts. Following it means stating the swap."""
    typed = []
    for q in questions:
        answer = next((a for a in sorted(q["answers"], key=len) if a.strip() and a in q["context"]), None)
        kind = _entity_type(answer) if answer else None
        if kind:
            typed.append((q, answer, kind))
    rng = random.Random(seed)
    out = []
    for q, answer, kind in typed:
        pool = [a for _, a, k in typed if k == kind and a != answer and a not in q["context"]]
        if not pool:
            continue
        swap = rng.choice(pool)
        context = re.sub(rf"(?<!\w){re.escape(answer)}(?!\w)", swap, q["context"])
        if context != q["context"]:
            out.append({**q, "context": context, "answers": [swap], "kind": "counterfactual", "replaced": answer})
    return out


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
                "answers": q["answers"],
            }
        )
    return out


@dataclass
class RagFeatures:
    lookback: torch.Tensor  # [n, n_heads] mean lookback ratio over the first response tokens
    latents: torch.Tensor  # [n, d_sae] mean latents over the same tokens
    overlap: torch.Tensor  # [n, 1] share of those tokens whose id occurs in the context


def context_overlap(input_ids: list[int], context: tuple[int, int], tokens: slice) -> float:
    """Share of the ``tokens`` whose id also occurs in the ``context`` span: what the
    ``lookback_probe`` kind counts live from the ids the capture sends."""
    seen = set(input_ids[context[0] : context[1]])
    ids = input_ids[tokens]
    return sum(i in seen for i in ids) / max(len(ids), 1)


@torch.no_grad()
def rag_features(lm: LoadedModel, sae: LoadedSAE, records: list[dict], heads: list[Head], within: int) -> RagFeatures:
    """Teacher-forced features of each record over its first ``within`` response tokens."""
    names = [str(h) for h in heads]
    lookback, latents, overlap = [], [], []
    for rec in tqdm(records, desc="rag features", unit="record", leave=False):
        ct = tokenize_chat(lm.tokenizer, rec["messages"], context=rec["context"], response=rec["response"])
        resp = next(s for s in ct.spans if s.role == pb.SPAN_ROLE_RESPONSE)
        ctx = next(s for s in ct.spans if s.role == pb.SPAN_ROLE_CONTEXT)
        rows, ratios = monitored_rows(lm, ct.input_ids, ct.spans, [sae.hook_name], names)
        span = slice(resp.start, min(resp.end, resp.start + within))
        lookback.append(ratios[span].mean(0))
        latents.append(sae.encode(rows[sae.hook_name][span])[0].mean(0))
        overlap.append(context_overlap(ct.input_ids, (ctx.start, ctx.end), span))
    return RagFeatures(torch.stack(lookback), torch.stack(latents), torch.tensor(overlap)[:, None])


def build_rag_sets(lm: LoadedModel, out_dir: Path, train_limit: int = 160, test_limit: int = 110) -> dict[str, int]:
    """Answer and label the RAG questions; write train (for fitting), test and authored files.

    Each of train and test holds the source's own passages plus their counterfactual
    twins; train comes from FIT_SOURCE's train split, test from TEST_SOURCE's test split."""
    train = rag_questions(FIT_SOURCE, "train", train_limit)
    test = rag_questions(TEST_SOURCE, "test", test_limit)
    files = {
        "rag_train.jsonl": answer_and_label(lm, train + counterfactual(train)),
        "rag_test.jsonl": answer_and_label(lm, test + counterfactual(test)),
        "rag_authored.jsonl": answer_and_label(lm, authored_questions()),
    }
    for name, recs in files.items():
        write_rows(out_dir / name, recs)
    return {name: len(r) for name, r in files.items()}
