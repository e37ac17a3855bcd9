"""Configuration layering, the committed stubs, and the wire tensor codec."""

from __future__ import annotations

import pytest
import torch
from latentwatch.sidecar.config import Config
from latentwatch.wire import protogen
from latentwatch.wire.codec import from_wire, to_wire
from latentwatch.wire.errors import MonitorError


def test_config_file_then_env_then_flags(tmp_path):
    f = tmp_path / "lw.yaml"
    f.write_text("listen: unix:///tmp/lw.sock\nredis_stream: from-file\nsession_ttl_s: 10\n")
    env = {"LATENTWATCH_REDIS_STREAM": "from-env", "LATENTWATCH_METRICS_PORT": "none", "LATENTWATCH_DETECTORS": "a,b"}
    cfg = Config.load(str(f), env=env, redis_url="redis://x")
    assert cfg.listen == "unix:///tmp/lw.sock" and cfg.session_ttl_s == 10
    assert cfg.redis_stream == "from-env" and cfg.metrics_port is None and cfg.detectors == ["a", "b"]
    assert cfg.redis_url == "redis://x"


def test_config_rejects_unknown_settings(tmp_path):
    f = tmp_path / "lw.yaml"
    f.write_text("lisen: 1.2.3.4:5\n")
    with pytest.raises(ValueError, match="unknown settings"):
        Config.load(str(f), env={})


def test_true_false_settings_from_the_environment():
    assert Config.load(env={"LATENTWATCH_REDIS_CLUSTER": "true"}).redis_cluster is True
    assert Config.load(env={"LATENTWATCH_REDIS_CLUSTER": "0"}).redis_cluster is False
    with pytest.raises(ValueError, match="true/false setting, got 'maybe'"):
        Config.load(env={"LATENTWATCH_REDIS_CLUSTER": "maybe"})


def test_default_binds_to_a_unix_socket_and_loopback():
    assert Config().listen.startswith("unix:") and Config().metrics_host == "127.0.0.1"


def test_committed_stubs_match_proto():
    assert protogen.main(["--check"]) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_wire_round_trip(dtype):
    x = torch.randn(5, 7).to(dtype)
    assert torch.equal(from_wire(to_wire(x), 7), x.float())


def test_wire_rejects_nan():
    x = torch.zeros(2, 3)
    x[0, 1] = float("nan")
    with pytest.raises(MonitorError, match="NaN"):
        from_wire(to_wire(x), 3)


def test_naming_an_experimental_detector_enables_it_with_what_it_reads():
    """`--detectors rag_ignored` scores the pack's experimental rule (and the probe it reads);
    with no names, only the pack's defaults load."""
    from latentwatch.detectors.packs import pack_for_model
    from latentwatch.sidecar.engine import Engine

    model = "qwen2.5-coder-0.5b-instruct"
    assert Config(models=[model]).spec_paths() == pack_for_model(model).spec_paths()
    cfg = Config(models=[model], detectors=["rag_ignored"])
    engine = Engine.from_specs(cfg.spec_paths(), only=cfg.detectors)
    assert {d.name for d in engine.detectors} == {"rag_ignored", "context_attending"}
    assert engine.heads and engine.hook_names == ["model.layers.12"]
