"""The whole cavelab exception taxonomy.

Every error the engine, ingest or storage raises on purpose derives from
:class:`CavelabError`. Each class carries the HTTP ``status`` it maps to and a
short machine ``code``; the HTTP layer turns any of them into
``{"message": ..., "code": ..., "details": ...}`` in exactly one place
(``cavelab.server.http.errors``). Messages say what was wrong and how to fix it.

::

    CavelabError
    ├── InputError (400)            malformed or out-of-range request data
    │   ├── InvalidNodeError (400)  an ID that is not a node of this graph / wrong layer
    │   └── OutOfBoundsError (400)  a coordinate outside the volume
    ├── NotFoundError (404)         unknown dataset, operation, route object
    ├── PreconditionError (400)     an edit that cannot be done as asked
    │   (merging a cell with itself, identical sources and sinks, failed cut ...)
    ├── ConflictError (409)         a stale root or a concurrent change
    │   └── StaleRootError (409)    names the current roots
    ├── PermissionDeniedError (403)
    ├── IngestError (400)           bad input data for ``cavelab ingest``
    ├── StorageError (503)          the store could not be read or written
    └── EngineUnavailableError (500) the dataset could not be opened (the server keeps running)
"""

from __future__ import annotations

from typing import Any


class CavelabError(Exception):
    """Root of every deliberate cavelab error."""

    status: int = 500
    code: str = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


class InputError(CavelabError, ValueError):
    status = 400
    code = "bad_input"


class InvalidNodeError(InputError):
    code = "invalid_node"


class OutOfBoundsError(InputError):
    code = "out_of_bounds"


class NotFoundError(CavelabError, LookupError):
    status = 404
    code = "not_found"


class PreconditionError(CavelabError):
    status = 400
    code = "precondition_failed"


class ConflictError(CavelabError):
    status = 409
    code = "conflict"


class StaleRootError(ConflictError):
    """An edit named a root that has since been superseded.

    ``details["current_roots"]`` maps each stale root to its current roots.
    """

    code = "stale_root"


class PermissionDeniedError(CavelabError, PermissionError):
    status = 403
    code = "forbidden"


class IngestError(CavelabError, ValueError):
    status = 400
    code = "bad_ingest_input"


class StorageError(CavelabError, OSError):
    status = 503
    code = "storage"


class EngineUnavailableError(CavelabError):
    """The dataset could not be opened; the message says why (the server itself keeps running)."""

    status = 500
    code = "engine_unavailable"
