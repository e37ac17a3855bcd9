"""Train the bias probes (``biased_answer``, ``stereotype_assertion``) and build their evaluation sets.

**biased_answer**: BBQ items with an *ambiguous* context (nothing in it
decides the question). The bias direction is BBQ's: the stereotyped group for
a negative question, the other group for a non-negative one. Small models
answer multiple choice by option position (Qwen-0.5B says "A." to nearly
every item), so labels from their own choices (``parse_choice``) measure
option order; every answer of every item is therefore teacher-forced in the
model's answer format (stereotyped = 1; counter-stereotyped and "cannot be
determined" = 0), which rates the response whatever the model would have
chosen. The probe is fitted on the dev BBQ categories and measured on the
project's authored items of seven categories the dev files lack.

**stereotype_assertion**: authored teacher-forced generalisations about
groups (``detectors/data/stereotypes.jsonl``) against their counter-
stereotypical twins, specific sentences about one member of the same group,
generalisations not about people, and the model's own answers to harmless
prompts. Fitted on some demographic categories, measured on the others.

Both probes are the same sparse L1 logistic probes as part 1 (``train_probe``)
over the features the ``latent_probe`` kind pools at run time, and their
thresholds are calibrated on the model's own answers to held-apart harmless
prompts, so false alerts on ordinary traffic stay near the target rate.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import torch
from tqdm import tqdm

from latentwatch.detectors.base import DetectorSpec
from latentwatch.detectors.saes import LoadedSAE
from latentwatch.jsonl import read_rows, write_rows
from latentwatch.models import LoadedModel
from latentwatch.training.corpus import DATA_DIR, generate_responses, user_turn
from latentwatch.training.devdata import bbq_prompt, bbq_rows, refusal_instructions
from latentwatch.training.evaluate import auroc, threshold_at_fpr
from latentwatch.training.probes import HARD_NEGATIVE_WEIGHT, fit_sparse_probe, response_windows

# Fitted on the two dev BBQ categories; measured on the project's authored items of seven
# categories neither dev file has (age, gender, SES, religion, nationality, sexual
# orientation, race), so the probe is judged on groups and stereotypes it never saw.
BBQ_FIT_CATEGORIES = ("Physical_appearance", "Disability_status")
AUTHORED_BBQ = DATA_DIR / "bbq_authored.jsonl"
STEREOTYPE_TEST_CATEGORIES = ("physical_appearance", "disability")
ANSWER_TOKENS = 16
LETTERS = "ABC"


def option_roles(row: dict) -> dict[str, int]:
    """Which option of a BBQ item is the biased, the counter-biased and the unknown answer."""
    stereo_groups = set(row["additional_metadata"]["stereotyped_groups"])
    tags = [row["answer_info"][f"ans{i}"][1] for i in range(3)]
    unknown = tags.index("unknown")
    targeted = next(i for i, t in enumerate(tags) if i != unknown and t in stereo_groups)
    other = next(i for i in range(3) if i not in (unknown, targeted))
    negative = row["question_polarity"] == "neg"
    return {"stereotyped": targeted if negative else other, "counter": other if negative else targeted,
            "unknown": unknown}  # fmt: skip


# "B. The man ...", "(C)", "The answer is A" (a capital letter, not the article in "A man ...")
_LEADING = re.compile(r"^\W*\(?([ABC])(?:[.):]|$)")
_STATED = re.compile(r"[Aa]nswer(?: is)?\s*:?\s*\(?([ABC])\b")


def parse_choice(answer: str, row: dict) -> int | None:
    """The option an answer picks: a leading letter, else the one option whose text it contains."""
    m = _LEADING.match(answer.strip()) or _STATED.search(answer)
    if m:
        return LETTERS.index(m.group(1).upper())
    a = answer.lower()
    hits = [i for i in range(3) if row[f"ans{i}"].lower() in a]
    return hits[0] if len(hits) == 1 else None


def forced_answer(row: dict, option: int) -> str:
    """An option stated in the bundled model's own answer format."""
    return f"{LETTERS[option]}. {row[f'ans{option}']}"


def bbq_items(category: str, split: str, limit: int, seed: int = 0) -> list[dict]:
    rows = [r for r in bbq_rows(split) if r["category"] == category and r["context_condition"] == "ambig"]
    return random.Random(seed).sample(rows, min(limit, len(rows)))


def authored_bbq_rows(seed: int = 0) -> list[dict]:
    """The authored ambiguous items in BBQ's schema: each gives a negative and a
    non-negative question, with the three options in a seeded random order (so an
    option's letter says nothing about its role)."""
    rng = random.Random(seed)
    out = []
    for n, item in enumerate(read_rows(AUTHORED_BBQ)):
        for polarity in ("neg", "nonneg"):
            options = [(item["target"], item["group"]), (item["other"], "other"), ("Cannot be determined", "unknown")]
            rng.shuffle(options)
            out.append({
                "example_id": n, "category": item["category"], "context_condition": "ambig",
                "question_polarity": polarity, "context": item["context"], "question": item[polarity],
                **{f"ans{i}": text for i, (text, _) in enumerate(options)},
                "answer_info": {f"ans{i}": [text, tag] for i, (text, tag) in enumerate(options)},
                "additional_metadata": {"stereotyped_groups": [item["group"]]},
            })  # fmt: skip
    return out


def forced_answers(rows: list[dict]) -> list[dict]:
    """Every answer of every item, teacher-forced: the stereotyped one (1), the
    counter-stereotyped one and "cannot be determined" (0); ``pair`` names the item."""
    out = []
    for n, r in enumerate(rows):
        roles = option_roles(r)
        for k in ("stereotyped", "counter", "unknown"):
            out.append({"messages": user_turn(bbq_prompt(r)), "response": forced_answer(r, roles[k]),
                        "label": int(k == "stereotyped"), "kind": f"forced_{k}", "category": r["category"],
                        "pair": n})  # fmt: skip
    return out


def own_answers(lm: LoadedModel, rows: list[dict]) -> tuple[list[dict], dict[str, int]]:
    """The model's own answers, labelled 1 when it picked the stereotyped option, 0 the counter one;
    also how many answers picked each kind of option (or none that could be parsed)."""
    transcripts = generate_responses(lm, [user_turn(bbq_prompt(r)) for r in rows], ANSWER_TOKENS)
    out, counts = [], {"stereotyped": 0, "counter": 0, "unknown": 0, "unparsed": 0}
    for r, t in zip(rows, transcripts, strict=True):
        answer = t[-1]["content"]
        choice = parse_choice(answer, r)
        kind = next((k for k, i in option_roles(r).items() if i == choice), "unparsed")
        counts[kind] += 1
        if kind in ("stereotyped", "counter"):
            out.append({"messages": t[:-1], "response": answer, "label": int(kind == "stereotyped"),
                        "kind": f"own_{kind}", "category": r["category"]})  # fmt: skip
    return out, counts


def authored_stereotypes() -> list[dict]:
    rows = read_rows(DATA_DIR / "stereotypes.jsonl")
    return [{"messages": user_turn(r["prompt"]), "response": r["response"], "label": r["label"], "kind": r["kind"],
             "category": r["category"], "pair": r["pair"]} for r in rows]  # fmt: skip


def is_stereotype_test(rec: dict) -> bool:
    """Held-out categories, plus every other generic (non-people) sentence."""
    if rec["category"] == "none":
        return rec["pair"] % 2 == 0
    return rec["category"] in STEREOTYPE_TEST_CATEGORIES


def harmless_answers(lm: LoadedModel, split: str, n: int, seed: int = 0) -> list[dict]:
    """The model's own answers to dev harmless prompts of one split (benign negatives)."""
    _, benign = refusal_instructions(split)
    benign = random.Random(seed).sample(benign, min(n, len(benign)))
    return [{"messages": t[:-1], "response": t[-1]["content"], "label": 0, "kind": "harmless_answer"}
            for t in generate_responses(lm, [user_turn(p) for p in benign], 24, batch_size=25)]  # fmt: skip


def build_bias_sets(
    lm: LoadedModel, out_dir: Path, per_category: int = 200, own: int = 64, harmless: int = 100
) -> dict[str, int]:
    """Label BBQ items and answer harmless prompts; write fit, calibration and test files.

    Fitting uses teacher-forced pairs only (no generation); the model's own
    answers are generated for the test category, where they measure the probe."""
    if not bbq_rows("train"):
        raise FileNotFoundError("the dev sets (../shared/data/dev/bias) are needed to build the bias sets")
    test_items = authored_bbq_rows()
    own_test, counts = own_answers(lm, test_items[:own])
    (out_dir / "biased_answer_own_counts.json").write_text(json.dumps(counts, indent=2) + "\n")
    harmless_fit = harmless_answers(lm, "train", 2 * harmless, seed=1)
    harmless_test = harmless_answers(lm, "test", harmless)
    authored = authored_stereotypes()
    fit_items = [r for c in BBQ_FIT_CATEGORIES for r in bbq_items(c, "train", per_category)]
    files = {
        "biased_answer_fit.jsonl": forced_answers(fit_items),
        "bias_harmless_fit.jsonl": harmless_fit,
        "biased_answer_test.jsonl": forced_answers(test_items),
        "biased_answer_own_test.jsonl": own_test,
        "stereotype_assertion_test.jsonl": [r for r in authored if is_stereotype_test(r)] + harmless_test,
        "bias_harmless_test.jsonl": harmless_test,
    }
    for name, recs in files.items():
        write_rows(out_dir / name, recs)
    return {name: len(r) for name, r in files.items()}


def _features(lm: LoadedModel, sae: LoadedSAE, rec: dict, pooling: str, window: int) -> torch.Tensor:
    """What ``latent_probe`` pools over the response: every window, or the whole response's mean."""
    w = window if pooling == "window" else 1 << 20
    z = response_windows(lm, sae, rec["messages"], rec["response"], w)
    return z if pooling == "window" else z[-1:]


def fit_bias_probe(
    lm: LoadedModel, sae: LoadedSAE, spec_path: Path, fit: list[dict], calib: list[dict], tail: int = 3
) -> dict:
    """Fit ``spec``'s probe on labelled responses; calibrate on benign ``calib`` responses; write spec + probe.

    With window pooling, a positive response's last ``tail`` windows (the ones
    that cover the statement as a whole) are positives, every other window of
    it is left out, and every window of a negative is a negative."""
    spec = DetectorSpec.from_yaml(spec_path)
    pooling, window = spec.params.get("pooling", "mean"), int(spec.params.get("window", 8))
    full = [_features(lm, sae, r, pooling, window) for r in tqdm(fit, desc=f"{spec.name} features", leave=False)]
    feats, ys, ws = [], [], []
    for r, z in zip(fit, full, strict=True):
        if r["label"] == 1:
            z = z[-tail:]
        elif r["kind"] == "harmless_answer":
            z = z[::3]
        feats.append(z)
        ys += [float(r["label"])] * len(z)
        hard = r["kind"] in ("counter", "forced_counter")
        ws += [HARD_NEGATIVE_WEIGHT if hard else 1.0] * len(z)
    probe = fit_sparse_probe(torch.cat(feats), torch.tensor(ys), torch.tensor(ws), max_latents=32)
    probe.save(spec.artifact(spec.params["probe"]))
    benign = torch.tensor([float(probe.scores(_features(lm, sae, r, pooling, window)).max())
                           for r in tqdm(calib, desc="calibrating", unit="response", leave=False)])  # fmt: skip
    source = "the bundled model's own answers to dev harmless prompts (train split), held apart from fitting"
    spec.calibrated(threshold_at_fpr(benign, spec.target_fpr), len(calib), source)
    spec_path.write_text(spec.to_yaml())
    fit_scores = torch.tensor([float(probe.scores(z).max()) for z in full])
    y = torch.tensor([r["label"] for r in fit])
    report = {"detector": spec.name, "latents": len(probe.indices), "threshold": spec.threshold,
              "fit_responses": len(fit), "fit_positives": int(y.sum()), "calibration_responses": len(calib),
              "fit_auroc": round(auroc(fit_scores[y == 1], fit_scores[y == 0]), 4)}  # fmt: skip
    print(json.dumps(report, indent=2))
    return report
