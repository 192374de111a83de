"""The embedded default backend: ``.npy`` files and an SQLite operation log in the dataset dir."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from cavelab.server.errors import ConflictError, StorageError
from cavelab.server.storage.base import ArrayStore, OperationLog, OperationRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS operations (
    operation_id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    user TEXT NOT NULL,
    kind TEXT NOT NULL,
    status INTEGER NOT NULL,
    details TEXT NOT NULL,
    delta BLOB NOT NULL
)
"""


class SQLiteOperationLog(OperationLog):
    """Operation log in one SQLite file (WAL, ``synchronous=FULL``: a commit is on disk)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as e:
            raise StorageError(f"cannot open the operation log {self.path}: {e}") from e

    def append(self, record: OperationRecord) -> None:
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO operations VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.operation_id,
                        record.ts,
                        record.user,
                        record.kind,
                        record.status,
                        json.dumps(record.details),
                        record.delta,
                    ),
                )
            except sqlite3.IntegrityError as e:
                raise ConflictError(f"operation {record.operation_id} is already in the log") from e
            except sqlite3.Error as e:
                raise StorageError(f"could not write operation {record.operation_id}: {e}") from e

    def __iter__(self) -> Iterator[OperationRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT operation_id, ts, user, kind, status, details, delta "
                "FROM operations ORDER BY operation_id"
            ).fetchall()
        for op, ts, user, kind, status, details, delta in rows:
            yield OperationRecord(op, ts, user, kind, json.loads(details), bytes(delta), status)

    def last_operation_id(self) -> int:
        with self._lock:
            (v,) = self._db.execute("SELECT COALESCE(MAX(operation_id), 0) FROM operations").fetchone()
        return int(v)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class NpyArrayStore(ArrayStore):
    """Arrays as ``<dir>/<name>.npy``; loading memory-maps nothing and copies into RAM."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def save(self, arrays: dict[str, np.ndarray]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for name, a in arrays.items():
            tmp = self.dir / f"{name}.tmp.npy"
            np.save(tmp, np.asarray(a))
            tmp.replace(self.dir / f"{name}.npy")

    def load(self, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        if not self.dir.is_dir():
            raise StorageError(f"no graph arrays in {self.dir}; re-run `cavelab ingest`")
        wanted = None if names is None else set(names)
        return {
            p.name[: -len(".npy")]: np.load(p)
            for p in sorted(self.dir.glob("*.npy"))
            if wanted is None or p.name[: -len(".npy")] in wanted
        }
