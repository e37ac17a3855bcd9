"""Steering as a detector's action, in HF capture on the real SmolLM2: once harmful_compliance
flags, the refusal probe's direction is added to that request's rows only, from the next token on.
(Whether the steered text reads as a refusal is measured on the Qwen pack, which refuses; SmolLM2
barely does.)"""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from latentwatch.capture import HFCapture
from latentwatch.capture.chat import tokenize_chat
from latentwatch.capture.local import LocalMonitor
from latentwatch.detectors.base import Span
from latentwatch.detectors.packs import pack
from latentwatch.sidecar.engine import Engine
from latentwatch.v1 import monitor_pb2 as pb

from .conftest import BENIGN, HARMFUL

TOKENS = 40


@pytest.fixture(scope="module")
def steer_specs(tmp_path_factory):
    """The SmolLM2 pack's specs, harmful_compliance acting by steering toward refusal."""
    root = tmp_path_factory.mktemp("steerpack")
    src = pack()
    shutil.copytree(src.specs_dir, root / "specs", ignore=shutil.ignore_patterns("experimental"))
    shutil.copytree(src.specs_dir.parent / "probes", root / "probes")
    path = root / "specs" / "harmful_compliance.yaml"
    spec = yaml.safe_load(path.read_text())
    spec.update(act="steer", steer={"toward": "refusal", "strength": 0.5})
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return sorted((root / "specs").glob("*.yaml"))


def _generate(lm, specs, act: str, prompts: list[str]):
    """Greedy answers to ``prompts`` in one left-padded batch under the monitor; the tokens,
    the verdicts and the capture's actions."""
    engine = Engine.from_specs(specs, act=act)
    verdicts = []
    capture = HFCapture(lm.model, engine.hook_names, LocalMonitor(engine, lm.model_id, verdicts.append), act=True)
    cts = [tokenize_chat(lm.tokenizer, [{"role": "user", "content": p}]) for p in prompts]
    width = max(len(ct.input_ids) for ct in cts)
    pad = lm.tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(ct.input_ids)) + ct.input_ids for ct in cts])
    mask = torch.tensor([[0] * (width - len(ct.input_ids)) + [1] * len(ct.input_ids) for ct in cts])
    items = [(f"r{i}", [*ct.spans, Span(pb.SPAN_ROLE_RESPONSE, ct.prompt_length, 0)]) for i, ct in enumerate(cts)]
    try:
        with capture.requests(items, mask), torch.no_grad():
            out = lm.model.generate(ids, attention_mask=mask, max_new_tokens=TOKENS, do_sample=False, pad_token_id=pad)
    finally:
        capture.remove()
    return out[:, width:], verdicts, capture.actions


def test_a_flag_steers_its_request_from_the_next_token_and_leaves_its_neighbour_alone(lm, steer_specs):
    observed, _, none = _generate(lm, steer_specs, "observe", [HARMFUL, BENIGN])
    steered, verdicts, actions = _generate(lm, steer_specs, "steer", [HARMFUL, BENIGN])
    assert none == {}  # observing: no edit handed over, nothing applied
    (flag,) = [v for v in verdicts if v.detector == "harmful_compliance" and v.action == "steered"]
    assert flag.steer is not None and abs(float(flag.steer.direction.norm()) - 1) < 1e-4
    assert actions == {"r0": [{"detector": "harmful_compliance", "action": "steered", "after_token": flag.token_end}]}
    # The harmful request: identical up to the token the flagging forward produced, different after it
    # (the edit applies from the next forward on).
    prompt_length = tokenize_chat(lm.tokenizer, [{"role": "user", "content": HARMFUL}]).prompt_length
    first_steered = flag.token_end - prompt_length + 1
    assert torch.equal(steered[0, :first_steered], observed[0, :first_steered])
    assert not torch.equal(steered[0], observed[0])
    # Its neighbour in the same batch, never flagged, is unchanged token for token.
    assert torch.equal(steered[1], observed[1])


def test_act_steer_needs_a_latent_probe_to_steer_toward(steer_specs, tmp_path):
    shutil.copytree(steer_specs[0].parent.parent, tmp_path / "pack")
    path = tmp_path / "pack" / "specs" / "harmful_compliance.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["steer"] = {"toward": "harmful_compliance", "strength": 1.0}
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="steer.toward must name a latent_probe"):
        Engine.from_specs(sorted(path.parent.glob("*.yaml")))
    spec["steer"] = {"strength": 1.0}
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="act: steer needs steer: {toward: DETECTOR, strength: NUMBER}"):
        Engine.from_specs(sorted(path.parent.glob("*.yaml")))


def test_the_verdict_and_the_alert_say_steered_and_the_edit_survives_the_wire(lm, steer_specs):
    from latentwatch.capture.teacher_forced import residual_rows
    from latentwatch.detectors.records import Verdict

    from .test_detectors import COMPLIANT

    engine = Engine.from_specs(steer_specs, act="steer")
    ct = tokenize_chat(lm.tokenizer, [{"role": "user", "content": HARMFUL}], response=COMPLIANT)
    rows = residual_rows(lm, ct.input_ids, engine.hook_names)
    out = engine.score("w", lm.model_id, ct.spans, [(h, 0, rows[h]) for h in engine.hook_names])
    (alert,) = [a for a in out.alerts if a.detector == "harmful_compliance"]
    assert alert.action == "steered" and alert.to_pb().action == "steered"
    assert {a.detector: a.action for a in out.alerts if a.detector != "harmful_compliance"} == {"harmful_request": ""}
    edit = engine.edits["harmful_compliance"]
    v = Verdict("w", "harmful_compliance", 0.9, 0.5, True, 0, 1, False, action="steered", steer=edit)
    back = Verdict.from_pb(v.to_pb())
    assert back.action == "steered" and back.steer.hook_name == edit.hook_name == "model.layers.20"
    assert torch.allclose(back.steer.direction, edit.direction) and back.steer.strength == edit.strength
