"""The shipped SAEs load through sae-lens, and the monitor's fast path
(decoder norms folded, sparse reconstruction) equals plain sae-lens."""

from __future__ import annotations

import pytest
import torch
from latentwatch.detectors.packs import pack
from latentwatch.detectors.saes import fvu, load_sae_dir
from sae_lens import SAE

from .conftest import transcript

SAES_DIR = pack().saes_dir

SHIPPED = sorted(p for p in SAES_DIR.iterdir() if (p / "cfg.json").exists())


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_fast_path_equals_sae_lens(path, lm):
    raw = SAE.load_from_disk(str(path), device="cpu", dtype="float32")  # shipped fp16, compared in fp32
    ours = load_sae_dir(path)
    _, rows = transcript(lm, "Tell me about the history of the printing press.", [ours.hook_name])
    x = rows[ours.hook_name][1:]
    with torch.no_grad():
        want_z = raw.encode(x)
        want_recon = raw.decode(want_z)
    got_z, err, dev = ours.encode(x)
    # Folding reorders fp32 products: latents agree to ~1e-4 relative.
    torch.testing.assert_close(got_z, want_z, rtol=1e-4, atol=1e-3)
    assert torch.equal(got_z > 0, want_z > 0)  # the same latents fire
    torch.testing.assert_close(ours.reconstruct(got_z), want_recon, rtol=1e-4, atol=1e-3)
    # the error behind the FVU metric is that of sae-lens's own reconstruction
    assert err == pytest.approx(float((x - want_recon).pow(2).sum()), rel=1e-3)
    assert 0.0 < fvu(err, dev) < ours.fvu_limit  # ordinary chat text is inside the training distribution
    assert ours.labels  # every shipped SAE carries latent labels


def test_shipped_saes_cover_the_detector_layers():
    names = {p.name for p in SHIPPED}
    assert {"smollm2-135m-instruct-l12", "smollm2-135m-instruct-l20"} <= names
