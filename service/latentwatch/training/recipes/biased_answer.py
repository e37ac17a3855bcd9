"""``biased_answer``: teacher-forced BBQ answers, stereotyped option vs the others."""

from __future__ import annotations

from pathlib import Path

from latentwatch.detectors.saes import LoadedSAE
from latentwatch.models import LoadedModel
from latentwatch.training.bias import fit_bias_probe
from latentwatch.training.evaluate import read_eval_set
from latentwatch.training.recipes import RecipeInputs, recipe


def train_biased_answer(lm: LoadedModel, sae: LoadedSAE, spec_path: Path, data_dir: Path) -> dict:
    """Fit on the fit category's BBQ answers (``make-eval-sets --sets bias`` writes them)."""
    fit = read_eval_set(data_dir / "biased_answer_fit.jsonl", "bias")
    harmless = read_eval_set(data_dir / "bias_harmless_fit.jsonl", "bias")
    return fit_bias_probe(lm, sae, spec_path, fit + harmless[: len(harmless) // 2], harmless[len(harmless) // 2 :])


@recipe("biased_answer", needs=("data",))
def fit(inputs: RecipeInputs) -> dict:
    return train_biased_answer(inputs.lm, inputs.sae, inputs.spec_path, inputs.data)
