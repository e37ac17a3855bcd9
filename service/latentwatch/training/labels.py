"""Automatic latent labels, two kinds, each scored on text it was not made from.

- **input** labels: the tokens a latent fires on most distinctively (tokens
  whose share of its top activations most exceeds their share of the sample),
  with its top-activating windows stored as ``top_contexts.json``.
- **output** labels (``→ a / b``): the tokens a latent promotes, its decoder row
  through the final norm and the unembedding (one matmul). Published work finds
  these describe a latent's effect better than activation-based labels.

Scoring, without an LLM (after delphi's detection scorer): on a held-apart half
of the sample, can the label's tokens pick the latent's top-activating positions
out of random positions where it is silent? An input label is hit when the
position's token is one of its tokens, an output label when the next token is.
The score is the balanced accuracy (0.5: no better than chance, 1: perfect).
``labels.json`` keeps the better-scoring label per latent (what alerts and
``explain`` show); ``label_scores.json`` keeps both with their scores.
Labels are hints for a human reading an alert, not ground truth.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from latentwatch.capture.teacher_forced import batched_residuals
from latentwatch.detectors.saes import LABELS_FILE, LoadedSAE
from latentwatch.models import LoadedModel
from latentwatch.training.corpus import pack_tokens
from latentwatch.training.devdata import dev_text

CONTEXTS_FILE = "top_contexts.json"
SCORES_FILE = "label_scores.json"
TOP_N = 12
WINDOW = 6  # tokens before the firing token kept in a context
LABEL_TOKENS = 3  # tokens per label
SCORED = 10  # top-activating and silent positions per latent when scoring a label
ROW = 128  # tokens per packed row


@dataclass
class _Sample:
    """Token ids of a packed sample (sink dropped), each latent's top activations, and
    the latents at a fixed random draw of positions."""

    ids: list[int]
    row_len: int
    top_vals: torch.Tensor  # [d_sae, TOP_N]
    top_pos: torch.Tensor  # [d_sae, TOP_N] indices into ids
    random_pos: torch.Tensor  # [R]
    random_z: torch.Tensor  # [R, d_sae]


@torch.no_grad()
def _scan(lm: LoadedModel, sae: LoadedSAE, transcripts: list[list[dict]], max_tokens: int, desc: str) -> _Sample:
    rows = pack_tokens(lm.tokenizer, transcripts, ROW)[: max(1, max_tokens // ROW)]
    total = len(rows) * (ROW - 1)
    random_pos = torch.randperm(total, generator=torch.Generator().manual_seed(0))[: 40 * SCORED].sort().values
    random_z = torch.zeros(len(random_pos), sae.d_sae)
    top_vals = torch.full((sae.d_sae, TOP_N), -1.0)
    top_pos = torch.zeros((sae.d_sae, TOP_N), dtype=torch.long)
    flat_ids: list[int] = []
    batches = batched_residuals(lm, rows, sae.hook_name)
    for ids, acts in tqdm(batches, total=-(-len(rows) // 8), desc=desc, unit="batch"):
        z = sae.sae.encode(acts)
        base = len(flat_ids)
        flat_ids.extend(ids.tolist())
        pos = torch.arange(base, base + ids.shape[0])
        here = (random_pos >= base) & (random_pos < base + ids.shape[0])
        random_z[here] = z[random_pos[here] - base].float()
        vals, idx = torch.topk(z.T, k=min(TOP_N, z.shape[0]), dim=1)
        merged_v = torch.cat([top_vals, vals], 1)
        merged_p = torch.cat([top_pos, pos[idx]], 1)
        keep = torch.topk(merged_v, TOP_N, dim=1).indices
        top_vals, top_pos = merged_v.gather(1, keep), merged_p.gather(1, keep)
    return _Sample(flat_ids, ROW - 1, top_vals, top_pos, random_pos, random_z)


def _words(tokenizer, ids: list[int]) -> list[str]:
    return list(dict.fromkeys(tokenizer.decode([t]).strip() or repr(tokenizer.decode([t])) for t in ids))


@torch.no_grad()
def promoted_tokens(lm: LoadedModel, sae: LoadedSAE, k: int = LABEL_TOKENS, chunk: int = 512) -> dict[int, list[int]]:
    """The ``k`` tokens each latent's decoder row raises most: the row through the model's
    final norm and its unembedding (special tokens left out)."""
    norm = getattr(getattr(lm.model, "model", None), "norm", None) or torch.nn.Identity()
    unembed = lm.model.get_output_embeddings().weight.float()
    special = torch.tensor(sorted(set(lm.tokenizer.all_special_ids)), dtype=torch.long)
    out: dict[int, list[int]] = {}
    W = sae.sae.W_dec.detach().float()
    for start in range(0, W.shape[0], chunk):
        logits = norm(W[start : start + chunk].to(unembed.dtype)) @ unembed.T
        logits[:, special[special < logits.shape[1]]] = -torch.inf
        for i, row in enumerate(torch.topk(logits, k, dim=1).indices.tolist()):
            out[start + i] = row
    return out


def score_label(sample: _Sample, latent: int, tokens: list[int], offset: int) -> float | None:
    """Balanced accuracy of "the token at position + ``offset`` is one of ``tokens``" at
    telling the latent's top-activating positions from random silent ones (None if it
    never fires in the sample)."""
    live = sample.top_vals[latent] > 0
    if not live.any() or not tokens:
        return None
    wanted = set(tokens)

    def hit(p: int) -> bool:
        q = p + offset
        return (q // sample.row_len == p // sample.row_len) and sample.ids[q] in wanted

    top = sample.top_pos[latent][live].tolist()[:SCORED]
    silent = sample.random_pos[sample.random_z[:, latent] <= 0].tolist()[:SCORED]
    tpr = sum(map(hit, top)) / len(top)
    tnr = 1 - sum(map(hit, silent)) / max(len(silent), 1)
    return round(0.5 * (tpr + tnr), 4)


@torch.no_grad()
def label_latents(
    lm: LoadedModel, sae: LoadedSAE, transcripts: list[list[dict]], out_dir: Path, max_tokens: int = 60_000
) -> dict[int, str]:
    """Label every latent both ways and score both labels on a held-apart half of
    ``transcripts`` (every other transcript); write ``labels.json`` (the better label),
    ``label_scores.json`` (both, scored) and ``top_contexts.json`` (from the
    labelling half, and only from text the project may store)."""
    from latentwatch.training.corpus import shippable_transcripts

    label_half = _scan(lm, sae, shippable_transcripts(transcripts[0::2]), max_tokens // 2, "labelling")
    held_half = _scan(lm, sae, transcripts[1::2], max_tokens // 2, "scoring labels")
    promoted = promoted_tokens(lm, sae)
    flat_ids, top_vals, top_pos = label_half.ids, label_half.top_vals, label_half.top_pos
    tok = lm.tokenizer
    forbidden = dev_text()  # answers may echo a dev prompt; never store such a window
    freq = Counter(flat_ids)
    total = len(flat_ids)
    labels: dict[int, str] = {}
    contexts: dict[int, list[list]] = {}
    scores: dict[int, dict] = {}
    for j in range(sae.d_sae):
        output = " / ".join(_words(tok, promoted[j]))
        live = top_vals[j] > 0
        if not live.any():
            continue
        positions = top_pos[j][live].tolist()
        firing = Counter(flat_ids[p] for p in positions)
        n = sum(firing.values())
        ranked = sorted(firing, key=lambda t: firing[t] / n - freq[t] / total, reverse=True)[:LABEL_TOKENS]
        entry = {"input": " / ".join(_words(tok, ranked)), "input_score": score_label(held_half, j, ranked, 0),
                 "output": output, "output_score": score_label(held_half, j, promoted[j], 1)}  # fmt: skip
        scores[j] = entry
        better_output = (entry["output_score"] or 0) > (entry["input_score"] or 0)
        labels[j] = f"→ {entry['output']}" if better_output else entry["input"]
        windows = [
            [round(float(v), 2), tok.decode(flat_ids[max(0, p - WINDOW) : p]), tok.decode([flat_ids[p]])]
            for v, p in zip(top_vals[j][live].tolist(), positions, strict=True)
        ]
        contexts[j] = [w for w in windows if not _echoes(w[1] + w[2], forbidden)][:5]
    (out_dir / LABELS_FILE).write_text(json.dumps({str(k): v for k, v in labels.items()}, indent=0) + "\n")
    (out_dir / CONTEXTS_FILE).write_text(json.dumps({str(k): v for k, v in contexts.items()}) + "\n")
    (out_dir / SCORES_FILE).write_text(json.dumps({str(k): v for k, v in scores.items()}) + "\n")
    sae.labels = labels
    return labels


def label_sample(corpus: Path | None) -> list[list[dict]]:
    """Transcripts to label from: a chat corpus (``build-corpus``), or without one the
    project's authored held-out chat plus dev train-split prompts and other chat models'
    answers (the dev text only in the scoring half's reach: contexts keep shippable text)."""
    from latentwatch.training.corpus import HELDOUT_SLICE, other_model_transcripts, prompt_only_transcripts, read_jsonl

    if corpus is not None:
        return read_jsonl(corpus)
    rows = read_jsonl(HELDOUT_SLICE) + other_model_transcripts("train") + prompt_only_transcripts(set())
    return [rows[i] for i in torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).tolist()]


def _echoes(window: str, forbidden: str, min_chars: int = 20) -> bool:
    w = window.strip()
    return len(w) >= min_chars and w in forbidden
