"""Train a sparse autoencoder with sae-lens on a local chat corpus.

This is the path for any model without a public SAE: sae-lens's own
``LanguageModelSAETrainingRunner`` with the HF model wrapped in
``HookedProxyLM`` (only the needed hook) and a pre-tokenized local dataset.
The output directory is plain sae-lens format (cfg.json +
sae_weights.safetensors) plus ``latentwatch_stats.safetensors``, which holds
the activation mean used to compute the fraction of variance unexplained at
run time.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from latentwatch.corpus import pack_tokens
from latentwatch.models import load_model
from latentwatch.saes import STATS_FILE
from safetensors.torch import save_file


@dataclass
class SAETrainSpec:
    model: str
    hook_name: str
    d_sae: int = 2048
    k: int = 32
    training_tokens: int = 300_000
    context_size: int = 128
    lr: float = 4e-4
    seed: int = 0


def train_sae(spec: SAETrainSpec, transcripts: list[list[dict]], out_dir: Path) -> dict:
    """Train one TopK SAE and save it to ``out_dir``; return a summary."""
    import datasets
    from sae_lens import (
        LanguageModelSAERunnerConfig,
        LanguageModelSAETrainingRunner,
        LoggingConfig,
        TopKTrainingSAEConfig,
    )
    from sae_lens.load_model import HookedProxyLM

    torch.manual_seed(spec.seed)
    lm = load_model(spec.model)
    rows = pack_tokens(lm.tokenizer, transcripts, spec.context_size)
    ds = datasets.Dataset.from_dict({"input_ids": rows})
    cfg = LanguageModelSAERunnerConfig(
        sae=TopKTrainingSAEConfig(d_in=lm.model.config.hidden_size, d_sae=spec.d_sae, k=spec.k),
        model_name=spec.model,
        model_class_name="AutoModelForCausalLM",
        hook_name=spec.hook_name,
        dataset_path="local",
        is_dataset_tokenized=True,
        streaming=False,
        context_size=spec.context_size,
        seqpos_slice=(1, None),  # position 0 is the attention sink; never train on it
        prepend_bos=False,
        training_tokens=spec.training_tokens,
        train_batch_size_tokens=1024,
        store_batch_size_prompts=8,
        n_batches_in_buffer=32,  # sae-lens buffer = this x context tokens; must exceed a batch
        lr=spec.lr,
        lr_warm_up_steps=20,
        dead_feature_window=50,  # steps; the default (1000) exceeds short runs, so dead latents were never revived
        n_batches_for_norm_estimate=20,
        logger=LoggingConfig(log_to_wandb=False),
        output_path=None,
        checkpoint_path=None,
        n_checkpoints=0,
        device="cpu",
        seed=spec.seed,
        verbose=False,
    )
    start = time.time()
    runner = LanguageModelSAETrainingRunner(
        cfg,
        override_model=HookedProxyLM(lm.model, lm.tokenizer, hook_names=[spec.hook_name]),
        override_dataset=ds,
    )
    sae = runner.run()
    seconds = time.time() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    sae.save_model(str(out_dir))
    finalize_sae(lm, out_dir, transcripts, rows)
    summary = {
        "model": spec.model,
        "hook_name": spec.hook_name,
        "d_sae": spec.d_sae,
        "k": spec.k,
        "training_tokens": spec.training_tokens,
        "corpus_rows": len(rows),
        "seconds": round(seconds, 1),
        "tokens_per_second": round(spec.training_tokens / seconds, 1),
        "seed": spec.seed,
    }
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@torch.no_grad()
def finalize_sae(lm, out_dir: Path, transcripts: list[list[dict]], rows: list[list[int]], chunk: int = 16) -> None:
    """Write what the monitor needs beside the sae-lens files.

    ``mean``: the activation mean (the FVU denominator's centre). ``fvu_limit``:
    1.5x the 99th percentile of per-chunk FVU on training rows; a chunk above
    it is far outside what the SAE was trained to explain, so its request is
    marked low-confidence. Then latent labels from top-activating contexts,
    drawn only from text the project may store (no dev-set text).
    """
    from latentwatch.corpus import shippable_transcripts
    from latentwatch.features import batched_residuals
    from latentwatch.labels import label_latents
    from latentwatch.saes import fvu, load_sae_dir

    loaded = load_sae_dir(out_dir)
    seq_len = len(rows[0]) - 1  # per row, the sink dropped
    batches = batched_residuals(lm, rows[:64], loaded.hook_name)
    acts = torch.cat([a.reshape(-1, seq_len, a.shape[-1]) for _, a in batches])
    loaded.mean = acts.reshape(-1, acts.shape[-1]).mean(0)
    fvus = []
    for seq in acts:
        for i in range(0, seq.shape[0] - chunk + 1, chunk):
            _, err, dev = loaded.encode(seq[i : i + chunk])
            fvus.append(fvu(err, dev))
    limit = 1.5 * float(torch.quantile(torch.tensor(fvus), 0.99))
    save_file({"mean": loaded.mean.contiguous(), "fvu_limit": torch.tensor(limit)}, str(out_dir / STATS_FILE))
    label_latents(lm, loaded, shippable_transcripts(transcripts), out_dir)
