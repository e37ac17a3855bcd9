"""``latentwatch steer-direction``: a refusal direction from the model's own behaviour.

Steering a flagged generation toward a refusal needs a direction along which
the model itself moves when it refuses *at the point where the edit starts*:
harmful_compliance flags once 16 response tokens have passed without a
refusal, so the model is mid-answer. The direction is a difference of means
(Arditi et al. 2024) taken in exactly that situation: each answer the model
gave to a train-split harmful request without refusing is cut after its first
``after`` tokens and continued two ways, by one of the model's own refusals
and by its own continuation; the mean residual over the next ``tokens``
tokens of the first minus that of the second. What differs is the decision
to stop and refuse, with topic and answer so far held equal.

Measured on Qwen (``bench/steering.py``, 32 held-apart complied prompts, its
strict refusal judge): 24 / 32 refusals with this direction at strength 0.6,
26 / 32 at 0.7; 21 / 32 at 0.6 with the plain difference over the first
response tokens of refusals vs compliances. Read at the prompt's last tokens
it turned 3 / 32 and the refusal probe's weights 0 / 13 (a probe separates
classes over the standardised residual and leans on dimensions the model
barely uses).

The answers are generated here (greedy, batched) and labelled by a refusal
prefix match, which fits models whose refusals are formulaic; pass ``--data``
to use answers labelled some other way.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from latentwatch.capture.chat import tokenize_chat
from latentwatch.capture.teacher_forced import transcript_rows
from latentwatch.models import LoadedModel
from latentwatch.training.baselines import opens_with_refusal
from latentwatch.training.corpus import generate_responses, user_turn
from latentwatch.training.devdata import jbb_rows, refusal_instructions

AFTER = 16  # harmful_compliance's window: the edit starts after this many response tokens
CONTINUATION = 8  # tokens after the cut the direction is read over
RESPONSE_TOKENS = AFTER + CONTINUATION  # generated per answer


def own_answers(lm: LoadedModel, max_new_tokens: int = RESPONSE_TOKENS) -> list[dict]:
    """The model's greedy answers to the train split's harmful requests (dev instructions and
    JailbreakBench goals), as records labelled 1 where the answer opens as a refusal."""
    harmful, _ = refusal_instructions("train")
    goals = sorted({r["goal"] for r in jbb_rows("train")})
    if not harmful:
        raise FileNotFoundError("the dev sets (../shared/data/dev/refusal) are needed to build a steering direction")
    answered = generate_responses(lm, [user_turn(p) for p in harmful + goals], max_new_tokens)
    return [
        {"messages": t[:-1], "response": t[-1]["content"], "label": int(opens_with_refusal(t[-1]["content"]))}
        for t in answered
    ]


@torch.no_grad()
def mean_difference(
    lm: LoadedModel, hook: str, records: list[dict], after: int = AFTER, tokens: int = CONTINUATION
) -> tuple[torch.Tensor, int]:
    """Refusal minus own continuation, mean residual at ``hook`` over the ``tokens`` tokens after
    the first ``after`` of each non-refusing answer (label 0) that is long enough; the refusals
    (label 1) are the model's own, used in turn. Returns the direction (not normalised) and the
    number of answers it was read from."""
    tok = lm.tokenizer
    refusals = [r["response"] for r in records if int(r["label"]) == 1]
    answers = [r for r in records if int(r["label"]) == 0]
    cts, refused = [], []  # each usable answer twice: continued by a refusal, then by itself
    for rec in answers if refusals else []:
        ids = tok(rec["response"], add_special_tokens=False)["input_ids"]
        if len(ids) < after + tokens // 2:
            continue
        prefix, own = tok.decode(ids[:after]), tok.decode(ids[after:])
        for is_refusal, rest in ((True, " " + refusals[len(cts) // 2 % len(refusals)].strip()), (False, own)):
            cts.append(tokenize_chat(tok, rec["messages"], response=prefix + rest))
            refused.append(is_refusal)
    used = len(cts) // 2
    sums: dict[bool, torch.Tensor] = {}
    for k, rows, _ in tqdm(transcript_rows(lm, cts, [hook], []), total=len(cts), desc="residuals", unit="answer"):
        start = cts[k].prompt_length + after
        sums[refused[k]] = sums.get(refused[k], 0) + rows[hook][start : start + tokens].mean(0)
    if not used:
        raise ValueError(
            f"a difference of means needs the model's own refusals and answers of {after + tokens // 2}+ tokens "
            f"that did not refuse; got {len(refusals)} refusals and {len(answers)} other answers, none usable"
        )
    return (sums[True] - sums[False]) / used, used


def save_direction(path: Path, direction: torch.Tensor, hook: str, counts: tuple[int, int]) -> None:
    """Write the direction where a spec's ``steer.direction`` can name it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"hook_name": hook, "refusals": str(counts[0]), "answers_read": str(counts[1]), "recipe": "mid_answer"}
    save_file({"direction": direction.float().contiguous()}, str(path), metadata=meta)
