"""Training recipes, one module per detector, behind a registry.

A recipe fits a detector's probe, calibrates its threshold and writes both
into the pack (``latentwatch train-probe NAME``). Adding one: write a module
here with a function decorated ``@recipe("name", needs=(...))`` and import it
at the bottom of this file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from latentwatch.detectors.saes import LoadedSAE
from latentwatch.models import LoadedModel

NEEDS = {
    "corpus": "--corpus (the model's own answers, from `latentwatch build-corpus`)",
    "data": "--data (the folder `latentwatch make-eval-sets` wrote)",
}


@dataclass(frozen=True)
class RecipeInputs:
    lm: LoadedModel
    sae: LoadedSAE
    spec_path: Path
    corpus: Path | None = None
    data: Path | None = None


@dataclass(frozen=True)
class Recipe:
    name: str
    fit: Callable[[RecipeInputs], dict]
    needs: tuple[str, ...]


_RECIPES: dict[str, Recipe] = {}


def recipe(name: str, needs: tuple[str, ...] = ()) -> Callable:
    """Register ``fit(inputs) -> report`` as the recipe of detector ``name``."""
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"recipe {name!r} needs unknown inputs {sorted(unknown)}")

    def add(fit: Callable[[RecipeInputs], dict]) -> Callable[[RecipeInputs], dict]:
        if name in _RECIPES:
            raise ValueError(f"recipe {name!r} registered twice")
        _RECIPES[name] = Recipe(name, fit, needs)
        return fit

    return add


def recipes() -> dict[str, Recipe]:
    return dict(_RECIPES)


def get(name: str) -> Recipe:
    if name not in _RECIPES:
        raise ValueError(f"no training recipe for {name!r}; recipes exist for {', '.join(sorted(_RECIPES))}")
    return _RECIPES[name]


def missing_inputs(r: Recipe, corpus: Path | None, data: Path | None) -> list[str]:
    """What the recipe needs and was not given, as the flags to pass."""
    given = {"corpus": corpus, "data": data}
    return [NEEDS[n] for n in r.needs if given[n] is None]


from latentwatch.training.recipes import (  # noqa: E402, F401  (registers them)
    biased_answer,
    context_attending,
    harmful_request,
    refusal,
    stereotype_assertion,
)
