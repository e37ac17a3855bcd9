"""``latentwatch fit`` end to end on the small bundled model, shortened: every
stage runs for real (corpus generation, sae-lens training, probe recipes,
calibration, evaluation sets, evaluation, the pack card), a rerun resumes
instead of redoing, and the pack it writes loads and scores."""

from __future__ import annotations

import json

import pytest
from latentwatch.capture.score import score_records
from latentwatch.cli import build_parser
from latentwatch.sidecar.engine import Engine
from latentwatch.training.devdata import dev_data_dir

from .conftest import BENIGN, HARMFUL

pytestmark = pytest.mark.skipif(dev_data_dir() is None, reason="fit trains on the dev sets (../shared/data/dev)")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit")
    argv = ["fit", "--model", "smollm2-135m-instruct", "--out", str(tmp / "pack" / "mini"), "--work", str(tmp / "work"),
            "--limit", "3", "--sae-tokens", "4096", "--sae-width", "512", "--sae-k", "16",
            "--response-tokens", "12"]  # fmt: skip
    args = build_parser().parse_args(argv)
    assert args.fn(args) == 0
    return args, tmp / "pack" / "mini", tmp / "work"


def test_fit_writes_a_pack_with_every_stage_recorded(fitted):
    _, pack, work = fitted
    state = json.loads((work / "fit_state.json").read_text())
    stages = ["corpus", "sae", "specs", "probes", "eval_sets", "evaluate", "card"]
    assert all(state[s]["done"] for s in stages) and state["wall_seconds"] > 0
    assert {p.name for p in (pack / "specs").glob("*.yaml")} == {
        "harmful_request.yaml", "refusal.yaml", "harmful_compliance.yaml"}  # fmt: skip
    assert (pack / "probes" / "harmful_request.probe.safetensors").exists()
    assert (pack / "saes" / "mini-l15" / "cfg.json").exists()  # SmolLM2 has 30 layers: the middle one
    card = (pack / "README.md").read_text()
    assert "latentwatch fit --model smollm2-135m-instruct" in card and "AUROC" in card
    report = json.loads((work / "report.json").read_text())
    assert {"harmful_request_test", "refusal_test", "harmful_compliance_test"} <= set(report)
    # no dev-set text ships: the corpus and evaluation files stay in the work folder
    assert not list(pack.rglob("*.jsonl"))


def test_a_rerun_resumes_instead_of_redoing(fitted):
    args, pack, work = fitted
    probe = pack / "probes" / "harmful_request.probe.safetensors"
    before = (probe.stat().st_mtime_ns, (work / "fit_state.json").read_text())
    assert args.fn(args) == 0
    assert probe.stat().st_mtime_ns == before[0]
    assert json.loads((work / "fit_state.json").read_text())["probes"] == json.loads(before[1])["probes"]


def test_the_fitted_pack_scores_a_harmful_request_above_a_benign_one(fitted, lm):
    _, pack, _ = fitted
    engine = Engine.from_specs(sorted((pack / "specs").glob("*.yaml")), extra_sae_dirs=[pack / "saes"])
    records = [(n, {"messages": [{"role": "user", "content": t}]}) for n, t in (("h", HARMFUL), ("b", BENIGN))]
    h, b = (r["scores"]["harmful_request"]["score"] for r in score_records(engine, lm, records))
    assert h > b
