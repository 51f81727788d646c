"""Who may do what: scopes, the roles of console users, and the principal
every API request runs as.

Four scopes, each a family of routes:

    read    everything the API shows of the workspace (messages, chats, contacts)
    send    queue messages (POST /v1/messages)
    chats   work the inbox: archive, mark read, assign
    admin   channels, API keys and users; includes every other scope

A user's role gives a fixed set (viewer: read; agent: read, send, chats;
admin: all). An API key carries the scopes it was created with (default
read and send: what every key could do before keys had scopes).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from outbox.db.states import Role, Scope
from outbox.errors import InsufficientScope, InvalidInput

ROLE_SCOPES: dict[str, frozenset[Scope]] = {
    "viewer": frozenset({Scope.READ}),
    "agent": frozenset({Scope.READ, Scope.SEND, Scope.CHATS}),
    "admin": frozenset(Scope),
}
DEFAULT_KEY_SCOPES = frozenset({Scope.READ, Scope.SEND})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the workspace every API query is filtered by, what it
    may do, and the API key or the user's session it authenticated with."""

    workspace_id: str
    scopes: frozenset[Scope]
    api_key_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes

    def demand(self, *needed: Scope) -> None:
        """`InsufficientScope` naming what is missing, unless every scope is held."""
        missing = [s.value for s in needed if not self.allows(s)]
        if missing:
            raise InsufficientScope(
                f"this {'API key' if self.api_key_id else 'user'} lacks the "
                f"{', '.join(missing)} scope (it has: {', '.join(sorted(self.scopes)) or 'none'})")

    @property
    def rate_key(self) -> tuple[str, uuid.UUID | None]:
        """What the per-caller rate limit counts against: the key, or the user."""
        return ("key", self.api_key_id) if self.api_key_id else ("user", self.user_id)


def parse_scopes(value: str | Iterable[str]) -> frozenset[Scope]:
    """`"send,read"` (or a list of names) → scopes; `InvalidInput` for an unknown one."""
    names = value.split(",") if isinstance(value, str) else list(value)
    scopes = set()
    for name in names:
        name = name.strip().lower() if isinstance(name, str) else name
        if not name:
            continue
        try:
            scopes.add(Scope(name))
        except ValueError:
            raise InvalidInput(f"unknown scope {str(name)[:40]!r} (choose from: "
                               f"{', '.join(s.value for s in Scope)})", field="scopes") from None
    if not scopes:
        raise InvalidInput("give at least one scope", field="scopes")
    return frozenset(scopes)


def check_role(role: str) -> str:
    if role not in set(Role):
        raise InvalidInput(f"unknown role {str(role)[:40]!r} (choose from: {', '.join(Role)})",
                           field="role")
    return role
