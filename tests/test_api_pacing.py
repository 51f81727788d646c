"""PATCH /v1/channels/{id}: a channel's send limits over the HTTP API (admin)."""

# ruff: noqa: F811  (pytest fixtures imported from tests.api_fixtures)
from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from tests.api_fixtures import api, api_db, auth, live_url, row_counts  # noqa: F401


def _pacing(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT * FROM outbox.channel_pacing")))


def test_patch_sets_clears_and_shows_limits(api: httpx.Client, api_db: Engine,
                                            admin: Callable[..., str],
                                            make_channel: Callable[..., uuid.UUID]) -> None:
    ch = make_channel()
    r = api.patch(f"/v1/channels/{ch}", headers=auth(admin()),
                  json={"per_second": 5, "burst": 10, "per_day": 1000, "new_chats_per_day": 50,
                        "chat_gap": "3s", "typing_time": 2, "warmup": "50,x1.5,1000",
                        "timezone": "America/Sao_Paulo"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == str(ch) and body["status"] == "active"
    lim = body["limits"]
    assert (lim["per_second"], lim["burst"], lim["per_day"], lim["chat_gap_seconds"]) == (
        5.0, 10, 1000, 3.0)
    assert lim["warmup"] == "50,x1.5,1000" and lim["timezone"] == "America/Sao_Paulo"
    assert lim["usage"]["day_used"] == 0 and lim["usage"]["day_cap"] == 50
    # The warm-up's first day opens 50 x 50 / 1000 new chats, rounded up.
    assert lim["usage"]["new_chats_cap"] == 3 and lim["usage"]["new_chats_left"] == 3
    # Left out: unchanged; null: cleared.
    r = api.patch(f"/v1/channels/{ch}", headers=auth(admin()), json={"chat_gap": None})
    assert r.status_code == 200, r.text
    assert r.json()["limits"]["chat_gap_seconds"] is None
    assert r.json()["limits"]["per_day"] == 1000


@pytest.mark.parametrize("body, field", [
    ({"per_second": 0}, "per_second"),
    ({"per_second": "5"}, "per_second"),  # JSON numbers are numbers
    ({"burst": 3}, "burst"),
    ({"per_day": True}, "per_day"),
    ({"chat_gap": "later"}, "chat_gap"),
    ({"timezone": "Nowhere/Land"}, "timezone"),
    ({"warmup": "fast"}, "warmup"),
    ({"speed": 3}, "speed"),
])
def test_patch_refuses_bad_limits_and_writes_nothing(
        api: httpx.Client, api_db: Engine, admin: Callable[..., str],
        make_channel: Callable[..., uuid.UUID], body: dict[str, Any], field: str) -> None:
    ch = make_channel()
    key = admin()
    before = row_counts(api_db)
    r = api.patch(f"/v1/channels/{ch}", headers=auth(key), json=body)
    assert r.status_code == 422, r.text
    assert field in r.text
    assert row_counts(api_db) == before and _pacing(api_db) == []


def test_patch_is_admin_only_and_per_workspace(api: httpx.Client, api_db: Engine,
                                               admin: Callable[..., str],
                                               make_channel: Callable[..., uuid.UUID]) -> None:
    from outbox.admin.apikeys import create_api_key

    theirs = make_channel(workspace_id="team-b")
    r = api.patch(f"/v1/channels/{theirs}", headers=auth(admin()), json={"per_day": 5})
    assert r.status_code == 404, r.text
    with Session(api_db) as s, s.begin():
        sender = create_api_key(s, workspace_id="team-b", scopes="send").key
    r = api.patch(f"/v1/channels/{theirs}", headers=auth(sender), json={"per_day": 5})
    assert r.status_code == 403, r.text
    assert _pacing(api_db) == []
