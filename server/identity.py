"""``LabIdentityProvider``: several named users (with groups) on one Jupyter server, by token.

Under JupyterHub each user has their own identity and groups already. A lab that shares one
plain Jupyter server (or a test) can instead give each person a token::

    c.ServerApp.identity_provider_class = "cavelab.server.identity.LabIdentityProvider"
    c.LabIdentityProvider.users = {
        "4f0c...": {"name": "alice", "groups": ["proofreaders"]},
        "9b1e...": {"name": "bob"},
    }

A request bearing one of these tokens (``Authorization: Bearer <token>``, which is what
caveclient sends as ``auth_token``) is that user; the server's own token stays its owner's.
Table permissions (``PRIVATE``/``GROUP``/``PUBLIC``) are checked against these names and groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jupyter_server.auth.identity import IdentityProvider, User
from traitlets import Dict


@dataclass
class LabUser(User):
    """A named user with groups."""

    groups: list[str] = field(default_factory=list)


class LabIdentityProvider(IdentityProvider):
    """Token -> named user (see the module docstring); other requests as usual."""

    users = Dict(
        {},
        help='Map of token -> {"name": str, "groups": [str, ...]} for the lab\'s users.',
    ).tag(config=True)

    async def get_user_token(self, handler: Any) -> User | None:
        token = self.get_token(handler)
        if token and token in self.users:
            entry = self.users[token] or {}
            name = str(entry.get("name") or "").strip()
            if name:
                handler._token_authenticated = True
                return LabUser(username=name, groups=[str(g) for g in entry.get("groups") or []])
        return await super().get_user_token(handler)

