"""The storage interface: base arrays written once at ingest, plus an append-only operation log.

The engine talks to storage only through :class:`OperationLog` and :class:`ArrayStore`. The
embedded default keeps both in the dataset directory (``.npy`` files and ``oplog.sqlite``);
another backend (PostgreSQL) implements the same two classes and passes the same test kit
(:mod:`cavelab.server.storage.testing`).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STATUS_SUCCESS = 0  # CAVE's operation status codes
STATUS_CREATED = 1
STATUS_EXCEPTION = 2


@dataclass
class OperationRecord:
    """One row of the operation log: the operation's metadata and its replayable delta."""

    operation_id: int
    ts: int  # ms since the epoch; all changes of the operation carry it
    user: str
    kind: str  # "merge" | "split" | "undo" | "redo"
    details: dict[str, Any] = field(default_factory=dict)  # JSON-able: edges, coords, refs
    delta: bytes = b""
    status: int = STATUS_SUCCESS


class OperationLog(abc.ABC):
    """Append-only, durable log of operations, in operation-ID order."""

    @abc.abstractmethod
    def append(self, record: OperationRecord) -> None:
        """Store ``record``; when this returns the record survives a crash (``kill -9``).

        Raises ``StorageError`` if the record could not be stored (then nothing was stored) or
        ``ConflictError`` if its operation ID is already taken.
        """

    @abc.abstractmethod
    def __iter__(self) -> Iterator[OperationRecord]:
        """All records in ascending operation ID."""

    @abc.abstractmethod
    def last_operation_id(self) -> int:
        """The highest operation ID stored, 0 when empty."""

    @abc.abstractmethod
    def close(self) -> None: ...


class ArrayStore(abc.ABC):
    """Named numpy arrays written once (the ingested base graph) and read at startup."""

    @abc.abstractmethod
    def save(self, arrays: dict[str, np.ndarray]) -> None: ...

    @abc.abstractmethod
    def load(self, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """The saved arrays (only ``names`` when given: others may be large and unused)."""
