"""A durable local queue of Redis stream entries, holding alerts while Redis is unreachable.

SQLite because it is in the standard library and every push is a committed
transaction: a spooled alert survives the sidecar being killed, and the next
sidecar on the same file replays it. The rowid order is the order alerts were
raised, which is the order they are replayed in.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path


class AlertSpool:
    """FIFO of stream-entry field maps in one SQLite file; safe to share between threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: autocommit, each statement is its own durable transaction.
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")  # appends do not rewrite the file; FULL sync keeps them
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, fields TEXT)")
        self._depth = self._db.execute("SELECT COUNT(*) FROM spool").fetchone()[0]

    def __len__(self) -> int:
        return self._depth

    def push(self, fields: dict[str, str]) -> None:
        with self._lock:
            self._db.execute("INSERT INTO spool (fields) VALUES (?)", (json.dumps(fields),))
            self._depth += 1

    def peek(self, limit: int) -> list[tuple[int, dict[str, str]]]:
        """The oldest ``limit`` entries as (sequence number, fields), oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT seq, fields FROM spool ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [(seq, json.loads(text)) for seq, text in rows]

    def remove_through(self, seq: int) -> None:
        """Forget every entry up to and including ``seq`` (they reached Redis)."""
        with self._lock:
            self._db.execute("DELETE FROM spool WHERE seq <= ?", (seq,))
            self._depth = self._db.execute("SELECT COUNT(*) FROM spool").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
