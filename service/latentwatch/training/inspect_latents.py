"""Human views of SAE latents: ``latentwatch explain`` and ``latentwatch inspect``."""

from __future__ import annotations

import html
import json

import torch

from latentwatch.capture.chat import tokenize_chat
from latentwatch.capture.teacher_forced import residual_rows
from latentwatch.detectors.packs import sae_dirs
from latentwatch.detectors.saes import LoadedSAE, load_sae
from latentwatch.export.html import page, shade
from latentwatch.models import LoadedModel
from latentwatch.training.labels import CONTEXTS_FILE, SCORES_FILE


def explain(sae_ref: str, index: int) -> str:
    """A latent's label and its top-activating contexts from the shipped corpus sample."""
    sae = load_sae(sae_ref, sae_dirs())
    if not 0 <= index < sae.d_sae:
        raise ValueError(f"latent {index} is out of range: {sae.sae_id} has {sae.d_sae} latents")
    lines = [f"{sae.sae_id} latent {index}: {sae.label(index) or '(no label: never fired on the labelling corpus)'}"]
    scores_path = sae.path / SCORES_FILE if sae.path is not None else None
    scored = json.loads(scores_path.read_text()).get(str(index)) if scores_path and scores_path.exists() else None
    if scored:  # both labels, with how well each picks the latent's contexts out of random ones
        lines.append(f"  fires on:  {scored['input']}  (detection score {scored['input_score']})")
        lines.append(f"  promotes:  {scored['output']}  (detection score {scored['output_score']})")
    path = sae.path / CONTEXTS_FILE if sae.path is not None else None
    contexts = json.loads(path.read_text()).get(str(index), []) if path and path.exists() else []
    for act, before, token in contexts:
        lines.append(f"  {act:7.2f}  ...{before!r} [{token!r}]")
    return "\n".join(lines)


TokenLatents = list[tuple[str, list[tuple[int, float]]]]


@torch.no_grad()
def token_latents(lm: LoadedModel, sae: LoadedSAE, text: str, top: int = 3) -> TokenLatents:
    """For each token of ``text`` as a user turn: its top firing latents (index, activation)."""
    ct = tokenize_chat(lm.tokenizer, [{"role": "user", "content": text}])
    rows = residual_rows(lm, ct.input_ids, [sae.hook_name])[sae.hook_name]
    z = sae.sae.encode(rows)
    out = []
    for pos in range(1, len(ct.input_ids)):  # position 0 is the attention sink
        vals, idx = torch.topk(z[pos], top)
        firing = [(int(i), float(v)) for v, i in zip(vals, idx, strict=True) if v > 0]
        out.append((lm.tokenizer.decode([ct.input_ids[pos]]), firing))
    return out


def render_table(sae: LoadedSAE, rows) -> str:
    lines = [f"{'token':>16}  top latents (index: activation 'label')"]
    for token, latents in rows:
        cells = ", ".join(f"{i}: {v:.1f} '{sae.label(i)}'" for i, v in latents)
        lines.append(f"{token!r:>16}  {cells}")
    return "\n".join(lines)


def render_html(sae: LoadedSAE, text: str, rows) -> str:
    """A self-contained page: tokens shaded by their strongest latent, details on hover."""
    peak = max((v for _, lat in rows for _, v in lat), default=1.0) or 1.0
    spans = [
        shade(
            token,
            latents[0][1] / peak if latents else 0.0,
            "\n".join(f"{i}: {v:.2f} {sae.label(i)}" for i, v in latents),
        )
        for token, latents in rows
    ]
    return page(
        "latentwatch inspect",
        f"<h1>{html.escape(sae.sae_id)}</h1><p>{html.escape(text)}</p>"
        f"<div class='t'>{''.join(spans)}</div><p>Hover a token for its top latents and their labels.</p>",
    )
