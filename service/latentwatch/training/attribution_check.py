"""``latentwatch check-attribution``: are an alert's attributed tokens the ones that matter?

For every record the detector flags, delete the ``k`` prompt (user-span) tokens its
attribution ranks highest and score the shortened transcript again; do the same
with ``k`` random tokens of the same span, several draws. The attribution is
faithful for that alert when deleting its top tokens lowers the score's logit
more than deleting random ones does (on average over the draws). Logits, not
scores: a score near 1 can lose a lot of evidence and barely move.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import replace

from latentwatch.capture.chat import ChatTokens, tokenize_chat
from latentwatch.capture.teacher_forced import transcript_rows
from latentwatch.detectors.base import Span
from latentwatch.models import LoadedModel
from latentwatch.sidecar.engine import Engine
from latentwatch.v1 import monitor_pb2 as pb


def delete_positions(ct: ChatTokens, positions: set[int]) -> ChatTokens:
    """The transcript without the tokens at ``positions``, its spans shifted to match."""

    def shift(p: int) -> int:
        return p - sum(1 for q in positions if q < p)

    spans = [Span(s.role, shift(s.start), shift(s.end) if s.end else 0) for s in ct.spans]
    ids = [t for i, t in enumerate(ct.input_ids) if i not in positions]
    return replace(ct, input_ids=ids, spans=spans, prompt_length=shift(ct.prompt_length))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def final_verdicts(engine: Engine, lm: LoadedModel, cts: list[ChatTokens], detector: str, batch_size: int = 8):
    """Each transcript's final verdict of ``detector`` (None where it did not score)."""
    out = [None] * len(cts)
    for k, rows, _ in transcript_rows(lm, cts, engine.hook_names, [], batch_size):
        chunks = [(h, 0, rows[h]) for h in engine.hook_names]
        verdicts = engine.score(f"attr-{k}", lm.model_id, cts[k].spans, chunks).verdicts
        out[k] = next((v for v in verdicts if v.detector == detector), None)
    return out


def check_attribution(
    engine: Engine, lm: LoadedModel, detector: str, records: list[dict], k: int = 3, draws: int = 5, seed: int = 0
) -> dict:
    """The share of flagged records whose top-``k`` attributed prompt tokens matter more
    than ``k`` random ones of the same span, with the median logit drops."""
    cts = [tokenize_chat(lm.tokenizer, r["messages"], context=r.get("context"), response=r.get("response"))
           for r in records]  # fmt: skip
    base = final_verdicts(engine, lm, cts, detector)
    rng = random.Random(seed)
    trials, variants, skipped = [], [], 0
    for ct, v in zip(cts, base, strict=True):
        if v is None or not v.flagged:
            continue
        user = sorted(p for s in ct.spans if s.role == pb.SPAN_ROLE_USER for p in range(s.start, s.end))
        ranked = sorted((a for a in v.attribution if a.position in set(user) and a.contribution > 0),
                        key=lambda a: -a.contribution)[:k]  # fmt: skip
        if len(ranked) < k or len(user) <= k:
            skipped += 1
            continue
        sets = [{a.position for a in ranked}] + [set(rng.sample(user, k)) for _ in range(draws)]
        trials.append((len(variants), _logit(v.score)))
        variants += [delete_positions(ct, s) for s in sets]
    after = final_verdicts(engine, lm, variants, detector)
    wins, per_draw, top_drops, random_drops = 0, [], [], []
    for first, before in trials:
        drops = [before - _logit(a.score if a is not None else 0.0) for a in after[first : first + draws + 1]]
        top, randoms = drops[0], drops[1:]
        wins += top > statistics.fmean(randoms)
        per_draw += [top > r for r in randoms]
        top_drops.append(top)
        random_drops.append(statistics.fmean(randoms))
    n = len(trials)
    return {
        "detector": detector,
        "records": len(records),
        "alerts": n + skipped,
        "checked": n,
        "skipped_fewer_than_k_attributed_prompt_tokens": skipped,
        "k": k,
        "random_draws": draws,
        "top_beats_random_mean": round(wins / n, 4) if n else None,
        "top_beats_random_per_draw": round(sum(per_draw) / len(per_draw), 4) if per_draw else None,
        "median_logit_drop_top": round(statistics.median(top_drops), 4) if n else None,
        "median_logit_drop_random": round(statistics.median(random_drops), 4) if n else None,
    }
