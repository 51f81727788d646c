"""The HTTP API over a real socket: enqueue, read back, auth, validation,
tenant isolation, health, cron. Against real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.api_fixtures import CRON_SECRET, app_settings, auth, row_counts, run_server


def _send(api: httpx.Client, key: str, **body: Any) -> httpx.Response:
    return api.post("/v1/messages", json=body, headers=auth(key))


# --- enqueue and read back -----------------------------------------------------


def test_enqueue_text_then_get(api: httpx.Client, api_key, make_channel, api_db: Engine) -> None:
    key = api_key()
    ch = make_channel()
    r = _send(api, key, channel_id=str(ch), to="+1 555 010 0001", text="hello")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "pending" and body["duplicate"] is False
    assert isinstance(body["outbox_id"], int)
    with api_db.connect() as conn:
        row = conn.execute(text("SELECT o.status, o.recipient, m.body "
                                "FROM outbox.outbox_messages o "
                                "JOIN outbox.messages m ON m.id = o.message_id WHERE m.id = :id"),
                           {"id": body["message_id"]}).one()
    assert (row.status, row.recipient, row.body) == ("queued", "15550100001@s.whatsapp.net",
                                                    "hello")

    got = api.get(f"/v1/messages/{body['message_id']}", headers=auth(key))
    assert got.status_code == 200
    detail = got.json()
    assert detail["status"] == "pending"
    assert detail["outbox_status"] == "queued"
    assert detail["attempts"] == 0 and detail["max_attempts"] == 5
    assert detail["to"] == "15550100001@s.whatsapp.net"
    assert detail["wa_message_id"] is None and detail["last_error"] is None


def test_enqueue_media_with_schedule_and_priority(api: httpx.Client, api_key, make_channel,
                                                  api_db: Engine) -> None:
    key = api_key()
    ch = make_channel()
    day = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    r = _send(api, key, channel_id=str(ch), to="+15550100002", media_type="document",
              media="https://example.com/a.pdf", caption="invoice", filename="a.pdf",
              priority=5, send_at=f"{day}T09:00:00+01:00")
    assert r.status_code == 201, r.text
    with api_db.connect() as conn:
        row = conn.execute(text("SELECT message_type, payload, priority, next_attempt_at "
                                "FROM outbox.outbox_messages")).one()
    assert row.message_type == "document"
    assert row.payload == {"media": "https://example.com/a.pdf", "caption": "invoice",
                           "filename": "a.pdf"}
    assert row.priority == 5
    assert row.next_attempt_at.isoformat() == f"{day}T08:00:00+00:00"


def test_send_at_more_than_a_year_ahead_is_refused(api: httpx.Client, api_key, make_channel,
                                                   api_db: Engine) -> None:
    key, ch = api_key(), make_channel()
    before = row_counts(api_db)
    for ahead in (timedelta(days=366), timedelta(days=365 * 80)):
        r = _send(api, key, channel_id=str(ch), to="+15550100002", text="x",
                  send_at=(datetime.now(UTC) + ahead).isoformat())
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_schedule"
        assert "OUTBOX_MAX_SCHEDULE_AHEAD" in r.json()["error"]["message"]
    assert row_counts(api_db) == before
    almost = (datetime.now(UTC) + timedelta(days=364)).isoformat()
    assert _send(api, key, channel_id=str(ch), to="+15550100002", text="x",
                 send_at=almost).status_code == 201


def test_repeated_idempotency_key_returns_existing_with_200(api: httpx.Client, api_key,
                                                            make_channel, api_db: Engine) -> None:
    key = api_key()
    ch = make_channel()
    first = _send(api, key, channel_id=str(ch), to="+15550100003", text="once",
                  idempotency_key="order-1")
    assert first.status_code == 201
    before = row_counts(api_db)
    again = _send(api, key, channel_id=str(ch), to="+15550100003", text="once",
                  idempotency_key="order-1")
    assert again.status_code == 200
    assert again.json()["message_id"] == first.json()["message_id"]
    assert again.json()["duplicate"] is True
    assert row_counts(api_db) == before


def test_get_message_after_outbox_row_pruned(api: httpx.Client, api_key, make_channel,
                                             api_db: Engine) -> None:
    key = api_key()
    ch = make_channel()
    mid = _send(api, key, channel_id=str(ch), to="+15550100004", text="x").json()["message_id"]
    with api_db.begin() as conn:
        conn.execute(text("UPDATE outbox.messages SET status = 'sent', wa_message_id = 'w1', "
                          "sent_at = now() WHERE id = :id"), {"id": mid})
        conn.execute(text("DELETE FROM outbox.outbox_messages"))
    detail = api.get(f"/v1/messages/{mid}", headers=auth(key)).json()
    assert detail["status"] == "sent" and detail["wa_message_id"] == "w1"
    assert detail["attempts"] is None and detail["outbox_status"] is None


# --- auth ----------------------------------------------------------------------------


@pytest.mark.parametrize("header", [
    None,
    "",
    "Bearer",
    "Basic dXNlcjpwYXNz",
    "Bearer wo_000000000000_notakey",
    "Bearer not-even-shaped-like-a-key",
    "Bearer wo_zz_short",
])
def test_bad_api_key_is_401_and_writes_nothing(api: httpx.Client, make_channel, api_db: Engine,
                                               header: str | None) -> None:
    ch = make_channel()
    before = row_counts(api_db)
    headers = {"Authorization": header} if header is not None else {}
    for method, path, body in (("POST", "/v1/messages",
                                {"channel_id": str(ch), "to": "+15550100001", "text": "hi"}),
                               ("GET", f"/v1/messages/{uuid.uuid4()}", None),
                               ("GET", "/v1/chats", None)):
        r = api.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    assert row_counts(api_db) == before


def test_auth_comes_before_body_parsing(api: httpx.Client, api_db: Engine) -> None:
    r = api.post("/v1/messages", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 401


def test_revoked_key_is_401(api: httpx.Client, api_key, api_db: Engine) -> None:
    key = api_key()
    assert api.get("/v1/chats", headers=auth(key)).status_code == 200
    with api_db.begin() as conn:
        conn.execute(text("UPDATE outbox.api_keys SET revoked_at = now()"))
    assert api.get("/v1/chats", headers=auth(key)).status_code == 401


def test_key_is_stored_only_as_a_hash(api_key, api_db: Engine) -> None:
    key = api_key()
    with api_db.connect() as conn:
        dump = str(conn.execute(
            text("SELECT row_to_json(k)::text FROM outbox.api_keys k")).scalar_one())
    assert key not in dump and key.split("_", 2)[2] not in dump


# --- validation ---------------------------------------------------------------------------


VALID = {"to": "+15550100001", "text": "hello"}


@pytest.mark.parametrize(("body", "status", "code", "field"), [
    ({**VALID, "to": "not a phone"}, 422, "invalid_phone", "to"),
    ({**VALID, "to": 15550100001}, 422, "invalid_input", "to"),
    ({**VALID, "text": ""}, 422, "invalid_message", "text"),
    ({**VALID, "text": "x" * 4097}, 422, "invalid_message", "text"),
    ({"to": "+15550100001"}, 422, "invalid_message", "text"),
    ({**VALID, "media_type": "image", "media": "https://e.com/a.png"}, 422, "invalid_message",
     "media_type"),
    ({"to": "+15550100001", "media_type": "sticker", "media": "https://e.com/a"}, 422,
     "invalid_message", "media_type"),
    ({"to": "+15550100001", "media_type": "image"}, 422, "invalid_message", "media"),
    ({"to": "+15550100001", "media_type": "audio", "media": "https://e.com/a.ogg",
      "caption": "no"}, 422, "invalid_message", "caption"),
    ({**VALID, "priority": "high"}, 422, "invalid_input", "priority"),
    ({**VALID, "priority": True}, 422, "invalid_input", "priority"),
    ({**VALID, "priority": 100000}, 422, "invalid_input", "priority"),
    ({**VALID, "send_at": "2030-01-31T09:00:00"}, 422, "invalid_schedule", "send_at"),
    ({**VALID, "send_at": "next tuesday"}, 422, "invalid_input", "send_at"),
    ({**VALID, "idempotency_key": ""}, 422, "invalid_input", "idempotency_key"),
    ({**VALID, "body": "typo'd field"}, 422, "invalid_input", "body"),
    ({**VALID, "channel_id": "not-a-uuid"}, 422, "invalid_input", "channel_id"),
    ({**VALID, "channel_id": str(uuid.uuid4())}, 404, "channel_not_found", "channel_id"),
])
def test_validation_errors_name_the_field_and_write_nothing(
        api: httpx.Client, api_key, make_channel, api_db: Engine,
        body: dict[str, Any], status: int, code: str, field: str | None) -> None:
    key = api_key()
    ch = make_channel()
    before = row_counts(api_db)
    r = _send(api, key, **{"channel_id": str(ch), **body})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert err["message"]
    if field is not None:
        assert err["field"] == field
    assert row_counts(api_db) == before


def test_disabled_channel_is_409(api: httpx.Client, api_key, make_channel, api_db: Engine) -> None:
    key = api_key()
    ch = make_channel(status="disabled")
    before = row_counts(api_db)
    r = _send(api, key, channel_id=str(ch), **VALID)
    assert r.status_code == 409 and r.json()["error"]["code"] == "channel_disabled"
    assert row_counts(api_db) == before


@pytest.mark.parametrize(("content", "status", "code"), [
    (b"{not json", 400, "malformed_json"),
    (b"", 400, "malformed_json"),
    (b"\xff\xfe", 400, "malformed_json"),
    (b"[1, 2]", 422, "invalid_input"),
    (b"\"text\"", 422, "invalid_input"),
    (b"null", 422, "invalid_input"),
])
def test_bad_json_is_4xx_never_500(api: httpx.Client, api_key, api_db: Engine,
                                   content: bytes, status: int, code: str) -> None:
    key = api_key()
    before = row_counts(api_db)
    r = api.post("/v1/messages", content=content,
                 headers={**auth(key), "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert row_counts(api_db) == before


def test_unknown_message_ids_are_404(api: httpx.Client, api_key) -> None:
    key = api_key()
    for mid in (str(uuid.uuid4()), "nope"):
        r = api.get(f"/v1/messages/{mid}", headers=auth(key))
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "message_not_found"


def test_unknown_route_is_json_404(api: httpx.Client) -> None:
    r = api.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


# --- tenant isolation -----------------------------------------------------------------


def test_workspace_a_cannot_use_workspace_b(api: httpx.Client, api_key, make_channel,
                                            api_db: Engine) -> None:
    key_a, key_b = api_key("team-a"), api_key("team-b")
    ch_a = make_channel(workspace_id="team-a", name="a")
    ch_b = make_channel(workspace_id="team-b", name="b", phone="+15550000002")
    msg_b = _send(api, key_b, channel_id=str(ch_b), **VALID)
    assert msg_b.status_code == 201
    before = row_counts(api_db)

    r = _send(api, key_a, channel_id=str(ch_b), **VALID)
    assert r.status_code == 404 and r.json()["error"]["code"] == "channel_not_found"
    r = api.get(f"/v1/messages/{msg_b.json()['message_id']}", headers=auth(key_a))
    assert r.status_code == 404
    chats_a = api.get("/v1/chats", headers=auth(key_a)).json()["chats"]
    assert chats_a == []
    assert row_counts(api_db) == before
    # and A's own channel works
    assert _send(api, key_a, channel_id=str(ch_a), **VALID).status_code == 201


# --- health ------------------------------------------------------------------------------


def test_healthz_and_readyz(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    r = api.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"


@pytest.mark.slow
def test_readyz_503_when_database_unreachable_or_behind(database_url: str) -> None:
    from outbox.api import create_app
    from outbox.db.admin import create_database, drop_database

    unreachable = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    empty = f"outbox_ready_{uuid.uuid4().hex[:8]}"
    empty_url = create_database(database_url, empty)
    try:
        for url, reason in ((unreachable, "database unreachable"),
                            (empty_url, "migrations not at head")):
            app = create_app(app_settings(url), database_url=url)
            with run_server(app) as base, httpx.Client(base_url=base, trust_env=False) as c:
                r = c.get("/readyz")
                assert r.status_code == 503
                assert r.json()["status"] == "unavailable"
                assert reason in r.json()["reason"]
                assert c.get("/healthz").status_code == 200
            app.state.outbox.engine.dispose()
    finally:
        drop_database(database_url, empty)


# --- cron --------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {CRON_SECRET}",
                                    f"Bearer {CRON_SECRET}x"])
def test_cron_wrong_secret_is_401_and_dispatches_nothing(
        api: httpx.Client, api_key, make_channel, sim_url: str, api_db: Engine,
        header: str | None) -> None:
    key = api_key()
    ch = make_channel(base_url=sim_url)
    _send(api, key, channel_id=str(ch), **VALID)
    before = row_counts(api_db)
    r = api.post("/v1/cron/dispatch", headers={"Authorization": header} if header else {})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert row_counts(api_db) == before
    with api_db.connect() as conn:
        assert conn.execute(
            text("SELECT status FROM outbox.outbox_messages")).scalar_one() == "queued"


def test_cron_dispatches_and_returns_summary(api: httpx.Client, api_key, make_channel,
                                             sim_url: str, sim, api_db: Engine) -> None:
    key = api_key()
    ch = make_channel(base_url=sim_url)
    for n in range(3):
        assert _send(api, key, channel_id=str(ch), to=f"+1555010000{n}",
                     text=f"m{n}").status_code == 201
    r = api.post("/v1/cron/dispatch?budget=20", headers=auth(CRON_SECRET))
    assert r.status_code == 200, r.text
    summary = r.json()
    assert summary["sent"] == 3 and summary["failed"] == 0
    assert len(sim.sent()) == 3


@pytest.mark.parametrize("budget", ["0", "-1", "100000", "soon"])
def test_cron_budget_is_validated(api: httpx.Client, budget: str) -> None:
    r = api.post(f"/v1/cron/dispatch?budget={budget}", headers=auth(CRON_SECRET))
    assert r.status_code == 422 and r.json()["error"]["field"] == "budget"


def test_cron_disabled_without_secret(database_url: str, api_db: Engine) -> None:
    from outbox.api import create_app

    app = create_app(app_settings(database_url, cron_secret=None))
    with run_server(app) as base, httpx.Client(base_url=base, trust_env=False) as c:
        for headers in ({}, {"Authorization": "Bearer"}, auth(CRON_SECRET)):
            r = c.post("/v1/cron/dispatch", headers=headers)
            assert r.status_code == 404
            assert r.json()["error"]["code"] == "cron_disabled"
            assert "OUTBOX_CRON_SECRET" in r.json()["error"]["message"]


def test_openapi_describes_the_api(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    assert {"/v1/messages", "/v1/messages/{message_id}", "/webhooks/whapi/{channel_id}",
            "/v1/cron/dispatch", "/healthz", "/readyz", "/v1/chats"} <= set(
        spec["paths"])
    body = spec["paths"]["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]
    assert "channel_id" in body["schema"]["properties"]


def test_openapi_shows_the_states_as_enums(api: httpx.Client) -> None:
    """Clients generated from /openapi.json get the statuses as enums, the
    values of outbox.states (the schema's CHECK constraints)."""
    from outbox.states import Direction, MessageStatus, OutboxStatus

    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    for enum in (MessageStatus, OutboxStatus, Direction):
        assert schemas[enum.__name__]["enum"] == [s.value for s in enum]
    detail = schemas["MessageDetail"]["properties"]
    assert detail["status"] == {"$ref": "#/components/schemas/MessageStatus"}
    assert detail["direction"] == {"$ref": "#/components/schemas/Direction"}
    assert {"$ref": "#/components/schemas/OutboxStatus"} in detail["outbox_status"]["anyOf"]
    queued = schemas["MessageQueued"]["properties"]
    assert queued["status"] == {"$ref": "#/components/schemas/MessageStatus"}


def test_the_api_contact_is_the_library_contact() -> None:
    """Contact is read off ContactInfo's attributes: the same fields, in order."""
    import dataclasses

    from outbox.admin.contacts import ContactInfo
    from outbox.api.schemas import Contact

    assert list(Contact.model_fields) == [f.name for f in dataclasses.fields(ContactInfo)]


def test_openapi_types_every_state_and_every_answer(api: httpx.Client) -> None:
    """Every status, direction, role and scope a response carries is its enum
    (no bare string), and every /v1 route but the event stream and the
    204s names the schema of its answer: a client can be generated from the
    description alone."""
    from outbox.states import ChannelStatus, ChatStatus, PauseCause, Role, Scope

    spec = api.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for enum in (ChannelStatus, ChatStatus, PauseCause, Role, Scope):
        assert schemas[enum.__name__]["enum"] == [s.value for s in enum]

    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    def nullable(name: str) -> dict[str, Any]:
        return {"anyOf": [ref(name), {"type": "null"}]}

    typed = {
        ("MessageSummary", "direction"): ref("Direction"),
        ("MessageSummary", "status"): ref("MessageStatus"),
        ("MessageSummary", "outbox_status"): nullable("OutboxStatus"),
        ("MessageChanged", "status"): ref("MessageStatus"),
        ("ChatSummary", "status"): ref("ChatStatus"),
        ("ChatDetail", "status"): ref("ChatStatus"),
        ("ChatStatusChanged", "status"): ref("ChatStatus"),
        ("LastMessage", "direction"): ref("Direction"),
        ("LastMessage", "status"): ref("MessageStatus"),
        ("ContactChat", "status"): ref("ChatStatus"),
        ("ThreadMessage", "direction"): ref("Direction"),
        ("ThreadMessage", "status"): ref("MessageStatus"),
        ("Channel", "status"): ref("ChannelStatus"),
        ("ChannelQueue", "pause_cause"): nullable("PauseCause"),
        ("User", "role"): ref("Role"),
        ("SessionUser", "role"): ref("Role"),
    }
    for (model, name), expected in typed.items():
        prop = {k: v for k, v in schemas[model]["properties"][name].items()
                if k not in ("description", "title")}
        assert prop == expected, (model, name, prop)
    for model in ("ApiKey", "ApiKeyCreated", "SessionCreated", "CurrentSession"):
        assert schemas[model]["properties"]["scopes"]["items"] == ref("Scope"), model
    listed = next(p for p in spec["paths"]["/v1/messages"]["get"]["parameters"]
                  if p["name"] == "status")
    assert listed["schema"]["anyOf"][0] == ref("MessageStatus")
    user_body = spec["paths"]["/v1/users"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    assert user_body["properties"]["role"]["enum"] == [r.value for r in Role]
    # Validation errors list every problem; events_expired carries its oldest id.
    assert {"details", "oldest_id"} <= set(schemas["ErrorDetail"]["properties"])

    untyped = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if not path.startswith("/v1/") or path == "/v1/events/stream":
                continue
            for status, answer in op["responses"].items():
                if status.startswith("2") and status != "204":
                    schema = answer["content"]["application/json"]["schema"]
                    if "$ref" not in schema:
                        untyped.append(f"{method.upper()} {path} {status}")
    assert untyped == []
    # The default 409 names no code of its own; a route with conflicts lists them.
    users = spec["paths"]["/v1/users"]["post"]["responses"]
    assert "`user_exists`" in users["409"]["description"]
    assert "409" not in spec["paths"]["/v1/chats"]["get"]["responses"]
    for path, method in (("/v1/messages", "post"), ("/v1/channels", "post")):
        assert {"413", "429", "503"} <= set(spec["paths"][path][method]["responses"])
    assert "Retry-After" in users["429"]["headers"]
