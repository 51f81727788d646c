"""A real account's traffic end to end, in each of Whapi's webhook modes:
the simulator (strict about tokens, like Whapi) configured with what
`outbox channel webhook-info` prints, posting to `outbox serve`'s app over
loopback; the dispatcher sending through the real client. Asserts on what
the simulator received and what the database holds."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.providers.simulator.control import SimulatorControl, SimulatorHandle
from outbox.webhooks.apply import SECRET_HEADER, SUBSCRIBED_EVENTS, whapi_webhook_settings
from tests.api_fixtures import wait_for, webhook_secret
from tests.dispatch_helpers import run_dispatcher, store_webhook_secret
from tests.sim_fixtures import new_token
from tests.whapi_spec import WEBHOOK_SCHEMA, assert_valid

pytestmark = pytest.mark.slow  # whole conversations with a second simulator

CUSTOMER = "+52 55 1234 5678"  # Whapi routes it as 5215512345678


def _query(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params))


@pytest.mark.parametrize("mode", ["body", "path", "method"])
def test_a_conversation_in_each_webhook_mode(
        mode: str, strict_sim: SimulatorHandle, strict_ctl: SimulatorControl, live_url: str,
        make_channel, api_db: Engine, database_url: str) -> None:
    from outbox.enqueue import enqueue_text

    token = new_token()
    ctl = strict_ctl
    ch: uuid.UUID = make_channel(base_url=strict_sim.url, token=token)
    # Before the token is registered the simulator answers 401, like Whapi:
    # the channel pauses for its session and the row keeps its attempt.
    with Session(api_db) as s, s.begin():
        enqueue_text(s, channel_id=ch, to=CUSTOMER, body="Your order #1042 has shipped")
    assert asyncio.run(run_dispatcher(database_url)).sent == 0
    assert _query(api_db, "SELECT status, pause_cause FROM outbox.channels")[0] == (
        "paused", "unauthorized")

    # Configure the simulator exactly as webhook-info says to configure Whapi.
    ctl.register_channel(token, phone="+14155550123")
    settings = whapi_webhook_settings(f"{live_url}/webhooks/whapi/{ch}",
                                      webhook_secret(api_db, ch), mode=mode)
    (hook,) = settings["webhooks"]
    ctl.set_webhooks(hook["url"], token=token, mode=mode, headers=hook["headers"],
                     events=[(e["type"], e["method"]) for e in hook["events"]],
                     callback_backoff_delay_ms=50,
                     delays_ms={"sent": 0, "delivered": 100, "read": 200},
                     statuses_method="put", echo="before")

    # Whapi reports the session authorised: the channel resumes by itself.
    assert ctl.channel_health(token, "AUTH", wait=True).delivered
    assert _query(api_db, "SELECT status, pause_cause FROM outbox.channels")[0] == ("active", None)

    summary = asyncio.run(run_dispatcher(database_url))
    assert summary.sent == 1
    (record,) = ctl.sent(token=token)
    assert record.to == "5215512345678@s.whatsapp.net"  # Whapi's routing for +52
    ours = record.id

    # The echo (sent before the HTTP answer) and the statuses (as put) come
    # back; the message ends read, stored once.
    wait_for(lambda: _query(api_db, "SELECT status FROM outbox.messages WHERE wa_message_id = :w",
                            w=ours) == [("read",)])

    # The customer answers from Whapi's 521 form: the same chat and contact.
    reply = ctl.inbound(token, phone=CUSTOMER, text="¿Cuándo llega?", wait=True)
    assert reply.delivered
    chats = _query(api_db, "SELECT id, wa_chat_id, unread_count FROM outbox.chats")
    assert [(c.wa_chat_id, c.unread_count) for c in chats] == [
        ("5215512345678@s.whatsapp.net", 1)]
    assert _query(api_db, "SELECT count(*) FROM outbox.contacts") == [(1,)]

    # They react to our message, edit and then delete their reply.
    assert ctl.action(token, ours, "reaction", emoji="👍", phone=CUSTOMER, wait=True).delivered
    assert ctl.message_update(token, reply.message_id, text="¿Cuándo llega mi pedido?",
                              wait=True).delivered
    assert ctl.messages_removed(token, [reply.message_id], wait=True).delivered
    (mine,) = _query(api_db, "SELECT reactions FROM outbox.messages WHERE wa_message_id = :w",
                     w=ours)
    assert [r["emoji"] for r in mine.reactions.values()] == ["👍"]
    (theirs,) = _query(api_db, "SELECT body, edit_history, deleted_at FROM outbox.messages "
                               "WHERE wa_message_id = :w", w=reply.message_id)
    assert theirs.body == "¿Cuándo llega mi pedido?" and theirs.deleted_at is not None
    assert [h["body"] for h in theirs.edit_history] == ["¿Cuándo llega?"]
    assert _query(api_db, "SELECT count(*), sum(CASE WHEN direction = 'inbound' THEN 1 END) "
                          "FROM outbox.messages") == [(2, 1)]
    assert _query(api_db, "SELECT unread_count FROM outbox.chats") == [(1,)]

    # The phone logs out: the channel pauses; logging in resumes it.
    assert ctl.logout(token, wait=True).delivered
    assert _query(api_db, "SELECT pause_cause FROM outbox.channels") == [("session",)]
    assert ctl.login(token, wait=True).delivered
    assert _query(api_db, "SELECT status FROM outbox.channels") == [("active",)]

    # Every webhook went to the mode's URL with the mode's HTTP method, got
    # its 200 at the first attempt, and its body is Whapi's as the spec has it.
    log = ctl.webhook_log(token=token)
    assert log and all(a.status == 200 and a.attempt == 1 for a in log), log
    for a in log:
        suffix = {"body": "", "path": f"/{a.event_type}/{a.event_method}",
                  "method": f"/{a.event_type}"}[mode]
        assert a.url == hook["url"] + suffix
        assert a.method == ("POST" if mode != "method" else a.event_method.upper())
        assert (a.event_type, a.event_method) in SUBSCRIBED_EVENTS
    assert {(a.event_type, a.event_method) for a in log} >= {
        ("statuses", "put"), ("messages", "post"), ("messages", "patch"),
        ("messages", "delete"), ("channel", "post"), ("users", "post"), ("users", "delete")}
    for body in (a.body for a in log):
        assert_valid(WEBHOOK_SCHEMA, body)
    assert _query(api_db, "SELECT count(*) FROM outbox.webhook_dead_letters") == [(0,)]


def test_webhooks_refused_are_retried_until_a_200(
        strict_sim: SimulatorHandle, strict_ctl: SimulatorControl, live_url: str,
        make_channel, api_db: Engine) -> None:
    """While the secret doesn't match we answer 401 and Whapi keeps retrying;
    once it matches the same event lands, once."""
    token = new_token()
    ctl = strict_ctl
    ch = make_channel(base_url=strict_sim.url, token=token)
    secret = webhook_secret(api_db, ch)
    ctl.register_channel(token)
    ctl.set_webhooks(f"{live_url}/webhooks/whapi/{ch}", token=token,
                     headers={SECRET_HEADER: secret}, events=SUBSCRIBED_EVENTS,
                     callback_backoff_delay_ms=50)
    store_webhook_secret(api_db, ch, "other")  # our side out of step (e.g. mid-rotation)
    injected = ctl.inbound(token, phone="+15550100009", text="hello?")
    attempts = ctl.wait_webhook_attempts(3, token=token)
    assert {a.status for a in attempts} == {401}
    assert _query(api_db, "SELECT count(*) FROM outbox.messages") == [(0,)]
    store_webhook_secret(api_db, ch, secret)
    wait_for(lambda: _query(api_db, "SELECT count(*) FROM outbox.messages") == [(1,)])
    ctl.inbound(token, phone="+15550100009", text="hello again?", wait=True)
    assert _query(api_db, "SELECT wa_message_id FROM outbox.messages ORDER BY sent_at")[0] == (
        injected.message_id,)
    assert _query(api_db, "SELECT unread_count FROM outbox.chats") == [(2,)]
    retried = [a for a in ctl.webhook_log(token=token) if a.delivery == attempts[0].delivery]
    assert [a.status for a in retried][-1] == 200 and len(retried) >= 4
