"""``latentwatch score --ray``: the same scoring as a Ray Data job, on a local Ray cluster the
test starts (``ray start --head``), gives the single-process path's output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import ray  # noqa: F401
except ImportError:  # CI installs the ray extra, so there a missing Ray fails instead of skipping
    if os.environ.get("CI"):
        raise
    pytest.skip("the Ray test needs the ray extra (setup.sh installs it)", allow_module_level=True)

from latentwatch.jsonl import read_rows  # noqa: E402
from latentwatch.training.corpus import DATA_DIR  # noqa: E402

from .conftest import free_port  # noqa: E402
from .test_cli import run_cli  # noqa: E402

N = 200


def _records(path: Path) -> None:
    """200 records from the project's authored responses (prompt + teacher-forced answer)."""
    rows = read_rows(DATA_DIR / "responses.jsonl")[:N]
    path.write_text("".join(
        json.dumps({"id": f"r{i}", "messages": [{"role": "user", "content": r["prompt"]}], "response": r["response"]})
        + "\n" for i, r in enumerate(rows)
    ))  # fmt: skip


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent))
    port = free_port()
    # No token authentication on this loopback-only test cluster, whatever ~/.ray holds.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    temp = tmp_path_factory.mktemp("ray")
    start = [ray_cli, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
             "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats"]  # fmt: skip
    subprocess.run(start, check=True, env=env, capture_output=True, timeout=180)
    yield f"127.0.0.1:{port}"
    subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_ray_scoring_equals_the_single_process_path(tmp_path, ray_cluster, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # as the cluster was started
    data = tmp_path / "records.jsonl"
    _records(data)
    single, on_ray = tmp_path / "single.jsonl", tmp_path / "ray.jsonl"
    r = run_cli("score", str(data), "-o", str(single))
    assert r.returncode == 0, r.stderr
    r = run_cli("score", str(data), "-o", str(on_ray), "--ray", ray_cluster, "--workers", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    a = [json.loads(x) for x in single.read_text().splitlines()]
    b = [json.loads(x) for x in on_ray.read_text().splitlines()]
    assert len(a) == len(b) == N
    assert [x["id"] for x in b] == [f"r{i}" for i in range(N)]  # input order
    flagged = 0
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        assert x["scores"].keys() == y["scores"].keys()
        for name, s in x["scores"].items():
            t = y["scores"][name]
            assert (s["flagged"], s["token_span"], s["low_confidence"]) == (t["flagged"], t["token_span"],
                                                                            t["low_confidence"])  # fmt: skip
            assert [e["latent"] for e in s["evidence"]] == [e["latent"] for e in t["evidence"]]
            worst = max(worst, abs(s["score"] - t["score"]))
            flagged += s["flagged"]
    print(f"largest score difference Ray vs single process: {worst:.2e}; {flagged} flags")
    assert worst <= 1e-5  # same code, batches cut alike; only float summation order may differ
    assert flagged
