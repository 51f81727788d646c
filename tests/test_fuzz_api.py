"""Fuzz the HTTP API with schemathesis against its own /openapi.json: no 500s.

Every operation the description lists is generated in schemathesis' positive
mode (data that fits the schema) and negative mode (data that doesn't), a
bounded number of examples each, and sent over a real socket with valid
credentials (an API key; the cron secret for the cron route; the channel's
webhook secret for the webhook route), so the requests get past
authentication to the code behind it. Half of the cases also swap in real
ids (a channel of the caller's, a message, chat, contact, user and API key
of its own, a valid recipient, in paths and in batch bodies), so the fuzzed
values reach the database statements, not only the validators.
The webhook route has no body schema (Whapi's payloads are open-ended): its
bodies come from a JSON strategy shaped like Whapi's events.

Every response is checked against the description: no 500
(`not_a_server_error`), a status the operation declares
(`status_code_conformance`), its declared content type, and a body that
fits its declared schema (`response_schema_conformance`: the answers and the
ErrorBody of every error). The summary (operations, examples, failures) is
printed; run with -s to see it.

Not fuzzed here (tests/test_security_inputs.py has regression tests for
them): JSON NaN/Infinity in webhook bodies, and lone surrogates
(hypothesis' text strategies don't generate them anyway).
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from tests.api_fixtures import COUNTED, CRON_SECRET
from tests.conftest import TEST_KEY
from tests.dispatch_helpers import webhook_secrets

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.slow  # schemathesis

#: Examples per operation and generation mode. OUTBOX_FUZZ_EXAMPLES raises it
#: for a longer run.
EXAMPLES = int(os.environ.get("OUTBOX_FUZZ_EXAMPLES", "40"))
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@dataclass
class Target:
    url: str
    key: str
    channel: uuid.UUID
    secret: str
    message: uuid.UUID
    spare: uuid.UUID  # what the channel admin routes get: resuming it sends nothing
    chat: uuid.UUID
    contact: uuid.UUID
    user: uuid.UUID  # disabling it ends no session the fuzzer needs
    spare_key: uuid.UUID  # what DELETE /v1/api-keys/{id} revokes: not the fuzzer's key
    examples: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def target(engine: Engine, live_url: str) -> Iterator[Target]:
    """A workspace with a key (every scope), a channel and a message. The
    channel is paused indefinitely: what the fuzzer enqueues is stored but
    never sent, and the cron route has nothing to dispatch. The channel admin
    routes get a spare channel with nothing queued, so resuming it sends
    nothing either."""
    from outbox.admin.apikeys import create_api_key
    from outbox.admin.channels import create_channel
    from outbox.admin.users import create_user
    from outbox.enqueue import enqueue_text

    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join('outbox.' + t for t in COUNTED)} "
                          "RESTART IDENTITY CASCADE"))
    with Session(engine) as s, s.begin():
        channel = create_channel(s, name="fuzz", phone_number="+15550008001",
                                 token=secrets.token_hex(16), encryption_key=TEST_KEY,
                                 workspace_id="fuzz", base_url="http://127.0.0.1:9").id
        s.execute(text("UPDATE outbox.channels SET status = 'paused', pause_reason = 'fuzzing' "
                       "WHERE id = :id"), {"id": channel})
        spare = create_channel(s, name="spare", phone_number="+15550008002",
                               token=secrets.token_hex(16), encryption_key=TEST_KEY,
                               workspace_id="fuzz", base_url="http://127.0.0.1:9").id
        key = create_api_key(s, workspace_id="fuzz", scopes="admin").key
        spare_key = create_api_key(s, workspace_id="fuzz", name="spare").id
        user = create_user(s, workspace_id="fuzz", email="agent@example.com", role="agent",
                           password="correct horse battery").id
        seeded = enqueue_text(s, channel_id=channel, to="+15550100001", body="seed",
                              workspace_id="fuzz")
    secret = webhook_secrets(engine)[channel]
    with engine.connect() as conn:
        contact = conn.execute(text("SELECT contact_id FROM outbox.chats WHERE id = :id"),
                               {"id": seeded.chat_id}).scalar_one()
    yield Target(live_url, key, channel, secret, seeded.message_id, spare, seeded.chat_id,
                 contact, user, spare_key)


# Whapi-shaped webhook bodies, and arbitrary JSON (finite numbers only).
_scalars = (st.none() | st.booleans() | st.integers() | st.text(max_size=50)
            | st.floats(allow_nan=False, allow_infinity=False))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
_chat_ids = st.sampled_from(["15550100009@s.whatsapp.net", "120363025343298765@g.us",
                             "status@broadcast", "+15550100001", ""]) | st.text(max_size=40)
_inbound = st.fixed_dictionaries(
    {"id": st.text(max_size=30) | _json, "from_me": st.sampled_from([False, True, None, "no"]),
     "chat_id": _chat_ids},
    optional={"type": st.sampled_from(["text", "image", "video", "x"]) | st.text(max_size=10),
              "text": st.fixed_dictionaries({"body": st.text(max_size=200) | _json}),
              "image": st.fixed_dictionaries({"caption": st.text(max_size=50)}),
              "timestamp": st.integers() | st.text(max_size=12) | _json,
              "from_name": st.text(max_size=40) | _json, "chat_name": st.text(max_size=40),
              "extra": _json})
_status = st.fixed_dictionaries(
    {"id": st.text(max_size=30) | _json,
     "status": st.sampled_from(["sent", "delivered", "read", "played", "deleted", "failed",
                                "pending", "x"]) | _json},
    optional={"timestamp": st.integers() | st.text(max_size=12) | _json,
              "recipient_id": st.text(max_size=30)})
_event = st.fixed_dictionaries({}, optional={
    "messages": st.lists(_inbound, max_size=3) | _json,
    "statuses": st.lists(_status, max_size=3) | _json,
    "event": _json, "channel_id": st.text(max_size=20)})
WEBHOOK_BODIES = _event | st.lists(_event, max_size=3) | _json


def _operations(url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    ops = [result.ok() for result in schema.get_all_operations()]
    assert len(ops) >= 8, [op.label for op in ops]
    # The event stream never ends by design (a heartbeat every 15 s): a fuzzed
    # call would wait forever. Its parameters are the polling route's, fuzzed
    # there; tests/test_events_api.py sends it bad input.
    return [op for op in ops if op.path != "/v1/events/stream"]


def _fuzz_operation(t: Target, operation: Any, mode: Any) -> None:
    label = operation.label
    is_webhook = operation.path.startswith("/webhooks/")
    is_cron = operation.path.startswith("/v1/cron/")

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate],  # no shrinking: collect, don't minimise
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode), level=st.sampled_from([0, 1, 2]),
           body=WEBHOOK_BODIES)
    def run(case: Any, level: int, body: Any) -> None:
        # level 0: as generated; 1: real ids; 2: real ids and a coherent
        # message (text only, priority in range), so fuzzed text, keys and
        # times get stored, not just refused.
        real = level > 0
        headers = {"Authorization": f"Bearer {CRON_SECRET if is_cron else t.key}"}
        if real:
            if "channel_id" in (case.path_parameters or {}):
                case.path_parameters["channel_id"] = str(
                    t.spare if operation.path.startswith("/v1/channels/") else t.channel)
            if "message_id" in (case.path_parameters or {}):
                case.path_parameters["message_id"] = str(t.message)
            if "chat_id" in (case.path_parameters or {}):
                case.path_parameters["chat_id"] = str(t.chat)
            if "contact_id" in (case.path_parameters or {}):
                case.path_parameters["contact_id"] = str(t.contact)
            if "user_id" in (case.path_parameters or {}):
                case.path_parameters["user_id"] = str(t.user)
            if "key_id" in (case.path_parameters or {}):
                case.path_parameters["key_id"] = str(t.spare_key)
            if isinstance(case.body, dict) and operation.path == "/v1/messages/batch" \
                    and isinstance(case.body.get("messages"), list):
                for item in case.body["messages"]:
                    if isinstance(item, dict):
                        item["channel_id"] = str(t.channel)
                        item["to"] = "+15550100001"
            if isinstance(case.body, dict) and operation.path == "/v1/messages":
                case.body["channel_id"] = str(t.channel)
                case.body["to"] = "+15550100001"
                if level == 2 and mode == schemathesis.GenerationMode.POSITIVE:
                    for name in ("media_type", "media", "caption", "filename", "mime_type"):
                        case.body.pop(name, None)
                    if not isinstance(case.body.get("text"), str) or not case.body[
                            "text"].strip():
                        case.body["text"] = "fuzz"
                    case.body["text"] = case.body["text"][:4096]
                    if isinstance(case.body.get("priority"), int):
                        case.body["priority"] %= 1001
                    if not (case.body.get("idempotency_key") or "x").strip():
                        case.body.pop("idempotency_key")
            if isinstance(case.query, dict) and "channel_id" in case.query:
                case.query["channel_id"] = str(t.channel)
            if isinstance(case.query, dict) and "chat_id" in case.query:
                case.query["chat_id"] = str(t.chat)
        if is_webhook:
            if real or mode == schemathesis.GenerationMode.POSITIVE:
                headers["X-Outbox-Webhook-Secret"] = t.secret
            kwargs: dict[str, Any] = {"json": body}
        else:
            kwargs = {}
        try:
            response = case.call(base_url=t.url, headers=headers, timeout=60, **kwargs)
        except Exception as exc:  # a dropped connection is a failure too
            t.failures.append(f"{label} [{mode}]: {type(exc).__name__}: {exc}"[:500])
            return
        t.examples[f"{label} [{mode}]"] += 1
        t.statuses[str(response.status_code)] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except BaseException as exc:  # schemathesis raises a FailureGroup
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            found = "; ".join(str(e).strip().splitlines()[0]
                              for e in getattr(exc, "exceptions", [exc]))
            t.failures.append(f"{label} [{mode}]: {response.status_code} {found[:300]} "
                              f"{response.text[:200]!r}\n{case.as_curl_command()}"[:1500])
            time.sleep(0.1)  # let the in-process server finish logging a 500

    try:
        run()
    except Unsatisfiable:
        # Negative mode for an operation with nothing to get wrong (no
        # parameters, no body): there is no invalid request to make.
        assert mode == schemathesis.GenerationMode.NEGATIVE, label
        t.skipped.append(f"{label} [{mode}]")


def test_schemathesis_answers_as_described(target: Target) -> None:
    t = target
    operations = _operations(t.url)
    started = time.monotonic()
    for operation in operations:
        for mode in MODES:
            _fuzz_operation(t, operation, mode)
    elapsed = time.monotonic() - started
    per_op = Counter[str]()
    for name, n in t.examples.items():
        per_op[name.split(" [")[0]] += n
    lines = [f"schemathesis {schemathesis.__version__}: {len(operations)} operations, "
             f"{sum(t.examples.values())} examples ({EXAMPLES} per operation and mode, "
             f"positive + negative), {len(t.failures)} failures, {elapsed:.1f}s",
             f"  no negative cases possible for: {', '.join(t.skipped) or '-'}",
             "  by operation: " + ", ".join(f"{k} {v}" for k, v in sorted(per_op.items())),
             "  response statuses: " + ", ".join(f"{k}: {v}" for k, v in
                                                  sorted(t.statuses.items()))]
    print("\n" + "\n".join(lines))
    assert not t.failures, "\n\n".join(t.failures[:10])
    # The run reached past authentication and validation somewhere.
    assert t.statuses["201"] and t.statuses["200"]
    assert set(per_op) == {op.label for op in operations}
