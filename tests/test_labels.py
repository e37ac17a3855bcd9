"""Latent labels: output-centric labels from the real model's unembedding, and the detection
score that decides which label alerts show."""

from __future__ import annotations

import torch
from latentwatch.detectors.packs import pack
from latentwatch.detectors.saes import load_sae_dir
from latentwatch.training.labels import _Sample, promoted_tokens, score_label


def _sample(ids: list[int], fires_on: int) -> _Sample:
    """One latent that fires exactly where token ``fires_on`` stands."""
    z = torch.tensor([[1.0] if t == fires_on else [0.0] for t in ids])
    top_vals, top_pos = torch.topk(z.T, k=4, dim=1)
    random_pos = torch.arange(len(ids))
    return _Sample(ids, len(ids), top_vals, top_pos, random_pos, z)


def test_a_label_naming_the_firing_token_scores_high_and_a_wrong_one_scores_chance():
    ids = [7, 1, 2, 3, 7, 4, 5, 7, 6, 8, 9, 7, 10, 11, 12, 13, 14, 15, 16, 17]
    s = _sample(ids, fires_on=7)
    assert score_label(s, 0, [7], offset=0) == 1.0
    assert score_label(s, 0, [99], offset=0) == 0.5
    # an output label is judged on the token that follows: after 7 come 1, 4, 6, 10
    assert score_label(s, 0, [1, 4, 6, 10], offset=1) == 1.0
    assert score_label(s, 0, [7], offset=1) < 0.6


def test_promoted_tokens_rise_when_the_latent_is_written_into_the_residual(lm):
    """Adding a latent's decoder row to layer 20's output (through the ten layers above it)
    raises the logits of the tokens its output label names more than those of random tokens,
    on average over 64 latents."""
    sae = load_sae_dir(pack().saes_dir / "smollm2-135m-instruct-l20")
    promoted = promoted_tokens(lm, sae, k=3)
    assert len(promoted) == sae.d_sae
    special = set(lm.tokenizer.all_special_ids)
    assert not any(t in special for row in promoted.values() for t in row)

    latents = list(range(64))
    ids = torch.tensor([lm.tokenizer("The weather today is")["input_ids"]] * len(latents))
    rows = sae.sae.W_dec[latents].detach().float()
    layer = lm.model.get_submodule(sae.hook_name)

    def add(module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden[:, -1] += 8 * rows * hidden[:, -1].norm(dim=-1, keepdim=True) / rows.norm(dim=-1, keepdim=True)

    with torch.no_grad():
        clean = lm.model(ids).logits[:, -1]
        handle = layer.register_forward_hook(add)
        try:
            steered = lm.model(ids).logits[:, -1]
        finally:
            handle.remove()
    gain = steered - clean
    picked = torch.tensor([promoted[j] for j in latents])
    random_tokens = torch.randint(0, gain.shape[1], picked.shape, generator=torch.Generator().manual_seed(0))
    assert gain.gather(1, picked).mean() > gain.gather(1, random_tokens).mean() + 1.0
