"""PostgreSQL operation log (``postgresql://...`` storage URL), for a lab's shared engine.

One table holds the operations of every dataset, keyed by ``(dataset, operation_id)``; a commit
returns only once PostgreSQL has made it durable (``synchronous_commit`` as configured).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

from cavelab.server.errors import ConflictError, StorageError
from cavelab.server.storage.base import OperationLog, OperationRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cavelab_operations (
    dataset TEXT NOT NULL,
    operation_id BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    "user" TEXT NOT NULL,
    kind TEXT NOT NULL,
    status INTEGER NOT NULL,
    details JSONB NOT NULL,
    delta BYTEA NOT NULL,
    PRIMARY KEY (dataset, operation_id)
)
"""


class PostgresOperationLog(OperationLog):
    def __init__(self, url: str, dataset: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self.dataset = dataset
        self._lock = threading.Lock()
        try:
            self._conn = psycopg.connect(url, autocommit=True)
            self._conn.execute(_SCHEMA)
        except psycopg.Error as e:
            raise StorageError(f"cannot open the PostgreSQL operation log at {url}: {e}") from e

    def append(self, record: OperationRecord) -> None:
        with self._lock:
            try:
                self._conn.execute(
                    'INSERT INTO cavelab_operations (dataset, operation_id, ts, "user", kind, status, details, delta) '
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        self.dataset,
                        record.operation_id,
                        record.ts,
                        record.user,
                        record.kind,
                        record.status,
                        json.dumps(record.details),
                        record.delta,
                    ),
                )
            except self._psycopg.errors.UniqueViolation as e:
                raise ConflictError(f"operation {record.operation_id} is already in the log") from e
            except self._psycopg.Error as e:
                raise StorageError(f"could not write operation {record.operation_id}: {e}") from e

    def __iter__(self) -> Iterator[OperationRecord]:
        with self._lock:
            rows = self._conn.execute(
                'SELECT operation_id, ts, "user", kind, status, details, delta FROM cavelab_operations '
                "WHERE dataset = %s ORDER BY operation_id",
                (self.dataset,),
            ).fetchall()
        for op, ts, user, kind, status, details, delta in rows:
            if isinstance(details, str):
                details = json.loads(details)
            yield OperationRecord(int(op), int(ts), user, kind, details, bytes(delta), int(status))

    def last_operation_id(self) -> int:
        with self._lock:
            (v,) = self._conn.execute(
                "SELECT COALESCE(MAX(operation_id), 0) FROM cavelab_operations WHERE dataset = %s",
                (self.dataset,),
            ).fetchone()
        return int(v)

    def drop(self) -> None:
        """Delete this dataset's operations (tests and re-ingest)."""
        with self._lock:
            self._conn.execute("DELETE FROM cavelab_operations WHERE dataset = %s", (self.dataset,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()
