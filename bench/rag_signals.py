"""Which internal signal separates answers that followed their passage from answers that ignored it?

A sweep, not a detector: for every attention head of the model (not just a
chosen few) and every RAG record of ``latentwatch make-eval-sets --sets rag``,
one eager forward gives per-response-token attention statistics; a logistic
probe over all heads of one statistic is fitted on ``rag_train`` and scored on
``rag_test`` (held-apart dev questions) and ``rag_authored`` (the project's
invented and counterfactual passages). Statistics, averaged over the first W
response tokens:

- ``ratio``: the monitor's lookback ratio, context mass / (context + generated mass);
- ``ratio_lens``: the Lookback Lens paper's form, with each mass divided by its
  span's length (mean attention per token), so the first answer tokens are not ~1;
- ``context_mass``: attention mass on the passage alone;
- ``copy_peak``: the largest attention any single passage token gets (copy heads).

Beside them: the SAE's mean latents (the detector's other input), the lexical
overlap baseline, the passage length, and what the "ignored" answers are made of
(how many still copy 6+ consecutive passage words; how many give the dev set's
parametric answer). Reproduce: ``python bench/rag_signals.py --data EVAL_DIR``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch
from latentwatch.capture.chat import tokenize_chat
from latentwatch.detectors.packs import pack_for_model
from latentwatch.detectors.saes import load_sae_dir
from latentwatch.jsonl import read_rows
from latentwatch.models import BUNDLED_MODEL, load_model
from latentwatch.training.baselines import lexical_overlap
from latentwatch.training.devdata import rag_rows
from latentwatch.training.evaluate import auroc
from latentwatch.training.probes import _logistic
from latentwatch.v1 import monitor_pb2 as pb

SETS = ("rag_train", "rag_test", "rag_authored")
STATS = ("ratio", "ratio_lens", "context_mass", "copy_peak")


@torch.no_grad()
def record_stats(lm, sae, rec: dict) -> dict:
    """Per response token and head: context mass, generated mass, peak single-token context attention."""
    ct = tokenize_chat(lm.tokenizer, rec["messages"], context=rec["context"], response=rec["response"])
    ctx = next(s for s in ct.spans if s.role == pb.SPAN_ROLE_CONTEXT)
    resp = next(s for s in ct.spans if s.role == pb.SPAN_ROLE_RESPONSE)
    captured = {}

    def keep(module, args, output) -> None:  # returns None: a forward hook's return value replaces the output
        captured["rows"] = (output[0] if isinstance(output, tuple) else output)[0].float()

    hook = lm.model.get_submodule(sae.hook_name).register_forward_hook(keep)
    try:
        out = lm.model(torch.tensor([ct.input_ids]), output_attentions=True)
    finally:
        hook.remove()
    A = torch.stack([a[0, :, resp.start : resp.end].float() for a in out.attentions])  # [L, H, T, S]
    A = A.flatten(0, 1).transpose(0, 1)  # [T, heads, S]
    q = torch.arange(resp.start, resp.end)[:, None, None]
    keys = torch.arange(A.shape[-1])[None, None, :]
    generated = (keys >= resp.start) & (keys < q)
    return {
        "context": A[..., ctx.start : ctx.end].sum(-1),
        "generated": (A * generated).sum(-1),
        "peak": A[..., ctx.start : ctx.end].amax(-1),
        "n_context": ctx.end - ctx.start,
        "latents": sae.encode(captured["rows"][resp.start : resp.end])[0].mean(0),
    }


def statistic(s: dict, name: str, window: int) -> torch.Tensor:
    c, g = s["context"][:window], s["generated"][:window]
    if name == "ratio":
        per_token = c / (c + g).clamp_min(1e-9)
    elif name == "ratio_lens":
        n_gen = torch.arange(c.shape[0]).clamp_min(1)[:, None]
        c_mean, g_mean = c / s["n_context"], g / n_gen
        per_token = c_mean / (c_mean + g_mean).clamp_min(1e-9)
    elif name == "context_mass":
        per_token = c
    else:
        per_token = s["peak"][:window]
    return per_token.mean(0)


def probe_auroc(X: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, float]:
    """Fit on rag_train (all features, L2), report AUROC for *ignored* on the other sets."""
    mean, scale = X["rag_train"].mean(0), X["rag_train"].std(0) + 1e-3
    followed = 1.0 - y["rag_train"]
    w, b = _logistic((X["rag_train"] - mean) / scale, followed, torch.ones_like(followed), l1=0.0, l2=1e-2, steps=400)
    out = {}
    for k in SETS:
        ignored_score = -(((X[k] - mean) / scale) @ w + b)
        out[k] = auroc(ignored_score[y[k] == 1], ignored_score[y[k] == 0])
    return out


def copies_passage(answer: str, context: str, n: int = 6) -> bool:
    words, ctx = re.findall(r"\w+", answer.lower()), " ".join(re.findall(r"\w+", context.lower()))
    return any(" ".join(words[i : i + n]) in ctx for i in range(len(words) - n + 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder with rag_train/rag_test/rag_authored.jsonl")
    ap.add_argument("--model", default=BUNDLED_MODEL, help="a bundled model; its pack's first SAE is read")
    args = ap.parse_args()
    lm = load_model(args.model)
    lm.model.set_attn_implementation("eager")  # attention weights of every head, for this sweep only
    sae = load_sae_dir(sorted(pack_for_model(lm.model_id).saes_dir.iterdir())[0])
    recs = {k: read_rows(Path(args.data) / f"{k}.jsonl") for k in SETS}
    stats = {k: [record_stats(lm, sae, r) for r in recs[k]] for k in SETS}
    y = {k: torch.tensor([float(r["label"]) for r in recs[k]]) for k in SETS}  # 1 = ignored
    print("records (ignored/all):", {k: f"{int(y[k].sum())}/{len(y[k])}" for k in SETS})
    print(f"{'signal':<26}" + "".join(f"{k:>14}" for k in SETS))
    for window in (8, 12, 32):
        for name in STATS:
            X = {k: torch.stack([statistic(s, name, window) for s in stats[k]]) for k in SETS}
            row = probe_auroc(X, y)
            print(f"{name + f' (first {window})':<26}" + "".join(f"{row[k]:>14.3f}" for k in SETS))
    row = probe_auroc({k: torch.stack([s["latents"] for s in stats[k]]) for k in SETS}, y)
    print(f"{'SAE latents (mean)':<26}" + "".join(f"{row[k]:>14.3f}" for k in SETS))
    for label, fn in (
        ("lexical overlap", lambda r, s: lexical_overlap(lm, None, r)),
        ("passage length", lambda r, s: float(s["n_context"])),
    ):
        row = {}
        for k in SETS:
            v = torch.tensor([fn(r, s) for r, s in zip(recs[k], stats[k], strict=True)])
            row[k] = auroc(v[y[k] == 1], v[y[k] == 0])
        print(f"{label:<26}" + "".join(f"{row[k]:>14.3f}" for k in SETS))
    parametric = {r["question"]: r["parametric_answer"] for split in ("train", "test") for r in rag_rows(split)}
    for k in SETS:
        ignored = [r for r in recs[k] if r["label"] == 1]
        copy = sum(copies_passage(r["response"], r["context"]) for r in ignored)
        par = sum(parametric.get(r["messages"][-1]["content"], "\0").lower() in r["response"].lower() for r in ignored)
        print(f"{k}: of {len(ignored)} ignored answers, {copy} copy 6+ passage words, {par} give the parametric answer")


if __name__ == "__main__":
    main()
