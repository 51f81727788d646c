"""Status callbacks against a real receiver on loopback: every signature
verified with the Standard Webhooks library (not our code), filters and
workspaces, 5xx and timeouts retried with the same webhook-id, a receiver
or a sender that dies loses nothing, 410 and 3 days of failure disable the
endpoint, old deliveries dead-letter; the endpoints' API and CLI."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import standardwebhooks
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from outbox.admin.endpoints import add_endpoint
from outbox.enqueue import enqueue_text
from outbox.events.callbacks import CallbackSender, decide, sign
from outbox.states import DeliveryStatus
from tests.api_fixtures import auth, wait_for
from tests.dispatch_helpers import TEST_KEY, cli
from tests.sim_fixtures import WebhookReceiver, unused_port


@pytest.fixture
async def aengine(clean_db: Engine, database_url: str) -> AsyncIterator[AsyncEngine]:
    from outbox.database import make_async_engine
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE outbox.webhook_fanout SET last_event_id = 0"))
    e = make_async_engine(database_url, pool_size=2)
    yield e
    await e.dispose()


async def _pass(aengine: AsyncEngine, **kwargs: Any) -> Any:
    sender = CallbackSender(keys=[TEST_KEY], **kwargs)
    try:
        return await sender.run_once(aengine)
    finally:
        await sender.aclose()


def _endpoint(engine: Engine, url: str, types: Any = None, workspace: str = "default"
              ) -> tuple[uuid.UUID, str]:
    with Session(engine) as s, s.begin():
        new = add_endpoint(s, workspace_id=workspace, url=url, event_types=types,
                           encryption_key=TEST_KEY)
    return new.endpoint.id, new.secret


def _send(engine: Engine, channel: uuid.UUID, n: int = 1) -> list[uuid.UUID]:
    with Session(engine) as s, s.begin():
        return [enqueue_text(s, channel_id=channel, to=f"+1555010{i:04d}", body="x").message_id
                for i in range(n)]


def _deliveries(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT event_id, status, attempts, last_status_code, last_error "
            "FROM outbox.webhook_deliveries ORDER BY event_id")))


def _verified(secret: str, r: Any) -> Any:
    """The payload, if the Standard Webhooks library accepts the signature."""
    return standardwebhooks.Webhook(secret).verify(r.raw, {
        k: r.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")})


def test_sign_matches_the_published_algorithm() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the specification's example
    body = b'{"test": 2432232314}'
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")


def test_decide_outcomes() -> None:
    ok = decide(204, None, attempts=1, age_seconds=0)
    assert ok.status == DeliveryStatus.DELIVERED
    gone = decide(410, None, attempts=1, age_seconds=0)
    assert gone.status == DeliveryStatus.FAILED and "410" in (gone.error or "")
    retry = decide(503, None, attempts=2, age_seconds=60)
    assert retry.status == DeliveryStatus.PENDING and 5 <= retry.delay_seconds <= 15
    timeout = decide(None, "no answer within 10 s", attempts=1, age_seconds=0)
    assert timeout.status == DeliveryStatus.PENDING and timeout.error == "no answer within 10 s"
    late = decide(500, None, attempts=20, age_seconds=3 * 86400 - 10)
    assert late.status == DeliveryStatus.FAILED and "3 days" in (late.error or "")


async def test_signed_filtered_per_workspace(aengine: AsyncEngine, clean_db: Engine,
                                            make_channel, receiver: WebhookReceiver) -> None:
    channel = make_channel()
    other = make_channel(workspace_id="other", phone="+15550000009")
    _send(clean_db, channel)  # before the endpoint: history, not posted
    _, secret = _endpoint(clean_db, receiver.url + "/hooks",
                                 ["message.queued", "message.cancelled"])
    mids = _send(clean_db, channel, 3)
    _send(clean_db, other, 2)  # another workspace's
    from outbox.admin.channels import pause_channel

    with Session(clean_db) as s, s.begin():
        pause_channel(s, channel)  # a type the endpoint didn't ask for
    summary = await _pass(aengine)
    assert summary.delivered == 3 and summary.deliveries_created == 3
    got = receiver.wait_for(3)
    with clean_db.connect() as conn:
        events = {r.id: r for r in conn.execute(text(
            "SELECT id, type, message_id FROM outbox.events WHERE type = 'message.queued'"))}
    for r in got:
        payload = _verified(secret, r)
        assert r.path == "/hooks" and r.headers["content-type"] == "application/json"
        assert r.headers["webhook-id"] == f"evt_{payload['id']}"
        assert set(payload) == {"id", "type", "occurred_at", "channel_id", "chat_id",
                                "message_id", "payload"}
        assert events[payload["id"]].message_id == uuid.UUID(payload["message_id"])
    # Posted side by side: they arrive in any order; the event ids give theirs.
    by_id = sorted(got, key=lambda r: int(r.json["id"]))
    assert [uuid.UUID(r.json["message_id"]) for r in by_id] == mids
    assert {d.status for d in _deliveries(clean_db)} == {"delivered"}
    # A tampered body fails verification.
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(got[0].raw + b" ", {
            k: got[0].headers[k] for k in ("webhook-id", "webhook-timestamp",
                                           "webhook-signature")})
    # Nothing new: a pass posts nothing more.
    assert (await _pass(aengine)).delivered == 0 and len(receiver.requests) == 3


async def test_5xx_and_timeouts_are_retried_with_the_same_webhook_id(
        aengine: AsyncEngine, clean_db: Engine, make_channel, receiver: WebhookReceiver) -> None:
    channel = make_channel()
    _, secret = _endpoint(clean_db, receiver.url)
    _send(clean_db, channel)
    receiver.script = [500, 503]
    wait = 0.2  # between attempts: each pass finds one due

    async def attempt(**kwargs: Any) -> Any:
        await asyncio.sleep(wait)
        return await _pass(aengine, retry_delay_seconds=wait, **kwargs)

    for _ in range(2):
        assert (await attempt()).retried == 1
    (d,) = _deliveries(clean_db)
    assert (d.status, d.attempts, d.last_status_code) == ("pending", 2, 503)
    receiver.answer_delay_s = 1.0  # longer than the sender waits
    assert (await attempt(timeout_seconds=0.3)).retried == 1
    (d,) = _deliveries(clean_db)
    assert d.last_error == "no answer within 0.3 s" and d.last_status_code is None
    receiver.answer_delay_s = 0
    assert (await attempt()).delivered == 1
    got = receiver.wait_for(4)
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert all(_verified(secret, r) == got[0].json for r in got)
    (d,) = _deliveries(clean_db)
    assert (d.status, d.attempts, d.last_status_code) == ("delivered", 4, 200)


async def test_a_receiver_down_then_back_loses_nothing(aengine: AsyncEngine, clean_db: Engine,
                                                      make_channel) -> None:
    channel = make_channel()
    port = unused_port()
    _, secret = _endpoint(clean_db, f"http://127.0.0.1:{port}/in")
    _send(clean_db, channel, 5)
    summary = await _pass(aengine, retry_delay_seconds=60)
    assert summary.retried == 5
    with clean_db.begin() as conn:  # the retry is due
        conn.execute(text("UPDATE outbox.webhook_deliveries SET next_attempt_at = now()"))
    assert all(d.last_error.startswith("request failed: ClientConnector")
               for d in _deliveries(clean_db))
    back = WebhookReceiver(port=port)
    try:
        assert (await _pass(aengine)).delivered == 5
        assert len({r.headers["webhook-id"] for r in back.wait_for(5)}) == 5
        for r in back.requests:
            _verified(secret, r)
    finally:
        back.close()


# A receiver that takes requests and never answers: it prints each one's
# webhook-id as it arrives, so the test kills it with requests on the wire.
_HANGING_RECEIVER = """
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        sys.stdout.write(self.headers["webhook-id"] + "\\n")  # one write: threads interleave
        sys.stdout.flush()
        time.sleep(600)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("ready", flush=True)
server.serve_forever()
"""


async def test_a_receiver_killed_with_requests_on_the_wire_loses_nothing(
        aengine: AsyncEngine, clean_db: Engine, make_channel) -> None:
    import subprocess
    import sys

    channel = make_channel()
    port = unused_port()
    _, secret = _endpoint(clean_db, f"http://127.0.0.1:{port}/in")
    _send(clean_db, channel, 4)
    hanging = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HANGING_RECEIVER, str(port), stdout=subprocess.PIPE)
    assert hanging.stdout is not None
    try:
        assert (await asyncio.wait_for(hanging.stdout.readline(), 30)).strip() == b"ready"
        task = asyncio.create_task(_pass(aengine, retry_delay_seconds=60))
        on_the_wire = [(await asyncio.wait_for(hanging.stdout.readline(), 30)).decode()
                       for _ in range(4)]
        hanging.kill()  # SIGKILL: the kernel closes its sockets, nothing answers
        summary = await asyncio.wait_for(task, 30)
    finally:
        if hanging.returncode is None:
            hanging.kill()
        await hanging.wait()
    assert summary.retried == 4 and summary.delivered == 0
    assert all(d.status == "pending" and d.last_error.startswith("request failed")
               for d in _deliveries(clean_db))
    with clean_db.begin() as conn:  # the retry is due
        conn.execute(text("UPDATE outbox.webhook_deliveries SET next_attempt_at = now()"))
    back = WebhookReceiver(port=port)
    try:
        assert (await _pass(aengine)).delivered == 4
        got = back.wait_for(4)
        # The same four, with the ids they carried when the receiver died.
        assert sorted(r.headers["webhook-id"] for r in got) == sorted(
            line.strip() for line in on_the_wire)
        assert all(_verified(secret, r) for r in got)
    finally:
        back.close()
    assert {d.status for d in _deliveries(clean_db)} == {"delivered"}


async def test_a_sender_killed_mid_request_loses_nothing(
        aengine: AsyncEngine, clean_db: Engine, make_channel, receiver: WebhookReceiver) -> None:
    channel = make_channel()
    _endpoint(clean_db, receiver.url)
    _send(clean_db, channel, 2)
    receiver.answer_delay_s = 5
    task = asyncio.create_task(_pass(aengine))
    await asyncio.to_thread(receiver.wait_for, 2)
    task.cancel()  # the sender dies with both requests on the wire
    with pytest.raises(asyncio.CancelledError):
        await task
    assert {d.status for d in _deliveries(clean_db)} == {"delivering"}
    receiver.answer_delay_s = 0
    assert (await _pass(aengine)).delivered == 0  # its lease still holds them
    with clean_db.begin() as conn:  # the lease runs out
        conn.execute(text("UPDATE outbox.webhook_deliveries "
                          "SET locked_until = now() - interval '1 second'"))
    assert (await _pass(aengine)).delivered == 2
    got = receiver.wait_for(4)
    # The replays carry the ids of the first tries.
    assert sorted(r.headers["webhook-id"] for r in got[2:]) == sorted(
        r.headers["webhook-id"] for r in got[:2])


async def test_a_slow_endpoint_holds_only_its_own_slots(
        aengine: AsyncEngine, clean_db: Engine, make_channel, receiver: WebhookReceiver) -> None:
    """An endpoint that never answers takes at most its per-endpoint share of
    the slots; the healthy one's deliveries are posted and recorded while it
    hangs, events that commit meanwhile too."""
    import time

    channel = make_channel()
    slow = WebhookReceiver()
    slow.answer_delay_s = 30  # far longer than the sender waits
    try:
        slow_id, _ = _endpoint(clean_db, slow.url)
        healthy_id, _ = _endpoint(clean_db, receiver.url)
        _send(clean_db, channel, 20)
        started = time.monotonic()
        task = asyncio.create_task(_pass(aengine, concurrency=4, per_endpoint=2,
                                         timeout_seconds=4, run_seconds=10))
        try:
            got = await asyncio.to_thread(receiver.wait_for, 20, timeout=10)
            assert got[-1].at - started < 2.0  # not behind the slow one's 4 s timeouts
            _send(clean_db, channel, 3)  # during the pass: fanned out and posted by it
            await asyncio.to_thread(receiver.wait_for, 23, timeout=10)

            def recorded() -> dict[str, int]:
                with clean_db.connect() as conn:
                    return {str(s): int(n) for s, n in conn.execute(text(
                        "SELECT status, count(*) FROM outbox.webhook_deliveries "
                        "WHERE endpoint_id = :e GROUP BY status"), {"e": healthy_id})}

            await asyncio.to_thread(wait_for, lambda: recorded() == {"delivered": 23},
                                    timeout=5)
            assert time.monotonic() - started < 4.0  # all while the slow one hung
            assert len(slow.requests) == 2  # its share, never more
            assert not task.done()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with clean_db.connect() as conn:
            stuck = conn.execute(text(
                "SELECT status, count(*) FROM outbox.webhook_deliveries "
                "WHERE endpoint_id = :e GROUP BY status ORDER BY status"), {"e": slow_id}).all()
        # On the wire (2) and claimed next (2): twice its cap, never more.
        assert [tuple(r) for r in stuck] == [("delivering", 4), ("pending", 19)]
    finally:
        slow.close()


async def test_410_disables_the_endpoint_at_once(aengine: AsyncEngine, clean_db: Engine,
                                                 make_channel, receiver: WebhookReceiver,
                                                 api: httpx.Client, api_key) -> None:
    channel = make_channel()
    endpoint, _ = _endpoint(clean_db, receiver.url)
    _send(clean_db, channel)
    receiver.script = [410]
    summary = await _pass(aengine)
    assert summary.failed == 1 and summary.endpoints_disabled == 1
    (d,) = _deliveries(clean_db)
    assert d.status == "failed" and "410" in d.last_error
    _send(clean_db, channel)
    assert (await _pass(aengine)).deliveries_created == 0  # disabled: nothing more
    assert len(receiver.requests) == 1
    listed = await asyncio.to_thread(api.get, "/v1/webhook-endpoints",
                                     headers=auth(api_key("default", "admin")))
    (e,) = listed.json()["endpoints"]
    assert (e["id"], e["status"], e["disabled_reason"]) == (
        str(endpoint), "disabled", "the receiver answered 410 Gone")
    out = cli("status")
    assert f"webhook endpoint {endpoint} disabled (the receiver answered 410 Gone)" in out.stdout
    assert "status callbacks: failed 1" in out.stdout


async def test_enable_sends_what_waited_and_on_request_the_dead_letters(
        aengine: AsyncEngine, clean_db: Engine, make_channel, receiver: WebhookReceiver,
        api: httpx.Client, api_key) -> None:
    channel = make_channel()
    endpoint, secret = _endpoint(clean_db, receiver.url)
    _send(clean_db, channel, 2)
    receiver.default_status = 500
    assert (await _pass(aengine, retry_delay_seconds=60)).retried == 2
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE outbox.webhook_deliveries SET next_attempt_at = now()"))
    # Failing: one retry at a time. The first is a 410: the endpoint goes,
    # and the other waits, never tried.
    receiver.script = [410]
    summary = await _pass(aengine, retry_delay_seconds=60)
    assert (summary.failed, summary.retried, summary.endpoints_disabled) == (1, 0, 1)
    _send(clean_db, channel)  # while disabled: not queued for it
    assert (await _pass(aengine)).deliveries_created == 0
    admin = auth(api_key("default", "admin"))
    path = f"/v1/webhook-endpoints/{endpoint}/enable"

    other = auth(api_key("other", "admin"))
    assert (await asyncio.to_thread(api.post, path, headers=other)).status_code == 404
    bad = await asyncio.to_thread(api.post, path, headers=admin, json={"retry_failed": "yes"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "retry_failed"
    r = await asyncio.to_thread(api.post, path, headers=admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["disabled_reason"], body["failing_since"]) == (
        "active", None, None)
    assert (body["deliveries_resumed"], body["deliveries_waiting"],
            body["deliveries_failed"]) == (1, 1, 1)
    receiver.default_status = 200
    assert (await _pass(aengine)).delivered == 1  # due at once: no wait for its backoff
    assert {d.status for d in _deliveries(clean_db)} == {"delivered", "failed"}

    # The dead letter, on request (the CLI), with its first webhook-id.
    again = cli("endpoints", "enable", str(endpoint), "--retry-failed")
    assert again.returncode == 0, again.stderr
    assert "1 deliveries due now" in again.stdout
    assert (await _pass(aengine)).delivered == 1
    assert {d.status for d in _deliveries(clean_db)} == {"delivered"}
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert len(set(ids)) == 2  # the two events, each retried; never the one while disabled
    assert all(_verified(secret, r) for r in receiver.requests if r.headers)
    missing = cli("endpoints", "enable", str(uuid.uuid4()))
    assert missing.returncode != 0 and "does not exist" in missing.stderr


async def test_three_days_of_failure_dead_letters_and_disables(
        aengine: AsyncEngine, clean_db: Engine, make_channel, receiver: WebhookReceiver) -> None:
    channel = make_channel()
    endpoint, _ = _endpoint(clean_db, receiver.url)
    _send(clean_db, channel, 2)
    receiver.default_status = 500
    assert (await _pass(aengine, retry_delay_seconds=60)).retried == 2
    with clean_db.begin() as conn:  # back-dated: failing, and first queued, 3 days ago
        conn.execute(text("UPDATE outbox.webhook_endpoints "
                          "SET failing_since = now() - interval '3 days 1 minute'"))
        conn.execute(text("UPDATE outbox.webhook_deliveries "
                          "SET created_at = now() - interval '3 days', "
                          "next_attempt_at = now()"))
    # Failing: one at a time. The first gives up and disables the endpoint;
    # the other, never tried again, is the upkeep's to dead-letter.
    summary = await _pass(aengine, retry_delay_seconds=60)
    assert summary.failed == 1 and summary.endpoints_disabled == 1
    with clean_db.connect() as conn:
        status, reason = conn.execute(text(
            "SELECT status, disabled_reason FROM outbox.webhook_endpoints WHERE id = :i"),
            {"i": endpoint}).one()
    assert status == "disabled" and reason.startswith("failing since ")
    from outbox.maintenance.delivery_pruner import DeliveryPruner

    await DeliveryPruner(older_than_seconds=7 * 86400).run_once(aengine)
    assert sorted((d.status, d.last_error.split(":")[0]) for d in _deliveries(clean_db)) == [
        ("failed", "not sent"), ("failed", "the receiver answered 500; gave up after 2 attempts "
                                           "over 3 days")]


def test_endpoints_api(api: httpx.Client, api_db: Engine, api_key, make_channel) -> None:
    admin = auth(api_key("default", "admin"))
    r = api.post("/v1/webhook-endpoints", headers=admin,
                 json={"url": "https://hooks.example.com/outbox",
                       "event_types": ["message.read", "message.failed"]})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["secret"].startswith("whsec_") and created["status"] == "active"
    assert created["event_types"] == ["message.failed", "message.read"]
    listed = api.get("/v1/webhook-endpoints", headers=admin).json()["endpoints"]
    assert [e["id"] for e in listed] == [created["id"]] and "secret" not in listed[0]
    with api_db.connect() as conn:  # stored encrypted
        stored = conn.execute(text("SELECT encrypted_secret FROM outbox.webhook_endpoints"))
        assert created["secret"] not in stored.scalar_one()
    r = api.get(f"/v1/webhook-endpoints/{created['id']}/deliveries", headers=admin)
    assert r.status_code == 200 and r.json() == {"deliveries": []}

    for body, field in [({"url": "http://hooks.example.com/"}, "url"),
                        ({"url": "ftp://127.0.0.1/"}, "url"),
                        ({"url": "https://u:p@hooks.example.com/"}, "url"),
                        ({"url": "https://x.example.com", "event_types": ["nope"]},
                         "event_types"),
                        ({"url": "https://x.example.com", "extra": 1}, "extra")]:
        r = api.post("/v1/webhook-endpoints", headers=admin, json=body)
        assert r.status_code == 422 and r.json()["error"]["field"] == field, (body, r.text)
    assert api.post("/v1/webhook-endpoints", headers=admin,
                    json={"url": "http://localhost:9000/dev"}).status_code == 201
    reader = auth(api_key("default", "read"))
    assert api.get("/v1/webhook-endpoints", headers=reader).status_code == 403
    other = auth(api_key("other", "admin"))
    assert api.get(f"/v1/webhook-endpoints/{created['id']}/deliveries",
                   headers=other).status_code == 404
    assert api.delete(f"/v1/webhook-endpoints/{created['id']}", headers=other).status_code == 404
    assert api.delete(f"/v1/webhook-endpoints/{created['id']}", headers=admin).status_code == 204
    r = api.delete(f"/v1/webhook-endpoints/{created['id']}", headers=admin)
    assert r.status_code == 404 and r.json()["error"]["code"] == "endpoint_not_found"
    r = api.post(f"/v1/webhook-endpoints/{created['id']}/enable", headers=admin)
    assert r.status_code == 404 and r.json()["error"]["code"] == "endpoint_not_found"

    # Typed answers in the OpenAPI document (generated clients get them).
    spec = api.get("/openapi.json").json()
    paths, schemas = spec["paths"], spec["components"]["schemas"]

    def answer(path: str, method: str, status: str) -> Any:
        return paths[path][method]["responses"][status]["content"]["application/json"][
            "schema"]["$ref"].rsplit("/", 1)[-1]

    assert answer("/v1/webhook-endpoints", "post", "201") == "CreatedWebhookEndpoint"
    assert answer("/v1/webhook-endpoints", "get", "200") == "WebhookEndpointList"
    assert answer("/v1/webhook-endpoints/{endpoint_id}/enable", "post",
                  "200") == "EnabledWebhookEndpoint"
    assert answer("/v1/webhook-endpoints/{endpoint_id}/deliveries", "get",
                  "200") == "WebhookDeliveryList"
    assert "secret" not in schemas["WebhookEndpoint"]["properties"]
    assert schemas["WebhookDelivery"]["properties"]["status"]["$ref"] == (
        "#/components/schemas/DeliveryStatus")


def test_endpoints_cli(clean_db: Engine) -> None:
    added = cli("endpoints", "add", "https://hooks.example.com/x", "--types",
                "message.read,message.failed")
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip()
    assert secret.startswith("whsec_") and "shown once" in added.stderr
    listed = cli("endpoints", "list")
    assert "https://hooks.example.com/x" in listed.stdout and secret not in listed.stdout
    with clean_db.connect() as conn:
        endpoint = conn.execute(text("SELECT id FROM outbox.webhook_endpoints")).scalar_one()
    bad = cli("endpoints", "add", "http://hooks.example.com/x")
    assert bad.returncode == 2 and "https" in bad.stderr
    assert cli("endpoints", "remove", str(endpoint)).returncode == 0
    gone = cli("endpoints", "remove", str(endpoint))
    assert gone.returncode != 0 and "does not exist" in gone.stderr


@pytest.mark.slow
def test_outbox_run_posts_the_outcomes(clean_db: Engine, make_channel, sim, sim_url: str,
                                       receiver: WebhookReceiver) -> None:
    """The daemon sends the messages and, beside it, posts their outcomes."""
    import os
    import signal
    import subprocess
    import sys

    from tests.api_fixtures import wait_for
    from tests.dispatch_helpers import REPO

    channel = make_channel(base_url=sim_url)
    _, secret = _endpoint(clean_db, receiver.url, ["message.sent", "message.failed"])
    mids = _send(clean_db, channel, 3)
    daemon = subprocess.Popen([sys.executable, "-m", "outbox", "run"], cwd=REPO, text=True,
                              env=dict(os.environ), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        got = receiver.wait_for(3, timeout=60)
        # Before the SIGTERM: the receiver holds the requests a moment before
        # the daemon has read the answers and recorded them.
        wait_for(lambda: {d.status for d in _deliveries(clean_db)} == {"delivered"},
                 timeout=60)
    finally:
        daemon.send_signal(signal.SIGTERM)
        out, _ = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, out
    assert sorted(_verified(secret, r)["message_id"] for r in got) == sorted(map(str, mids))
    assert {r.json["type"] for r in got} == {"message.sent"}


def test_a_cron_pass_posts_the_outcomes_too(clean_db: Engine, make_channel, sim,
                                            sim_url: str, receiver: WebhookReceiver) -> None:
    """Without `outbox run`, `dispatch --once` sends and then posts."""
    channel = make_channel(base_url=sim_url)
    _, secret = _endpoint(clean_db, receiver.url, ["message.sent"])
    mids = _send(clean_db, channel, 2)
    result = cli("dispatch", "--once", "--no-progress")
    assert result.returncode == 0, result.stderr
    got = receiver.wait_for(2, timeout=5)
    assert sorted(_verified(secret, r)["message_id"] for r in got) == sorted(map(str, mids))
    assert {d.status for d in _deliveries(clean_db)} == {"delivered"}


async def test_a_stopping_sender_hands_back_what_it_never_posted(
        aengine: AsyncEngine, clean_db: Engine, make_channel) -> None:
    """Stopping: no more claims or posts; what was claimed and not yet
    posted is pending again at once (its attempt not counted), answers that
    come within the grace are recorded, and what still hangs after it waits
    out its lease."""
    from outbox.events.callbacks import STOP_GRACE_SECONDS

    channel = make_channel()
    slow, prompt = WebhookReceiver(), WebhookReceiver()
    slow.answer_delay_s = 60  # past the grace
    prompt.answer_delay_s = 2  # within it
    try:
        slow_id, _ = _endpoint(clean_db, slow.url)
        prompt_id, _ = _endpoint(clean_db, prompt.url)
        _send(clean_db, channel, 6)
        sender = CallbackSender(keys=[TEST_KEY], concurrency=4, per_endpoint=2,
                                timeout_seconds=90, run_seconds=60)
        task = asyncio.create_task(sender.run_once(aengine))
        try:
            await asyncio.to_thread(wait_for, lambda: len(slow.requests) == 2
                                    and len(prompt.requests) == 2, timeout=10)
            sender.request_stop()
            async with asyncio.timeout(STOP_GRACE_SECONDS + 10):
                summary = await task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await sender.aclose()
        assert summary.delivered == 2

        def rows(endpoint: uuid.UUID) -> list[tuple[str, int, int]]:
            with clean_db.connect() as conn:
                return [tuple(r) for r in conn.execute(text(
                    "SELECT status, attempts, count(*) FROM outbox.webhook_deliveries "
                    "WHERE endpoint_id = :e GROUP BY status, attempts ORDER BY status"),
                    {"e": endpoint})]

        # Two answered in the grace; two claimed behind them, handed back.
        assert rows(prompt_id) == [("delivered", 1, 2), ("pending", 0, 4)]
        # Two on the wire when the grace ran out: posted again after the lease.
        assert rows(slow_id) == [("delivering", 1, 2), ("pending", 0, 4)]
        assert len(prompt.requests) == 2 and len(slow.requests) == 2  # nothing new posted
    finally:
        slow.close()
        prompt.close()


def test_outbox_run_stopping_hands_back_the_callbacks_it_never_posted(
        clean_db: Engine, make_channel) -> None:
    """SIGTERM while an endpoint hangs: the daemon stops within the grace,
    and only the rows on the wire wait out their lease; the ones it had
    claimed behind them are due again at once, for the next process."""
    import os
    import signal
    import subprocess
    import sys

    from tests.dispatch_helpers import REPO

    channel = make_channel(status="paused")  # the callbacks are the daemon's only work
    slow = WebhookReceiver()
    slow.answer_delay_s = 60
    try:
        _endpoint(clean_db, slow.url, ["message.queued"])
        _send(clean_db, channel, 8)
        env = dict(os.environ, OUTBOX_CALLBACK_ENDPOINT_CONCURRENCY="2")
        daemon = subprocess.Popen([sys.executable, "-m", "outbox", "run"], cwd=REPO, text=True,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: len(slow.requests) == 2, timeout=60)
            wait_for(lambda: sum(n for s, _, n in _counts(clean_db) if s == "delivering") == 4,
                     timeout=10)  # two on the wire, two claimed behind them
            with clean_db.connect() as conn:  # its own: not behind the maintenance passes
                assert conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = 'outbox-callbacks'")).scalar_one() == 1
        finally:
            daemon.send_signal(signal.SIGTERM)
            out, _ = daemon.communicate(timeout=60)
        assert daemon.returncode == 0, out
        assert _counts(clean_db) == [("delivering", 1, 2), ("pending", 0, 6)], out
        assert len(slow.requests) == 2
    finally:
        slow.close()


def _counts(engine: Engine) -> list[tuple[str, int, int]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT status, attempts, count(*) FROM outbox.webhook_deliveries "
            "GROUP BY status, attempts ORDER BY status"))]


def test_senders_claiming_side_by_side_never_take_a_delivery_twice(
        clean_db: Engine, database_url: str) -> None:
    """Four senders claim at once until nothing is due. A claim's snapshot
    can predate another's commit: the row it then locks must be checked
    again as committed (claimed meanwhile: not due), or both post it."""
    import threading

    import psycopg

    from outbox.db.callback_queries import CLAIM_DELIVERIES
    from outbox.db.conninfo import libpq_url
    from outbox.db.driver_sql import driver_sql

    endpoints = [_endpoint(clean_db, f"https://receiver-{i}.example/hook")[0] for i in range(3)]
    with clean_db.begin() as conn:
        conn.execute(text(
            "INSERT INTO outbox.webhook_deliveries (endpoint_id, event_id, event_type, body) "
            "SELECT e, n, 'message.sent', '{}' FROM unnest(CAST(:e AS uuid[])) AS e, "
            "generate_series(1, 1500) AS n"), {"e": endpoints})
    claim = driver_sql(CLAIM_DELIVERIES)
    taken: list[int] = []
    failures: list[BaseException] = []

    def sender() -> None:
        try:
            with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
                while True:
                    rows = conn.execute(claim, {
                        "per_endpoint": 20, "batch_size": 40, "busy_endpoints": [],
                        "busy_counts": [], "claim_token": uuid.uuid4(),
                        "lease_seconds": 120.0}).fetchall()
                    if not rows:
                        return
                    taken.extend(int(r[0]) for r in rows)
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures
    assert len(taken) == len(set(taken)) == 4500
    assert _counts(clean_db) == [("delivering", 1, 4500)]


async def test_an_endpoint_whose_secret_no_key_reads_fails_alone(
        aengine: AsyncEngine, clean_db: Engine, make_channel, receiver: WebhookReceiver) -> None:
    """Its deliveries fail their attempt with the reason and back off; the
    other endpoints' go out in the same pass (it raised and took them down)."""
    from structlog.testing import capture_logs

    from outbox import crypto
    from outbox.events.callbacks import NO_SIGNING_KEY

    channel = make_channel()
    healthy_id, _ = _endpoint(clean_db, receiver.url)
    with Session(clean_db) as s, s.begin():  # written under a key this process doesn't have
        lost = add_endpoint(s, workspace_id="default", url="https://lost.example/hook",
                            event_types=None, encryption_key=crypto.generate_key()).endpoint.id
    with Session(clean_db) as s, s.begin():  # and one whose secret is not even a ciphertext
        mangled = add_endpoint(s, workspace_id="default", url="https://mangled.example/hook",
                               event_types=None, encryption_key=TEST_KEY).endpoint.id
        s.execute(text("UPDATE outbox.webhook_endpoints SET encrypted_secret = 'v2:zz' "
                       "WHERE id = :e"), {"e": mangled})
    _send(clean_db, channel, 3)
    with capture_logs() as logs:
        summary = await _pass(aengine, retry_delay_seconds=60)
        await _pass(aengine)  # nothing due yet: it backs off
    assert summary.delivered == 3 and summary.retried == 6
    receiver.wait_for(3, timeout=5)
    with clean_db.connect() as conn:
        rows = conn.execute(text(
            "SELECT endpoint_id, status, attempts, last_error FROM outbox.webhook_deliveries "
            "ORDER BY endpoint_id, event_id")).all()
    assert {(r.endpoint_id, r.status, r.attempts) for r in rows} == {
        (healthy_id, "delivered", 1), (lost, "pending", 1), (mangled, "pending", 1)}
    assert {r.last_error for r in rows if r.endpoint_id != healthy_id} == {NO_SIGNING_KEY}
    said = [e for e in logs if e["event"] == "callback_secret_unreadable"]
    assert sorted(e["endpoint_id"] for e in said) == sorted([str(lost), str(mangled)])


async def test_a_backlog_of_events_is_fanned_out_in_turn_with_sending(
        aengine: AsyncEngine, clean_db: Engine, make_channel, receiver: WebhookReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fan-out takes a slice of the pass (here one batch of 50): what it
    made goes out, and the rest of the backlog is fanned out by the next
    passes, not all of it before anything is sent."""
    from outbox.events import callbacks

    monkeypatch.setattr(callbacks, "FAN_OUT_LIMIT", 50)
    monkeypatch.setattr(callbacks, "FAN_OUT_SECONDS", 0.0)
    monkeypatch.setattr(callbacks, "REFILL_SECONDS", 60.0)  # no fan-out while it sends
    channel = make_channel()
    _endpoint(clean_db, receiver.url)
    _send(clean_db, channel, 120)
    first = await _pass(aengine)
    assert (first.deliveries_created, first.delivered) == (50, 50)
    while len(_deliveries(clean_db)) < 120 or (await _pass(aengine)).delivered:
        await _pass(aengine)
    assert {d.status for d in _deliveries(clean_db)} == {"delivered"}
    assert len(receiver.wait_for(120)) == 120


async def test_an_outcome_another_sender_took_over_is_not_counted(
        aengine: AsyncEngine, clean_db: Engine, make_channel) -> None:
    """The row was claimed again elsewhere while the answer was on its way
    (its lease ran out): the other sender records and counts it; this one
    changes nothing and counts nothing."""
    channel = make_channel()
    slow = WebhookReceiver()
    slow.answer_delay_s = 1.0
    try:
        _endpoint(clean_db, slow.url)
        _send(clean_db, channel)
        task = asyncio.create_task(_pass(aengine))
        await asyncio.to_thread(slow.wait_for, 1, timeout=10)
        with clean_db.begin() as conn:  # as a claim after the lease would leave it
            conn.execute(text("UPDATE outbox.webhook_deliveries "
                              "SET claim_token = gen_random_uuid()"))
        summary = await task
    finally:
        slow.close()
    assert (summary.delivered, summary.retried, summary.failed) == (0, 0, 0)
    assert [d.status for d in _deliveries(clean_db)] == ["delivering"]


async def test_a_failing_endpoint_gets_one_delivery_at_a_time(
        aengine: AsyncEngine, clean_db: Engine, make_channel, receiver: WebhookReceiver) -> None:
    """Its last answer was not a 2xx: one request at a time until one goes
    through (a few endpoints that are down would hold every slot of the
    process otherwise); the healthy one is untouched."""
    channel = make_channel()
    down = WebhookReceiver()
    down.answer_delay_s = 30  # past the pass
    try:
        down_id, _ = _endpoint(clean_db, down.url)
        _endpoint(clean_db, receiver.url)
        with clean_db.begin() as conn:
            conn.execute(text("UPDATE outbox.webhook_endpoints SET failing_since = now() "
                              "WHERE id = :e"), {"e": down_id})
        _send(clean_db, channel, 6)
        task = asyncio.create_task(_pass(aengine, concurrency=8, per_endpoint=4,
                                         timeout_seconds=60, run_seconds=3))
        try:
            await asyncio.to_thread(receiver.wait_for, 6, timeout=10)
            await asyncio.sleep(1.5)  # a refill and its claim: still one
            assert len(down.requests) == 1
            with clean_db.connect() as conn:
                held = conn.execute(text(
                    "SELECT count(*) FROM outbox.webhook_deliveries "
                    "WHERE endpoint_id = :e AND status = 'delivering'"),
                    {"e": down_id}).scalar_one()
            assert held == 1  # nor claimed behind it
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        down.close()
