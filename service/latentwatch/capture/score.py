"""Offline batch scoring: ``latentwatch score FILE.jsonl``.

Input: one JSON object per line with
  ``messages``  chat turns, ``[{"role": "user", "content": "..."}]`` (required)
  ``context``   retrieved context placed before the last user turn (optional)
  ``response``  the assistant's answer to teacher-force (optional; or give it
                as the last ``assistant`` message)
  ``id``        a record id echoed in the output (optional; default: line number)
Output: one JSON line per record with each detector's final score, flag,
evidence and ``top_tokens`` (the token positions carrying most of the score,
with their shares of its logit). No server is needed: the engine runs in-process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from latentwatch.capture.chat import tokenize_chat
from latentwatch.capture.teacher_forced import transcript_rows
from latentwatch.models import LoadedModel
from latentwatch.sidecar.engine import Chunk, Engine

TOP_TOKENS = 8  # attributed positions each detector's output lists


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


WINDOW = 256  # records read, sorted by length and scored before their lines are written, in input order


def score_records(engine: Engine, lm: LoadedModel, records: list[tuple[str, dict]], batch_size: int = 8) -> list[dict]:
    """Score records (``(request id, record)``) with batched forwards; outputs in input order.

    Forwards are batched and stop at the deepest monitored layer
    (``teacher_forced.transcript_rows``); each batch's chunks then go through the engine
    together (``Engine.add_chunks``: one SAE encode per SAE for the batch)."""
    cts = [tokenize_chat(lm.tokenizer, r["messages"], context=r.get("context"), response=r.get("response"))
           for _, r in records]  # fmt: skip
    out: list[dict] = [{}] * len(records)

    def score(group: list[tuple[int, dict[str, torch.Tensor], torch.Tensor | None]]) -> None:
        """One engine pass for a group of transcripts: one ``add_chunks`` call for all their chunks."""
        for i, _, ratios in group:
            engine.start(f"score-{i}", lm.model_id, cts[i].spans)  # ids of our own: record ids may repeat
            if ratios is not None:
                engine.add_attention(f"score-{i}", 0, engine.heads, ratios)
        ids = {i: torch.tensor(cts[i].input_ids) for i, _, _ in group}  # as a capture sends them
        chunks = [Chunk(f"score-{i}", h, 0, rows[h], ids[i][: len(rows[h])])
                  for i, rows, _ in group for h in engine.hook_names]  # fmt: skip
        for result in engine.add_chunks(chunks):
            if isinstance(result, Exception):
                raise result
        for i, _, _ in group:
            out[i] = _output(records[i][0], engine.end(f"score-{i}").verdicts)
        group.clear()

    group: list[tuple[int, dict[str, torch.Tensor], torch.Tensor | None]] = []
    for item in transcript_rows(lm, cts, engine.hook_names, engine.heads, batch_size):
        group.append(item)
        if len(group) == batch_size:
            score(group)
    score(group)
    return out


def _output(request_id: str, verdicts) -> dict:
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
                "top_tokens": [
                    {"position": a.position, "contribution": round(a.contribution, 4)}
                    for a in sorted(v.attribution, key=lambda a: -a.contribution)[:TOP_TOKENS]
                    if not a.expected
                ],
            }
            for v in verdicts
        },
    }


def score_file(engine: Engine, lm: LoadedModel, path: Path, out, batch_size: int = 8) -> int:
    """Score every record of ``path`` and write JSON lines to ``out``; return the count."""
    records = [(str(rec.get("id", lineno)), rec) for lineno, rec in read_records(path)]  # validate all first
    with tqdm(total=len(records), desc="scoring", unit="record") as bar:
        for w in range(0, len(records), WINDOW):
            window = records[w : w + WINDOW]
            for result in score_records(engine, lm, window, batch_size):
                out.write(json.dumps(result) + "\n")
            bar.update(len(window))
    return len(records)
