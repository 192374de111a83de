"""Every operation-log backend passes the shared kit: SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest

from cavelab.server.storage.sqlite import NpyArrayStore, SQLiteOperationLog
from cavelab.server.storage.testing import OperationLogTests

PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class TestSQLiteOperationLog(OperationLogTests):
    def make_log(self, tmp_path):
        return SQLiteOperationLog(tmp_path / "ops.sqlite")


def _pg_available() -> bool:
    try:
        import psycopg

        psycopg.connect(PG_URL, connect_timeout=3).close()
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _pg_available(), reason="PostgreSQL is not reachable on 127.0.0.1:5432")
class TestPostgresOperationLog(OperationLogTests):
    def make_log(self, tmp_path):
        from cavelab.server.storage.postgres import PostgresOperationLog

        name = getattr(self, "_name", None) or f"test_{uuid.uuid4().hex}"
        self._name = name
        return PostgresOperationLog(PG_URL, dataset=name)

    def setup_method(self):
        self._name = None

    def teardown_method(self):
        if self._name:
            from cavelab.server.storage.postgres import PostgresOperationLog

            log = PostgresOperationLog(PG_URL, dataset=self._name)
            log.drop()
            log.close()


def test_array_store_roundtrip(tmp_path):
    import numpy as np

    s = NpyArrayStore(tmp_path / "graph")
    a = {"x": np.arange(10, dtype=np.uint64), "y": np.ones((3, 2), dtype=np.float32)}
    s.save(a)
    b = s.load()
    assert set(b) == {"x", "y"}
    assert np.array_equal(b["x"], a["x"]) and b["x"].dtype == np.uint64
    assert np.array_equal(b["y"], a["y"])


@pytest.mark.skipif(not _pg_available(), reason="PostgreSQL is not reachable on 127.0.0.1:5432")
def test_engine_on_postgres_log_replays(tmp_path):
    """The engine runs unchanged on the PostgreSQL log and replays it after reopening."""
    import numpy as np

    from cavelab.server.engine.graph import ChunkedGraph
    from cavelab.server.storage.postgres import PostgresOperationLog

    from graph_factory import random_graph

    ds = tmp_path / f"pg_{uuid.uuid4().hex[:8]}"
    _, g = random_graph(ds, seed=7, p_active=0.5)
    cg = ChunkedGraph.open(ds, storage_url=PG_URL, max_merge_chunk_distance=None)
    try:
        roots = cg.get_roots(g.sv_ids)
        a = 0
        b = int(np.flatnonzero(roots != roots[0])[0])
        res = cg.merge([[int(g.sv_ids[a])], [int(g.sv_ids[b])]], user="pg-user")
        after = cg.get_roots(g.sv_ids)
        cg.close()
        cg = ChunkedGraph.open(ds, storage_url=PG_URL)
        assert np.array_equal(cg.get_roots(g.sv_ids), after)
        assert cg.operations[res.operation_id].user == "pg-user"
    finally:
        cg.close()
        log = PostgresOperationLog(PG_URL, dataset=ds.name)
        log.drop()
        log.close()
