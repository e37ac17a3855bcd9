"""Offline batch scoring: ``latentwatch score FILE.jsonl``.

Input: one JSON object per line with
  ``messages``  chat turns, ``[{"role": "user", "content": "..."}]`` (required)
  ``context``   retrieved context placed before the last user turn (optional)
  ``response``  the assistant's answer to teacher-force (optional; or give it
                as the last ``assistant`` message)
  ``id``        a record id echoed in the output (optional; default: line number)
Output: one JSON line per record with each detector's final score, flag and
evidence. No server is needed: the engine runs in-process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from latentwatch.capture.chat import tokenize_chat
from latentwatch.capture.teacher_forced import monitored_rows
from latentwatch.models import LoadedModel
from latentwatch.sidecar.engine import Engine


class RecordError(ValueError):
    """A malformed input line; the message names the line."""


def read_records(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecordError(f"{path}:{lineno}: not JSON ({exc.msg})") from exc
            msgs = rec.get("messages") if isinstance(rec, dict) else None
            if (
                not isinstance(msgs, list)
                or not msgs
                or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in msgs
                )
            ):
                raise RecordError(f"{path}:{lineno}: needs `messages`, a list of {{role, content}} strings")
            yield lineno, rec


def score_record(engine: Engine, lm: LoadedModel, rec: dict, request_id: str) -> dict:
    ct = tokenize_chat(lm.tokenizer, rec["messages"], context=rec.get("context"), response=rec.get("response"))
    rows, lookback = monitored_rows(lm, ct.input_ids, ct.spans, engine.hook_names, engine.heads)
    attention = [(0, engine.heads, lookback)] if lookback is not None else []
    chunks = [(h, 0, rows[h]) for h in engine.hook_names]
    verdicts = engine.score(request_id, lm.model_id, ct.spans, chunks, attention).verdicts
    return {
        "id": request_id,
        "scores": {
            v.detector: {
                "score": round(v.score, 6),
                "flagged": v.flagged,
                "threshold": v.threshold,
                "token_span": [v.token_start, v.token_end],
                "low_confidence": v.low_confidence,
                "explanation": v.explanation,
                "evidence": [
                    {
                        "sae": e.sae_id,
                        "latent": e.index,
                        "activation": round(e.activation, 4),
                        "label": e.label,
                        "missing": e.missing,
                    }
                    for e in v.evidence
                ],
            }
            for v in verdicts
        },
    }


def score_file(engine: Engine, lm: LoadedModel, path: Path, out) -> int:
    """Score every record of ``path`` and write JSON lines to ``out``; return the count."""
    records = list(read_records(path))  # validate the whole file before any work
    for lineno, rec in tqdm(records, desc="scoring", unit="record"):
        out.write(json.dumps(score_record(engine, lm, rec, str(rec.get("id", lineno)))) + "\n")
    return len(records)
