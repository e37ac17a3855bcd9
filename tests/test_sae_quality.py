"""SAE quality: the shipped SAEs meet their card's figures on a fixed held-out
slice, reproduce from their card's command, and a second architecture on a
second model family loads through the same code path."""

from __future__ import annotations

import json
import shlex

import pytest
import torch
from latentwatch.capture.teacher_forced import residual_rows
from latentwatch.cli import build_parser
from latentwatch.detectors.packs import pack
from latentwatch.detectors.saes import fvu, load_sae, load_sae_dir
from latentwatch.models import load_model
from latentwatch.training.corpus import HELDOUT_SLICE, authored_prompts, read_jsonl, user_turn, write_jsonl
from latentwatch.training.sae_eval import TARGETS, evaluate_sae
from sae_lens import SAE
from safetensors import safe_open

SAES_DIR = pack().saes_dir

SHIPPED = sorted(p for p in SAES_DIR.iterdir() if (p / "cfg.json").exists())


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_sae_is_fp16_sae_lens_with_a_card(path):
    sae = SAE.load_from_disk(str(path), device="cpu")  # sae-lens alone, as any user would
    assert sae.W_dec.dtype == torch.float16
    with safe_open(str(path / "sae_weights.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    card = json.loads((path / "training.json").read_text())
    assert card["command"].startswith("latentwatch train-sae ") and card["quality"]["tokens"] > 10_000
    assert "Reproduce:" in (path / "README.md").read_text()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_sae_quality_on_the_heldout_slice(path, lm):
    """The four figures on authored held-out chat (prompts + the model's own
    answers, never trained on) stay within the targets the card reports met,
    and within 15% of the card's own figure where a target is missed."""
    sae = load_sae_dir(path)
    seqs = [
        lm.tokenizer.apply_chat_template(t, tokenize=True, return_dict=True)["input_ids"]
        for t in read_jsonl(HELDOUT_SLICE)
    ]
    q = evaluate_sae(lm, sae, seqs)
    card = json.loads((path / "training.json").read_text())["quality"]
    assert q.tokens > 3000
    assert q.fvu <= max(TARGETS["fvu"], 1.15 * card["fvu"])
    assert TARGETS["l0_min"] <= q.l0 <= TARGETS["l0_max"]
    assert q.ce_increase_ratio <= max(TARGETS["ce_increase_ratio"], 1.15 * card["ce_increase_ratio"])
    assert q.ce_clean < q.ce_sae < q.ce_zero


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_labels_cover_live_latents(path):
    sae = load_sae_dir(path)
    card = json.loads((path / "training.json").read_text())["quality"]
    live = round((1 - card["dead_fraction"]) * sae.d_sae)
    assert len([v for v in sae.labels.values() if v]) >= 0.95 * live


def _small_corpus(tmp_path, n: int = 60):
    """Authored prompts only (no answers), enough rows for a shortened run."""
    corpus = tmp_path / "corpus.jsonl"
    write_jsonl(corpus, [user_turn(a["text"], a.get("context")) for a in authored_prompts()[:n]])
    return corpus


def test_shipped_sae_reproduces_from_its_card(tmp_path):
    """The card's command, shortened to a few thousand tokens, trains an SAE of
    the same shape that loads through the monitor's loader."""
    path = SAES_DIR / "smollm2-135m-instruct-l12"
    card = json.loads((path / "training.json").read_text())
    argv = shlex.split(card["command"])[1:]
    args = build_parser().parse_args(argv)
    args.corpus, args.out, args.tokens, args.quiet = str(_small_corpus(tmp_path)), str(tmp_path / "sae"), 4096, True
    assert args.fn(args) == 0
    again = load_sae_dir(tmp_path / "sae")
    original = load_sae_dir(path)
    assert (again.hook_name, again.d_in, again.d_sae) == (original.hook_name, original.d_in, original.d_sae)
    assert type(again.sae) is type(original.sae)
    assert (tmp_path / "sae" / "labels.json").exists() and (tmp_path / "sae" / "README.md").exists()


def test_jumprelu_sae_on_gemma_loads_through_the_monitor_path(tmp_path):
    """A second architecture (JumpReLU) on a second model family (Gemma 3 270M,
    from its PyPI GGUF packages), trained with sae-lens, saved and loaded by
    reference exactly as a detector spec names an SAE."""
    from latentwatch.training.sae import SAETrainSpec, train_sae

    spec = SAETrainSpec(
        model="gemma3-270m",
        hook_name="model.layers.6",
        architecture="jumprelu",
        d_sae=512,
        training_tokens=4096,
        l0_coefficient=1.0,
    )
    train_sae(spec, _small_corpus(tmp_path), tmp_path / "gemma-l6", progress=False)
    sae = load_sae("gemma-l6", search_dirs=[tmp_path])
    assert sae.sae.cfg.architecture() == "jumprelu" and sae.d_in == 640
    gemma = load_model("gemma3-270m")
    ids = gemma.tokenizer("The lighthouse keeper wrote a letter to her sister.")["input_ids"]
    x = residual_rows(gemma, ids, [sae.hook_name])[sae.hook_name][1:]
    feats, err, dev = sae.encode(x)
    assert feats.shape == (x.shape[0], 512) and torch.isfinite(feats).all()
    assert 0.0 < fvu(err, dev) < 10.0
