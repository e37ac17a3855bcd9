"""Steering inside a real vLLM CPU server: SmolLM2 with the plugin (``LATENTWATCH_VLLM_ACT=steer``)
and a sidecar whose harmful_compliance spec acts by steering toward refusal. A harmful prompt and
a benign one run side by side in the batch, opted out of monitoring (so nothing steers), then
monitored. The steered answer keeps its first tokens and then
departs; the benign neighbour is the same token for token; the alert records ``action: steered``."""

from __future__ import annotations

import shutil
import sqlite3

import pytest
import yaml
from latentwatch.detectors.packs import pack
from latentwatch.models import bundled_checkpoint
from latentwatch.sidecar.server import SidecarThread

from .conftest import BENIGN, HARMFUL, free_port, make_config, wait_for
from .test_vllm import worker_stats
from .vllm_server import batch_completions, vllm_server

MODEL = "smollm2-135m-instruct"
TOKENS = 40


@pytest.fixture(scope="module")
def steer_stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm-steer")
    src = pack(MODEL)
    shutil.copytree(src.specs_dir, tmp / "pack" / "specs", ignore=shutil.ignore_patterns("experimental"))
    shutil.copytree(src.specs_dir.parent / "probes", tmp / "pack" / "probes")
    path = tmp / "pack" / "specs" / "harmful_compliance.yaml"
    spec = yaml.safe_load(path.read_text())
    spec.update(act="steer", steer={"toward": "refusal", "strength": 0.5})
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    specs = [str(p) for p in sorted(path.parent.glob("*.yaml"))]
    sidecar = SidecarThread(make_config(tmp, listen=f"127.0.0.1:{free_port()}", detector_specs=specs, act="steer"))
    env = {"LATENTWATCH_VLLM_SIDECAR": sidecar.address, "LATENTWATCH_VLLM_LAYERS": "12,20",
           "LATENTWATCH_VLLM_ACT": "steer", "VLLM_SERVER_DEV_MODE": "1"}  # fmt: skip
    try:
        # No prefix cache: a repeated prompt must be computed as the first time (its cached
        # blocks would change the numerics of what follows).
        with vllm_server(tmp, bundled_checkpoint(MODEL), MODEL, env, ("--no-enable-prefix-caching",)) as base:
            yield base, tmp / "alerts.sqlite"
    finally:
        sidecar.stop()


def test_a_steered_request_departs_and_its_batch_neighbour_does_not(steer_stack, lm):
    base, db = steer_stack
    plain_harmful, plain_benign = batch_completions(base, MODEL, lm, [HARMFUL, BENIGN], TOKENS, monitored=False)
    assert worker_stats(base)["steered_rows"] == 0  # nothing flagged, nothing edited
    harmful, benign = batch_completions(base, MODEL, lm, [HARMFUL, BENIGN], TOKENS, monitored=True)
    assert harmful[:16] == plain_harmful[:16]  # harmful_compliance flags after 16 response tokens
    assert harmful != plain_harmful, lm.tokenizer.decode(harmful)
    assert worker_stats(base)["steered_rows"] > 0
    assert benign == plain_benign  # the neighbour in the same batch: token for token

    def steered_alerts():
        with sqlite3.connect(db) as c:
            return c.execute("SELECT action FROM alerts WHERE detector = 'harmful_compliance'").fetchall()

    assert wait_for(steered_alerts, 30, "the steered alert") == [("steered",)]
