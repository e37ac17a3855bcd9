"""Load sae-lens SAEs and encode activations into latents.

Every SAE goes through sae-lens: ``SAE.load_from_disk`` for a directory in
sae-lens format, ``SAE.from_pretrained(release, sae_id)`` where a hub is
reachable. Beside the sae-lens files a directory may hold
``latentwatch_stats.safetensors`` (activation mean, for the fraction of
variance unexplained) and ``labels.json`` (a short label per latent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

STATS_FILE = "latentwatch_stats.safetensors"
LABELS_FILE = "labels.json"
# A request whose fraction of variance unexplained (over its first
# MIN_TOKENS_FOR_CONFIDENCE tokens or more) exceeds this is marked
# low-confidence, unless the SAE directory states its own bound.
DEFAULT_FVU_LIMIT = 0.5
# fvu_limit is calibrated on 16-token chunks; fewer tokens give too noisy an FVU.
MIN_TOKENS_FOR_CONFIDENCE = 16


@dataclass
class LoadedSAE:
    """An SAE with what the monitor needs around it."""

    sae_id: str
    sae: torch.nn.Module
    hook_name: str
    d_in: int
    d_sae: int
    mean: torch.Tensor | None = None
    fvu_limit: float = DEFAULT_FVU_LIMIT
    labels: dict[int, str] = field(default_factory=dict)
    path: Path | None = None  # the sae-lens directory, when loaded from disk

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, float, float]:
        """Return latents [n, d_sae] and the chunk's squared reconstruction error
        and squared deviation from the activation mean (FVU = error / deviation)."""
        return self.encode_many([x])[0]

    @torch.no_grad()
    def encode_many(self, xs: list[torch.Tensor]) -> list[tuple[torch.Tensor, float, float]]:
        """``encode`` for several chunks with one SAE forward over all their rows: the
        batching that keeps the encode near the matmul's speed. Each chunk gets its own
        latents, error and deviation, as ``encode`` would give it."""
        x = xs[0] if len(xs) == 1 else torch.cat(xs)
        feats, recon = self._encode_and_reconstruct(x)
        sq_err = (x - recon).pow(2).sum(1)
        sizes = [c.shape[0] for c in xs]
        out = []
        for f, e, c in zip(feats.split(sizes), sq_err.split(sizes), xs, strict=True):
            centre = self.mean if self.mean is not None else c.mean(0)
            out.append((f, float(e.sum()), float((c - centre).pow(2).sum())))
        return out

    def _encode_and_reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents and their reconstruction. A plain TopK SAE (sae-lens ``topk``, no activation
        normalisation or reshaping) takes the same steps as sae-lens's ``encode`` here, and
        keeps the top-k values and indices it selects: the reconstruction is then a weighted
        sum of k decoder rows per token (``embedding_bag``), with no pass over the dense latents."""
        sae, cfg = self.sae, self.sae.cfg
        if not (_plain(cfg) and cfg.architecture() == "topk" and not sae.activation_fn.use_sparse_activations):
            feats = sae.encode(x)
            return feats, self.reconstruct(feats)
        hidden_pre = (x.to(sae.dtype) - sae.b_dec * cfg.apply_b_dec_to_input) @ sae.W_enc + sae.b_enc
        values, indices = torch.topk(hidden_pre, k=sae.activation_fn.k, dim=-1, sorted=False)
        values = values.relu()
        feats = torch.zeros_like(hidden_pre).scatter_(-1, indices, values)
        recon = torch.nn.functional.embedding_bag(indices, sae.W_dec, per_sample_weights=values, mode="sum")
        return feats, recon + sae.b_dec

    @torch.no_grad()
    def reconstruct(self, feats: torch.Tensor) -> torch.Tensor:
        """``sae.decode`` computed over the active latents only.

        Latents are sparse (L0 ~ 32 of thousands), so a sparse product costs a
        small fraction of the dense decode. SAEs whose decode does more than
        ``feats @ W_dec + b_dec`` (activation normalisation, decoder-norm
        rescaling, reshaping) go through ``sae.decode`` itself.
        """
        if not _plain(self.sae.cfg):
            return self.sae.decode(feats)
        return torch.sparse.mm(feats.to_sparse(), self.sae.W_dec) + self.sae.b_dec

    @torch.no_grad()
    def decoder_projection(self, direction: torch.Tensor) -> torch.Tensor:
        """[d_sae]: each latent's decoder row projected on a residual ``direction``,
        so a dense probe's score splits into per-latent shares (activation x this)."""
        return (self.sae.W_dec.float() @ direction.float()).clone()

    def label(self, index: int) -> str:
        return self.labels.get(index, "")


def _plain(cfg) -> bool:
    """Whether decoding is ``feats @ W_dec + b_dec`` alone."""
    return (
        cfg.normalize_activations == "none"
        and getattr(cfg, "reshape_activations", "none") == "none"
        and not getattr(cfg, "rescale_acts_by_decoder_norm", False)
    )


def reconstruction_error(x: torch.Tensor, recon: torch.Tensor, mean: torch.Tensor | None) -> tuple[float, float]:
    """(||x - recon||^2, ||x - mean||^2) over a chunk; their ratio is the
    fraction of variance unexplained (FVU).

    The mean is the training-corpus activation mean, not the chunk's own, so
    a one-token chunk still gets a meaningful value.
    """
    centre = mean if mean is not None else x.mean(0)
    return float((x - recon).pow(2).sum()), float((x - centre).pow(2).sum())


def fvu(err: float, dev: float) -> float:
    return err / max(dev, 1e-12)


def load_sae_dir(path: str | Path, sae_id: str | None = None) -> LoadedSAE:
    """Load an SAE directory in sae-lens format (plus optional latentwatch extras)."""
    from sae_lens import SAE

    path = Path(path)
    if not (path / "cfg.json").exists():
        raise FileNotFoundError(f"{path} is not an SAE directory in sae-lens format (no cfg.json)")
    sae = SAE.load_from_disk(str(path), device="cpu", dtype="float32")
    return _wrap(sae, sae_id or path.name, path)


def load_sae_pretrained(release: str, sae_id: str) -> LoadedSAE:
    """Load a published sae-lens SAE (needs a reachable model hub)."""
    from sae_lens import SAE

    sae = SAE.from_pretrained(release, sae_id, device="cpu")
    return _wrap(sae, f"{release}/{sae_id}", None)


def _wrap(sae, sae_id: str, path: Path | None) -> LoadedSAE:
    sae.eval()
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        # TopK SAEs trained with decoder-norm rescaling recompute the norms on
        # every encode. Folding them into the encoder (sae-lens's own
        # fold_W_dec_norm) gives unit-norm decoder rows, so the rescale becomes
        # a no-op and can be switched off: same latents, same reconstruction.
        sae.fold_W_dec_norm()
        sae.cfg.rescale_acts_by_decoder_norm = False
    loaded = LoadedSAE(
        sae_id=sae_id,
        sae=sae,
        hook_name=sae.cfg.metadata.hook_name,
        d_in=sae.cfg.d_in,
        d_sae=sae.cfg.d_sae,
        path=path,
    )
    if path is not None and (path / STATS_FILE).exists():
        stats = load_file(str(path / STATS_FILE))
        loaded.mean = stats["mean"].float()
        if "fvu_limit" in stats:
            loaded.fvu_limit = float(stats["fvu_limit"])
    if path is not None and (path / LABELS_FILE).exists():
        raw = json.loads((path / LABELS_FILE).read_text())
        loaded.labels = {int(k): v for k, v in raw.items()}
    return loaded


def load_sae(ref: str, search_dirs: list[Path]) -> LoadedSAE:
    """Resolve an SAE reference from a detector spec.

    ``ref`` is a directory path, the name of a directory under one of
    ``search_dirs``, or ``pretrained:RELEASE/SAE_ID`` for a sae-lens release.
    """
    if ref.startswith("pretrained:"):
        release, _, sae_id = ref[len("pretrained:") :].partition("/")
        return load_sae_pretrained(release, sae_id)
    candidates = [Path(ref)] + [d / ref for d in search_dirs]
    for c in candidates:
        if (c / "cfg.json").exists():
            return load_sae_dir(c, sae_id=ref)
    raise FileNotFoundError(f"SAE {ref!r} not found in {[str(c) for c in candidates]}")
