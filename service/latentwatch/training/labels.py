"""Automatic latent labels from top-activating contexts.

For every latent: its top-activating token windows over a corpus sample
(stored compactly as ``top_contexts.json`` beside the SAE) and a short label
made of the tokens it fires on most distinctively, i.e. tokens whose share of
the latent's top activations most exceeds their share of the corpus.
Labels are hints for a human reading an alert, not ground truth.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm

from latentwatch.capture.teacher_forced import batched_residuals
from latentwatch.detectors.saes import LABELS_FILE, LoadedSAE
from latentwatch.models import LoadedModel
from latentwatch.training.corpus import pack_tokens
from latentwatch.training.devdata import dev_text

CONTEXTS_FILE = "top_contexts.json"
TOP_N = 12
WINDOW = 6  # tokens before the firing token kept in a context


@torch.no_grad()
def label_latents(
    lm: LoadedModel, sae: LoadedSAE, transcripts: list[list[dict]], out_dir: Path, max_tokens: int = 60_000
) -> dict[int, str]:
    rows = pack_tokens(lm.tokenizer, transcripts, 128)[: max(1, max_tokens // 128)]
    top_vals = torch.full((sae.d_sae, TOP_N), -1.0)
    top_pos = torch.zeros((sae.d_sae, TOP_N), dtype=torch.long)
    flat_ids: list[int] = []
    batches = batched_residuals(lm, rows, sae.hook_name)
    for ids, acts in tqdm(batches, total=-(-len(rows) // 8), desc="labelling", unit="batch"):
        z = sae.sae.encode(acts)
        base = len(flat_ids)
        flat_ids.extend(ids.tolist())
        pos = torch.arange(base, base + ids.shape[0])
        vals, idx = torch.topk(z.T, k=min(TOP_N, z.shape[0]), dim=1)
        merged_v = torch.cat([top_vals, vals], 1)
        merged_p = torch.cat([top_pos, pos[idx]], 1)
        keep = torch.topk(merged_v, TOP_N, dim=1).indices
        top_vals, top_pos = merged_v.gather(1, keep), merged_p.gather(1, keep)

    tok = lm.tokenizer
    forbidden = dev_text()  # answers may echo a dev prompt; never store such a window
    freq = Counter(flat_ids)
    total = len(flat_ids)
    labels: dict[int, str] = {}
    contexts: dict[int, list[list]] = {}
    for j in range(sae.d_sae):
        live = top_vals[j] > 0
        if not live.any():
            continue
        positions = top_pos[j][live].tolist()
        firing = Counter(flat_ids[p] for p in positions)
        n = sum(firing.values())
        ranked = sorted(firing, key=lambda t: firing[t] / n - freq[t] / total, reverse=True)
        words = [tok.decode([t]).strip() or repr(tok.decode([t])) for t in ranked[:3]]
        labels[j] = " / ".join(dict.fromkeys(words))
        windows = [
            [round(float(v), 2), tok.decode(flat_ids[max(0, p - WINDOW) : p]), tok.decode([flat_ids[p]])]
            for v, p in zip(top_vals[j][live].tolist(), positions, strict=True)
        ]
        contexts[j] = [w for w in windows if not _echoes(w[1] + w[2], forbidden)][:5]
    (out_dir / LABELS_FILE).write_text(json.dumps({str(k): v for k, v in labels.items()}, indent=0) + "\n")
    (out_dir / CONTEXTS_FILE).write_text(json.dumps({str(k): v for k, v in contexts.items()}) + "\n")
    sae.labels = labels
    return labels


def _echoes(window: str, forbidden: str, min_chars: int = 20) -> bool:
    w = window.strip()
    return len(w) >= min_chars and w in forbidden
