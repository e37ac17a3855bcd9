"""Which live signal tells an answer that ignored its passage from one that used it?

A sweep, not a detector. For every RAG record of ``latentwatch make-eval-sets
--sets rag`` (fitting: SQuAD passages and their counterfactual twins; test:
Natural Questions passages and theirs, a source never fitted on; authored:
the project's invented and counterfactual passages), one eager forward gives,
per response token and for *every* attention head:

- ``lookback``: the monitor's lookback ratio, context mass / (context + generated mass);
- ``copy``: attention on context positions that follow an earlier occurrence of the
  current token (where a copying head looks for the next token to emit; live at
  the current position, from token ids the sidecar receives);
- ``context_norm``: the norm of the head's output drawn from context positions alone
  (attention-weighted values through the head's slice of ``o_proj``);

beside them the SAE's latents, ``overlap`` (the share of response tokens whose id
occurs in the context, a per-token count from ids), and the offline teacher: a
second forward without the passage gives ``delta`` = log p(token | passage) -
log p(token | no passage) per answer token. Each signal is pooled over the first
W answer tokens, fitted (logistic, L2) on the fitting set and scored on the other
two, alone and combined; the lexical-overlap baseline is scored on the same
records. Reproduce: ``python bench/rag_signals.py --data EVAL_DIR --model M``.

Measured 2026-12-08 on qwen2.5-coder-0.5b-instruct (2-core CPU: 20 min for the 424
records' forwards, then ``--cache`` reruns in about a minute); AUROC for *ignored* on the
held-apart source (Natural Questions, 160 answers, 61 ignored), first 16 answer tokens:
every head's lookback 0.60, copy 0.67, context norm 0.59, latents 0.58, overlap 0.64, all
of them 0.66; the with/without-context teacher itself 0.59; lexical overlap 0.54. The
fitting source reads 0.98-1.00 for the all-head probes: they fit noise. Why: of the 61
ignored answers only 3 give the model's own memory; the other 58 misread the passage (by
inspection of 25, mostly naming another entity from it), and the teacher shows such a
misread entity as context-driven (+8 to +9 nats on its first token), so no context-reliance
signal can separate them. Memory answers against followed ones: teacher 0.90 on the
fitting source (4 positives), 0.56 held apart (3): too few to fit or measure.
"""

from __future__ import annotations

import argparse
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
from latentwatch.training.rag import followed
from latentwatch.v1 import monitor_pb2 as pb

SETS = ("rag_train", "rag_test", "rag_authored")
HEAD_STATS = ("lookback", "copy", "context_norm")
MAX_TOKENS = 32


@torch.no_grad()
def record_stats(lm, sae, rec: dict) -> dict:
    """Per answer token (first MAX_TOKENS): every head's statistics, latents, overlap and the teacher."""
    ct = tokenize_chat(lm.tokenizer, rec["messages"], context=rec["context"], response=rec["response"])
    ctx = next(s for s in ct.spans if s.role == pb.SPAN_ROLE_CONTEXT)
    resp = next(s for s in ct.spans if s.role == pb.SPAN_ROLE_RESPONSE)
    end = min(resp.end, resp.start + MAX_TOKENS)
    ids = torch.tensor(ct.input_ids)
    cfg = lm.model.config
    layers = lm.model.model.layers
    hd = cfg.hidden_size // cfg.num_attention_heads
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    values, captured = {}, {}

    def keep_v(i):
        def fn(module, args, output) -> None:
            values[i] = output[0].float()  # [S, n_kv * hd]

        return fn

    def keep_rows(module, args, output) -> None:
        captured["rows"] = (output[0] if isinstance(output, tuple) else output)[0].float()

    hooks = [layer.self_attn.v_proj.register_forward_hook(keep_v(i)) for i, layer in enumerate(layers)]
    hooks.append(lm.model.get_submodule(sae.hook_name).register_forward_hook(keep_rows))
    try:
        out = lm.model(ids[None], output_attentions=True)
    finally:
        for h in hooks:
            h.remove()
    q = torch.arange(resp.start, end)
    keys = torch.arange(len(ids))
    generated = (keys[None] >= resp.start) & (keys[None] < q[:, None])  # [T, S]
    follows_same = torch.zeros(len(q), len(ids), dtype=torch.bool)  # key j in context with ids[j-1] == ids[query]
    prev = ids[ctx.start - 1 : ctx.end - 1]
    follows_same[:, ctx.start : ctx.end] = prev[None] == ids[q][:, None]
    ctx_mass, gen_mass, copy, norm = [], [], [], []
    for i, a in enumerate(out.attentions):
        a = a[0, :, resp.start : end].float()  # [H, T, S]
        ctx_mass.append(a[..., ctx.start : ctx.end].sum(-1))
        gen_mass.append((a * generated).sum(-1))
        copy.append((a * follows_same).sum(-1))
        v = values[i][ctx.start : ctx.end].view(-1, cfg.num_key_value_heads, hd)  # [C, kv, hd]
        v = v.repeat_interleave(group, dim=1)  # [C, H, hd]
        mixed = torch.einsum("htc,chd->htd", a[..., ctx.start : ctx.end], v)  # [H, T, hd]
        w_o = layers[i].self_attn.o_proj.weight.float().view(cfg.hidden_size, cfg.num_attention_heads, hd)
        norm.append(torch.einsum("htd,ohd->hto", mixed, w_o).norm(dim=-1))
    stack = lambda xs: torch.cat(xs).T  # noqa: E731  [T, L * H]
    c, g = stack(ctx_mass), stack(gen_mass)
    logp = torch.log_softmax(out.logits[0, resp.start - 1 : end - 1].float(), -1)
    tok = ids[resp.start : end]
    with_ctx = logp.gather(1, tok[:, None])[:, 0]
    bare = tokenize_chat(lm.tokenizer, rec["messages"], response=rec["response"])
    bare_resp = next(s for s in bare.spans if s.role == pb.SPAN_ROLE_RESPONSE)
    bare_ids = bare.input_ids[: bare_resp.start + (end - resp.start)]
    logits = lm.model(torch.tensor([bare_ids])).logits[0, bare_resp.start - 1 : -1].float()
    without = torch.log_softmax(logits, -1).gather(1, torch.tensor(bare_ids[bare_resp.start :])[:, None])[:, 0]
    context_ids = set(ids[ctx.start : ctx.end].tolist())
    return {
        "lookback": c / (c + g).clamp_min(1e-9),
        "copy": stack(copy),
        "context_norm": stack(norm),
        "latents": sae.encode(captured["rows"][resp.start : end])[0].half(),
        "overlap": torch.tensor([float(t in context_ids) for t in tok.tolist()]),
        "delta": with_ctx - without,
    }


def pooled(s: dict, name: str, window: int) -> torch.Tensor:
    x = s[name][:window].float()
    return x.mean(0) if x.dim() == 2 else x.mean()[None]


def ignored_auroc(score: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per set, AUROC of ``score`` (high = ignored) for the ignored answers."""
    return {k: auroc(score[k][y[k] == 1], score[k][y[k] == 0]) for k in SETS}


def fit_and_score(X: dict[str, torch.Tensor], y: dict[str, torch.Tensor], l2: float = 1e-2) -> dict[str, float]:
    """Logistic probe (followed = 1) on rag_train; AUROC of the *ignored* score on every set."""
    mean, scale = X["rag_train"].mean(0), X["rag_train"].std(0) + 1e-3
    followed = 1.0 - y["rag_train"]
    w, b = _logistic((X["rag_train"] - mean) / scale, followed, torch.ones_like(followed), l1=0.0, l2=l2, steps=400)
    return ignored_auroc({k: -(((X[k] - mean) / scale) @ w + b) for k in SETS}, y)


def teacher_probe(stats: dict, y: dict, window: int, l2: float = 10.0) -> dict[str, float]:
    """Ridge regression from each answer token's latents to its teacher value (fitted on
    rag_train tokens); a record's score is its tokens' mean prediction (low = ignored)."""
    X = torch.cat([s["latents"][:window].float() for s in stats["rag_train"]])
    t = torch.cat([s["delta"][:window] for s in stats["rag_train"]]).clamp(-10, 10)
    mean = X.mean(0)
    A = (X - mean).T @ (X - mean) + l2 * torch.eye(X.shape[1])
    w = torch.linalg.solve(A, (X - mean).T @ (t - t.mean()))
    predicted = {k: torch.tensor([float(((s["latents"][:window].float() - mean) @ w).mean()) for s in stats[k]])
                 for k in SETS}  # fmt: skip
    return ignored_auroc({k: -v for k, v in predicted.items()}, y)


def from_memory(records: list[dict]) -> list[bool]:
    """Which ignored answers give the model's memory rather than another passage entity: the
    dev set's parametric answer, or (for a counterfactual twin) the entity the swap replaced,
    read from the twin's original record."""
    parametric = {r["question"]: r["parametric_answer"] for split in ("train", "test") for r in rag_rows(split)}
    original = {r["messages"][-1]["content"]: r["answers"] for r in records if r["kind"] == "dev"}
    out = []
    for r in records:
        q = r["messages"][-1]["content"]
        memory = [parametric.get(q, "")] if r["kind"] == "dev" else original.get(q, [])
        out.append(r["label"] == 1 and followed(r["response"], memory))
    return out


def row(label: str, scores: dict[str, float]) -> None:
    print(f"{label:<40}" + "".join(f"{scores[k]:>14.3f}" for k in SETS))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder with rag_train/rag_test/rag_authored.jsonl")
    ap.add_argument("--model", default=BUNDLED_MODEL, help="a bundled model; its pack's first SAE is read")
    ap.add_argument("--windows", default="8,12,16,32", help="answer-token windows to pool over")
    ap.add_argument("--cache", help="save/load the per-record statistics here (a .pt file of tensors only)")
    args = ap.parse_args()
    recs = {k: read_rows(Path(args.data) / f"{k}.jsonl") for k in SETS}
    lm = load_model(args.model)
    sae = load_sae_dir(sorted(pack_for_model(lm.model_id).saes_dir.iterdir())[0])
    if args.cache and Path(args.cache).exists():
        stats = torch.load(args.cache, weights_only=True)
    else:
        lm.model.set_attn_implementation("eager")  # attention weights of every head, for this sweep only
        stats = {k: [record_stats(lm, sae, r) for r in recs[k]] for k in SETS}
        if args.cache:
            torch.save(stats, args.cache)
    y = {k: torch.tensor([float(r["label"]) for r in recs[k]]) for k in SETS}  # 1 = ignored
    print("records (ignored/all):", {k: f"{int(y[k].sum())}/{len(y[k])}" for k in SETS})
    memory = {k: from_memory(recs[k]) for k in SETS}
    for k in SETS:
        print(f"{k}: of {int(y[k].sum())} ignored answers, {sum(memory[k])} give the model's memory, "
              f"the rest another entity or none from the passage")  # fmt: skip
    print(f"{'signal (AUROC for ignored)':<40}" + "".join(f"{k:>14}" for k in SETS))
    lexical = {k: torch.tensor([lexical_overlap(lm, None, r) for r in recs[k]]) for k in SETS}
    row("lexical overlap baseline (words)", ignored_auroc(lexical, y))
    for window in [int(w) for w in args.windows.split(",")]:
        print(f"-- first {window} answer tokens")
        teacher = {k: -torch.stack([pooled(s, "delta", window) for s in stats[k]])[:, 0] for k in SETS}
        row("teacher: mean log p(with) - log p(without)", ignored_auroc(teacher, y))
        # memory answers against followed ones only (misreadings left out)
        keep = {k: torch.tensor([m or r["label"] == 0 for m, r in zip(memory[k], recs[k], strict=True)]) for k in SETS}
        only = {k: torch.tensor([float(m) for m in memory[k]])[keep[k]] for k in SETS}
        row("teacher, memory vs followed only", ignored_auroc({k: teacher[k][keep[k]] for k in SETS}, only))
        feats = {name: {k: torch.stack([pooled(s, name, window) for s in stats[k]]) for k in SETS}
                 for name in (*HEAD_STATS, "latents", "overlap")}  # fmt: skip
        for name, X in feats.items():
            row(f"{name}", fit_and_score(X, y))
        combos = (("lookback", "copy"), ("lookback", "copy", "context_norm"), ("latents", "overlap"),
                  ("lookback", "copy", "latents", "overlap"), (*HEAD_STATS, "latents", "overlap"))  # fmt: skip
        row("latents -> teacher (per-token ridge)", teacher_probe(stats, y, window))
        for combo in combos:
            X = {k: torch.cat([feats[n][k] for n in combo], dim=1) for k in SETS}
            row(" + ".join(combo), fit_and_score(X, y, l2=3e-2))


if __name__ == "__main__":
    main()
