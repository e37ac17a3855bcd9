"""Build the chat corpus the SAEs are trained on.

The monitor sees chat-formatted traffic, so the SAE must be trained on that
distribution: prompts in the model's chat template followed by the model's
own greedy responses. Prompts are the project's authored set plus the dev
sets' train split when present.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path

import torch
from latentwatch.devdata import refusal_instructions
from latentwatch.models import LoadedModel
from tqdm import tqdm

AUTHORED_PROMPTS = Path(__file__).resolve().parent.parent / "detectors" / "data" / "prompts.jsonl"


def authored_prompts() -> list[dict]:
    """The project's own prompts: ``text``, ``label`` (1 harmful), ``kind``."""
    return [json.loads(line) for line in AUTHORED_PROMPTS.read_text().splitlines() if line.strip()]


def prompt_only_transcripts(exclude: set[str]) -> list[list[dict]]:
    """Dev train-split prompts without answers: cheap extra user-turn text."""
    harmful, harmless = refusal_instructions("train")
    return [[{"role": "user", "content": p}] for p in harmful + harmless if p not in exclude]


def corpus_prompts(max_dev_harmless: int = 600, seed: int = 0) -> list[str]:
    """Authored prompts plus a sample of the dev train split."""
    harmful, harmless = refusal_instructions("train")
    rng = random.Random(seed)
    harmless = rng.sample(harmless, min(max_dev_harmless, len(harmless)))
    prompts = [p["text"] for p in authored_prompts()] + harmful + harmless
    rng.shuffle(prompts)
    return prompts


def shippable_transcripts(transcripts: list[list[dict]]) -> list[list[dict]]:
    """Transcripts whose text may be stored in the project (latent contexts).

    The dev sets' text must never be copied into the project, so a transcript
    whose user turn is not one of the project's authored prompts keeps only
    the model's own answer.
    """
    authored = {p["text"] for p in authored_prompts()}
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
    lm: LoadedModel, prompts: list[str], max_new_tokens: int = 48, batch_size: int = 16
) -> list[list[dict]]:
    """Greedy-generate a response per prompt; return chat transcripts."""
    tok = lm.tokenizer
    tok.padding_side = "left"
    out: list[list[dict]] = []
    for i in tqdm(range(0, len(prompts), batch_size), desc="generating", unit="batch"):
        batch = prompts[i : i + batch_size]
        texts = [
            tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in batch
        ]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        gen = lm.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        for p, row in zip(batch, gen[:, enc["input_ids"].shape[1] :], strict=True):
            reply = tok.decode(row, skip_special_tokens=True).strip()
            out.append([{"role": "user", "content": p}, {"role": "assistant", "content": reply}])
    return out


def write_jsonl(path: Path, transcripts: Iterable[list[dict]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for messages in transcripts:
            fh.write(json.dumps({"messages": messages}) + "\n")


def read_jsonl(path: Path) -> list[list[dict]]:
    return [json.loads(line)["messages"] for line in path.read_text().splitlines() if line.strip()]


def pack_tokens(tokenizer, transcripts: list[list[dict]], context_size: int) -> list[list[int]]:
    """Tokenize transcripts in the chat template and pack them into rows.

    A row may start mid-transcript; its position 0 then acts as the attention
    sink, which training skips (``seqpos_slice``), as the monitor skips
    position 0 of every request.
    """
    stream: list[int] = []
    for messages in transcripts:
        stream.extend(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    return [stream[i : i + context_size] for i in range(0, len(stream) - context_size + 1, context_size)]
