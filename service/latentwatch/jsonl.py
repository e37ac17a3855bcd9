"""JSON Lines, one object per line: the format of every data file latentwatch reads and writes
(dev sets, authored data, corpora, labelled evaluation sets)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path


def read_rows(path: Path) -> list[dict]:
    """Every object in the file, in order (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_rows(path: Path, rows: Iterable[dict]) -> None:
    """Write ``rows``, one per line, creating the folder if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
