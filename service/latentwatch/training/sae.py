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
from safetensors.torch import save_file

from latentwatch.detectors.saes import STATS_FILE
from latentwatch.models import load_model
from latentwatch.training.corpus import pack_tokens, transcript_ids

ARCHITECTURES = ("topk", "batchtopk", "jumprelu")


@dataclass
class SAETrainSpec:
    """Everything that determines a trained SAE (with the corpus and the seed)."""

    model: str
    hook_name: str
    architecture: str = "topk"
    d_sae: int = 4096
    k: int = 48  # topk / batchtopk: active latents per token
    l0_coefficient: float = 5.0  # jumprelu: weight of the L0 penalty
    training_tokens: int = 1_000_000
    context_size: int = 128
    lr: float = 4e-4
    seed: int = 0
    dtype: str = "float16"  # storage dtype of the shipped weights

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            choices = ", ".join(ARCHITECTURES)
            raise ValueError(f"unknown SAE architecture {self.architecture!r}; choose one of {choices}")
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be float16 or float32, not {self.dtype!r}")

    def command(self, corpus: str, out: str) -> str:
        """The CLI line that trains this SAE again."""
        sparsity = f"--l0-coefficient {self.l0_coefficient}" if self.architecture == "jumprelu" else f"--k {self.k}"
        return (
            f"latentwatch train-sae --model {self.model} --hook {self.hook_name} --architecture {self.architecture} "
            f"--width {self.d_sae} {sparsity} --tokens {self.training_tokens} --lr {self.lr} "
            f"--seed {self.seed} --dtype {self.dtype} --corpus {corpus} --out {out}"
        )

    def sae_config(self, d_in: int):
        from sae_lens import BatchTopKTrainingSAEConfig, JumpReLUTrainingSAEConfig, TopKTrainingSAEConfig

        if self.architecture == "topk":
            return TopKTrainingSAEConfig(d_in=d_in, d_sae=self.d_sae, k=self.k)
        if self.architecture == "batchtopk":
            return BatchTopKTrainingSAEConfig(d_in=d_in, d_sae=self.d_sae, k=self.k)
        return JumpReLUTrainingSAEConfig(d_in=d_in, d_sae=self.d_sae, l0_coefficient=self.l0_coefficient)


def train_sae(
    spec: SAETrainSpec, corpus: Path, out_dir: Path, heldout: list[list[dict]] | None = None, progress: bool = True
) -> dict:
    """Train one SAE on the transcripts in ``corpus`` and save it to ``out_dir``
    with its stats, labels and model card; return the card's figures.

    ``heldout`` transcripts (never trained on) give the quality figures; the
    card says so when there are none.
    """
    import datasets
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig
    from sae_lens.load_model import HookedProxyLM

    from latentwatch.training.corpus import read_jsonl

    torch.manual_seed(spec.seed)
    transcripts = read_jsonl(corpus)
    lm = load_model(spec.model)
    rows = pack_tokens(lm.tokenizer, transcripts, spec.context_size)
    ds = datasets.Dataset.from_dict({"input_ids": rows})
    cfg = LanguageModelSAERunnerConfig(
        sae=spec.sae_config(lm.model.config.hidden_size),
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
        lr_decay_steps=spec.training_tokens // 1024 // 5,  # anneal over the last fifth
        dead_feature_window=50,  # steps; the default (1000) exceeds short runs, so dead latents were never revived
        n_batches_for_norm_estimate=20,
        logger=LoggingConfig(log_to_wandb=False),
        output_path=None,
        checkpoint_path=None,
        n_checkpoints=0,
        device="cpu",
        seed=spec.seed,
        verbose=progress,
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
    if spec.dtype == "float16":
        to_float16(out_dir)
    finalize_sae(lm, out_dir, transcripts, rows)
    card = {
        "model": spec.model,
        "hook_name": spec.hook_name,
        "architecture": spec.architecture,
        "d_sae": spec.d_sae,
        "k": spec.k if spec.architecture != "jumprelu" else None,
        "l0_coefficient": spec.l0_coefficient if spec.architecture == "jumprelu" else None,
        "training_tokens": spec.training_tokens,
        "lr": spec.lr,
        "seed": spec.seed,
        "dtype": spec.dtype,
        "corpus": {
            "file": corpus.name,
            "transcripts": len(transcripts),
            "rows": len(rows),
            "unique_tokens": len(rows) * spec.context_size,
        },
        "seconds": round(seconds, 1),
        "tokens_per_second": round(spec.training_tokens / seconds, 1),
        "command": spec.command(corpus.name, str(out_dir)),
        "quality": None,
    }
    write_card(out_dir, card)
    if heldout:
        card = measure_quality(lm, out_dir, heldout)
    return card


def measure_quality(lm, out_dir: Path, heldout: list[list[dict]]) -> dict:
    """Measure a trained SAE on held-out transcripts; record it in its card (``training.json``
    and ``README.md``) and return the card."""
    from latentwatch.detectors.saes import load_sae_dir
    from latentwatch.training.sae_eval import evaluate_sae

    card = json.loads((out_dir / "training.json").read_text())
    seqs = [transcript_ids(lm.tokenizer, t) for t in heldout]
    quality = evaluate_sae(lm, load_sae_dir(out_dir), seqs)
    card["quality"] = {"heldout_transcripts": len(heldout), **quality.as_dict()}
    write_card(out_dir, card)
    return card


def to_float16(out_dir: Path) -> None:
    """Store the weights in fp16 (half the size); loading upcasts to fp32."""
    from safetensors.torch import load_file

    weights = out_dir / "sae_weights.safetensors"
    save_file({k: v.half().contiguous() for k, v in load_file(str(weights)).items()}, str(weights))
    cfg_path = out_dir / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dtype"] = "float16"
    cfg_path.write_text(json.dumps(cfg))


def write_card(out_dir: Path, card: dict) -> None:
    """``training.json`` (machine-readable) and ``README.md`` (the model card)."""
    (out_dir / "training.json").write_text(json.dumps(card, indent=2) + "\n")
    q = card["quality"]
    lines = [
        f"# {out_dir.name}",
        "",
        f"A {card['architecture']} sparse autoencoder (sae-lens format) on `{card['hook_name']}` of "
        f"`{card['model']}`: {card['d_sae']} latents, "
        + (f"k = {card['k']}." if card["k"] else f"L0 coefficient {card['l0_coefficient']}."),
        "",
        "## Training",
        "",
        f"- {card['training_tokens']:,} tokens (seed {card['seed']}, lr {card['lr']}) from "
        f"`{card['corpus']['file']}`: {card['corpus']['transcripts']} chat transcripts, "
        f"{card['corpus']['unique_tokens']:,} distinct tokens in {card['corpus']['rows']} rows of 128, "
        "written by `latentwatch build-corpus` (authored prompts and the dev sets' train splits, "
        "each followed by the model's own greedy answer).",
        f"- Wall time {card['seconds'] / 60:.1f} min on 2 CPU cores ({card['tokens_per_second']:.0f} tokens/s).",
        f"- Weights stored as {card['dtype']}.",
        "",
        "Reproduce:",
        "",
        "```",
        f"latentwatch build-corpus --out {card['corpus']['file']}",
        card["command"],
        "```",
        "",
        "## Quality on held-out chat text",
        "",
    ]
    if q is None:
        lines.append("Not measured (no held-out transcripts were given).")
    else:
        from latentwatch.training.sae_eval import TARGETS

        ok = q["meets_targets"]
        lines += [
            f"Measured on {q['heldout_transcripts']} held-out transcripts ({q['tokens']:,} tokens): the test split of "
            "every corpus source, with the model's answers.",
            "",
            "| figure | value | target | met |",
            "|---|---|---|---|",
            f"| fraction of variance unexplained | {q['fvu']:.3f} | <= {TARGETS['fvu']} | {ok['fvu']} |",
            f"| ... per dimension (each dimension's FVU, averaged) | {q.get('fvu_per_dimension', float('nan')):.3f} "
            "| (reported) | |",
            f"| mean L0 | {q['l0']:.1f} | {TARGETS['l0_min']:.0f}-{TARGETS['l0_max']:.0f} | {ok['l0']} |",
            f"| dead latents | {q['dead_fraction']:.1%} | < {TARGETS['dead_fraction']:.0%} | {ok['dead_fraction']} |",
            f"| CE increase / zero-ablation gap | {q['ce_increase_ratio']:.3f} | <= {TARGETS['ce_increase_ratio']} "
            f"| {ok['ce_increase_ratio']} |",
            "",
            f"Next-token cross-entropy: clean {q['ce_clean']:.3f}, SAE spliced {q['ce_sae']:.3f}, "
            f"zero-ablated {q['ce_zero']:.3f} nats.",
        ]
    lines += [
        "",
        "## Files",
        "",
        "`cfg.json` + `sae_weights.safetensors` (sae-lens), `latentwatch_stats.safetensors` (activation mean and the "
        "low-confidence FVU bound), `labels.json` (the better-scoring label per live latent), `label_scores.json` "
        "(its input and output labels with their detection scores), `top_contexts.json` (top-activating "
        "token windows from authored prompts and model answers only), `training.json` (this card's figures).",
        "",
    ]
    (out_dir / "README.md").write_text("\n".join(lines))


@torch.no_grad()
def finalize_sae(lm, out_dir: Path, transcripts: list[list[dict]], rows: list[list[int]], chunk: int = 16) -> None:
    """Write what the monitor needs beside the sae-lens files.

    ``mean``: the activation mean (the FVU denominator's centre). ``fvu_limit``:
    1.5x the 99th percentile of per-chunk FVU on training rows; a chunk above
    it is far outside what the SAE was trained to explain, so its request is
    marked low-confidence. Then latent labels, scored (``latentwatch.training.labels``).
    """
    from latentwatch.capture.teacher_forced import batched_residuals
    from latentwatch.detectors.saes import fvu, load_sae_dir
    from latentwatch.training.labels import label_latents

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
    label_latents(lm, loaded, transcripts, out_dir)
