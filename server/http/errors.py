"""The only place where exceptions become HTTP answers.

* a :class:`~cavelab.server.errors.CavelabError` keeps its own ``status`` and ``to_json()``
  (``{"message", "code", "details"}``);
* a ``tornado.web.HTTPError`` (auth 403, routing, ...) keeps its status, with a ``message``;
* anything else is a bug: 500 with ``{"message": "internal error: ..."}`` (the server stays up).

Never 502/503/504 for deterministic errors: caveclient retries those.
"""

from __future__ import annotations

import logging
from http.client import responses
from typing import Any

from tornado.web import HTTPError

from cavelab.server.errors import CavelabError, EngineUnavailableError

log = logging.getLogger(__name__)

AUTH_MESSAGE = (
    "authentication required: send the Jupyter server token as `Authorization: Bearer <token>` "
    "(caveclient: auth_token=<token>)"
)


def error_response(exc: BaseException | None, status: int = 500) -> tuple[int, dict[str, Any]]:
    """``(status, JSON body)`` for an exception raised while serving a request."""
    if isinstance(exc, CavelabError):
        return int(exc.status), exc.to_json()
    if isinstance(exc, HTTPError):
        code = int(exc.status_code)
        if code == 403 and not exc.log_message:
            message = AUTH_MESSAGE
        else:
            message = exc.log_message or exc.reason or responses.get(code, "error")
            if exc.log_message and exc.args:
                try:
                    message = message % exc.args
                except (TypeError, ValueError):
                    pass
        return code, {"message": str(message), "code": _code_for(code)}
    if exc is None:
        return status, {"message": responses.get(status, "error"), "code": _code_for(status)}
    return 500, {
        "message": f"internal error: {type(exc).__name__}: {exc}"[:2000],
        "code": "internal",
    }


def log_level_for(exc: BaseException | None) -> int:
    """Expected client errors are logged quietly; server errors with a traceback.

    A dataset that could not be opened is logged once where it failed; each request that meets
    it again is a warning without a traceback.
    """
    if isinstance(exc, CavelabError) and exc.status < 500:
        return logging.INFO
    if isinstance(exc, EngineUnavailableError):
        return logging.WARNING
    if isinstance(exc, HTTPError) and exc.status_code < 500:
        return logging.INFO
    return logging.ERROR


def _code_for(status: int) -> str:
    return {
        400: "bad_input",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        409: "conflict",
    }.get(status, "error" if status < 500 else "internal")
