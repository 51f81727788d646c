"""Hostile input, through the HTTP API and the library: every value must
either be refused with a clear 4xx JSON error (the documented shape,
``{"error": {"code", "message", "field"?}}``) or stored exactly as given;
never a 500, and never a change to a row the request had no business
touching (an unrelated workspace, "victim", is checksummed around every
single request).

The values: SQL metacharacters and injections, format strings, backslashes,
RTL/emoji/combining marks, NUL and other control characters, 100 kB strings,
huge and negative numbers, NaN/Infinity, wrong JSON types, duplicate keys,
deep nesting, invalid UUIDs and path traversal in ids. Inputs that once gave a 500 are kept in
separate regression tests (named `*_regression`).

Every input actually sent is recorded; `test_zz_count_of_distinct_bad_inputs`
prints how many (run with ``-s``).
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.errors import OutboxError
from outbox.webhooks.apply import SECRET_HEADER
from outbox.webhooks.routes import STATUS_ORDER, _strip_nul
from tests.api_fixtures import COUNTED, auth
from tests.conftest import TEST_KEY
from tests.dispatch_helpers import webhook_secrets

pytestmark = pytest.mark.slow  # thousands of hostile inputs

# --- the catalogue of hostile values ------------------------------------------------------

SQL = [
    "'", "''", '"', "`", "\\", "\\'", "\\\\'", "'\\", "'; DROP TABLE outbox.messages; --",
    '"; DROP TABLE outbox.messages; --', "x'); DELETE FROM outbox.channels; --", "1' OR '1'='1",
    "1 OR 1=1", "' OR 1=1 --", "') OR ('a'='a", "'; SELECT pg_sleep(5); --",
    "$$; DROP TABLE outbox.messages; $$", "$1", "$1::text", "E'\\x27'", "/* comment */", "--", ";",
    "U&'\\0041'", "\\x00", "'::uuid", "'); TRUNCATE outbox.api_keys CASCADE; --",
    "' UNION SELECT key_hash FROM outbox.api_keys --", "%' OR workspace_id LIKE '%",
    "\\'; DROP TABLE outbox.outbox_messages; --",
]
FORMAT = [
    "%s", "%(x)s", "%%", "%d%n%x", "%(workspace_id)s", "{}", "{0}", "{x}", "{{x}}", "${x}",
    "{{7*7}}", ":id", ":workspace_id", "?", "??", "{!r}", "%s%s%s%s%s%s%s%s%s%s",
]
UNICODE = [
    "\u202eevil\u202c", "\u200f\u200e\u2066x\u2069", "مرحبا بالعالم", "שלום עולם",
    "😀👍🏽👨‍👩‍👧‍👦🏳️‍🌈", "Z̵̡̢͇ḁ̶̛l̸̨g̷o̴͔", "e\u0301" * 100, "\ufeffbom", "\u200b",
    "\u2028\u2029", "\uffff\ufffe", "\U0010ffff", "ǅİstanbul ß", "\u0085nel",
    "\U0001d573\U0001d58a\U0001d591\U0001d591\U0001d594",  # "Hello" in fraktur
    "日本語テキスト", "\U0001f600" * 10, "a\u0300\u0301\u0302\u0303\u0304\u0305",
]
CONTROL = [
    "\x00", "a\x00b", "\x00'; DROP TABLE outbox.messages; --", "\x01\x02\x03", "\x1b[31mred\x1b[0m",
    "\x7f", "\r\n", "line1\nline2", "\t", "\x08\x0c\x0b", "tail\x00",
]
OTHER = [
    "", " ", "null", "None", "true", "[]", "NaN", "-1", "0", "1e309", "../../etc/passwd",
    "..\\..\\windows\\win.ini", "%2e%2e%2f", "<script>alert(1)</script>", "javascript:alert(1)",
    "http://169.254.169.254/latest/meta-data/", "@", "@s.whatsapp.net", "A" * 255, "A" * 256,
    "+15550100001", "15550100001@s.whatsapp.net", "120363025343298765@g.us",
]
LARGE = ["x" * 100_000, "'" * 100_000, "\U0001f600" * 25_000, "\\" * 100_000, "%s" * 50_000,
         "'; DROP TABLE outbox.messages; --" * 4_000]
STRINGS = [*SQL, *FORMAT, *UNICODE, *CONTROL, *OTHER, *LARGE]
#: A smaller set for fields validated strictly before anything reaches SQL
#: (a phone number, a UUID, an enum), to keep the run short.
CORE = [*SQL[:14], *FORMAT[:6], *UNICODE[:8], *CONTROL, *OTHER[:12], *LARGE[:2]]
#: JSON allows "\ud800" escapes; Python decodes them to lone surrogates,
#: which UTF-8 (and so PostgreSQL) cannot hold: refused (see the *_regression tests).
SURROGATES = ["\ud800", "\udfff", "a\ud83db", "\udc00\ud800", "ok \udbff"]
WRONG_TYPES: list[Any] = [
    None, 0, -1, 10**30, -(10**30), 1.5, True, False, [], ["x"], {}, {"a": "b"},
    [[[["deep"]]]], {"$gt": ""}, {"__proto__": {"x": 1}}, ["'; DROP TABLE outbox.messages; --"],
]
NUMBERS: list[Any] = [
    10**30, -(10**30), 2**63, -(2**63) - 1, 2**31, -(2**31), 1001, -1001, 1000, -1000, 0,
    -0.0, 1.0, 1.5, 1e308, -1e308, "1", "0x10", True, None, [], {}, [1], "'; DROP TABLE x; --",
]
SEND_AT: list[Any] = [
    "", "now", "2030-01-31", "2030-01-31T09:00:00", "2030-01-31T09:00:00Z", "9999-12-31T00:00:00Z",
    "0001-01-02T00:00:00Z", "2030-02-30T00:00:00Z", "2030-01-31T25:00:00Z",
    "2030-01-31T09:00:00+25:00", "2030-01-31T09:00:00+00:00'; DROP TABLE outbox.messages; --",
    0, -1, 10**20, 1e308, "1700000000", "%s", None, [], {"year": 2030},
]
#: Raw request bodies for POST /v1/messages ({C} is replaced by a channel id).
RAW_BODIES = [
    b"", b" ", b"{", b"}", b"{}", b"[]", b"null", b"true", b"1", b'"text"', b"NaN",
    b"{} trailing", b"{'single': 'quotes'}", b"\xff\xfe\xfd", b"\xef\xbb\xbf{}",
    b'{"channel_id": "{C}", "to": "+15550100001", "text": "x", "priority": NaN}',
    b'{"channel_id": "{C}", "to": "+15550100001", "text": "x", "priority": Infinity}',
    b'{"channel_id": "{C}", "to": "+15550100001", "text": "x", "priority": -Infinity}',
    b'{"channel_id": "{C}", "to": "+15550100001", "text": "x", "priority": 1e999}',
    b'{"channel_id": "{C}", "to": "+15550100001", "text": "x", "priority": ' + b"9" * 5000 + b"}",
    b'{"channel_id": "{C}", "to": "+15550100001", "text": "x", "priority": -0}',
    b'{"channel_id": "{C}", "to": "+15550100001", "text": "x", "send_at": NaN}',
    b'{"channel_id": "{C}", "to": "+15550100001", "text": "\\u0000"}',
    b'{"channel_id": "{C}", "to": "+15550100001", "text": "x", "extra": ' + b"[" * 100
    + b"]" * 100 + b"}",
    b'{"channel_id": "{C}", "to": "+15550100001", "text": ' + b"[" * 100 + b"]" * 100 + b"}",
    b'{"channel_id": "{C}", "to": "+15550100001", "text": "x"' + b', "text": "y"' * 1000 + b"}",
    b'{"channel_id": "{C}" "to": "+15550100001"}',
    b'{"channel_id": "{C}", "to": "+15550100001", "text": "x",}',
    b'{"channel_id": "{C}", "to": "+15550100001", "text": "x"}' * 2,
    b'\x00{"channel_id": "{C}"}',
    b'{"channel_id": "{C}", "to": "+15550100001", "text": "\xc3\x28"}',
    '{"channel_id": "{C}", "to": "+15550100001", "text": "utf-16"}'.encode("utf-16"),
    b'{"channel_id": "{C}", "to": "+15550100001", "text": "x", "__class__": "str"}',
    b'{"channel_id": "{C}", "to": "+15550100001", "text": "' + b"x" * (1024 * 1024) + b'"}',
]

WA_CHAT = "15550100009@s.whatsapp.net"
TRIED: set[tuple[str, str, str]] = set()


def _record(surface: str, field: str, value: Any) -> None:
    TRIED.add((surface, field, repr(value)))


# --- the world: a victim workspace that nothing may touch, an attacker who sends -----------


@dataclass
class World:
    engine: Engine
    url: str
    key: str  # the attacker's API key
    channel: uuid.UUID  # the attacker's channel
    secret: str  # its webhook secret
    victim_key: str
    victim_channel: uuid.UUID
    victim_message: uuid.UUID
    victim_secret: str
    #: The snapshot after the last checked request: the next one's "before"
    #: (between two requests a test only reads). Reset for every test.
    last: dict[str, Any] | None = None


@pytest.fixture(scope="module")
def world(engine: Engine, live_url: str) -> Iterator[World]:
    from outbox.admin.apikeys import create_api_key
    from outbox.admin.channels import create_channel
    from outbox.enqueue import enqueue_text
    from outbox.webhooks.apply import find_webhook_channel, process_webhook

    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join('outbox.' + t for t in COUNTED)} "
                          "RESTART IDENTITY CASCADE"))
    with Session(engine) as s, s.begin():
        victim_channel = create_channel(s, name="victim", phone_number="+15550009001",
                                        token=secrets.token_hex(16), encryption_key=TEST_KEY,
                                        workspace_id="victim").id
        attacker_channel = create_channel(s, name="attacker", phone_number="+15550009002",
                                          token=secrets.token_hex(16), encryption_key=TEST_KEY,
                                          workspace_id="attacker").id
        victim_key = create_api_key(s, workspace_id="victim").key
        key = create_api_key(s, workspace_id="attacker").key
        victim_message = enqueue_text(s, channel_id=victim_channel, to="+15550100001",
                                      body="victim's secret text", idempotency_key="victim-1",
                                      workspace_id="victim").message_id
    with Session(engine) as s, s.begin():
        ch = find_webhook_channel(s, str(victim_channel))
        process_webhook(s, ch, {"messages": [{
            "id": "victim-in-1", "from_me": False, "type": "text", "chat_id": WA_CHAT,
            "timestamp": 1712995245, "text": {"body": "victim inbound"}, "from_name": "Vic"}],
            "statuses": [{"id": "victim-unknown", "status": "read", "timestamp": "1712995300"}]})
    secrets_by_channel = webhook_secrets(engine)
    yield World(engine, live_url, key, attacker_channel, secrets_by_channel[attacker_channel],
                victim_key, victim_channel, victim_message, secrets_by_channel[victim_channel])


@pytest.fixture(autouse=True)
def _json_logs() -> Iterator[None]:
    """The product's logging (JSON, plain tracebacks without locals): the
    structlog default renders tracebacks with every frame's locals, which is
    slow for huge inputs and would print request headers (API keys)."""
    from outbox.logging import _unconfigure, clear_secrets, configure_logging

    configure_logging(level="WARNING", json=True)
    yield
    _unconfigure()
    clear_secrets()


_SNAPSHOT = text(
    "SELECT " + ", ".join(f"(SELECT count(*) FROM outbox.{t}) AS {t}" for t in COUNTED) + """,
    (SELECT md5(coalesce(string_agg(r, '|' ORDER BY r), '')) FROM (
        SELECT 'ch' || row_to_json(c)::text AS r FROM outbox.channels c
            WHERE c.workspace_id = 'victim'
        UNION ALL SELECT 'tok' || row_to_json(k)::text FROM outbox.channel_tokens k
            JOIN outbox.channels c ON c.id = k.channel_id WHERE c.workspace_id = 'victim'
        UNION ALL SELECT 'ct' || row_to_json(x)::text FROM outbox.contacts x
            WHERE x.workspace_id = 'victim'
        UNION ALL SELECT 'chat' || row_to_json(x)::text FROM outbox.chats x
            WHERE x.workspace_id = 'victim'
        UNION ALL SELECT 'msg' || row_to_json(x)::text FROM outbox.messages x
            WHERE x.workspace_id = 'victim'
        UNION ALL SELECT 'ob' || row_to_json(x)::text FROM outbox.outbox_messages x
            WHERE x.workspace_id = 'victim'
        UNION ALL SELECT 'key' || row_to_json(x)::text FROM outbox.api_keys x
            WHERE x.workspace_id = 'victim'
        UNION ALL SELECT 'bl' || row_to_json(b)::text FROM outbox.webhook_status_backlog b
            JOIN outbox.channels c ON c.id = b.channel_id WHERE c.workspace_id = 'victim'
    ) victim) AS victim_checksum,
    (SELECT count(*) FROM pg_tables WHERE schemaname = 'outbox') AS tables
""")


def snapshot(engine: Engine) -> dict[str, Any]:
    """Row counts of every table, the number of tables, and a checksum of
    every row of the victim workspace."""
    with engine.connect() as conn:
        return dict(conn.execute(_SNAPSHOT).one()._mapping)


def victim_only(snap: dict[str, Any]) -> tuple[Any, Any]:
    return snap["victim_checksum"], snap["tables"]


def assert_error_shape(r: httpx.Response, context: str) -> dict[str, Any]:
    """The documented error body: {"error": {"code", "message", "field"?}}."""
    assert r.headers.get("content-type", "").startswith("application/json"), (context, r.text)
    body = r.json()
    assert set(body) == {"error"}, (context, body)
    err = body["error"]
    assert isinstance(err.get("code"), str) and err["code"], (context, body)
    assert isinstance(err.get("message"), str) and err["message"], (context, body)
    assert err.get("field") is None or isinstance(err["field"], str), (context, body)
    assert err["code"] != "internal_error", (context, body)
    return err


def no_victim_data(w: World, r: httpx.Response) -> None:
    """Nothing of the victim's in the answer (except what the request itself said)."""
    sent = (str(r.request.url) + r.request.content.decode("utf-8", "replace")).lower()
    for secret in ("victim's secret text", "victim inbound", str(w.victim_channel),
                   str(w.victim_message), "victim-1", "victim-in-1", w.victim_secret, "Vic\""):
        said = secret.lower() in sent or secret.replace("-", "").lower() in sent
        assert said or secret not in r.text, secret


@pytest.fixture
def client(world: World) -> Iterator[httpx.Client]:
    world.last = None
    with new_client(world.url) as c:
        yield c


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) < 80 else shown[:77] + "..."


def _settle(response: httpx.Response) -> None:
    """After a 500, let the server finish logging it before a test fails:
    on CPython 3.11 formatting a traceback uses `ast`, whose recursion
    bookkeeping is not thread-safe, and pytest formats our failure with `ast`
    at the same moment ("SystemError: AST constructor recursion depth
    mismatch" as an INTERNALERROR). The server is in this process."""
    if response.status_code >= 500:
        time.sleep(0.1)


def new_client(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=60, trust_env=False,
                        event_hooks={"response": [_settle]})


def checked(w: World, send: Callable[[], httpx.Response], context: str, *,
            allow: tuple[int, ...] = (200, 201)) -> httpx.Response:
    """Send, then: no 5xx; a 4xx has the error shape and wrote nothing at
    all; in every case the victim's rows and the schema are untouched."""
    before = w.last or snapshot(w.engine)
    w.last = None
    try:
        r = send()
    except httpx.TransportError as exc:  # a crashed handler can drop the connection
        raise AssertionError(f"{context}: connection failed ({exc!r})") from None
    after = snapshot(w.engine)
    assert r.status_code < 500, f"{context}: {r.status_code} {r.text[:300]}"
    assert victim_only(after) == victim_only(before), f"{context}: victim rows changed"
    if r.status_code >= 400:
        assert_error_shape(r, context)
        assert after == before, f"{context}: refused but wrote rows"
    else:
        assert r.status_code in allow, f"{context}: {r.status_code} {r.text[:300]}"
    no_victim_data(w, r)
    w.last = after
    return r


def _message_row(engine: Engine, message_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT m.body, m.payload, m.idempotency_key, m.workspace_id, o.priority, "
            "o.next_attempt_at, ct.phone FROM outbox.messages m "
            "JOIN outbox.outbox_messages o ON o.message_id = m.id "
            "JOIN outbox.chats c ON c.id = m.chat_id "
            "JOIN outbox.contacts ct ON ct.id = c.contact_id "
            "WHERE m.id = :id"), {"id": message_id}).one()


def _post(c: httpx.Client, w: World, body: Any) -> Callable[[], httpx.Response]:
    content = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return lambda: c.post("/v1/messages", content=content,
                          headers={**auth(w.key), "Content-Type": "application/json"})


# --- POST /v1/messages ----------------------------------------------------------------------

_n = iter(range(10**9))


def _phone() -> str:
    """A fresh valid recipient, so each accepted message has its own chat."""
    return f"+1555{next(_n) % 10_000_000:07d}"


TEXT_FIELDS = ("text", "idempotency_key")
MEDIA_FIELDS = ("media", "caption", "filename", "mime_type")


def test_message_string_fields_refused_or_stored_verbatim(world: World,
                                                          client: httpx.Client) -> None:
    w = world
    for field in (*TEXT_FIELDS, *MEDIA_FIELDS, "media_type", "to", "channel_id"):
        for value in STRINGS if field in (*TEXT_FIELDS, *MEDIA_FIELDS) else CORE:
            if field in MEDIA_FIELDS or field == "media_type":
                body: dict[str, Any] = {"channel_id": str(w.channel), "to": _phone(),
                                        "media_type": "document", "media": "https://e.com/a.pdf"}
            else:
                body = {"channel_id": str(w.channel), "to": _phone(), "text": "hello"}
            body[field] = value
            context = f"POST /v1/messages {field}={_short(value)}"
            _record("POST /v1/messages", field, value)
            r = checked(w, _post(client, w, body), context)
            if r.status_code >= 400:
                err = r.json()["error"]
                assert r.status_code in (404, 409, 422), context
                if field != "channel_id" or r.status_code == 422:
                    assert err.get("field") in (field, "to", "channel_id"), (context, err)
                continue
            row = _message_row(w.engine, r.json()["message_id"])
            assert row.workspace_id == "attacker"
            if field == "text":
                assert row.body == value and row.payload == {"body": value}, context
            elif field == "idempotency_key":
                assert row.idempotency_key == value, context
                got = client.get(f"/v1/messages/{r.json()['message_id']}", headers=auth(w.key))
                assert got.status_code == 200 and got.json()["idempotency_key"] == value
            elif field in MEDIA_FIELDS:
                assert row.payload[field] == value, context
            elif field == "to":
                e164_or_group = r"\+[1-9]\d{8,14}|\d{9,31}@g\.us"
                assert re.fullmatch(e164_or_group, row.phone), (context, row.phone)
            else:  # channel_id / media_type only succeed with a real value
                assert value.strip() in (str(w.channel), "document", "image", "video", "audio")


def test_message_wrong_types_are_422(world: World, client: httpx.Client) -> None:
    w = world
    fields = ("channel_id", "to", "text", "media_type", "media", "caption", "filename",
              "mime_type", "idempotency_key", "priority", "send_at")
    for field in fields:
        for value in WRONG_TYPES:
            if field in ("text", "idempotency_key", "send_at") and value is None:
                continue  # optional: null is the default
            body: dict[str, Any] = {"channel_id": str(w.channel), "to": _phone(), "text": "hi"}
            if field in ("media_type", "media", "caption", "filename", "mime_type"):
                body = {"channel_id": str(w.channel), "to": _phone(), "media_type": "document",
                        "media": "https://e.com/a.pdf"}
            body[field] = value
            context = f"POST /v1/messages {field}={_short(value)} (wrong type)"
            _record("POST /v1/messages", field, value)
            r = checked(w, _post(client, w, body), context)
            if field in ("caption", "filename", "mime_type") and value is None:
                assert r.status_code == 201, context
                continue
            if r.status_code == 201:
                # A valid value after all: an integer priority in range, or a
                # unix time for send_at (pydantic reads numbers as timestamps).
                assert type(value) in (int, float), context
                assert field == "send_at" or (type(value) is int and -1000 <= value <= 1000)
                got = client.get(f"/v1/messages/{r.json()['message_id']}", headers=auth(w.key))
                assert got.status_code == 200, (context, got.text)
                continue
            assert r.status_code == 422, context
            assert r.json()["error"]["field"] == field, (context, r.text)


def test_message_numbers_and_schedules(world: World, client: httpx.Client) -> None:
    w = world
    for value in NUMBERS:
        body = {"channel_id": str(w.channel), "to": _phone(), "text": "n", "priority": value}
        context = f"priority={_short(value)}"
        _record("POST /v1/messages", "priority", value)
        r = checked(w, _post(client, w, body), context)
        if r.status_code == 201:
            assert type(value) is int and -1000 <= value <= 1000, context
            assert _message_row(w.engine, r.json()["message_id"]).priority == value
        else:
            assert r.status_code == 422 and r.json()["error"]["field"] == "priority", context
    for value in SEND_AT:
        body = {"channel_id": str(w.channel), "to": _phone(), "text": "s", "send_at": value}
        context = f"send_at={_short(value)}"
        _record("POST /v1/messages", "send_at", value)
        r = checked(w, _post(client, w, body), context)
        if r.status_code == 201:
            got = client.get(f"/v1/messages/{r.json()['message_id']}", headers=auth(w.key))
            assert got.status_code == 200, (context, got.text)
        else:
            assert r.json()["error"]["field"] == "send_at", context


def test_message_raw_bodies(world: World, client: httpx.Client) -> None:
    w = world
    for raw in RAW_BODIES:
        content = raw.replace(b"{C}", str(w.channel).encode())
        context = f"POST /v1/messages raw {_short(raw[:60])}"
        _record("POST /v1/messages", "<raw body>", raw)
        r = checked(w, _post(client, w, content), context)
        if r.status_code == 201:
            # Accepted: a duplicate key means the last one (Python's json).
            row = _message_row(w.engine, r.json()["message_id"])
            assert row.body in ("x", "y", "utf-16"), (context, row.body)
        else:
            assert r.status_code in (400, 413, 422), context


def test_duplicate_keys_cannot_smuggle_another_workspace_channel(world: World,
                                                                 client: httpx.Client) -> None:
    """With duplicate keys the last wins; whichever wins, the victim's channel
    is not found for the attacker."""
    w = world
    for first, last in ((w.channel, w.victim_channel), (w.victim_channel, w.channel)):
        raw = (f'{{"channel_id": "{first}", "to": "+15550100001", "text": "dup", '
               f'"channel_id": "{last}"}}').encode()
        _record("POST /v1/messages", "<duplicate channel_id>", raw)
        r = checked(w, _post(client, w, raw), "duplicate channel_id")
        if last == w.victim_channel:
            assert r.status_code == 404 and r.json()["error"]["code"] == "channel_not_found"
        else:
            assert r.status_code == 201


def test_message_surrogates_are_not_a_500(world: World) -> None:
    """Where no bug is known: lone surrogates in `to` are refused cleanly."""
    w = world
    for value in SURROGATES:
        with new_client(w.url) as c:
            body = {"channel_id": str(w.channel), "to": value, "text": "x"}
            _record("POST /v1/messages", "to", value)
            r = checked(w, _post(c, w, body), f"to={value!r}")
            assert r.status_code in (400, 422)


@pytest.mark.parametrize("field", ["text", "idempotency_key", "channel_id", "media_type",
                                   "caption"])
def test_message_surrogates_regression(world: World, field: str) -> None:
    w = world
    for value in SURROGATES:
        with new_client(w.url) as c:
            if field == "text" or field == "idempotency_key" or field == "channel_id":
                body: dict[str, Any] = {"channel_id": str(w.channel), "to": _phone(),
                                        "text": "x"}
            else:
                body = {"channel_id": str(w.channel), "to": _phone(), "media_type": "document",
                        "media": "https://e.com/a.pdf"}
            body[field] = value
            _record("POST /v1/messages", field, value)
            r = checked(w, _post(c, w, body), f"{field}={value!r}")
            assert r.status_code in (400, 422)  # refused as unusable JSON, or as a field


def test_message_deeply_nested_body_regression(world: World) -> None:
    w = world
    for raw in (b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000):
        with new_client(w.url) as c:
            _record("POST /v1/messages", "<raw body>", raw[:20] + b"...deep")
            r = checked(w, _post(c, w, raw), "deep nesting")
            assert r.status_code == 400


def test_send_at_offsets_and_out_of_range_years_regression(world: World) -> None:
    w = world
    for value in ("2048-04-18T09:50:54-20:43", "1665-10-23T11:46:07+16:27",
                  "2030-01-01T00:00:00+23:59", "9999-12-31T23:59:59-14:00",
                  "0001-01-01T00:00:00+14:00"):
        with new_client(w.url) as c:
            _record("POST /v1/messages", "send_at", value)
            body = {"channel_id": str(w.channel), "to": _phone(), "text": "s", "send_at": value}
            r = checked(w, _post(c, w, body), f"send_at={value}")
            if r.status_code == 201:
                got = c.get(f"/v1/messages/{r.json()['message_id']}", headers=auth(w.key))
                assert got.status_code == 200, (value, got.status_code)
            else:
                assert r.status_code == 422


# --- GET /v1/messages/{id}, path ids ---------------------------------------------------------

PATH_IDS = [
    "nope", "00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "urn:uuid:00000000-0000-0000-0000-000000000000", "{00000000-0000-0000-0000-000000000000}",
    "0" * 32, "0" * 33, "g" * 36, "-1", "1", "1e9", "%00", "..", "...", "./", "../../etc/passwd",
    "..\\..\\etc\\passwd", "%2e%2e%2f%2e%2e%2f", "....//....//", "/etc/passwd", "\x00",
    "'; DROP TABLE outbox.messages; --", "' OR '1'='1", "%s", "{}", "😀", "\u202e", "x" * 5000,
    " 00000000-0000-0000-0000-000000000000 ", "00000000-0000-0000-0000-000000000000\n",
]


def test_message_ids_in_path(world: World, client: httpx.Client) -> None:
    w = world
    victim = str(w.victim_message)
    ids = [*PATH_IDS, *(v for v in STRINGS if len(v) < 2000), victim, victim.upper(),
           "{" + victim + "}", "urn:uuid:" + victim, victim.replace("-", ""), f" {victim} "]
    for value in ids:
        for encoded in {quote(value, safe=""), quote(value, safe="/.")}:
            context = f"GET /v1/messages/{_short(encoded)}"
            _record("GET /v1/messages/{id}", "message_id", encoded)
            r = checked(w, lambda e=encoded: client.get(f"/v1/messages/{e}",
                                                        headers=auth(w.key)), context,
                        allow=(307,))
            if r.status_code == 307:  # "./": the trailing-slash redirect, to our own path
                assert r.headers["location"].startswith(w.url + "/v1/messages"), context
                continue
            assert r.status_code in (404, 405), context  # another workspace's = no such message
            assert r.json()["error"]["code"] in ("message_not_found", "not_found",
                                                 "method_not_allowed"), context


def test_webhook_channel_ids_in_path(world: World, client: httpx.Client) -> None:
    w = world
    for value in [*PATH_IDS, str(w.channel).upper(), "{" + str(w.channel) + "}"]:
        encoded = quote(value, safe="")
        _record("POST /webhooks/whapi/{id}", "channel_id", encoded)
        r = checked(w, lambda e=encoded: client.post(
            f"/webhooks/whapi/{e}", json={"statuses": []}, headers={SECRET_HEADER: w.secret}),
            f"webhook path {_short(encoded)}", allow=(200, 307))
        if r.status_code == 307:  # "./": /webhooks/whapi/ -> /webhooks/whapi (then 404)
            continue
        if value.strip("{}").lower() == str(w.channel):
            assert r.status_code == 200  # uuid.UUID accepts these spellings of the same id
        elif r.status_code == 404:  # "../..", "/etc/passwd": the path names no route at all
            assert r.json()["error"]["code"] == "not_found", _short(encoded)
        else:
            assert r.status_code == 401  # an unknown channel: as a wrong secret


# --- GET /v1/chats ----------------------------------------------------------------------------


def test_chats_listing_query_parameters(world: World, client: httpx.Client) -> None:
    from outbox.admin.chats import encode_cursor

    w = world
    cursors = [encode_cursor(None, uuid.uuid4()), "MDAwMS0wMS0wMVQwMDowMDowMCsxNDowMHw",
               "x" * 100_000, "====", "%%%", "fA", "AAAA" * 10]
    for param in ("channel_id", "cursor", "limit", "unread", "archived"):
        values = [*(STRINGS if param in ("channel_id", "cursor") else CORE),
                  *(cursors if param == "cursor" else []), "-1", "0", "501",
                  "99999999999999999999999999", "1.5", "1e3"]
        for value in values:
            if len(value) > 5_000:
                value = value[:5_000]  # httpx refuses queries over 64 kB (encoded)
            context = f"GET /v1/chats {param}={_short(value)}"
            _record("GET /v1/chats", param, value)
            r = checked(w, lambda p=param, v=value: client.get(
                "/v1/chats", params={p: v}, headers=auth(w.key)), context)
            if r.status_code == 200:
                chats = r.json()["chats"]
                assert all(ch["channel_id"] == str(w.channel) for ch in chats), context
            else:
                assert r.status_code == 422, (context, r.status_code)
                assert r.json()["error"]["field"] == param, (context, r.text)


# --- headers: API key, webhook secret, cron secret -------------------------------------------


def _header_values(secret: str) -> list[bytes]:
    raw: list[bytes] = []
    for v in STRINGS:
        if not v or v != v.strip() or len(v) > 7000 or any(
                ord(c) < 32 or c == "\x7f" for c in v):
            continue  # not sendable in a header (h11 refuses them client-side)
        raw.append(v.encode("utf-8", "surrogatepass"))
    raw += [secret[:-1].encode(), (secret + "x").encode(), secret.upper().encode(),
            ("Bearer Bearer " + secret).encode(), secret.encode() + b"\xff", b"\xe9" * 40,
            b"wo_" + b"0" * 12 + b"_" + secret.encode()]
    return raw


def test_hostile_credentials_are_401(world: World, client: httpx.Client) -> None:
    w = world
    key_values = _header_values(w.key)
    for value in key_values:
        for header in (b"Bearer " + value, value, b"bearer  " + value, b"Basic " + value):
            _record("Authorization", "api key", header)
            r = checked(w, lambda h=header: client.get(
                "/v1/chats", headers={"Authorization": h}), f"Authorization {_short(header)}")
            assert r.status_code == 401, r.text
        _record("Authorization", "cron", value)
        r = checked(w, lambda v=value: client.post(
            "/v1/cron/dispatch", headers={"Authorization": b"Bearer " + v}), "cron")
        assert r.status_code == 401
    for value in _header_values(w.secret):
        _record("webhook secret", SECRET_HEADER, value)
        r = checked(w, lambda v=value: client.post(
            f"/webhooks/whapi/{w.channel}", json={"statuses": []},
            headers={SECRET_HEADER: v}), f"webhook secret {_short(value)}")
        assert r.status_code == 401
    # The victim's own secret on the attacker's channel, and the reverse.
    for channel, secret in ((w.channel, w.victim_secret), (w.victim_channel, w.secret),
                            (w.victim_channel, w.key)):
        r = checked(w, lambda c=channel, s=secret: client.post(
            f"/webhooks/whapi/{c}", json={"statuses": []}, headers={SECRET_HEADER: s}),
            "cross secret")
        assert r.status_code == 401


# --- webhooks: inbound messages and statuses ------------------------------------------------


def _hook(c: httpx.Client, w: World, payload: Any) -> Callable[[], httpx.Response]:
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return lambda: c.post(f"/webhooks/whapi/{w.channel}", content=content,
                          headers={SECRET_HEADER: w.secret, "Content-Type": "application/json"})


def _inbound(wa_id: Any, *, chat: Any = WA_CHAT, body: Any = "hi", kind: Any = "text",
             name: Any = "Gerald", ts: Any = 1712995245, **extra: Any) -> dict[str, Any]:
    entry = {"id": wa_id, "from_me": False, "type": kind, "chat_id": chat, "timestamp": ts,
             "text": {"body": body}, "from_name": name, **extra}
    if kind != "text" and isinstance(kind, str):
        entry[kind] = {"caption": body}
    return {"messages": [entry], "event": {"type": "messages", "event": "post"}}


def _clean(value: str) -> str:
    return value.replace("\x00", "")


def _inbound_row(engine: Engine, wa_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT m.body, m.type, m.payload, m.workspace_id, ct.name, ct.phone "
            "FROM outbox.messages m JOIN outbox.chats c ON c.id = m.chat_id "
            "JOIN outbox.contacts ct ON ct.id = c.contact_id "
            "WHERE m.channel_id = (SELECT id FROM outbox.channels WHERE workspace_id = 'attacker') "
            "AND m.wa_message_id = :w"), {"w": wa_id}).one_or_none()


def test_webhook_inbound_fields_stored_verbatim_or_ignored(world: World,
                                                           client: httpx.Client) -> None:
    """Webhooks are answered 200 unless the body isn't JSON (Whapi retries
    anything else forever); a usable message is stored verbatim (NUL, which
    PostgreSQL can't hold, removed), an unusable one is counted as ignored."""
    w = world
    for field in ("body", "name", "kind", "id", "chat", "ts"):
        strings = STRINGS if field in ("body", "name", "kind", "id") else CORE
        for value in [*strings, *(WRONG_TYPES if field != "body" else [])]:
            wa_id = f"in-{next(_n)}"
            chat = f"{_phone()[1:]}@s.whatsapp.net"
            kwargs: dict[str, Any] = {"chat": chat}
            if field == "id":
                wa_id = value
            elif field == "kind":
                kwargs["kind"] = value
            else:
                kwargs[field] = value
            payload = _inbound(wa_id, **kwargs)
            context = f"webhook inbound {field}={_short(value)}"
            _record("POST /webhooks (messages)", field, value)
            r = checked(w, _hook(client, w, payload), context, allow=(200,))
            assert r.status_code == 200, (context, r.text)
            result = r.json()
            if result["dead_lettered"] or result["ignored"]:
                # Kept raw as a dead letter (or, for non-conversations, counted).
                assert field in ("id", "chat") or (field == "kind" and value == "action"), (
                    context, result)
                continue
            assert result["messages"]["inserted"] == 1 or (
                field == "id" and result["messages"]["duplicates"] == 1), (context, result)
            stored_id = wa_id.strip() if isinstance(wa_id, str) else wa_id
            row = _inbound_row(w.engine, stored_id)
            assert row is not None and row.workspace_id == "attacker", context
            entry = payload["messages"][0]
            if field == "body":
                assert row.body == (_clean(value) or None), context
                assert row.payload["text"]["body"] == _clean(value), context
            elif field == "name" and isinstance(value, str):
                assert row.name == (_clean(value)[:200] or None), context
            elif field == "kind" and isinstance(value, str):
                assert row.type == (_clean(value)[:50] or "unknown"), context
            elif field == "ts":
                assert row.payload["timestamp"] == _strip_nul(entry["timestamp"]), context
            elif field == "id":
                assert row.payload["id"] == _clean(value), context


def test_webhook_statuses_stored_verbatim_or_ignored(world: World,
                                                     client: httpx.Client) -> None:
    w = world
    for field in ("id", "status", "timestamp"):
        for value in [*(STRINGS if field == "id" else CORE), *WRONG_TYPES]:
            entry: dict[str, Any] = {"id": f"st-{next(_n)}", "status": "delivered",
                                     "timestamp": "1712995378"}
            entry[field] = value
            context = f"webhook status {field}={_short(value)}"
            _record("POST /webhooks (statuses)", field, value)
            r = checked(w, _hook(client, w, {"statuses": [entry]}), context, allow=(200,))
            result = r.json()
            usable = (field != "id" or (isinstance(value, str) and value.strip()
                                        and len(value.strip()) <= 200 and "\x00" not in value))
            usable = usable and (field != "status" or value == "delivered")
            if field == "status" and value == "deleted":
                assert result["actions"]["pending"] == 1, (context, result)
                continue
            if not usable and field == "status" and value in STATUS_ORDER:
                continue  # another real status: applied like delivered
            if not usable:
                assert result["dead_lettered"], (context, result)
                continue
            assert result["statuses"]["backlogged"] + result["statuses"]["unchanged"] == 1, (
                context, result)
            if field == "id":
                with w.engine.connect() as conn:
                    n = conn.execute(text(
                        "SELECT (SELECT count(*) FROM outbox.webhook_status_backlog WHERE "
                        "channel_id = :c AND wa_message_id = :w) + (SELECT count(*) FROM "
                        "outbox.messages WHERE channel_id = :c AND wa_message_id = :w)"),
                        {"c": w.channel, "w": value.strip()}).scalar_one()
                assert n == 1, context


def test_webhook_structures(world: World, client: httpx.Client) -> None:
    w = world
    structures: list[Any] = [
        {}, [], [{}], [1], ["x"], [None], 1, "x", None, True, [[{}]],
        {"messages": "x"}, {"messages": {}}, {"messages": [1, "x", None, [], {}]},
        {"statuses": "x"}, {"statuses": {"id": "a"}}, {"statuses": [[], 1, None]},
        {"messages": [{"from_me": "false", "id": "a", "chat_id": WA_CHAT}]},
        {"messages": [{"from_me": None, "id": "a", "chat_id": WA_CHAT}]},
        {"messages": [{"from_me": False, "id": "a", "chat_id": ["x"]}]},
        {"messages": [{"from_me": False, "id": "a", "chat_id": WA_CHAT, "type": "text",
                       "text": "not an object"}]},
        {"messages": [{"from_me": False, "id": "a", "chat_id": WA_CHAT, "type": "text",
                       "text": {"body": ["x"]}}]},
        {"messages": [{"from_me": False, "id": "a", "chat_id": WA_CHAT, "type": "image",
                       "image": {"caption": {"x": 1}}}]},
        {"messages": [{"from_me": False, "id": "deep-1", "chat_id": WA_CHAT,
                       "x": json.loads("[" * 200 + "]" * 200)}]},
        {"messages": [{"from_me": False, "id": "keys-1", "chat_id": WA_CHAT,
                       "x": {"\x00": 1, "'; DROP TABLE outbox.messages; --": "%s", "": {}}}]},
        {"messages": [{"from_me": False, "id": "big-int-1", "chat_id": WA_CHAT,
                       "x": 10**300, "y": -(10**300)}]},
        {"statuses": [{"id": f"batch-{i}", "status": "read"} for i in range(2000)]},
        {"messages": [{"from_me": False, "id": f"batch-m-{i}", "chat_id": WA_CHAT,
                       "type": "text", "text": {"body": str(i)}} for i in range(200)]},
    ]
    for payload in structures:
        context = f"webhook structure {_short(payload)}"
        _record("POST /webhooks", "<structure>", payload)
        r = checked(w, _hook(client, w, payload), context, allow=(200,))
        if "deep-1" in json.dumps(payload):
            assert r.status_code in (200, 400), context  # refusing 200 levels is fair
        else:
            assert r.status_code == 200, context
    for raw in (b"", b"{", b"\xff", b"[1,", b"{'a': 1}", b'{"statuses": []} x',
                b'{"statuses": [], "statuses": "dup"}', b"\xef\xbb\xbf{}",
                b'{"statuses": [{"id": "s-nan", "status": "read", "timestamp": NaN}]}',
                b'{"statuses": [{"id": "s-inf", "status": "read", "timestamp": 1e999}]}',
                b'{"statuses": [{"id": "s-big", "status": "read", "timestamp": '
                + b"9" * 5000 + b"}]}"):
        _record("POST /webhooks", "<raw body>", raw)
        r = checked(w, _hook(client, w, raw), f"webhook raw {_short(raw[:60])}", allow=(200,))
        # Not JSON: kept as a dead letter and answered 200 (Whapi retries anything else).
        assert r.status_code == 200, raw


def test_webhook_nan_in_inbound_payload_regression(world: World) -> None:
    w = world
    for n, literal in enumerate((b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999")):
        raw = (b'{"messages": [{"id": "nan-%d", "from_me": false, "type": "text", '
               b'"chat_id": "15550100009@s.whatsapp.net", "text": {"body": "k"}, "x": %s}]}'
               % (n, literal))
        _record("POST /webhooks (messages)", "<extra number>", literal)
        with new_client(w.url) as c:
            r = checked(w, _hook(c, w, raw), f"inbound with {literal!r}", allow=(200,))
            assert r.status_code in (200, 400)


@pytest.mark.parametrize("where", ["body", "name", "key", "status_id"])
def test_webhook_surrogates_regression(world: World, where: str) -> None:
    w = world
    for value in SURROGATES:
        if where == "status_id":
            payload: Any = {"statuses": [{"id": value, "status": "read"}]}
        elif where == "key":
            payload = _inbound(f"sur-{next(_n)}", extra={value: 1})
        else:
            payload = _inbound(f"sur-{next(_n)}", **{where: value})
        _record("POST /webhooks", where, value)
        with new_client(w.url) as c:
            r = checked(w, _hook(c, w, payload), f"webhook {where}={value!r}", allow=(200,))
            assert r.status_code in (200, 400)


def test_webhook_deep_nesting_regression(world: World) -> None:
    w = world
    deep_entry = (b'{"messages": [{"id": "deep-2", "from_me": false, "chat_id": "'
                  + WA_CHAT.encode() + b'", "x": ' + b"[" * 900 + b"]" * 900 + b"}]}")
    for raw in (b"[" * 5000 + b"]" * 5000, deep_entry):
        _record("POST /webhooks", "<raw body>", raw[:30] + b"...deep")
        with new_client(w.url) as c:
            r = checked(w, _hook(c, w, raw), "deep webhook", allow=(200,))
            assert r.status_code in (200, 400)


# --- the library: enqueue_text / enqueue_media / channels / API keys --------------------------


def _library_case(engine: Engine, call: Callable[[Session], Any], context: str,
                  verify: Callable[[Session, Any], None] | None = None,
                  problems: list[str] | None = None,
                  counts: tuple[int, ...] | None = None) -> None:
    """Run `call` in a transaction that is rolled back: it must raise an
    OutboxError and have written nothing, or succeed (then `verify`).
    With `problems`, a failure is noted there instead of raised."""
    try:
        with Session(engine) as s:
            s.begin()
            if counts is None:
                counts = _txn_counts(s)
            try:
                result = call(s)
            except OutboxError as exc:
                assert exc.http_status < 500 and str(exc), context
                assert _txn_counts(s) == counts, f"{context}: raised but wrote rows"
            except Exception as exc:
                raise AssertionError(
                    f"{context}: {type(exc).__name__}: {str(exc)[:100]} "
                    "is not an OutboxError") from exc
            else:
                if verify is not None:
                    verify(s, result)
            finally:
                s.rollback()
    except AssertionError as exc:
        if problems is None:
            raise
        problems.append(str(exc).splitlines()[0][:300])


_COUNTS = text("SELECT " + ", ".join(f"(SELECT count(*) FROM outbox.{t})" for t in COUNTED))


def _txn_counts(s: Session) -> tuple[int, ...]:
    return tuple(s.execute(_COUNTS).one())


def _baseline(engine: Engine) -> tuple[int, ...]:
    """Every library call is rolled back, so the counts every transaction
    starts from are the same; a refused call must leave them so."""
    with Session(engine) as s:
        return _txn_counts(s)


@pytest.fixture
def unchanged(world: World) -> Iterator[None]:
    """The library tests roll every call back: the database ends as it began."""
    before = snapshot(world.engine)
    yield
    assert snapshot(world.engine) == before


def test_library_enqueue_hostile_values(world: World, unchanged: None) -> None:
    from outbox.enqueue import enqueue_media, enqueue_text

    w = world
    problems: list[str] = []
    counts = _baseline(w.engine)
    for field in ("body", "to", "idempotency_key", "channel_id", "workspace_id",
                  "default_region"):
        trusted = field in ("workspace_id", "default_region")  # the caller's own settings
        for value in [*STRINGS, *([] if trusted else WRONG_TYPES)]:
            if field == "idempotency_key" and value is None:
                continue  # None is a documented, valid value
            if field == "workspace_id" and "\x00" in value:
                continue  # covered by test_library_workspace_with_nul_regression
            kwargs: dict[str, Any] = {"channel_id": w.channel, "to": _phone(), "body": "x",
                                      "workspace_id": "attacker"}
            kwargs[field] = value
            _record("enqueue_text", field, value)

            def verify(s: Session, result: Any, f: str = field, v: Any = value) -> None:
                row = s.execute(text("SELECT body, idempotency_key, workspace_id "
                                     "FROM outbox.messages "
                                     "WHERE id = :id"), {"id": result.message_id}).one()
                assert row.workspace_id == "attacker"
                if f == "body":
                    assert row.body == v
                if f == "idempotency_key":
                    assert row.idempotency_key == v

            _library_case(w.engine, lambda s, k=kwargs: enqueue_text(s, **k),
                          f"enqueue_text {field}={_short(value)}", verify, problems, counts)
    for field in ("media_type", "media", "caption", "filename", "mime_type"):
        for value in [*STRINGS, *WRONG_TYPES]:
            kwargs = {"channel_id": w.channel, "to": _phone(), "media_type": "document",
                      "media": "https://e.com/a.pdf", "workspace_id": "attacker"}
            kwargs[field] = value
            _record("enqueue_media", field, value)

            def verify_media(s: Session, result: Any, f: str = field, v: Any = value) -> None:
                payload = s.execute(text("SELECT payload FROM outbox.outbox_messages "
                                         "WHERE message_id = :id"),
                                    {"id": result.message_id}).scalar_one()
                if f != "media_type" and v is not None:
                    assert payload[f] == v

            _library_case(w.engine, lambda s, k=kwargs: enqueue_media(s, **k),
                          f"enqueue_media {field}={_short(value)}", verify_media, problems,
                          counts)
    assert not problems, "\n".join(problems)


def test_library_channel_and_key_creation_hostile_values(
        world: World, unchanged: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from outbox.admin.apikeys import create_api_key
    from outbox.admin.channels import create_channel

    w = world
    problems: list[str] = []
    counts = _baseline(w.engine)
    # Strings only: these are typed str parameters the library does not
    # type-check (test_library_wrong_types_regression); enqueue does.
    for field in ("name", "phone_number", "token", "workspace_id", "base_url"):
        for value in STRINGS:
            kwargs: dict[str, Any] = {"name": "n", "phone_number": "+15550009003",
                                      "token": "t" * 32, "encryption_key": TEST_KEY,
                                      "workspace_id": "attacker"}
            if field == "base_url" and value is None:
                continue
            kwargs[field] = value
            _record("create_channel", field, value)

            def verify(s: Session, info: Any, f: str = field, v: Any = value) -> None:
                row = s.execute(text("SELECT name, workspace_id, base_url FROM outbox.channels "
                                     "WHERE id = :id"), {"id": info.id}).one()
                if f == "name":
                    assert row.name == v.strip()
                if f == "workspace_id":
                    assert row.workspace_id == v.strip() and row.workspace_id != "victim"
                if f == "base_url":
                    assert row.base_url == v.strip().rstrip("/")

            _library_case(w.engine, lambda s, k=kwargs: create_channel(s, **k),
                          f"create_channel {field}={_short(value)}", verify, problems, counts)
    for field in ("workspace_id", "name"):
        for value in STRINGS:
            kwargs = {"workspace_id": "attacker", "name": None, field: value}
            _record("create_api_key", field, value)
            _library_case(w.engine, lambda s, k=kwargs: create_api_key(s, **k),
                          f"create_api_key {field}={_short(value)}", problems=problems,
                          counts=counts)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("target", ["enqueue_text.body", "enqueue_text.idempotency_key",
                                    "enqueue_media.caption", "create_channel.name"])
def test_library_surrogates_regression(world: World, unchanged: None, target: str) -> None:
    from outbox.admin.channels import create_channel
    from outbox.enqueue import enqueue_media, enqueue_text

    w = world
    func, field = target.split(".")
    for value in SURROGATES:
        _record(func, field, value)
        if func == "enqueue_text":
            kwargs: dict[str, Any] = {"channel_id": w.channel, "to": _phone(), "body": "x",
                                      "workspace_id": "attacker", field: value}
            call: Callable[[Session], Any] = lambda s, k=kwargs: enqueue_text(s, **k)  # noqa: E731
        elif func == "enqueue_media":
            kwargs = {"channel_id": w.channel, "to": _phone(), "media_type": "document",
                      "media": "https://e.com/a.pdf", "workspace_id": "attacker", field: value}
            call = lambda s, k=kwargs: enqueue_media(s, **k)  # noqa: E731
        else:
            kwargs = {"name": value, "phone_number": "+15550009003", "token": "t" * 32,
                      "encryption_key": TEST_KEY, "workspace_id": "attacker"}
            call = lambda s, k=kwargs: create_channel(s, **k)  # noqa: E731
        _library_case(w.engine, call, f"{target}={value!r}")


def test_library_send_at_offset_regression(world: World, unchanged: None) -> None:
    from datetime import datetime, timedelta, timezone

    from outbox.enqueue import enqueue_text

    w = world
    for hours in (20, -23, 16):
        when = datetime(2030, 1, 1, tzinfo=timezone(timedelta(hours=hours, minutes=43)))
        _record("enqueue_text", "send_at", when)
        _library_case(w.engine, lambda s, t=when: enqueue_text(
            s, channel_id=w.channel, to=_phone(), body="x", send_at=t, workspace_id="attacker"),
            f"enqueue_text send_at={when.isoformat()}")


def test_library_workspace_with_nul_regression(world: World, unchanged: None) -> None:
    from outbox.enqueue import enqueue_text

    w = world
    _record("enqueue_text", "workspace_id", "a\x00b")
    _library_case(w.engine, lambda s: enqueue_text(
        s, channel_id=w.channel, to=_phone(), body="x", workspace_id="a\x00b"),
        "enqueue_text workspace_id with NUL")


@pytest.mark.parametrize("target", ["create_channel.name", "create_channel.token",
                                    "create_channel.base_url", "create_api_key.workspace_id",
                                    "create_api_key.name", "enqueue_text.default_region"])
def test_library_wrong_types_regression(world: World, unchanged: None, target: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from outbox.admin.apikeys import create_api_key
    from outbox.admin.channels import create_channel
    from outbox.enqueue import enqueue_text

    w = world
    func, field = target.split(".")
    for value in (1, ["x"], {"a": "b"}):
        _record(func, field, value)
        if func == "create_channel":
            kwargs: dict[str, Any] = {"name": "n", "phone_number": "+15550009003",
                                      "token": "t" * 32, "encryption_key": TEST_KEY,
                                      "workspace_id": "attacker", field: value}
            call: Callable[[Session], Any] = lambda s, k=kwargs: create_channel(s, **k)  # noqa: E731
        elif func == "create_api_key":
            kwargs = {"workspace_id": "attacker", "name": None, field: value}
            call = lambda s, k=kwargs: create_api_key(s, **k)  # noqa: E731
        else:
            kwargs = {"channel_id": w.channel, "to": _phone(), "body": "x", field: value}
            call = lambda s, k=kwargs: enqueue_text(s, **k)  # noqa: E731
        _library_case(w.engine, call, f"{target}={value!r}")


# --- the figure ------------------------------------------------------------------------------


def test_zz_count_of_distinct_bad_inputs() -> None:
    """How many distinct (surface, field, value) bad inputs this module sent
    (run the whole module with -s to see it)."""
    if not TRIED:
        pytest.skip("run the whole module to count the inputs")
    values = {v for _, _, v in TRIED}
    surfaces = {s for s, _, _ in TRIED}
    print(f"\nhostile inputs tried: {len(TRIED)} distinct (surface, field, value) "
          f"combinations, {len(values)} distinct values, over {len(surfaces)} surfaces")
    assert len(TRIED) >= 2000
    assert len(values) >= 150
