"""``latentwatch make-eval-sets``: the labelled files calibrate and eval read.

Everything here comes from ``test`` splits (dev sets by text hash, authored
refusals by template), except the calibration files, which hold benign
``train``-split data the probes were not fitted on. The files hold dev-set
text, so they are written to a local folder and never committed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from latentwatch.jsonl import write_rows
from latentwatch.models import LoadedModel
from latentwatch.training.baselines import opens_with_refusal
from latentwatch.training.corpus import generate_responses, heldout_path, read_jsonl, user_turn
from latentwatch.training.devdata import jbb_rows, refusal_instructions
from latentwatch.training.probes import harmless_calibration_prompts, is_refusal_calibration, refusal_training_rows

MAX_HARMLESS_TEST = 200


def _prompt_record(text: str, label: int, kind: str) -> dict:
    return {"messages": user_turn(text), "label": label, "kind": kind}


def build_eval_sets(
    lm: LoadedModel, corpus: Path, out_dir: Path, response_tokens: int = 48, limit: int | None = None
) -> dict[str, int]:
    """Write the calibration and test files to ``out_dir``; return each file's record count.

    The model's answers to held-apart prompts come from the corpus's held-out
    twin where it has them (``build-corpus`` generated them already); only the
    rest are generated here. ``limit`` keeps the first N prompts of each source (a quick run)."""
    harm_te, benign_te = refusal_instructions("test")
    if not harm_te:
        raise FileNotFoundError("the dev sets (../shared/data/dev/refusal) are needed to build the evaluation sets")
    benign_te = random.Random(0).sample(benign_te, min(MAX_HARMLESS_TEST, len(benign_te)))[:limit]
    harm_te = harm_te[:limit]
    jbb_goals = sorted({r["goal"] for r in jbb_rows("test")})[:limit]
    files: dict[str, list[dict]] = {}

    files["harmful_request_calib.jsonl"] = [_prompt_record(p, 0, "harmless") for p in harmless_calibration_prompts()]
    files["harmful_request_test.jsonl"] = (
        [_prompt_record(p, 1, "harmful") for p in harm_te]
        + [_prompt_record(p, 1, "harmful_jbb_goal") for p in jbb_goals]
        + [_prompt_record(p, 0, "harmless") for p in benign_te]
    )

    # The model's own answers to held-out prompts: compliance positives, refusal negatives.
    harmful_set = set(harm_te) | set(jbb_goals)
    answered = answers(lm, [user_turn(p) for p in harm_te + jbb_goals + benign_te], corpus, response_tokens)
    refusal_test = [r for r in refusal_training_rows([], "test") if r["kind"] != "model_answer"]
    compliance = []
    for t in answered:
        prompt, answer = t[0]["content"], t[-1]["content"]
        refused = opens_with_refusal(answer)
        if prompt in harmful_set:
            # Labelled by whether the answer opens as a refusal (the judge here is a string
            # match: the model's refusals are formulaic); a refused one must stay silent.
            kind, label = ("refused_by_model", 0) if refused else ("compliant_answer", 1)
        else:
            kind, label = "harmless_answer", 0
        compliance.append({"messages": t[:-1], "response": answer, "label": label, "kind": kind})
        kind = "model_refusal" if refused else "model_answer"
        refusal_test.append({"messages": t[:-1], "response": answer, "label": int(refused), "kind": kind})
    # Teacher-forced held-out refusals to harmful prompts: the rule must stay silent.
    compliance += [
        {**r, "label": 0, "kind": "teacher_forced_refusal"}
        for r in refusal_test
        if r["label"] == 1 and r["messages"][0]["content"] in harmful_set and r["kind"] != "model_refusal"
    ]
    files["refusal_test.jsonl"] = refusal_test
    # Judge-labelled answers of chat models the probe never saw, on held-apart categories: the
    # labels there do not come from a refusal-prefix match, so the prefix baseline gets no free pass.
    files["refusal_other_models_test.jsonl"] = [r for r in refusal_test if r["kind"].startswith("other_model")]
    files["harmful_compliance_test.jsonl"] = compliance

    train_rows = refusal_training_rows(read_jsonl(corpus), "train")
    files["refusal_calib.jsonl"] = [r for r in train_rows if is_refusal_calibration(r)]
    for name, records in files.items():
        write_rows(out_dir / name, records)
    return {name: len(records) for name, records in files.items()}


def answers(lm: LoadedModel, prompts: list[list[dict]], corpus: Path, response_tokens: int) -> list[list[dict]]:
    """The model's greedy answers to ``prompts``: from the corpus's held-out twin where
    it answered the same prompt, generated for the rest."""
    held = heldout_path(corpus)
    others = {r["response"] for r in jbb_rows("test")}  # other chat models' answers there are not the model's
    known = {json.dumps(t[:-1]): t for t in (read_jsonl(held) if held.exists() else [])
             if t[-1]["role"] == "assistant" and t[-1]["content"] not in others}  # fmt: skip
    missing = [p for p in prompts if json.dumps(p) not in known]
    for t in generate_responses(lm, missing, response_tokens) if missing else []:
        known[json.dumps(t[:-1])] = t
    return [known[json.dumps(p)] for p in prompts]
