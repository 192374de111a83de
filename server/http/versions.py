"""Version and API-version discovery endpoints of every CAVE service (tier 0).

Each ``/version`` answers a JSON *string* (parsed with ``packaging.version.Version`` by
caveclient); each ``/versions`` a JSON list. The values are the upstream versions whose
feature gates caveclient 8.2.1 checks (see ``caveclient_api.md`` §12).
"""

from __future__ import annotations

from typing import Any

from tornado.web import authenticated

from cavelab.server.http.base import CavelabHandler

# route (relative to <base_url>cave/) -> answer
VERSION_ANSWERS: dict[str, Any] = {
    "info/version": "4.3.3",
    "segmentation/api/version": "2.21.1",
    "segmentation/api/versions": [0, 1],
    "materialize/version": "5.26.4",
    "materialize/api/versions": [2, 3],
    "schema/versions": [2],
    "nglstate/api/v1/version": "0.7.2",
    "skeletoncache/api/version": "0.23.11",
    "skeletoncache/api/versions": [-1, 0, 1, 2, 3, 4],
}


class VersionHandler(CavelabHandler):
    """Answers one fixed version document."""

    def initialize(self, answer: Any) -> None:  # type: ignore[override]
        self.answer = answer

    @authenticated
    def get(self) -> None:
        self.require_dataset()
        self.write_json(self.answer)


def version_routes() -> list[tuple[str, type, dict[str, Any]]]:
    """``(relative path regex, handler, kwargs)`` for every version endpoint."""
    return [(path, VersionHandler, {"answer": answer}) for path, answer in VERSION_ANSWERS.items()]
