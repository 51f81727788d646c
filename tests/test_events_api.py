"""GET /v1/events and GET /v1/events/stream over real sockets: workspace
isolation, filters, paging, 410 past retention, scopes and the session
cookie; the stream live, resumed with Last-Event-ID without a gap or a
duplicate, heartbeats."""

from __future__ import annotations

import json
import queue
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.enqueue import enqueue_text
from tests.api_fixtures import auth, wait_for


class SSE:
    """An SSE client on a thread of its own: frames arrive in `frames`."""

    def __init__(self, base_url: str, path: str, headers: dict[str, str]) -> None:
        self.frames: queue.Queue[dict[str, Any]] = queue.Queue()
        self.comments: list[str] = []
        self.status: int | None = None
        self._client = httpx.Client(base_url=base_url, timeout=httpx.Timeout(30, read=60),
                                    trust_env=False)
        self._ready = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, args=(path, headers), daemon=True)
        self._thread.start()
        assert self._ready.wait(15), "the stream did not open"

    def _run(self, path: str, headers: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", path, headers=headers) as r:
                self.status = r.status_code
                if r.status_code != 200:
                    self.body = r.read().decode()
                    self._ready.set()
                    return
                frame: dict[str, str] = {}
                for line in r.iter_lines():
                    if self._stop:
                        return
                    if line.startswith(":"):
                        self.comments.append(line)
                        self._ready.set()
                    elif line == "":
                        if frame:
                            self.frames.put({"id": int(frame["id"]), "event": frame["event"],
                                             "data": json.loads(frame["data"])})
                        frame = {}
                    else:
                        key, _, value = line.partition(": ")
                        frame[key] = value
        except (httpx.HTTPError, RuntimeError):
            pass
        finally:
            self._ready.set()

    def take(self, n: int, timeout: float = 15) -> list[dict[str, Any]]:
        return [self.frames.get(timeout=timeout) for _ in range(n)]

    def nothing_more(self, wait: float = 0.5) -> bool:
        try:
            self.frames.get(timeout=wait)
        except queue.Empty:
            return True
        return False

    def close(self) -> None:
        self._stop = True
        self._client.close()
        self._thread.join(timeout=10)


@pytest.fixture(autouse=True)
def quick_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """Heartbeats often: a closed client's thread notices at the next one."""
    from outbox.events import hub

    monkeypatch.setattr(hub, "HEARTBEAT_SECONDS", 0.2)


@pytest.fixture
def streams(live_url: str) -> Iterator[Any]:
    opened: list[SSE] = []

    def _open(path: str, headers: dict[str, str]) -> SSE:
        s = SSE(live_url, path, headers)
        opened.append(s)
        return s

    yield _open
    for s in opened:
        s.close()


def _send(engine: Engine, channel: uuid.UUID, n: int = 1, *, to: str = "+15550100001"
          ) -> list[uuid.UUID]:
    with Session(engine) as s, s.begin():
        return [enqueue_text(s, channel_id=channel, to=to, body=f"m{i}").message_id
                for i in range(n)]


@pytest.fixture
def two(api_db: Engine, make_channel, api_key) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    a = make_channel(workspace_id="a", name="a")
    b = make_channel(workspace_id="b", name="b", phone="+15550000002")
    return {"a": a, "b": b, "key_a": api_key("a", "read"), "key_b": api_key("b", "read")}


def _poll(api: httpx.Client, key: str, **params: Any) -> dict[str, Any]:
    params = {"limit": 1000, **params}
    r = api.get("/v1/events", params=params, headers=auth(key))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _poll_until(api: httpx.Client, key: str, count: int, **params: Any) -> dict[str, Any]:
    """Events become readable once older transactions on the server end."""
    return wait_for(lambda: (b := _poll(api, key, **params)) and len(b["events"]) >= count
                    and b)


def test_polling_is_per_workspace_pages_and_filters(api: httpx.Client, api_db: Engine,
                                                   two) -> None:
    a_msgs = _send(api_db, two["a"], 3)
    _send(api_db, two["b"], 2)
    body = _poll_until(api, two["key_a"], 3)
    events = body["events"]
    assert [e["message_id"] for e in events] == [str(m) for m in a_msgs]
    assert {e["type"] for e in events} == {"message.queued"}
    assert set(events[0]) == {"id", "type", "occurred_at", "channel_id", "chat_id",
                              "message_id", "payload"}
    assert events[0]["channel_id"] == str(two["a"]) and body["has_more"] is False
    assert body["next_after"] >= events[-1]["id"]
    assert len(_poll_until(api, two["key_b"], 2)["events"]) == 2

    # Pages: limit 2 then the rest from next_after, nothing twice.
    first = _poll(api, two["key_a"], limit=2)
    assert first["has_more"] is True and len(first["events"]) == 2
    rest = _poll(api, two["key_a"], after=first["next_after"])
    assert [e["id"] for e in first["events"] + rest["events"]] == [e["id"] for e in events]
    assert _poll(api, two["key_a"], after=rest["next_after"])["events"] == []

    # Filters: types and chat.
    assert _poll(api, two["key_a"], types="message.sent,message.read")["events"] == []
    chat = events[0]["chat_id"]
    other = _send(api_db, two["a"], 1, to="+15550100077")[0]
    every = _poll_until(api, two["key_a"], 4)["events"]
    assert str(other) in {e["message_id"] for e in every}
    only = _poll(api, two["key_a"], chat_id=chat)["events"]
    assert {e["chat_id"] for e in only} == {chat} and len(only) == 3


def test_polling_refuses_bad_input_and_wrong_callers(api: httpx.Client, two,
                                                     api_key) -> None:
    key = two["key_a"]
    for params, field in [({"types": "message.nope"}, "types"), ({"chat_id": "x"}, "chat_id"),
                          ({"after": "-1"}, "after"), ({"limit": "0"}, "limit"),
                          ({"after": "abc"}, "after")]:
        r = api.get("/v1/events", params=params, headers=auth(key))
        assert r.status_code == 422, (params, r.text)
        assert r.json()["error"]["field"] == field
    assert api.get("/v1/events").status_code == 401
    send_only = api_key("a", "send")
    r = api.get("/v1/events", headers=auth(send_only))
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    assert api.get("/v1/events/stream", headers=auth(send_only)).status_code == 403


def test_past_retention_is_410_with_the_oldest_id_held(api: httpx.Client, api_db: Engine,
                                                       two) -> None:
    _send(api_db, two["a"], 3)
    events = _poll_until(api, two["key_a"], 3)["events"]
    with api_db.begin() as conn:  # pruned: the first two
        conn.execute(text("DELETE FROM outbox.events WHERE id <= :id"),
                     {"id": events[1]["id"]})
    r = api.get("/v1/events", params={"after": events[0]["id"]}, headers=auth(two["key_a"]))
    assert r.status_code == 410, r.text
    assert r.json()["error"]["code"] == "events_expired"
    assert r.json()["error"]["oldest_id"] == events[2]["id"]
    # Right before the oldest held: nothing was missed.
    r = api.get("/v1/events", params={"after": events[2]["id"] - 1}, headers=auth(two["key_a"]))
    assert r.status_code == 200 and len(r.json()["events"]) == 1
    r = api.get("/v1/events/stream", headers={**auth(two["key_a"]),
                                              "Last-Event-ID": str(events[0]["id"])})
    assert r.status_code == 410 and r.json()["error"]["oldest_id"] == events[2]["id"]


def test_the_stream_is_live_resumes_exactly_and_keeps_workspaces_apart(
        api_db: Engine, two, streams) -> None:
    sse = streams("/v1/events/stream", auth(two["key_a"]))
    other = streams("/v1/events/stream", auth(two["key_b"]))
    first = _send(api_db, two["a"], 2)
    got = sse.take(2)
    assert [f["data"]["message_id"] for f in got] == [str(m) for m in first]
    assert all(f["event"] == "message.queued" == f["data"]["type"] for f in got)
    assert [f["id"] for f in got] == [f["data"]["id"] for f in got]
    last = got[-1]["id"]
    sse.close()

    missed = _send(api_db, two["a"], 3)
    resumed = streams("/v1/events/stream", {**auth(two["key_a"]), "Last-Event-ID": str(last)})
    again = resumed.take(3)
    assert [f["data"]["message_id"] for f in again] == [str(m) for m in missed]
    later = _send(api_db, two["a"], 1)
    assert resumed.take(1)[0]["data"]["message_id"] == str(later[0])
    assert resumed.nothing_more()
    # ?after= does the same as the header.
    by_query = streams(f"/v1/events/stream?after={last}", auth(two["key_a"]))
    assert [f["data"]["message_id"] for f in by_query.take(4)] == [
        str(m) for m in (*missed, *later)]
    # The other workspace saw none of it.
    assert other.nothing_more(0.3)
    _send(api_db, two["b"], 1)
    assert other.take(1)[0]["data"]["channel_id"] == str(two["b"])


def test_stream_filters_heartbeat_and_session_cookie(api_db: Engine, two, streams) -> None:
    from outbox.admin.sessions import sign_in
    from outbox.admin.users import create_user
    with Session(api_db) as s, s.begin():
        create_user(s, workspace_id="a", email="v@example.com", role="viewer",
                    password="correct horse battery staple")
    with Session(api_db) as s, s.begin():
        token = sign_in(s, workspace_id="a", email="v@example.com",
                        password="correct horse battery staple").token
    console = streams("/v1/events/stream?types=message.cancelled",
                      {"Cookie": f"outbox_session={token}"})
    assert console.status == 200
    (mid,) = _send(api_db, two["a"], 1)
    from outbox.admin.messages import cancel

    with Session(api_db) as s, s.begin():
        cancel(s, mid)
    (frame,) = console.take(1)
    assert (frame["event"], frame["data"]["message_id"]) == ("message.cancelled", str(mid))
    wait_for(lambda: any("heartbeat" in c for c in console.comments), timeout=5)


@pytest.mark.slow
def test_an_inbound_webhook_reaches_a_stream_through_outbox_serve(
        make_channel, api_db: Engine, api_key, sim, sim_url: str, database_url: str) -> None:
    """The simulator posts a customer's message to `outbox serve`; a client
    following the stream sees it; SIGTERM ends the stream and the server."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.dispatch_helpers import REPO
    from tests.inbox_helpers import wire_webhooks
    from tests.sim_fixtures import new_token, unused_port

    token = new_token()
    channel = make_channel(base_url=sim_url, token=token)
    key = api_key("default", "read")
    port = unused_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "outbox", "serve", "--port", str(port)],
                              cwd=REPO, text=True, env=dict(os.environ),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=base, timeout=5, trust_env=False) as client:
            def up() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return client.get("/healthz").status_code == 200
                return False

            wait_for(up, timeout=30)
        wire_webhooks(sim, base, api_db, channel, token)
        sse = SSE(base, "/v1/events/stream", auth(key))
        try:
            assert sim.inbound(token, phone="+15550100042", text="where is my order?",
                               wait=True).delivered
            (frame,) = sse.take(1)
            assert frame["event"] == "message.received"
            assert frame["data"]["payload"]["body"] == "where is my order?"
            assert frame["data"]["channel_id"] == str(channel)
            started = time.monotonic()
            server.send_signal(signal.SIGTERM)
            out, _ = server.communicate(timeout=20)
            assert server.returncode == 0, out
            assert time.monotonic() - started < 10  # the open stream did not hold it
        finally:
            sse.close()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_the_stream_waits_for_an_older_transaction_then_gives_both_in_order(
        api_db: Engine, two, streams) -> None:
    """B commits while A, which started writing first, is still open: B's
    event waits for A's, and the client gets A's then B's (a reader that
    handed out B first would never hand out A: its id is lower)."""
    sse = streams("/v1/events/stream", auth(two["key_a"]))
    older = Session(api_db)
    try:
        a = enqueue_text(older, channel_id=two["a"], to="+15550100001", body="a").message_id
        (b,) = _send(api_db, two["a"], 1, to="+15550100002")
        assert sse.nothing_more(1.0)
        older.commit()
    finally:
        older.close()
    got = sse.take(2)
    assert [f["data"]["message_id"] for f in got] == [str(a), str(b)]
    assert got[0]["id"] < got[1]["id"]


def test_the_streams_chat_filter(api: httpx.Client, api_db: Engine, two, streams) -> None:
    """`chat_id=` on the stream: the chat's events only, in its history and live."""
    _send(api_db, two["a"], 1, to="+15550100011")
    (other,) = _send(api_db, two["a"], 1, to="+15550100022")
    first = _poll_until(api, two["key_a"], 2)["events"]
    chat = next(e["chat_id"] for e in first if e["message_id"] != str(other))
    sse = streams(f"/v1/events/stream?after=0&chat_id={chat}", auth(two["key_a"]))
    (old,) = sse.take(1)
    assert old["data"]["chat_id"] == chat
    ours = _send(api_db, two["a"], 2, to="+15550100011")
    _send(api_db, two["a"], 2, to="+15550100022")
    live = sse.take(2)
    assert [f["data"]["message_id"] for f in live] == [str(m) for m in ours]
    assert {f["data"]["chat_id"] for f in live} == {chat}
    assert sse.nothing_more()


def test_many_streams_share_one_listen_connection(api_db: Engine, two, streams) -> None:
    """However many clients, a process has one LISTEN connection and one
    reading connection for them: opening ten streams opens no connection."""

    def connections() -> dict[str, int]:
        with api_db.connect() as conn:
            return {str(name): int(n) for name, n in conn.execute(text(
                "SELECT application_name, count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() "
                "AND application_name IN ('outbox-events', 'outbox-events-listen') "
                "GROUP BY application_name"))}

    first = streams("/v1/events/stream", auth(two["key_a"]))
    before = connections()
    assert before.get("outbox-events-listen", 0) >= 1 and before.get("outbox-events", 0) >= 1
    opened = [first, *(streams("/v1/events/stream", auth(two["key_a" if i % 2 else "key_b"]))
                       for i in range(9))]
    (mid,) = _send(api_db, two["a"], 1)
    for sse in opened[::2]:  # the streams of workspace a
        assert sse.take(1)[0]["data"]["message_id"] == str(mid)
    assert connections() == before


async def test_a_slow_client_is_dropped_and_the_others_keep_up(
        api_db: Engine, two, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client whose backlog passes QUEUE_LIMIT batches is dropped (its
    stream ends; it reconnects with Last-Event-ID); the hub goes on handing
    every batch to the one that keeps up."""
    import asyncio

    from outbox.events import hub as hub_module
    from tests.api_fixtures import app_settings

    monkeypatch.setattr(hub_module, "QUEUE_LIMIT", 3)
    hub = hub_module.open_hub(database_url, app_settings(database_url))
    await hub.start()
    try:
        slow = await hub.subscribe("a")
        fast = await hub.subscribe("a")
        got: list[str] = []
        for n in range(6):  # one batch each: the next waits until the fast one has it
            (mid,) = await asyncio.to_thread(_send, api_db, two["a"], 1,
                                             to=f"+155501001{n:02d}")
            while str(mid) not in got:
                batch = await asyncio.wait_for(fast.queue.get(), 10)
                if batch is not hub_module.HEARTBEAT:
                    got.extend(str(json.loads(e.frame.split(b"data: ", 1)[1])["message_id"])
                               for e in batch)
        assert len(got) == 6 and not fast.dropped
        assert slow.dropped and hub.clients == 1
        held = [slow.queue.get_nowait() for _ in range(slow.queue.qsize())]
        assert held[-1] is hub_module.DROPPED  # what ends its stream
        assert len([b for b in held if b and b is not hub_module.HEARTBEAT]) == 3
    finally:
        await hub.aclose()


async def test_a_hub_closed_as_it_is_woken_still_closes(database_url: str) -> None:
    """A wake-up and the close's cancel in the same turn of the loop: the
    reader must end (Python 3.11's wait_for returned the wake-up and dropped
    the cancel, so aclose() waited for ever; a CI run hung on it)."""
    import asyncio

    from outbox.events import hub as hub_module
    from tests.api_fixtures import app_settings

    for _ in range(3):
        hub = hub_module.open_hub(database_url, app_settings(database_url))
        await hub.start()
        sub = await hub.subscribe("a")  # after the first read
        await asyncio.sleep(0.2)  # the reader waits to be woken
        hub.unsubscribe(sub)
        hub.wake()
        await asyncio.wait_for(hub.aclose(), 10)
        assert all(task.done() for task in hub._tasks)
