"""``latentwatch steer-direction``: a refusal direction from the model's own behaviour.

Steering a flagged generation toward a refusal needs a direction along which
the model itself moves when it refuses. A probe's weights are a poor choice:
they are fitted to *separate* classes over the standardised residual, so they
lean on low-variance dimensions the model barely uses (measured on Qwen: the
refusal probe's direction turned 0 of 13 complied answers into refusals). The
difference of means is the direction the activations actually travel
(Arditi et al. 2024, "Refusal in language models is mediated by a single
direction"): the mean residual over the model's own refusals minus the mean
over its own compliances, both answering harmful requests of the train split,
so the topic cancels and what is left is the decision to refuse.

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
from latentwatch.capture.teacher_forced import residual_rows
from latentwatch.models import LoadedModel
from latentwatch.training.baselines import opens_with_refusal
from latentwatch.training.corpus import generate_responses, user_turn
from latentwatch.training.devdata import jbb_rows, refusal_instructions

# The steering edit starts once harmful_compliance has watched this many response
# tokens, so the direction is read over the answer's opening, where refusals are decided.
RESPONSE_TOKENS = 24


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
def mean_difference(lm: LoadedModel, hook: str, records: list[dict], tokens: int = RESPONSE_TOKENS) -> torch.Tensor:
    """Mean residual at ``hook`` over the first ``tokens`` response tokens of records labelled 1,
    minus the same over records labelled 0: [d_model], not normalised."""
    sums, counts = {}, {0: 0, 1: 0}
    for rec in tqdm(records, desc="residuals", unit="answer"):
        ct = tokenize_chat(lm.tokenizer, rec["messages"], response=rec["response"])
        start = ct.prompt_length
        rows = residual_rows(lm, ct.input_ids, [hook])[hook][start : start + tokens]
        if not len(rows):
            continue
        label = int(rec["label"])
        sums[label] = sums.get(label, 0) + rows.mean(0)
        counts[label] += 1
    if not counts[0] or not counts[1]:
        raise ValueError(
            f"a difference of means needs answers of both kinds; got {counts[1]} refusals, {counts[0]} others"
        )
    return sums[1] / counts[1] - sums[0] / counts[0]


def save_direction(path: Path, direction: torch.Tensor, hook: str, counts: tuple[int, int]) -> None:
    """Write the direction where a spec's ``steer.direction`` can name it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"hook_name": hook, "refusals": str(counts[0]), "others": str(counts[1]), "recipe": "mean_difference"}
    save_file({"direction": direction.float().contiguous()}, str(path), metadata=meta)
