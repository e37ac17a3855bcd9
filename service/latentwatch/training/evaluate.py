"""``latentwatch calibrate`` and ``latentwatch eval``: thresholds and accuracy.

Both score records exactly as the monitor does: a teacher-forced forward,
then the engine fed in small chunks as a stream would feed it, so window
detectors and absence rules behave as in production and the first flag's
position is known. Records use the ``latentwatch score`` input format plus
``label`` (1 positive, 0 negative; calibration reads only label-0 rows).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from latentwatch.capture.chat import tokenize_chat
from latentwatch.capture.score import read_records
from latentwatch.capture.teacher_forced import transcript_rows
from latentwatch.detectors.base import DetectorSpec
from latentwatch.jsonl import read_rows
from latentwatch.models import LoadedModel
from latentwatch.sidecar.engine import Engine
from latentwatch.training import baselines

STREAM_CHUNK = 4  # tokens per chunk when replaying a record as a stream
WINDOW = 64  # records whose rows are held at once (batched forwards fill it)


@dataclass
class Scored:
    label: int
    score: float
    flagged: bool
    first_flag: int | None  # response-token index of the first flag while streaming


def score_records(
    engine: Engine, lm: LoadedModel, detector: str, records: list[dict], batch_size: int = 8
) -> list[Scored]:
    """Each record's final score under ``detector``, replayed as a stream (forwards batched)."""
    cts = [tokenize_chat(lm.tokenizer, r["messages"], context=r.get("context"), response=r.get("response"))
           for r in records]  # fmt: skip
    out: list[Scored | None] = [None] * len(records)
    with tqdm(total=len(records), desc=f"scoring {detector}", unit="record", leave=False) as bar:
        for w in range(0, len(records), WINDOW):
            window = range(w, min(w + WINDOW, len(records)))
            for k, rows, lookback in transcript_rows(
                lm, [cts[i] for i in window], engine.hook_names, engine.heads, batch_size
            ):
                n = window[k]
                out[n] = _replay(engine, lm, detector, f"eval-{n}", cts[n], rows, lookback, records[n])
                bar.update()
    return out


def _replay(engine: Engine, lm: LoadedModel, detector: str, rid: str, ct, rows, lookback, rec: dict) -> Scored:
    """Feed one transcript's rows to the engine in stream-sized chunks; note the first flag."""
    engine.start(rid, lm.model_id, ct.spans)
    first = None
    for start in range(0, len(ct.input_ids), STREAM_CHUNK):
        end = start + STREAM_CHUNK
        flags = []
        if lookback is not None:  # attention statistics travel beside the activations
            flags += engine.add_attention(rid, start, engine.heads, lookback[start:end]).verdicts
        ids = torch.tensor(ct.input_ids[start:end])  # as a capture sends them
        for hook in engine.hook_names:
            flags += engine.add_chunk(rid, hook, start, rows[hook][start:end], ids).verdicts
        if first is None and any(v.detector == detector for v in flags):
            first = max(0, min(end, len(ct.input_ids)) - ct.prompt_length)
    v = {v.detector: v for v in engine.end(rid).verdicts}.get(detector)
    return Scored(label=int(rec.get("label", 0)), score=v.score if v else 0.0, flagged=bool(v and v.flagged),
                  first_flag=first)  # fmt: skip


def auroc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Probability a positive outscores a negative (ties count half)."""
    p, n = pos[:, None], neg[None, :]
    return float((p > n).float().mean() + 0.5 * (p == n).float().mean())


def threshold_at_fpr(benign: torch.Tensor, fpr: float) -> float:
    """The smallest threshold that flags at most ``fpr`` of the benign scores."""
    return float(torch.quantile(benign.double(), 1.0 - fpr)) + 1e-6


def summary(pos: torch.Tensor, neg: torch.Tensor, threshold: float) -> dict:
    """AUROC, TPR at 1% and 5% FPR (thresholds set on these negatives), and
    precision/recall/F1 and FPR at ``threshold``."""
    tp = float((pos >= threshold).sum())
    fp = float((neg >= threshold).sum())
    precision = tp / max(tp + fp, 1.0)
    recall = tp / max(len(pos), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    return {
        "auroc": round(auroc(pos, neg), 4),
        "tpr_at_1pct_fpr": round(float((pos >= threshold_at_fpr(neg, 0.01)).float().mean()), 4),
        "tpr_at_5pct_fpr": round(float((pos >= threshold_at_fpr(neg, 0.05)).float().mean()), 4),
        "threshold": round(threshold, 6),
        "tpr_at_threshold": round(recall, 4),
        "fpr_at_threshold": round(fp / max(len(neg), 1), 4),
        "precision": round(precision, 4),
        "f1": round(f1, 4),
    }


def roc_points(pos: torch.Tensor, neg: torch.Tensor) -> tuple[list[float], list[float]]:
    cuts = torch.cat([torch.tensor([float("inf")]), torch.sort(torch.cat([pos, neg]), descending=True).values])
    return [float((neg >= c).float().mean()) for c in cuts], [float((pos >= c).float().mean()) for c in cuts]


def evaluate(engine: Engine, lm: LoadedModel, spec: DetectorSpec, data: Path, roc_png: Path | None = None) -> dict:
    """The detector and its spec's baselines on one labelled file, side by side."""
    records = [rec for _, rec in read_records(data)]
    labels = {int(r.get("label", -1)) for r in records}
    if not labels <= {0, 1} or labels != {0, 1}:
        raise ValueError(f"{data}: eval needs records labelled 1 and 0 (`label`); found labels {sorted(labels)}")
    scored = score_records(engine, lm, spec.name, records)
    y = torch.tensor([s.label for s in scored])
    det = torch.tensor([s.score for s in scored])
    report = {
        "detector": spec.name,
        "data": str(data),
        "positives": int(y.sum()),
        "negatives": int((1 - y).sum()),
        spec.name: summary(det[y == 1], det[y == 0], spec.threshold),
    }
    pairs = twin_win_rate(records, det)
    if pairs:
        report[spec.name]["twin_win_rate"], report[spec.name]["twin_pairs"] = pairs
    firsts = [s.first_flag for s in scored if s.label == 1 and s.first_flag is not None]
    if firsts:
        report[spec.name]["median_first_flag_response_token"] = statistics.median(firsts)
    curves = {spec.name: roc_points(det[y == 1], det[y == 0])}
    for name in spec.baselines:
        fn = baselines.get(name)
        b = torch.tensor([fn(lm, spec, r) for r in tqdm(records, desc=name, unit="record", leave=False)])
        # A baseline has no calibrated threshold of its own: use the one that gives the
        # spec's target FPR on these negatives (or 0.5 for binary baselines).
        binary = set(b.unique().tolist()) <= {0.0, 1.0}
        thr = 0.5 if binary else threshold_at_fpr(b[y == 0], spec.target_fpr)
        report[name] = summary(b[y == 1], b[y == 0], thr)
        pairs = twin_win_rate(records, b)
        if pairs:
            report[name]["twin_win_rate"], report[name]["twin_pairs"] = pairs
        curves[name] = roc_points(b[y == 1], b[y == 0])
    if roc_png is not None:
        plot_roc(curves, f"{spec.name} on {data.name}", roc_png)
        report["roc_png"] = str(roc_png)
    return report


def twin_win_rate(records: list[dict], scores: torch.Tensor) -> tuple[float, int] | None:
    """Share of minimal pairs (records sharing a ``pair`` id) where the positive outscores its
    counter-stereotypical twin (a label-0 record whose ``kind`` ends in ``counter``); ties count half."""
    pos: dict = {}
    twin: dict = {}
    for rec, sc in zip(records, scores.tolist(), strict=True):
        if "pair" not in rec:
            continue
        if rec.get("label") == 1:
            pos[rec["pair"]] = sc
        elif str(rec.get("kind", "")).endswith("counter"):
            twin[rec["pair"]] = sc
    both = [k for k in pos if k in twin]
    if not both:
        return None
    wins = sum(1.0 if pos[k] > twin[k] else 0.5 if pos[k] == twin[k] else 0.0 for k in both)
    return round(wins / len(both), 4), len(both)


def plot_roc(curves: dict[str, tuple[list[float], list[float]]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (fpr, tpr) in curves.items():
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def calibrate(engine: Engine, lm: LoadedModel, spec: DetectorSpec, data: Path, fpr: float | None = None) -> dict:
    """Set the spec's threshold so at most ``fpr`` of the benign records flag; write the spec."""
    if spec.kind == "absence":
        raise ValueError(f"{spec.name} is an absence rule: calibrate its trigger and expected detectors instead")
    fpr = spec.target_fpr if fpr is None else fpr
    records = [rec for _, rec in read_records(data) if int(rec.get("label", 0)) == 0]
    if len(records) < 1 / fpr:
        raise ValueError(f"{data}: {len(records)} benign records cannot resolve a {fpr:.1%} false-positive rate")
    scores = torch.tensor([s.score for s in score_records(engine, lm, spec.name, records)])
    spec.calibrated(threshold_at_fpr(scores, fpr), len(records), data.name, fpr)
    spec.path.write_text(spec.to_yaml())
    return {"detector": spec.name, "threshold": spec.threshold, **spec.calibration}


def read_eval_set(path: Path, sets: str) -> list[dict]:
    """A labelled file ``latentwatch make-eval-sets --sets SETS`` writes; says how to make it when missing."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run `latentwatch make-eval-sets --sets {sets} --out {path.parent}`"
        )
    return read_rows(path)
