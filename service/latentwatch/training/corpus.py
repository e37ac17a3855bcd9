"""Build the chat corpus the SAEs are trained on.

The monitor sees chat-formatted traffic, so the SAE must be trained on that
distribution: prompts in the model's chat template followed by the model's
own greedy responses. Prompts are the project's authored set plus the dev
sets' train split when present. ``latentwatch build-corpus`` writes it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

import torch
from tqdm import tqdm

from latentwatch.capture.chat import with_context
from latentwatch.jsonl import read_rows, write_rows
from latentwatch.models import LoadedModel
from latentwatch.training.devdata import bbq_prompt, bbq_rows, jbb_rows, rag_rows, refusal_instructions, split_of

DATA_DIR = Path(__file__).resolve().parent / "data"  # the authored sets (scripts/authoring/ writes them)
AUTHORED_PROMPTS = DATA_DIR / "prompts.jsonl"
# Retrieved passages longer than this stay out of the corpus: they would
# dominate it (and its generation time) with a few very long rows.
MAX_CONTEXT_CHARS = 1500
# Authored held-out prompts with the bundled model's answers: the fixed slice
# the tests measure shipped SAEs on.
HELDOUT_SLICE = DATA_DIR / "heldout_chat.jsonl"


def authored_prompts() -> list[dict]:
    """The project's own prompts: ``text``, ``label`` (1 harmful), ``kind``,
    and for ``rag`` rows ``context`` and ``answer``."""
    return read_rows(AUTHORED_PROMPTS)


def user_turn(text: str, context: str | None = None) -> list[dict]:
    """A one-turn prompt transcript, retrieved context folded in as the monitor sees it."""
    return with_context([{"role": "user", "content": text}], context)[0]


def prompt_only_transcripts(exclude: set[str]) -> list[list[dict]]:
    """Dev train-split prompts without answers: cheap extra user-turn text."""
    harmful, harmless = refusal_instructions("train")
    return [user_turn(p) for p in harmful + harmless if p not in exclude]


def other_model_transcripts(split: str = "train") -> list[list[dict]]:
    """JailbreakBench prompts with *other* chat models' answers (refusals in their
    phrasings, and complied harmful answers): chat text the model did not write,
    so the SAE also learns what the monitor sees when a client teacher-forces it."""
    rows = [r for r in jbb_rows(split) if len(r["prompt"]) <= MAX_CONTEXT_CHARS and r["response"].strip()]
    return [[*user_turn(r["prompt"]), {"role": "assistant", "content": r["response"]}] for r in rows]


def jbb_prompts(split: str, max_jailbreaks: int, rng: random.Random) -> list[list[dict]]:
    """JailbreakBench goals (plain harmful requests) and a sample of the
    jailbreak-wrapped prompts built on them, for the model to answer: a
    jailbreak is where a model that usually refuses complies."""
    rows = jbb_rows(split)
    goals = sorted({r["goal"] for r in rows})
    wrapped = sorted({r["prompt"] for r in rows if r["prompt"] != r["goal"] and len(r["prompt"]) <= MAX_CONTEXT_CHARS})
    sample = rng.sample(wrapped, min(max_jailbreaks, len(wrapped)))
    return [user_turn(g) for g in goals] + [user_turn(p) for p in sample]


def corpus_prompts(
    max_dev_harmless: int = 350,
    max_dev_rag: int = 200,
    max_dev_bbq: int = 150,
    max_jailbreaks: int = 100,
    seed: int = 0,
) -> list[list[dict]]:
    """Prompt transcripts for the SAE corpus, all from ``train`` splits.

    The authored set (benign, harmful, look-alike, retrieval with passages,
    demographic topics) plus samples of the dev sets' train splits: harmful
    and harmless instructions, retrieval questions with their passages, BBQ
    items, JailbreakBench goals and jailbreak prompts. Held-out (``test``)
    rows of every source are left for measurement.
    """
    rng = random.Random(seed)
    harmful, harmless = refusal_instructions("train")
    prompts = [user_turn(a["text"], a.get("context")) for a in authored_prompts() if split_of(a["text"]) == "train"]
    prompts += [user_turn(p) for p in harmful + rng.sample(harmless, min(max_dev_harmless, len(harmless)))]
    rag = [r for r in rag_rows("train") if len(r["context"]) <= MAX_CONTEXT_CHARS]
    prompts += [user_turn(r["question"], r["context"]) for r in rng.sample(rag, min(max_dev_rag, len(rag)))]
    bbq = bbq_rows("train")
    prompts += [user_turn(bbq_prompt(r)) for r in rng.sample(bbq, min(max_dev_bbq, len(bbq)))]
    prompts += jbb_prompts("train", max_jailbreaks, rng)
    rng.shuffle(prompts)
    return prompts


def heldout_prompts(per_source: int = 60, seed: int = 0) -> list[list[dict]]:
    """Prompt transcripts of the ``test`` split of every source: the authored
    set (all of it) and samples of each dev set. SAE quality is measured on
    these and the model's answers to them; no SAE trains on them."""
    rng = random.Random(seed)
    prompts = [user_turn(a["text"], a.get("context")) for a in authored_prompts() if split_of(a["text"]) == "test"]
    harmful, harmless = refusal_instructions("test")
    rag = [r for r in rag_rows("test") if len(r["context"]) <= MAX_CONTEXT_CHARS]
    bbq = bbq_rows("test")
    prompts += [user_turn(p) for p in rng.sample(harmful, min(per_source, len(harmful)))]
    prompts += [user_turn(p) for p in rng.sample(harmless, min(per_source, len(harmless)))]
    prompts += [user_turn(r["question"], r["context"]) for r in rng.sample(rag, min(per_source, len(rag)))]
    prompts += [user_turn(bbq_prompt(r)) for r in rng.sample(bbq, min(per_source, len(bbq)))]
    prompts += jbb_prompts("test", per_source, rng)
    return prompts


def shippable_transcripts(transcripts: list[list[dict]]) -> list[list[dict]]:
    """Transcripts whose text may be stored in the project (latent contexts).

    The dev sets' text must never be copied into the project, so a transcript
    whose user turn is not one of the project's authored prompts keeps only
    the model's own answer.
    """
    authored = {m["content"] for a in authored_prompts() for m in user_turn(a["text"], a.get("context"))}
    out = []
    for messages in transcripts:
        if all(m["content"] in authored for m in messages if m["role"] == "user"):
            out.append(messages)
        else:
            answer = [m for m in messages if m["role"] == "assistant" and m["content"]]
            if answer:
                out.append(answer)
    return out


@torch.no_grad()
def generate_responses(
    lm: LoadedModel, prompts: list[list[dict]], max_new_tokens: int = 48, batch_size: int = 16
) -> list[list[dict]]:
    """Greedy-generate a response to each prompt transcript; return the transcripts with it."""
    tok = lm.tokenizer
    tok.padding_side = "left"
    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    # Batch prompts of similar length together: padding a short prompt to a
    # long passage's length costs as much as the passage itself.
    order = sorted(range(len(prompts)), key=lambda i: len(texts[i]))
    replies: dict[int, str] = {}
    for b in tqdm(range(0, len(order), batch_size), desc="generating", unit="batch"):
        idx = order[b : b + batch_size]
        enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        gen = lm.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        for i, row in zip(idx, gen[:, enc["input_ids"].shape[1] :], strict=True):
            replies[i] = tok.decode(row, skip_special_tokens=True).strip()
    return [[*p, {"role": "assistant", "content": replies[i]}] for i, p in enumerate(prompts)]


def build_corpus(
    lm: LoadedModel,
    path: Path,
    response_tokens: int = 48,
    seed: int = 0,
    limit: int | None = None,
    heldout_slice: Path | None = None,
) -> tuple[int, int]:
    """Write the SAE training corpus to ``path`` and its held-out twin beside
    it (``heldout_path``); return both transcript counts.

    Training: every ``corpus_prompts`` prompt with the model's greedy answer,
    then the remaining dev train-split instructions as prompt-only transcripts
    and other chat models' answers (more text at no generation cost). Held-out: ``heldout_prompts``
    with the model's answers, plus other chat models' answers to held-apart
    JailbreakBench categories. ``limit`` keeps the first prompts of each part (a
    quick check). With ``heldout_slice``, the held-out transcripts of authored
    prompts (text the project may store) are also written there: the slice the
    SAE tests read (``HELDOUT_SLICE`` in a checkout). Deterministic for a given
    model, dev-set folder and seed.
    """
    answered = generate_responses(lm, corpus_prompts(seed=seed)[:limit], response_tokens)
    asked = {m["content"] for t in answered for m in t if m["role"] == "user"}
    transcripts = answered + prompt_only_transcripts(exclude=asked)[:limit] + other_model_transcripts("train")[:limit]
    write_jsonl(path, transcripts)
    heldout = generate_responses(lm, heldout_prompts(seed=seed)[:limit], response_tokens)
    others = other_model_transcripts("test")
    heldout_others = random.Random(seed).sample(others, min(100, len(others)))[:limit]
    write_jsonl(heldout_path(path), heldout + heldout_others)
    if heldout_slice is not None:
        authored = {m["content"] for a in authored_prompts() for m in user_turn(a["text"], a.get("context"))}
        write_jsonl(heldout_slice, [t for t in heldout if t[0]["content"] in authored])
    return len(transcripts), len(heldout)


def heldout_path(corpus: Path) -> Path:
    return corpus.with_name(corpus.stem + ".heldout.jsonl")


def write_jsonl(path: Path, transcripts: Iterable[list[dict]]) -> None:
    write_rows(path, ({"messages": messages} for messages in transcripts))


def read_jsonl(path: Path) -> list[list[dict]]:
    return [row["messages"] for row in read_rows(path)]


def transcript_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a transcript in the model's chat template; a base model
    without one (e.g. Gemma 3 270M) gets the turns' text joined by blank lines."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    ids = tokenizer("\n\n".join(m["content"] for m in messages))["input_ids"]
    return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


def pack_tokens(tokenizer, transcripts: list[list[dict]], context_size: int) -> list[list[int]]:
    """Tokenize transcripts in the chat template and pack them into rows.

    A row may start mid-transcript; its position 0 then acts as the attention
    sink, which training skips (``seqpos_slice``), as the monitor skips
    position 0 of every request.
    """
    stream: list[int] = []
    for messages in transcripts:
        stream.extend(transcript_ids(tokenizer, messages))
    return [stream[i : i + context_size] for i in range(0, len(stream) - context_size + 1, context_size)]
