"""``stereotype_assertion``: authored stereotypes vs their counter-stereotypical twins."""

from __future__ import annotations

from pathlib import Path

from latentwatch.detectors.saes import LoadedSAE
from latentwatch.models import LoadedModel
from latentwatch.training.bias import authored_stereotypes, fit_bias_probe, is_stereotype_test
from latentwatch.training.evaluate import read_eval_set
from latentwatch.training.recipes import RecipeInputs, recipe


def train_stereotype_assertion(lm: LoadedModel, sae: LoadedSAE, spec_path: Path, data_dir: Path) -> dict:
    """Fit on the authored sentences of the fit categories plus harmless answers."""
    fit = [r for r in authored_stereotypes() if not is_stereotype_test(r)]
    harmless = read_eval_set(data_dir / "bias_harmless_fit.jsonl", "bias")
    return fit_bias_probe(lm, sae, spec_path, fit + harmless[: len(harmless) // 2], harmless[len(harmless) // 2 :])


@recipe("stereotype_assertion", needs=("data",))
def fit(inputs: RecipeInputs) -> dict:
    return train_stereotype_assertion(inputs.lm, inputs.sae, inputs.spec_path, inputs.data)
