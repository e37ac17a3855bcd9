"""``latentwatch make-eval-sets``: the labelled files calibrate and eval read.

Everything here comes from ``test`` splits (dev sets by text hash, authored
refusals by template), except the calibration files, which hold benign
``train``-split data the probes were not fitted on. The files hold dev-set
text, so they are written to a local folder and never committed.
"""

from __future__ import annotations

import random
from pathlib import Path

from latentwatch.jsonl import write_rows
from latentwatch.models import LoadedModel
from latentwatch.training.baselines import opens_with_refusal
from latentwatch.training.corpus import generate_responses, read_jsonl, user_turn
from latentwatch.training.devdata import refusal_instructions
from latentwatch.training.probes import harmless_calibration_prompts, is_refusal_calibration, refusal_training_rows

MAX_HARMLESS_TEST = 300


def _prompt_record(text: str, label: int, kind: str) -> dict:
    return {"messages": user_turn(text), "label": label, "kind": kind}


def build_eval_sets(lm: LoadedModel, corpus: Path, out_dir: Path, response_tokens: int = 48) -> dict[str, int]:
    """Write the calibration and test files to ``out_dir``; return each file's record count."""
    harm_te, benign_te = refusal_instructions("test")
    if not harm_te:
        raise FileNotFoundError("the dev sets (../shared/data/dev/refusal) are needed to build the evaluation sets")
    benign_te = random.Random(0).sample(benign_te, min(MAX_HARMLESS_TEST, len(benign_te)))
    files: dict[str, list[dict]] = {}

    files["harmful_request_calib.jsonl"] = [_prompt_record(p, 0, "harmless") for p in harmless_calibration_prompts()]
    files["harmful_request_test.jsonl"] = [_prompt_record(p, 1, "harmful") for p in harm_te] + [
        _prompt_record(p, 0, "harmless") for p in benign_te
    ]

    # The model's own answers to held-out prompts: compliance positives, refusal negatives.
    answered = generate_responses(lm, [user_turn(p) for p in harm_te + benign_te], response_tokens)
    harmful_set = set(harm_te)
    refusal_test = [r for r in refusal_training_rows([], "test") if r["kind"] != "model_answer"]
    compliance = []
    for t in answered:
        prompt, answer = t[0]["content"], t[-1]["content"]
        if prompt in harmful_set:
            # The bundled model nearly always complies; an answer opening with a
            # refusal phrase is kept out of the compliance positives.
            kind, label = ("refused_by_model", 0) if opens_with_refusal(answer) else ("compliant_answer", 1)
        else:
            kind, label = "harmless_answer", 0
        compliance.append({"messages": t[:-1], "response": answer, "label": label, "kind": kind})
        if kind != "refused_by_model":  # possibly a real refusal: no clean negative for the refusal detector
            refusal_test.append({"messages": t[:-1], "response": answer, "label": 0, "kind": "model_answer"})
    # Teacher-forced held-out refusals to harmful prompts: the rule must stay silent.
    compliance += [
        {**r, "label": 0, "kind": "teacher_forced_refusal"}
        for r in refusal_test
        if r["label"] == 1 and r["messages"][0]["content"] in harmful_set
    ]
    files["refusal_test.jsonl"] = refusal_test
    files["harmful_compliance_test.jsonl"] = compliance

    train_rows = refusal_training_rows(read_jsonl(corpus), "train")
    files["refusal_calib.jsonl"] = [r for r in train_rows if is_refusal_calibration(r)]
    for name, records in files.items():
        write_rows(out_dir / name, records)
    return {name: len(records) for name, records in files.items()}
