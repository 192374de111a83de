"""Persistence backends behind a small interface (:mod:`cavelab.server.storage.base`)."""

from __future__ import annotations

from pathlib import Path

from cavelab.server.storage.base import ArrayStore, OperationLog, OperationRecord

__all__ = ["ArrayStore", "OperationLog", "OperationRecord", "open_array_store", "open_operation_log"]

OPLOG_FILE = "oplog.sqlite"
GRAPH_DIR = "graph"


def open_operation_log(dataset_dir: str | Path, url: str | None = None) -> OperationLog:
    """The operation log of a dataset: SQLite in the dataset dir unless ``url`` names another backend."""
    if url is None or url.startswith("sqlite"):
        from cavelab.server.storage.sqlite import SQLiteOperationLog

        path = Path(dataset_dir) / OPLOG_FILE if url is None else url.split("://", 1)[1]
        return SQLiteOperationLog(path)
    if url.startswith(("postgresql://", "postgres://")):
        from cavelab.server.storage.postgres import PostgresOperationLog

        return PostgresOperationLog(url, dataset=Path(dataset_dir).name)
    raise ValueError(f"unknown storage URL {url!r}: use sqlite:///path or postgresql://...")


def open_array_store(dataset_dir: str | Path) -> ArrayStore:
    from cavelab.server.storage.sqlite import NpyArrayStore

    return NpyArrayStore(Path(dataset_dir) / GRAPH_DIR)
