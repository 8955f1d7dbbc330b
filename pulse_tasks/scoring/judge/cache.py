"""Content-addressed SQLite cache of valid judge replies.

The key hashes everything that changes the judge's output and nothing else: model, the full
messages (rubric text, ground truth, candidate) and decoding settings. The endpoint and API key
are not part of it, and nothing secret is stored. One file serves many threads (one connection
per thread) and processes (WAL journal, busy timeout). Cache trouble never fails a run: reads
miss and writes are dropped with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_random

log = logging.getLogger(__name__)

# Concurrent writers (lmms-eval ranks, a parallel `ecgbench judge`) wait this long for the lock.
BUSY_TIMEOUT_MS = 30_000
INIT_RETRY_S = 10.0  # set-up retries when processes create the file at once (WAL switch is not busy-retried)
SCHEMA_VERSION = 1  # bump if the table layout changes (a new table name, old rows ignored)
_TABLE = f"judge_replies_v{SCHEMA_VERSION}"


def cache_key(model: str, messages: list[dict[str, str]], decoding: dict[str, Any]) -> str:
    """sha256 over the model, messages and decoding settings (canonical JSON)."""
    payload = json.dumps({"model": model, "messages": messages, "decoding": decoding},
                         sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class JudgeCache:
    """Replies keyed by :func:`cache_key`; thread- and process-safe, never raises on use."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self.write_errors = 0
        self.disabled_reason: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Two processes creating the file at once can get "database is locked" from the switch
            # to WAL, which SQLite does not retry under busy_timeout: retry the set-up briefly.
            for attempt in Retrying(retry=retry_if_exception_type(sqlite3.OperationalError),
                                    stop=stop_after_delay(INIT_RETRY_S), wait=wait_random(0.01, 0.1), reraise=True):
                with attempt, self._lock:
                    self._setup()
        except (OSError, sqlite3.Error) as exc:
            self.disabled_reason = f"{type(exc).__name__}: {exc}"
            log.warning("judge cache %s unavailable, judging without it: %s", self.path, self.disabled_reason)

    def _setup(self) -> None:
        try:
            conn = self._connect()
            conn.execute(f"CREATE TABLE IF NOT EXISTS {_TABLE} (key TEXT PRIMARY KEY, model TEXT NOT NULL, "
                         "reply TEXT NOT NULL, usage TEXT NOT NULL, created REAL NOT NULL)")
            conn.commit()
        except sqlite3.OperationalError:
            self._drop_thread_connection()  # the next attempt starts from a fresh connection
            raise

    def _drop_thread_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            self._connections.remove(conn)
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, across processes
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable enough for a cache, much faster
            self._local.conn = conn
            self._connections.append(conn)
        return conn

    def get(self, key: str) -> tuple[str, dict[str, int]] | None:
        """The cached reply text and its original token usage, or None."""
        if self.disabled_reason:
            return None
        try:
            row = self._connect().execute(f"SELECT reply, usage FROM {_TABLE} WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            log.warning("judge cache read failed (treated as a miss): %s", exc)
            return None
        return (row[0], json.loads(row[1])) if row else None

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def put(self, key: str, model: str, reply: str, usage: dict[str, int]) -> bool:
        """Store a valid reply; False (and a warning) when the write failed."""
        if self.disabled_reason:
            return False
        try:
            conn = self._connect()
            with conn:
                conn.execute(f"INSERT OR REPLACE INTO {_TABLE} (key, model, reply, usage, created) VALUES (?, ?, ?, ?, ?)",
                             (key, model, reply, json.dumps(usage), time.time()))
            return True
        except sqlite3.Error as exc:
            with self._lock:
                self.write_errors += 1
            log.warning("judge cache write failed (the score is kept, only not cached): %s", exc)
            return False

    def __len__(self) -> int:
        if self.disabled_reason:
            return 0
        try:
            return int(self._connect().execute(f"SELECT COUNT(*) FROM {_TABLE}").fetchone()[0])
        except sqlite3.Error:
            return 0

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
            self._local = threading.local()
