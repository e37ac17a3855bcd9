"""The pack card ``latentwatch fit`` writes: what ships, the held-apart figures
with their baselines, the wall time of every stage and the command that
reproduces it all. Generated from ``fit_state.json`` and the evaluation report,
so the card never states a figure the run did not measure."""

from __future__ import annotations

import json
from math import nan

from latentwatch.detectors.base import DetectorSpec


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _detector_rows(report: dict) -> list[str]:
    rows = []
    for test_set, r in report.items():
        name = r["detector"]
        d = r[name]
        line = (f"| `{name}` on `{test_set}` | {r['positives']} / {r['negatives']} | {_pct(d['auroc'])} "
                f"| {_pct(d['tpr_at_1pct_fpr'])} | {_pct(d['f1'])} "
                f"| {_pct(d['tpr_at_threshold'])} / {_pct(d['fpr_at_threshold'])} |")  # fmt: skip
        base = [f"{b}: AUROC {_pct(v['auroc'])}, F1 {_pct(v['f1'])}" for b, v in r.items() if isinstance(v, dict)
                and b != name and "auroc" in v]  # fmt: skip
        rows.append(line + f" {'; '.join(base) or '-'} |")
    return rows


def _signature(pack_dir, name: str) -> str:
    """The latents a detector's alerts name first, with their labels."""
    from latentwatch.detectors.kinds import build, load_spec
    from latentwatch.detectors.saes import load_sae_dir

    path = pack_dir / "specs" / f"{name}.yaml"
    spec = load_spec(path)
    if spec.sae is None:
        return ""
    det = build(spec, load_sae_dir(pack_dir / "saes" / spec.sae))
    return ", ".join(f"{e.index} `{e.label or '?'}`" for e in det.signature())


def render_card(opts, state: dict, sae_name: str) -> str:
    report_path = opts.work / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    q = (state.get("sae") or {}).get("quality") or {}
    lines = [
        f"# Detector pack: {opts.out.name}",
        "",
        f"Written by `latentwatch fit --model {opts.model}`. Detectors: "
        + ", ".join(f"`{p.stem}`" for p in sorted((opts.out / "specs").glob("*.yaml")))
        + ". Specs in `specs/`, probe artifacts in `probes/`, the SAE (sae-lens format, with its own card) "
        f"in `saes/{sae_name}/`.",
        "",
        "## Held-apart figures",
        "",
        "Measured by the fit's evaluation stage on the dev sets' held-apart test split (whole JailbreakBench "
        "categories and two of its four answering models held apart; authored look-alike and request types held "
        "apart) and on the model's own answers to held-apart prompts, scored through the same engine the sidecar "
        "runs. Public data from other sources will read lower; the project's issue tracker reports such figures.",
        "",
        "| detector | positives / negatives | AUROC | TPR @ 1% FPR | F1 @ threshold | TPR / FPR @ threshold "
        "| baselines |",
        "|---|---|---|---|---|---|---|",
        *_detector_rows(report),
        "",
    ]
    probes = (state.get("probes") or {}).get("reports") or {}
    if probes:
        lines += ["Fit reports (held-apart sets measured when the probe was fitted):", "", "```json",
                  json.dumps(probes, indent=1), "```", ""]  # fmt: skip
    if q:
        lines += [
            f"## SAE `{sae_name}`",
            "",
            f"Held-out chat ({q.get('heldout_transcripts')} transcripts, {q.get('tokens', 0):,} tokens, incl. other "
            f"chat models' answers): FVE {1 - q['fvu']:.3f} (per dimension {1 - q.get('fvu_per_dimension', nan):.3f}), "
            f"L0 {q['l0']:.1f}, dead latents {q['dead_fraction']:.1%}, "
            f"CE increase {q['ce_increase_ratio']:.3f} of the zero-ablation gap.",
            "",
        ]
    sigs = {n: _signature(opts.out, n) for n in ("harmful_request", "refusal")
            if (opts.out / "specs" / f"{n}.yaml").exists()}  # fmt: skip
    if any(sigs.values()):
        lines += ["## The latents alerts name first", ""]
        lines += [f"- `{n}`: {s}" for n, s in sigs.items() if s]
        lines += [""]
    notes = opts.out / "NOTES.md"  # what a person measured or noticed beyond the run: kept across refits
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    lines += ["## Wall time (2-core CPU machine)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v['seconds'] if v.get('seconds') is not None else 'not timed here: ' + v.get('note', '?')} |"
              for k, v in state.items() if isinstance(v, dict)]  # fmt: skip
    lines += [
        "",
        "## Reproduce",
        "",
        "```bash",
        f"latentwatch fit {opts.as_args()}",
        "```",
        "",
    ]
    for name in dict.fromkeys(r["detector"] for r in report.values()):
        spec = DetectorSpec.from_yaml(opts.out / "specs" / f"{name}.yaml")
        lines.append(f"- `{name}`: threshold {spec.threshold} ({(spec.calibration or {}).get('source', '')})")
    return "\n".join(lines) + "\n"
