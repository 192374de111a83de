"""Scheduled versions: a server with ``version_interval_hours`` makes versions by itself and drops
expired ones (``version_lifetime_days``), keeping the newest and those kept forever."""

from __future__ import annotations

import json
import time

import pytest
from conftest import _build_dataset, client_for, launch


def test_versions_are_made_on_schedule_and_expire(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("schedule")
    ds = _build_dataset(root)
    config = {"CavelabConfig": {"version_interval_hours": 0.5 / 3600, "version_lifetime_days": 1.5 / 86400}}
    with launch(ds, root / "jupyter", config) as srv:
        name = json.loads((ds / "dataset.json").read_text())["name"]
        deadline = time.monotonic() + 30
        seen: set[int] = set()
        while time.monotonic() < deadline and len(seen) < 5:
            seen |= set(client_for(srv, name).materialize.get_versions(expired=True))
            time.sleep(0.3)
        assert len(seen) >= 5, seen  # version 1 (kept forever) plus scheduled ones
        time.sleep(2.0)
        live = client_for(srv, name).materialize.get_versions()
        assert 1 in live  # the ingest-time version is kept forever
        newest = max(seen)
        assert max(live) >= newest  # the newest is never dropped
        # older scheduled versions expired after 1.5 s and were removed from disk and listing
        everything = client_for(srv, name).materialize.get_versions(expired=True)
        dropped = sorted(seen - set(everything))
        assert dropped, (seen, everything)
        assert not any((ds / "versions" / f"v{v}").exists() for v in dropped)
