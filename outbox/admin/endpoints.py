"""Status-callback endpoints: add (the signing secret shown once), list,
enable again, remove, and an endpoint's deliveries. Shared by `outbox endpoints` and
/v1/webhook-endpoints; each runs in the caller's transaction."""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import text
from sqlalchemy.orm import Session

from outbox import crypto
from outbox.db import callback_queries as q
from outbox.db.states import EventType
from outbox.errors import EndpointNotFound, InvalidInput
from outbox.events.callbacks import new_secret, secret_binding

MAX_URL_LENGTH = 2000
DEFAULT_DELIVERY_PAGE = 50
MAX_DELIVERY_PAGE = 500


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    id: uuid.UUID
    workspace_id: str
    url: str
    event_types: list[str]
    status: str
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    waiting: int = 0  # deliveries pending or in flight
    failed: int = 0  # dead letters

    @classmethod
    def of(cls, r: Any) -> EndpointInfo:
        return cls(r.id, r.workspace_id, r.url, list(r.event_types), r.status,
                   r.disabled_reason, r.failing_since, r.created_at,
                   int(getattr(r, "waiting", 0) or 0), int(getattr(r, "failed", 0) or 0))

    def as_dict(self) -> dict[str, Any]:
        return {"id": str(self.id), "url": self.url, "event_types": self.event_types,
                "status": self.status, "disabled_reason": self.disabled_reason,
                "failing_since": _iso(self.failing_since), "created_at": _iso(self.created_at),
                "deliveries_waiting": self.waiting, "deliveries_failed": self.failed}


@dataclass(frozen=True, slots=True)
class NewEndpoint:
    endpoint: EndpointInfo
    secret: str  # shown once: the receiver verifies signatures with it


def check_url(url: object) -> str:
    """https, or http to this machine (a receiver under development)."""
    if not isinstance(url, str) or not url.strip() or len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"url must be an https URL of at most {MAX_URL_LENGTH} characters",
                           field="url")
    url = url.strip()
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise InvalidInput("url is not a valid URL", field="url") from None
    if not host or parts.scheme not in ("https", "http") or parts.username or parts.password:
        raise InvalidInput("url must be https://host/path (no credentials in it)", field="url")
    if parts.scheme == "http" and not _loopback(host):
        raise InvalidInput("url must be https (http only to localhost, for development)",
                           field="url")
    return url


def parse_event_types(types: object) -> list[str]:
    """A list of event types (None or empty: every type)."""
    if types is None or types == [] or types == "":
        return list(EventType)
    names = types.split(",") if isinstance(types, str) else types
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidInput("event_types must be a list of event types", field="event_types")
    wanted = sorted({n.strip() for n in names if n.strip()})
    unknown = [n for n in wanted if n not in set(EventType)]
    if unknown:
        raise InvalidInput(f"unknown event type {unknown[0][:60]!r}: one of "
                           f"{', '.join(EventType)}", field="event_types")
    return wanted or list(EventType)


def add_endpoint(session: Session, *, workspace_id: str, url: object,
                 event_types: object = None, encryption_key: str) -> NewEndpoint:
    """A new endpoint, delivered the events that commit from now on."""
    url = check_url(url)
    types = parse_event_types(event_types)
    endpoint_id = uuid.uuid4()
    secret = new_secret()
    row = session.execute(text(q.INSERT_ENDPOINT), {
        "id": endpoint_id, "workspace_id": workspace_id, "url": url, "event_types": types,
        "encrypted_secret": crypto.encrypt_token(secret, encryption_key,
                                                 secret_binding(endpoint_id, url)),
        "key_id": crypto.key_id(encryption_key)}).one()
    return NewEndpoint(EndpointInfo.of(row), secret)


def list_endpoints(session: Session, *, workspace_id: str | None = None) -> list[EndpointInfo]:
    return [EndpointInfo.of(r) for r in session.execute(text(q.LIST_ENDPOINTS),
                                                        {"workspace_id": workspace_id})]


def get_endpoint(session: Session, endpoint_id: uuid.UUID | str, *,
                 workspace_id: str | None = None) -> EndpointInfo:
    eid = _endpoint_id(endpoint_id)
    row = session.execute(text(q.ENDPOINT), {"endpoint_id": eid,
                                             "workspace_id": workspace_id}).one_or_none()
    if row is None:
        raise EndpointNotFound(f"webhook endpoint {eid} does not exist", field="endpoint_id")
    return EndpointInfo.of(row)


@dataclass(frozen=True, slots=True)
class EnabledEndpoint:
    endpoint: EndpointInfo
    resumed: int  # deliveries due again at once


def enable_endpoint(session: Session, endpoint_id: uuid.UUID | str, *,
                    workspace_id: str | None = None,
                    retry_failed: bool = False) -> EnabledEndpoint:
    """Make a disabled endpoint active again (an active one stays as it is),
    its failure clock cleared. The deliveries it had waiting are sent at
    once; with `retry_failed`, its dead letters still held too. Events that
    happened while it was disabled were not queued for it (docs/events.md)."""
    eid = _endpoint_id(endpoint_id)
    row = session.execute(text(q.ENABLE_ENDPOINT), {
        "endpoint_id": eid, "workspace_id": workspace_id,
        "retry_failed": retry_failed}).one_or_none()
    if row is None:
        raise EndpointNotFound(f"webhook endpoint {eid} does not exist", field="endpoint_id")
    return EnabledEndpoint(get_endpoint(session, eid), int(row.resumed))


def remove_endpoint(session: Session, endpoint_id: uuid.UUID | str, *,
                    workspace_id: str | None = None) -> None:
    """Remove it, and its deliveries (nothing more is sent to it)."""
    eid = _endpoint_id(endpoint_id)
    if session.execute(text(q.DELETE_ENDPOINT), {"endpoint_id": eid,
                                                 "workspace_id": workspace_id}).first() is None:
        raise EndpointNotFound(f"webhook endpoint {eid} does not exist", field="endpoint_id")


def deliveries(session: Session, endpoint_id: uuid.UUID | str, *,
               workspace_id: str | None = None, before: int | None = None,
               limit: int = DEFAULT_DELIVERY_PAGE) -> list[dict[str, Any]]:
    """The endpoint's deliveries, newest first (`before`: a delivery id)."""
    if not 1 <= limit <= MAX_DELIVERY_PAGE:
        raise InvalidInput(f"limit must be 1 to {MAX_DELIVERY_PAGE}", field="limit")
    endpoint = get_endpoint(session, endpoint_id, workspace_id=workspace_id)
    rows = session.execute(text(q.ENDPOINT_DELIVERIES), {
        "endpoint_id": endpoint.id, "before": before, "limit": limit})
    return [{"id": r.id, "event_id": r.event_id, "event_type": r.event_type,
             "status": r.status, "attempts": r.attempts,
             "next_attempt_at": _iso(r.next_attempt_at), "last_status_code": r.last_status_code,
             "last_error": r.last_error, "created_at": _iso(r.created_at),
             "delivered_at": _iso(r.delivered_at)} for r in rows]


def delivery_counts(session: Session, *, workspace_id: str | None = None) -> dict[str, int]:
    return {str(status): int(n) for status, n in
            session.execute(text(q.DELIVERY_COUNTS), {"workspace_id": workspace_id})}


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _endpoint_id(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value).strip())
    except ValueError:
        raise EndpointNotFound(f"webhook endpoint {str(value)[:40]!r} does not exist",
                               field="endpoint_id") from None


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None
