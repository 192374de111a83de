"""A conformance kit every :class:`~cavelab.server.storage.base.OperationLog` backend must pass.

Subclass :class:`OperationLogTests` and provide a ``make_log(tmp_path)`` fixture-like method::

    class TestSQLite(OperationLogTests):
        def make_log(self, tmp_path):
            return SQLiteOperationLog(tmp_path / "ops.sqlite")
"""

from __future__ import annotations

import threading

import pytest

from cavelab.server.errors import ConflictError
from cavelab.server.storage.base import OperationLog, OperationRecord


def _rec(i: int, **kw) -> OperationRecord:
    base = dict(
        operation_id=i,
        ts=1_700_000_000_000 + i,
        user=f"user{i % 3}",
        kind="merge" if i % 2 else "split",
        details={"roots": [i, 2**63 + i], "activated": [[1, 2]], "note": "ü"},
        delta=bytes(range(256)) * 3 + i.to_bytes(4, "little"),
    )
    base.update(kw)
    return OperationRecord(**base)


class OperationLogTests:
    def make_log(self, tmp_path) -> OperationLog:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    def reopen(self, log: OperationLog, tmp_path) -> OperationLog:
        log.close()
        return self.make_log(tmp_path)

    def test_empty(self, tmp_path):
        log = self.make_log(tmp_path)
        assert log.last_operation_id() == 0
        assert list(log) == []
        log.close()

    def test_append_roundtrip_survives_reopen(self, tmp_path):
        log = self.make_log(tmp_path)
        recs = [_rec(i) for i in range(1, 6)]
        for r in recs:
            log.append(r)
        log = self.reopen(log, tmp_path)
        got = list(log)
        assert [g.operation_id for g in got] == [1, 2, 3, 4, 5]
        for g, r in zip(got, recs):
            assert (g.ts, g.user, g.kind, g.details, g.delta, g.status) == (
                r.ts, r.user, r.kind, r.details, r.delta, r.status,
            )
        assert log.last_operation_id() == 5
        log.close()

    def test_duplicate_id_is_a_conflict_and_keeps_the_first(self, tmp_path):
        log = self.make_log(tmp_path)
        log.append(_rec(1))
        with pytest.raises(ConflictError):
            log.append(_rec(1, user="intruder"))
        assert [r.user for r in log] == ["user1"]
        log.close()

    def test_order_is_by_operation_id(self, tmp_path):
        log = self.make_log(tmp_path)
        for i in (3, 1, 2):
            log.append(_rec(i))
        assert [r.operation_id for r in log] == [1, 2, 3]
        log.close()

    def test_concurrent_appends(self, tmp_path):
        log = self.make_log(tmp_path)

        def work(start):
            for i in range(start, start + 40, 4):
                log.append(_rec(i))

        threads = [threading.Thread(target=work, args=(s,)) for s in (1, 2, 3, 4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r.operation_id for r in log] == list(range(1, 41))
        log.close()
