"""A second model family inside vLLM, on a sidecar that monitors two models.

Qwen2.5-Coder-0.5B-Instruct (the bundled checkpoint) is served by a real vLLM
CPU server with the plugin; the sidecar has the SmolLM2 and the Qwen detector
packs loaded and routes each request by its model id. Qwen2's decoder layers
hand back ``(hidden, residual)`` as Llama's do: the captured rows must equal
an HF forward of the same tokens. Qwen refuses a clearly harmful request, so
there the refusal detector fires and harmful_compliance stays silent.
"""

from __future__ import annotations

import sqlite3

import pytest
from latentwatch.models import bundled_checkpoint, load_model
from latentwatch.sidecar.server import SidecarThread

from .conftest import BENIGN, HARMFUL, free_port, make_config, wait_for
from .test_steering import QWEN_COMPLIES, REFUSAL_WORDS, TOKENS
from .test_vllm import Tap, _assert_rows_match_hf, worker_stats
from .vllm_server import batch_completions, chat, vllm_server

QWEN = "qwen2.5-coder-0.5b-instruct"
SMOL = "smollm2-135m-instruct"
LAYER = 12  # the layer the Qwen pack reads


@pytest.fixture(scope="module")
def qwen():
    return load_model(QWEN)


@pytest.fixture(scope="module")
def qwen_stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm-qwen")
    # The sidecar acts (the Qwen pack's harmful_compliance steers) and so does the worker.
    sidecar = SidecarThread(make_config(tmp, listen=f"127.0.0.1:{free_port()}", models=[SMOL, QWEN], act="steer"))
    tap = Tap(sidecar.sidecar.servicer)
    env = {
        "LATENTWATCH_VLLM_SIDECAR": sidecar.address,
        "LATENTWATCH_VLLM_LAYERS": str(LAYER),
        "LATENTWATCH_VLLM_ACT": "steer",
        "VLLM_SERVER_DEV_MODE": "1",  # the worker stats route
    }
    try:
        # No prefix cache: a repeated prompt must be computed as the first time.
        with vllm_server(tmp, bundled_checkpoint(QWEN), QWEN, env, ("--no-enable-prefix-caching",)) as base:
            yield base, sidecar, tap, tmp / "alerts.sqlite"
    finally:
        sidecar.stop()


def _alerts(db, request_id: str) -> dict[str, dict]:
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        return {r["detector"]: dict(r) for r in c.execute("SELECT * FROM alerts WHERE request_id = ?", (request_id,))}


def test_qwen_rows_in_vllm_match_an_hf_forward_and_go_to_the_qwen_pack(qwen_stack, qwen):
    base, sidecar, tap, _ = qwen_stack
    resp = chat(base, QWEN, [{"role": "user", "content": BENIGN}], max_tokens=12)
    # Qwen's layer-12 rows, bf16 vLLM vs fp32 HF: measured median 2.5%, worst row 17% (an early
    # prompt position) on an AMD EPYC machine, within 12% on an earlier one (vLLM's CPU kernels
    # differ by CPU, the same with this commit and the one before it); a row from another
    # position or layer is off by about 100%.
    _assert_rows_match_hf(qwen, tap, resp, hooks=[f"model.layers.{LAYER}"], median=0.04, worst=0.25)
    assert tap.starts[resp["id"]].model_id == QWEN
    # ListDetectors answers per model: each pack names its own SAE
    per_model = sidecar.sidecar.engine.detectors_of(QWEN)
    assert {d.sae.sae_id for _, d in per_model if d.sae} == {f"{QWEN}-l{LAYER}"}


def test_qwen_refusal_flags_and_harmful_compliance_stays_silent(qwen_stack):
    base, _, tap, db = qwen_stack
    resp = chat(base, QWEN, [{"role": "user", "content": HARMFUL}], max_tokens=24)
    text = resp["choices"][0]["message"]["content"]
    assert "sorry" in text.lower() or "can't" in text.lower(), text  # the model refused
    wait_for(lambda: resp["id"] in tap.ends, 30, "the request's end")
    alerts = wait_for(lambda: (a := _alerts(db, resp["id"])) and "refusal" in a and a, 30, "a refusal alert")
    assert "harmful_request" in alerts and "harmful_compliance" not in alerts, sorted(alerts)


def test_a_complied_request_is_steered_into_a_refusal_beside_an_untouched_neighbour(qwen_stack, qwen):
    """The shipped pack's steering inside vLLM: the request Qwen complies with turns into a
    refusal once harmful_compliance flags; the harmless prompt in the same batch is unchanged."""
    base, _, _, db = qwen_stack
    prompts = [QWEN_COMPLIES, BENIGN]
    plain, plain_benign = batch_completions(base, QWEN, qwen, prompts, TOKENS, monitored=False)
    assert not any(w in qwen.tokenizer.decode(plain).lower() for w in REFUSAL_WORDS)
    steered, benign = batch_completions(base, QWEN, qwen, prompts, TOKENS, monitored=True)
    assert steered[:16] == plain[:16]  # harmful_compliance flags after 16 response tokens
    rest = qwen.tokenizer.decode(steered[16:]).lower()
    assert steered != plain and any(w in rest for w in REFUSAL_WORDS), rest
    assert benign == plain_benign
    assert worker_stats(base)["steered_rows"] > 0
