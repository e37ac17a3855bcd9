"""``latentwatch fit`` on the real SmolLM2, cut short: corpus (a few prompts per part), a small
SAE with its card and scored labels, the default specs; then a rerun that redoes nothing."""

from __future__ import annotations

import json

from latentwatch import cli
from latentwatch.training.fit import Fit, FitOptions

from .test_cli import run_cli

ARGS = ["--model", "smollm2-135m-instruct", "--limit", "8", "--sae-tokens", "8192", "--sae-width", "256",
        "--sae-k", "16", "--response-tokens", "16", "--until", "specs"]  # fmt: skip


def test_the_cli_knows_the_fit_stages(tmp_path):
    names = [name for name, _, _ in Fit(FitOptions("smollm2-135m-instruct", tmp_path / "p", tmp_path / "w")).stages()]
    assert list(cli.STAGES) == names
    r = run_cli("fit", "--model", "smollm2-135m-instruct", "--until", "nosuch")
    assert r.returncode == 2 and "invalid choice: 'nosuch'" in r.stderr


def test_fit_runs_its_stages_once_and_resumes(tmp_path):
    out, work = tmp_path / "pack", tmp_path / "work"
    r = run_cli("fit", *ARGS, "--out", str(out), "--work", str(work), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    state = json.loads((work / "fit_state.json").read_text())
    assert [k for k in state if k != "wall_seconds"] == ["corpus", "sae", "specs"]
    assert all(state[k]["done"] and state[k]["seconds"] > 0 for k in ("corpus", "sae"))
    assert state["corpus"]["transcripts"] > 0 and state["corpus"]["heldout"] > 0

    sae = out / "saes" / "pack-l15"  # SmolLM2 has 30 layers: the middle one
    for name in ("cfg.json", "sae_weights.safetensors", "README.md", "labels.json", "label_scores.json"):
        assert (sae / name).exists(), name
    assert json.loads((sae / "cfg.json").read_text())["d_sae"] == 256
    specs = sorted(p.stem for p in (out / "specs").glob("*.yaml"))
    assert specs == ["harmful_compliance", "harmful_request", "refusal"]
    assert "sae: pack-l15" in (out / "specs" / "refusal.yaml").read_text()

    # A rerun finds every stage done and changes nothing.
    before = {p: p.stat().st_mtime_ns for p in sae.iterdir()}
    r = run_cli("fit", *ARGS, "--out", str(out), "--work", str(work), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((work / "fit_state.json").read_text())
    assert {k: again[k] for k in ("corpus", "sae", "specs")} == {k: state[k] for k in ("corpus", "sae", "specs")}
    assert {p: p.stat().st_mtime_ns for p in sae.iterdir()} == before


def test_the_pack_card_states_each_figure_in_its_column(tmp_path):
    import shutil

    from latentwatch.detectors.packs import pack
    from latentwatch.training.fit_card import render_card

    out, work = tmp_path / "pack", tmp_path / "work"
    shutil.copytree(pack().specs_dir, out / "specs", ignore=shutil.ignore_patterns("experimental"))
    shutil.copytree(pack().specs_dir.parent / "probes", out / "probes")
    (out / "saes").symlink_to(pack().saes_dir)
    work.mkdir()
    figures = {"auroc": 0.91, "tpr_at_1pct_fpr": 0.5, "f1": 0.8, "tpr_at_threshold": 0.7, "fpr_at_threshold": 0.02}
    report = {"refusal_test": {"detector": "refusal", "positives": 3, "negatives": 4, "refusal": figures,
                               "refusal_prefix": {"auroc": 0.6, "f1": 0.5}}}  # fmt: skip
    (work / "report.json").write_text(json.dumps(report))
    state = {"corpus": {"done": True, "seconds": None, "note": "outputs were already there"},
             "sae": {"done": True, "seconds": 12.5}}  # fmt: skip
    card = render_card(FitOptions("smollm2-135m-instruct", out, work), state, "pack-l15")
    (row,) = [line for line in card.splitlines() if line.startswith("| `refusal` on `refusal_test`")]
    assert row.split("|")[1:-1] == [" `refusal` on `refusal_test` ", " 3 / 4 ", " 0.910 ", " 0.500 ", " 0.800 ",
                                    " 0.700 / 0.020 ", " refusal_prefix: AUROC 0.600, F1 0.500 "]  # fmt: skip
    assert "| corpus | not timed here: outputs were already there |" in card and "| sae | 12.5 |" in card
