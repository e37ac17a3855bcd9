"""``latentwatch score FILE --ray [ADDRESS]``: the same scoring as a Ray Data job.

The records go through ``map_batches`` to a pool of actors, each holding one model
and one engine (loaded once), which run ``latentwatch.capture.score.score_records``,
the single-process path itself; the lines come back in input order. Ray ships the
actor class to the workers with cloudpickle: point ``--ray`` only at a cluster you
control, as you would any Ray job. Needs the ``ray`` extra (``ray[data]``).
"""

from __future__ import annotations

import json
from pathlib import Path

from latentwatch.capture.score import read_records, score_records


class Scorer:
    """A Ray actor: one model and engine, scoring the batches it is handed."""

    def __init__(self, model: str, spec_paths: list[str], only: list[str] | None, batch_size: int):
        from latentwatch.models import load_model
        from latentwatch.sidecar.engine import Engine

        self.lm = load_model(model)
        self.engine = Engine.from_specs([Path(p) for p in spec_paths], only=only)
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        records = [(str(rid), json.loads(rec)) for rid, rec in zip(batch["id"], batch["record"], strict=True)]
        lines = [json.dumps(out) for out in score_records(self.engine, self.lm, records, self.batch_size)]
        return {"index": batch["index"], "line": lines}


def score_file_ray(
    path: Path,
    out,
    model: str,
    spec_paths: list[Path],
    only: list[str] | None = None,
    address: str | None = None,
    workers: int = 1,
    batch_size: int = 8,
    records_per_task: int = 64,
) -> int:
    """Score ``path`` on a Ray cluster (``address``; None starts a local one) with ``workers``
    actors; write the JSON lines to ``out`` in input order and return the count."""
    import ray

    records = [(str(rec.get("id", lineno)), rec) for lineno, rec in read_records(path)]  # validate all first
    if address is None:  # a local cluster, on loopback only
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    else:
        ray.init(address=address, log_to_driver=False, ignore_reinit_error=True)
    items = [{"index": i, "id": rid, "record": json.dumps(rec)} for i, (rid, rec) in enumerate(records)]
    scored = ray.data.from_items(items).map_batches(
        Scorer,
        fn_constructor_kwargs={"model": model, "spec_paths": [str(p) for p in spec_paths], "only": only,
                               "batch_size": batch_size},
        batch_size=records_per_task,
        batch_format="numpy",
        concurrency=workers,
        num_cpus=1,
    )  # fmt: skip
    for row in sorted(scored.take_all(), key=lambda r: int(r["index"])):
        out.write(str(row["line"]) + "\n")
    return len(records)
