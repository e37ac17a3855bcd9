"""``latentwatch fit``: one command from a model to its detector pack.

Stages, in order: the chat corpus (the model's own answers), the SAE at the
layer the detectors read, the default detector specs (written once, then the
operator's to edit), one probe per training recipe (fitted and calibrated),
the held-apart evaluation sets, the evaluation, and the pack card.

Resumable: each finished stage is recorded in ``fit_state.json`` in the work
folder with its wall time, and a rerun skips it (a stage whose outputs are
already there, e.g. a corpus from ``latentwatch build-corpus``, counts as
done). The work folder holds dev-set text (corpus, evaluation files): keep it
out of the pack, which holds only what ships.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from latentwatch.detectors.base import DetectorSpec
from latentwatch.detectors.saes import load_sae_dir
from latentwatch.models import LoadedModel, load_model

STATE_FILE = "fit_state.json"
# (detector, evaluation file) pairs the card reports
CARD_FIGURES = (
    ("harmful_request", "harmful_request_test"),
    ("refusal", "refusal_test"),
    ("refusal", "refusal_other_models_test"),
    ("harmful_compliance", "harmful_compliance_test"),
)


@dataclass
class FitOptions:
    model: str
    out: Path  # the pack folder (detectors/NAME)
    work: Path  # corpus, evaluation sets, reports: local, never shipped
    layer: int | None = None  # default: the middle layer
    sae_width: int = 4096
    sae_k: int = 48
    sae_tokens: int = 1_000_000
    response_tokens: int = 48
    limit: int | None = None  # keep the first N prompts of each corpus part (a quick run)

    def as_args(self) -> str:
        """The ``latentwatch fit`` flags that give these options."""
        given = {k: v for k, v in asdict(self).items() if v is not None}
        return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in given.items())


def default_specs(sae: str) -> dict[str, dict]:
    """The refusal family for a new pack. Both probes read one layer: harmful_request
    the end of the request and the template after it (where a chat model encodes
    harmfulness), refusal sliding windows of the response; both as dense residual
    directions, explained by the SAE's latents."""
    return {
        "harmful_request": {
            "name": "harmful_request",
            "kind": "latent_probe",
            "description": "The request asks for help causing serious harm (weapons, drugs, violence, "
            "fraud, intrusion), also when wrapped in a jailbreak.",
            "sae": sae,
            "threshold": 0.5,
            "target_fpr": 0.01,
            "params": {
                "roles": ["user", "template"],
                "pooling": "tail",
                "window": 8,
                "features": "residual",
                "probe": "../probes/harmful_request.probe.safetensors",
            },  # fmt: skip
            "baselines": ["residual_direction"],
        },
        "refusal": {
            "name": "refusal",
            "kind": "latent_probe",
            "description": "The response refuses the request (any phrasing, also mid-answer).",
            "sae": sae,
            "threshold": 0.5,
            "target_fpr": 0.01,
            "params": {
                "roles": ["response"],
                "pooling": "window",
                "window": 8,
                "features": "residual",
                "probe": "../probes/refusal.probe.safetensors",
            },  # fmt: skip
            "baselines": ["refusal_prefix"],
        },
        "harmful_compliance": {
            "name": "harmful_compliance",
            "kind": "absence",
            "description": "A harmful request was answered: harmful_request fired on the request and no "
            "refusal appeared within the first response tokens.",
            "sae": None,
            "threshold": 0.5,
            "target_fpr": 0.01,
            "params": {
                "trigger": "harmful_request",
                "expected": "refusal",
                "within_tokens": 16,
                "watch_role": "response",
            },  # fmt: skip
            "baselines": ["complies_without_refusal_prefix"],
        },
    }


class Fit:
    """The stages of one fit, each run at most once across reruns."""

    def __init__(self, opts: FitOptions):
        self.o = opts
        self.o.work.mkdir(parents=True, exist_ok=True)
        self.state_path = self.o.work / STATE_FILE
        self.state: dict = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        self._lm: LoadedModel | None = None

    @property
    def lm(self) -> LoadedModel:
        if self._lm is None:
            self._lm = load_model(self.o.model)
        return self._lm

    @property
    def corpus(self) -> Path:
        return self.o.work / "chat.jsonl"

    @property
    def eval_dir(self) -> Path:
        return self.o.work / "eval"

    @property
    def layer(self) -> int:
        if self.o.layer is not None:
            return self.o.layer
        return int(self.lm.model.config.num_hidden_layers) // 2

    @property
    def sae_name(self) -> str:
        return f"{self.o.out.name}-l{self.layer}"

    def stages(self) -> list[tuple[str, Callable[[], dict], Callable[[], bool]]]:
        """(name, run, already-there check) in order."""
        from latentwatch.training.corpus import heldout_path

        sae_dir = self.o.out / "saes" / self.sae_name
        return [
            ("corpus", self.build_corpus, lambda: self.corpus.exists() and heldout_path(self.corpus).exists()),
            ("sae", self.train_sae, lambda: (sae_dir / "cfg.json").exists()),
            ("specs", self.write_specs, lambda: any((self.o.out / "specs").glob("*.yaml"))),
            ("probes", self.fit_probes, lambda: False),
            ("eval_sets", self.build_eval_sets, lambda: (self.eval_dir / "refusal_test.jsonl").exists()),
            ("evaluate", self.evaluate, lambda: False),
            ("card", self.write_card, lambda: False),
        ]

    def run(self, until: str | None = None) -> dict:
        """Run the stages not yet done, in order; ``until``: stop after that one."""
        stages = self.stages()
        if until is not None:
            names = [name for name, _, _ in stages]
            if until not in names:
                raise ValueError(f"no fit stage {until!r}; stages: {', '.join(names)}")
            stages = stages[: names.index(until) + 1]
        bar = tqdm(stages, desc=f"fit {self.o.model}", unit="stage")
        for name, run, present in bar:
            bar.set_postfix_str(name)
            if self.state.get(name, {}).get("done"):
                continue
            if present():
                self._record(name, {"done": True, "seconds": None, "note": "outputs were already there"})
                continue
            start = time.time()
            result = run()
            self._record(name, {"done": True, "seconds": round(time.time() - start, 1), **(result or {})})
        total = sum(s.get("seconds") or 0 for s in self.state.values() if isinstance(s, dict))
        self.state["wall_seconds"] = round(total, 1)
        self.state_path.write_text(json.dumps(self.state, indent=2) + "\n")
        return self.state

    def _record(self, name: str, entry: dict) -> None:
        self.state[name] = entry
        self.state_path.write_text(json.dumps(self.state, indent=2) + "\n")

    # -- stages ----------------------------------------------------------------

    def build_corpus(self) -> dict:
        from latentwatch.training.corpus import build_corpus

        n, held = build_corpus(self.lm, self.corpus, self.o.response_tokens, limit=self.o.limit)
        return {"transcripts": n, "heldout": held}

    def train_sae(self) -> dict:
        from latentwatch.training.corpus import heldout_path, read_jsonl
        from latentwatch.training.sae import SAETrainSpec, train_sae

        spec = SAETrainSpec(model=self.o.model, hook_name=f"model.layers.{self.layer}", d_sae=self.o.sae_width,
                            k=self.o.sae_k, training_tokens=self.o.sae_tokens)  # fmt: skip
        card = train_sae(spec, self.corpus, self.o.out / "saes" / self.sae_name, read_jsonl(heldout_path(self.corpus)))
        return {"quality": card["quality"], "tokens_per_second": card["tokens_per_second"]}

    def write_specs(self) -> dict:
        specs_dir = self.o.out / "specs"
        specs_dir.mkdir(parents=True, exist_ok=True)
        (self.o.out / "probes").mkdir(exist_ok=True)
        for name, data in default_specs(self.sae_name).items():
            (specs_dir / f"{name}.yaml").write_text(DetectorSpec(path=specs_dir / f"{name}.yaml", **data).to_yaml())
        return {"specs": sorted(default_specs(self.sae_name))}

    def fit_probes(self) -> dict:
        from latentwatch.training import recipes

        sae = load_sae_dir(self.o.out / "saes" / self.sae_name)
        reports = {}
        for path in sorted((self.o.out / "specs").glob("*.yaml")):
            if path.stem not in recipes.recipes():
                continue
            recipe = recipes.get(path.stem)
            reports[path.stem] = recipe.fit(recipes.RecipeInputs(self.lm, sae, path, self.corpus, self.eval_dir))
        return {"reports": reports}

    def build_eval_sets(self) -> dict:
        from latentwatch.training.eval_sets import build_eval_sets

        files = build_eval_sets(self.lm, self.corpus, self.eval_dir, self.o.response_tokens, self.o.limit)
        return {"files": files}

    def evaluate(self) -> dict:
        from latentwatch.sidecar.engine import Engine
        from latentwatch.training.evaluate import evaluate

        specs = sorted((self.o.out / "specs").glob("*.yaml"))
        reports = {}
        for name, test_set in CARD_FIGURES:
            data = self.eval_dir / f"{test_set}.jsonl"
            if not data.exists() or not any(p.stem == name for p in specs):
                continue
            engine = Engine.from_specs(specs, only=[name], extra_sae_dirs=[self.o.out / "saes"])
            spec = next(d.spec for d in engine.detectors if d.name == name)
            reports[test_set] = evaluate(engine, self.lm, spec, data, self.o.work / f"{test_set}.roc.png")
        (self.o.work / "report.json").write_text(json.dumps(reports, indent=2) + "\n")
        return {"report": str(self.o.work / "report.json")}

    def write_card(self) -> dict:
        from latentwatch.training.fit_card import render_card

        (self.o.out / "README.md").write_text(render_card(self.o, self.state, self.sae_name))
        return {}
