"""``CavelabHandler``: the base of every cavelab route.

It does the HTTP chores once: authentication (``@tornado.web.authenticated`` on each method;
caveclient's ``Authorization: Bearer <token>`` is accepted natively by jupyter_server), query
parameter and body parsing (JSON whatever the Content-Type, also on GET; raw uint64),
``int64_as_str``, the user's identity for edits, JSON/binary replies and the error mapping
(delegated to :mod:`cavelab.server.http.errors`).
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado.web import HTTPError

from cavelab.server.errors import InputError, NotFoundError
from cavelab.server.http import params
from cavelab.server.http.errors import error_response, log_level_for
from cavelab.server.http.host import EngineHost

if TYPE_CHECKING:
    from cavelab.server.engine.graph import ChunkedGraph

T = TypeVar("T")
PREFIX = "cave"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def dumps(obj: Any) -> str:
    """JSON text of a reply (numpy scalars and arrays allowed)."""
    return json.dumps(obj, default=_json_default)


def _owner_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "owner"


@functools.cache
def _owner_user() -> Any:
    from jupyter_server.auth.identity import User

    return User(username=_owner_name())


def encode_ids(values: Iterable[Any] | np.ndarray, as_str: bool) -> list[Any]:
    """IDs (a flat or rectangular array/list) as JSON-ready ints, or strings for ``int64_as_str``."""
    lst = np.asarray(values, dtype=np.uint64).tolist()
    return _stringify(lst) if as_str else lst


class CavelabHandler(APIHandler):
    """Base handler: parsing helpers, replies and the single error mapping."""

    async def prepare(self) -> None:  # type: ignore[override]
        """Authenticate; the server's own ``Bearer`` token takes a short path.

        caveclient sends the token on every request. When it is exactly the server's token the
        request is its owner's (what jupyter_server concludes too, after also decoding cookies
        and minting a session user), so only the host check and CORS headers remain to do.
        Anything else (other tokens, cookies, JupyterHub) goes through jupyter_server's path.
        """
        user = self._owner_by_token()
        if user is None:
            await super().prepare()
            return
        if not self.check_host():
            raise HTTPError(403)
        self.current_user = self._jupyter_current_user = user
        self._token_authenticated = True
        self.set_cors_headers()

    def _owner_by_token(self) -> Any:
        header = self.request.headers.get("Authorization", "")
        if not header:
            return None
        idp = self.identity_provider
        token = getattr(idp, "token", None)
        m = idp.auth_header_pat.match(header)
        if not token or m is None or not hmac.compare_digest(m.group(2).strip(), token):
            return None
        return _owner_user()

    # ------------------------------------------------------------------ engine
    @property
    def host(self) -> EngineHost:
        return self.settings["cavelab"]

    async def engine(self) -> ChunkedGraph:
        """The engine (waits while it opens); 404 JSON when no dataset is configured."""
        return await self.host.engine()

    async def graph(self, table: str) -> ChunkedGraph:
        """The engine, after checking that ``table`` names this dataset's graph."""
        cg = await self.engine()
        if table != cg.meta.name:
            raise NotFoundError(
                f"unknown table {table!r}; this server serves the graph {cg.meta.name!r}",
                table=table,
            )
        return cg

    def require_dataset(self) -> None:
        """Raise the "no dataset" 404 on CAVE routes that do not otherwise touch the engine."""
        if not self.host.configured:
            from cavelab.server.http.host import NO_DATASET_MESSAGE

            raise NotFoundError(NO_DATASET_MESSAGE)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run an engine call in the engine thread pool (never on the IOLoop)."""
        return await self.host.call(fn, *args, **kwargs)

    # ---------------------------------------------------------------- identity
    @property
    def user_name(self) -> str:
        """Who makes this request: the JupyterHub user under a hub; else the server's owner.

        A single-user Jupyter server authenticates its owner's token; jupyter_server then names
        each cookie session "Anonymous ..." at random, so the log records the owner's login name
        (the process user) instead.
        """
        user = self.current_user
        if hasattr(user, "groups") and getattr(user, "username", None):
            return str(user.username)  # a LabIdentityProvider user
        hub = getattr(user, "hub_user", None)
        if isinstance(hub, dict) and hub.get("name"):
            return str(hub["name"])
        return _owner_name()

    @property
    def user_groups(self) -> list[str]:
        """Groups of the user: JupyterHub's, or a LabIdentityProvider user's (else empty)."""
        user = self.current_user
        if isinstance(getattr(user, "groups", None), list):
            return [str(g) for g in user.groups]
        hub = getattr(user, "hub_user", None)
        if isinstance(hub, dict):
            return [str(g) for g in hub.get("groups") or []]
        return []

    def cave_url(self) -> str:
        """This server's absolute CAVE URL as the client sees it (no trailing slash)."""
        base = url_path_join(self.base_url, PREFIX)
        return f"{self.request.protocol}://{self.request.host}{base}".rstrip("/")

    def graphene_base(self) -> str:
        """Root URL of the graphene routes: the host's root when the server runs at "/"."""
        if self.base_url.rstrip("/") == "":
            return f"{self.request.protocol}://{self.request.host}"
        return self.cave_url()

    # ------------------------------------------------------------------ query
    def arg(self, name: str) -> str | None:
        return self.get_query_argument(name, None)

    def bool_arg(self, name: str, default: bool = False) -> bool:
        return params.parse_bool(self.arg(name), name, default)

    def int_arg(self, name: str, default: int | None = None) -> int | None:
        return params.parse_int(self.arg(name), name, default)

    def timestamp_arg(self, name: str = "timestamp") -> float | None:
        return params.parse_timestamp(self.arg(name), name)

    def bounds_arg(self) -> np.ndarray | None:
        return params.parse_bounds(self.arg("bounds"))

    def path_id(self, value: str, what: str = "node ID") -> int:
        return params.parse_id(value, what)

    @property
    def int64_as_str(self) -> bool:
        return params.parse_bool(self.arg("int64_as_str"), "int64_as_str", False)

    # ------------------------------------------------------------------- body
    def json_body(self) -> Any:
        """The body as JSON whatever the Content-Type (also on GET)."""
        return params.parse_json(self.request.body)

    def body_ids(self, key: str) -> np.ndarray:
        """``{key: [ids]}`` (or a bare list) from the JSON body -> uint64 array."""
        body = self.json_body()
        if isinstance(body, dict):
            if key not in body:
                raise InputError(f"the JSON body needs a {key!r} list, e.g. {{{key!r}: [1, 2]}}")
            body = body[key]
        return params.parse_ids(body, key)

    # ------------------------------------------------------------------ reply
    def id_out(self, value: Any) -> int | str:
        """One ID for the reply (a string when ``int64_as_str``)."""
        v = int(value)
        return str(v) if self.int64_as_str else v

    def ids_out(self, values: Iterable[Any] | np.ndarray) -> list[Any]:
        """IDs (a flat or rectangular array/list) for the reply, as ints or strings."""
        return encode_ids(values, self.int64_as_str)

    async def reply_from_pool(self, fn: Callable[..., Any], *args: Any, build: Callable[[Any, bool], Any]) -> None:
        """Run an engine call and build + JSON-encode its reply in the pool, then send it.

        For replies that can hold millions of IDs (leaves, graphs): the conversion to lists and
        the encoding stay off the IOLoop.
        """
        as_str = self.int64_as_str
        body = await self.call(lambda: dumps(build(fn(*args), as_str)))
        self.set_status(200)
        self.finish(body)

    def write_json(self, obj: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(dumps(obj))

    def write_binary(self, data: bytes) -> None:
        self.finish(data, set_content_type="application/octet-stream")

    # ----------------------------------------------------------------- errors
    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error, in one JSON shape: ``{"message": ..., "code": ...}``."""
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        status, body = error_response(exc, status_code)
        self.set_status(status)
        self.finish(dumps(body))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        level = log_level_for(value)
        if level >= logging.ERROR:
            super().log_exception(typ, value, tb)
            return
        status, body = error_response(value)
        self.log.log(
            level, "cavelab %s %s -> %s: %s", self.request.method, self.request.path, status, body["message"]
        )


def _stringify(x: Any) -> Any:
    if isinstance(x, list):
        return [_stringify(v) for v in x]
    return str(x)
