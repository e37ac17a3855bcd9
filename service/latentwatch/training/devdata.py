"""Access to the public dev sets in ``../shared/data/dev`` and the fixed split.

The split is a hash of the text, so it is the same on every machine and for
every command: anything trained (SAEs, probes) sees only ``train`` rows, and
every reported figure comes from ``test`` rows.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from latentwatch.jsonl import read_rows


def dev_data_dir() -> Path | None:
    """The dev-set folder, or None when this checkout has none beside it."""
    env = os.environ.get("LATENTWATCH_DEV_DATA")
    candidates = [Path(env)] if env else []
    checkout = Path(__file__).resolve().parents[3]  # service/latentwatch/training -> the repository
    for base in (checkout, Path.cwd()):
        candidates += [base.parent / "shared" / "data" / "dev", base / "shared" / "data" / "dev"]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def split_of(text: str, test_fraction: int = 5) -> str:
    """Return ``"test"`` for one text in ``test_fraction``, else ``"train"``."""
    h = int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16)
    return "test" if h % test_fraction == 0 else "train"


def refusal_instructions(split: str) -> tuple[list[str], list[str]]:
    """(harmful, harmless) instructions of one split; empty when no dev data."""
    root = dev_data_dir()
    if root is None:
        return [], []
    out = []
    for name in ("harmful_train.json", "harmless_train.json"):
        rows = json.loads((root / "refusal" / name).read_text())
        out.append([r["instruction"] for r in rows if split_of(r["instruction"]) == split])
    return out[0], out[1]


def dev_text() -> str:
    """All dev-set prompt text joined, to keep echoes of it out of shipped files."""
    parts: list[str] = []
    for split in ("train", "test"):
        harmful, harmless = refusal_instructions(split)
        parts += harmful + harmless
        parts += [r["question"] + "\n" + r["context"] for r in rag_rows(split)]
        parts += [r["context"] + "\n" + r["question"] for r in bbq_rows(split)]
        parts += [r["prompt"] + "\n" + r["response"] for r in jbb_rows(split)]
    return "\n".join(parts)


def rag_rows(split: str, source: str = "*") -> list[dict]:
    """CoConflictQA rows (``question``, ``context``, ``answers``, ...) of one split,
    from every file or from one ``source`` (a file's stem, e.g. ``coconflictqa_nq``)."""
    root = dev_data_dir()
    if root is None or not (root / "rag").is_dir():
        return []
    rows = [r for f in sorted((root / "rag").glob(f"{source}.jsonl")) for r in read_rows(f)]
    return [r for r in rows if split_of(r["question"] + r["context"]) == split]


def bbq_rows(split: str) -> list[dict]:
    """BBQ rows of one split (split by context, so a context's questions stay together)."""
    root = dev_data_dir()
    if root is None or not (root / "bias").is_dir():
        return []
    rows = [r for f in sorted((root / "bias").glob("*.jsonl")) for r in read_rows(f)]
    return [r for r in rows if split_of(r["context"]) == split]


def bbq_prompt(row: dict) -> str:
    """A BBQ item as the user turn the model answers (context, question, options)."""
    return (
        f"{row['context']} {row['question']}\n"
        f"A. {row['ans0']}\nB. {row['ans1']}\nC. {row['ans2']}\n"
        "Answer with A, B or C and a short reason."
    )


# JailbreakBench categories held apart whole: their goals, jailbreak prompts and
# responses are only ever measured on, never trained on.
JBB_TEST_CATEGORIES = ("Economic harm", "Privacy", "Expert advice")
# Models whose responses are held apart for the refusal detector: it must read
# refusals phrased the way assistants it never saw phrase them.
JBB_TEST_MODELS = ("gpt-4-0125-preview", "vicuna-13b-v1.5")


def jbb_rows(split: str) -> list[dict]:
    """JailbreakBench responses (``goal``, ``category``, ``prompt``, ``model``,
    ``response``, ``jailbroken``) whose category belongs to ``split``."""
    root = dev_data_dir()
    path = root / "refusal" / "jbb_responses.jsonl" if root else None
    if path is None or not path.is_file():
        return []
    want_test = split == "test"
    return [r for r in read_rows(path) if (r["category"] in JBB_TEST_CATEGORIES) == want_test]
