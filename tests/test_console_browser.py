"""The console in a real headless Chromium (Playwright on the system
browser): `outbox serve`'s app on loopback, real PostgreSQL, the simulator
posting webhooks, the dispatcher sending. What a support agent and an
operator do, and what they must not be able to do."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.admin.messages import retry
from outbox.enqueue import enqueue_text
from outbox.providers.simulator.control import SimulatorControl
from tests.api_fixtures import wait_for
from tests.conftest import TEST_KEY
from tests.console_fixtures import PASSWORD
from tests.dispatch_helpers import run_dispatcher
from tests.inbox_helpers import T0, chat_of, inbound, query, wire_webhooks
from tests.sim_fixtures import WebhookReceiver, new_token

pytestmark = pytest.mark.slow  # a browser per test

# Where to save screenshots of the key pages (docs); unset: none are taken.
SCREENSHOTS = os.environ.get("OUTBOX_CONSOLE_SCREENSHOTS")


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator)


def sign_in(page: Any, url: str, email: str, *, next_path: str = "/",
            workspace: str = "default") -> None:
    page.goto(url + next_path)
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    if workspace != "default":
        page.click("details summary")
        page.fill("#workspace", workspace)
    page.click("#sign-in")
    page.wait_for_selector("body[data-ready=true]")


def tab_to(page: Any, selector: str, *, presses: int = 20) -> None:
    """Press Tab until `selector` has the focus (fails if it never does)."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement === document.querySelector(s)", selector):
            return
    raise AssertionError(f"{selector} is not reachable with Tab")


def shot(page: Any, name: str, *, full_page: bool = False) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=full_page)


@pytest.fixture
def channel(make_channel, sim: SimulatorControl, sim_url: str, console_url: str,
            api_db: Engine) -> tuple[uuid.UUID, str]:
    """A channel on the simulator, whose webhooks reach the console's server."""
    token = new_token()
    ch = make_channel(base_url=sim_url, token=token)
    wire_webhooks(sim, console_url, api_db, ch, token)
    return ch, token


def dispatch(database_url: str) -> Any:
    """One dispatcher pass, in a thread: Playwright's sync API holds this one's event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run_dispatcher(database_url, max_seconds=20)).result()


def test_a_broad_search_follows_short_pages(
        page: Any, console_url: str, console_user: Callable[..., str], channel, api_db: Engine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A broad search reads a bounded stretch of the list per call; the list
    follows the cursor past empty pages to the matches far down."""
    from outbox.admin import chats

    monkeypatch.setattr(chats, "FEW_MATCHES", 1)
    monkeypatch.setattr(chats, "SEARCH_WALK", 2)
    ch, _ = channel
    for n, name in enumerate(["Zed One", "Zed Two", "Ana", "Bea", "Cy", "Di"]):
        inbound(api_db, ch, f"1555060070{n}", "hi", name=name, at=T0 + timedelta(minutes=n))
    sign_in(page, console_url, console_user())
    rows = page.locator(".chat-row")
    expect(rows).to_have_count(6)
    page.fill("#search", "zed")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("Zed Two")


def test_an_agent_reads_and_answers_a_chat(
        page: Any, console_url: str, console_user: Callable[..., str], channel, api_db: Engine,
        sim: SimulatorControl, database_url: str) -> None:
    ch, token = channel
    inbound(api_db, ch, "15550600001", "Is my order on its way?", name="Maria Silva",
            at=T0 - timedelta(days=1))
    inbound(api_db, ch, "15550600001", "Order #1042", name="Maria Silva", at=T0)
    inbound(api_db, ch, "15550600002", "Thanks!", name="Bob Stone",
            at=T0 + timedelta(minutes=5))
    maria = chat_of(api_db, "15550600001@s.whatsapp.net")
    sign_in(page, console_url, console_user())

    rows = page.locator(".chat-row")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("Bob Stone")  # newest first
    row = page.locator(f".chat-row[data-chat-id='{maria}']")
    expect(row.locator(".badge")).to_have_text("2")
    expect(row.locator(".preview")).to_have_text("Order #1042")
    # Search by name and by number, and the unread filter, live in the URL.
    page.fill("#search", "mar")
    expect(rows).to_have_count(1)
    expect(page).to_have_url(re.compile(r"\?q=mar"))
    page.fill("#search", "+1 555 0600 002")
    expect(rows).to_have_count(1)
    expect(rows.nth(0)).to_contain_text("Bob Stone")
    page.fill("#search", "")
    expect(rows).to_have_count(2)
    shot(page, "inbox")

    row.locator("a").click()
    expect(page).to_have_url(re.compile(f"/chats/{maria}"))
    bubbles = page.locator(".bubble")
    expect(bubbles).to_have_count(2)
    expect(page.locator(".day")).to_have_count(2)  # two days, two separators
    expect(bubbles.nth(0)).to_have_class(re.compile(r"\bin\b"))
    # Opening the chat read it: the badge is gone, the database agrees.
    expect(row.locator(".badge")).to_have_count(0)
    wait_for(lambda: query(api_db, "SELECT unread_count FROM outbox.chats WHERE id = :c",
                           c=maria) == [(0,)])

    # The composer counts, Shift+Enter is a new line, Enter sends.
    box = page.locator("#text")
    box.fill("x" * 10)
    expect(page.locator("#counter")).to_have_text("10/4096")
    box.fill("")
    box.type("Yes: it ships today.")
    box.press("Shift+Enter")
    box.type("Tracking: 1Z999")
    box.press("Enter")
    mine = page.locator(".bubble.out").last
    expect(mine).to_contain_text("Tracking: 1Z999")
    expect(mine.locator(".tick")).to_have_attribute("data-status", "pending")
    expect(box).to_have_value("")

    # The dispatcher sends it (sent when WhatsApp accepts it); the simulator
    # reports delivered 3 s later and read 3 s after that, and the bubble's
    # tick takes each state in turn without a reload.
    wire_webhooks(sim, console_url, api_db, ch, token,
                  delays_ms={"sent": 0, "delivered": 3000, "read": 6000})
    dispatch(database_url)
    sent = [r for r in sim.sent(token) if r.type == "text"]
    assert [r.body for r in sent] == ["Yes: it ships today.\nTracking: 1Z999"]
    tick = mine.locator(".tick")
    for status in ("sent", "delivered", "read"):
        expect(tick).to_have_attribute("data-status", status, timeout=10_000)
    assert query(api_db, "SELECT status FROM outbox.messages WHERE direction = 'outbound' "
                         "AND type = 'text'") == [("read",)]
    shot(page, "thread")

    # Archive, then find it under Archived; assign to me.
    page.click("#assign-me")
    expect(page.locator("#thread-assignee")).to_have_text("Assigned to you")
    page.click("#archive")
    expect(page.locator("#unarchive")).to_be_visible()
    assert query(api_db, "SELECT status FROM outbox.chats WHERE id = :c", c=maria) == [
        ("archived",)]
    page.click("[data-filter=archived]")
    expect(rows).to_have_count(1)
    expect(rows.nth(0)).to_contain_text("Maria Silva")
    assert page.console_problems == []


def test_an_inbound_message_appears_without_reload(
        page: Any, console_url: str, console_user: Callable[..., str], channel, api_db: Engine,
        sim: SimulatorControl) -> None:
    ch, token = channel
    inbound(api_db, ch, "15550600010", "first", name="Old Customer", at=T0)
    sign_in(page, console_url, console_user())
    expect(page.locator(".chat-row")).to_have_count(1)

    sim.inbound(token, text="Hello, anyone there?", phone="15550600011",
                sender_name="New Customer", wait=True)
    top = page.locator(".chat-row").first
    expect(top).to_contain_text("New Customer", timeout=20_000)
    expect(top.locator(".badge")).to_have_text("1")
    expect(top.locator(".preview")).to_have_text("Hello, anyone there?")


def test_a_message_during_the_first_load_is_not_lost(
        page: Any, console_url: str, console_user: Callable[..., str], channel, api_db: Engine,
        sim: SimulatorControl) -> None:
    """A message committed after the server read the page's chat list but
    before the page is ready (and its list drawn) still shows: the stream was
    open first, and its event is replayed once the page is ready."""

    ch, token = channel
    inbound(api_db, ch, "15550600012", "first", name="Old Customer", at=T0)
    held: list[str] = []

    def hold_first_list(route: Any) -> None:
        if held or urlsplit(route.request.url).path != "/v1/chats":
            route.continue_()
            return
        held.append(route.request.url)
        answer = route.fetch()  # read on the server: the new chat is not in it
        sim.inbound(token, text="Are you open today?", phone="15550600013",
                    sender_name="Early Customer", wait=True)
        route.fulfill(response=answer)

    page.route(re.compile(r"/v1/chats"), hold_first_list)
    sign_in(page, console_url, console_user())
    assert held  # the first list was the held one
    top = page.locator(".chat-row").first
    # Well under the polling fallback's 5 s: the stream's event brought it.
    expect(top).to_contain_text("Early Customer", timeout=4_000)
    expect(top.locator(".badge")).to_have_text("1")
    expect(page.locator(".chat-row")).to_have_count(2)
    assert page.evaluate("Live.polling()") is False
    assert page.console_problems == []


def test_a_stream_that_opens_late_brings_what_happened_meanwhile(
        page: Any, console_url: str, console_user: Callable[..., str], channel, api_db: Engine,
        sim: SimulatorControl) -> None:
    """The stream opens after the page stopped waiting for it (3 s): the page
    loaded without it, and a message that came in before the stream opened is
    not among the stream's events (it starts with what happens next). Once
    the stream opens the page fetches everything again, and the message shows."""
    ch, token = channel
    inbound(api_db, ch, "15550600014", "first", name="Old Customer", at=T0)
    sign_in(page, console_url, console_user())
    held: list[Any] = []

    page.route(re.compile(r"/v1/events/stream"), _hold_the_first(held))
    page.reload()
    page.wait_for_selector("body[data-ready=true]")  # ready without the stream
    rows = page.locator(".chat-row")
    expect(rows).to_have_count(1)
    assert len(held) == 1 and page.evaluate("Live.connected() || Live.polling()") is False

    sim.inbound(token, text="Anyone there?", phone="15550600015", sender_name="Late Customer",
                wait=True)
    page.wait_for_timeout(1_000)
    expect(rows).to_have_count(1)  # nothing brings it yet
    held[0].continue_()
    _wait_live(page)
    # Well under the polling fallback's 5 s, and polling never started.
    expect(rows.first).to_contain_text("Late Customer", timeout=4_000)
    expect(rows.first.locator(".badge")).to_have_text("1")
    expect(rows).to_have_count(2)
    assert page.evaluate("Live.polling()") is False
    assert page.console_problems == []


def _hold_the_first(held: list[Any]) -> Callable[[Any], None]:
    """A route handler that keeps the first request it sees in `held`
    (unanswered until the test continues it) and lets the others through."""
    def handle(route: Any) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)
    return handle


def test_a_stream_that_opens_late_while_the_page_still_loads(
        page: Any, console_url: str, console_user: Callable[..., str], channel, api_db: Engine,
        sim: SimulatorControl) -> None:
    """The other late opening: the stream opens after the 3 s wait but before
    the page's first loads are done. A message that came in between the
    server reading the chat list and the stream opening is in neither: the
    page fetches everything again once it is ready."""

    ch, token = channel
    inbound(api_db, ch, "15550600016", "first", name="Old Customer", at=T0)
    sign_in(page, console_url, console_user())
    stream: list[Any] = []
    chats: list[Any] = []

    def hold_the_first_list(route: Any) -> None:
        if chats or urlsplit(route.request.url).path != "/v1/chats":
            route.continue_()
        else:
            chats.append(route)

    page.route(re.compile(r"/v1/events/stream"), _hold_the_first(stream))
    page.route(re.compile(r"/v1/chats"), hold_the_first_list)
    page.reload(wait_until="commit")
    # The list is asked for once the page stopped waiting for the stream.
    wait_for(lambda: page.wait_for_timeout(50) or bool(chats), timeout=15)
    assert len(stream) == 1
    answer = chats[0].fetch()  # read on the server: the new chat is not in it
    sim.inbound(token, text="Still loading?", phone="15550600017", sender_name="Late Customer",
                wait=True)
    stream[0].continue_()
    _wait_live(page)
    assert page.evaluate("document.body.dataset.ready") is None  # still loading
    chats[0].fulfill(response=answer)
    page.wait_for_selector("body[data-ready=true]")
    rows = page.locator(".chat-row")
    expect(rows.first).to_contain_text("Late Customer", timeout=4_000)
    expect(rows).to_have_count(2)
    assert page.evaluate("Live.polling()") is False
    assert page.console_problems == []


def _a_failed_reply(api_db: Engine, sim: SimulatorControl, database_url: str,
                    channel: tuple[uuid.UUID, str], phone: str, name: str, body: str) -> str:
    """A chat whose customer wrote in and whose reply WhatsApp refused (400,
    a dead letter); the simulator keeps refusing until its faults are cleared."""
    ch, token = channel
    inbound(api_db, ch, phone, "hi", name=name, at=T0)
    chat = chat_of(api_db, f"{phone}@s.whatsapp.net")
    with Session(api_db) as s, s.begin():
        enqueue_text(s, channel_id=ch, to=f"+{phone}", body=body)
    sim.set_faults(token=token, error_status=400)
    dispatch(database_url)
    return chat


def test_a_failed_message_shows_why_and_retries(
        page: Any, console_url: str, console_user: Callable[..., str], channel, api_db: Engine,
        sim: SimulatorControl, database_url: str) -> None:
    _, token = channel
    rita = _a_failed_reply(api_db, sim, database_url, channel, "15550600020", "Rita",
                           "Your refund is on its way")
    assert query(api_db, "SELECT status FROM outbox.messages WHERE direction = 'outbound'"
                 ) == [("failed",)]
    sim.clear_faults(token=token)

    # The operator sees it among the dead letters and retries it.
    sign_in(page, console_url, console_user("ops@example.com", role="admin"),
            next_path="/ops")
    dead = page.locator("#dead tbody tr")
    expect(dead).to_have_count(1)
    expect(dead.first).to_contain_text("Your refund is on its way")
    shot(page, "operations")
    page.goto(f"{console_url}/chats/{rita}")
    failed = page.locator(".bubble.failed")
    expect(failed).to_contain_text("Not sent:")
    failed.locator("button.retry").click()
    expect(page.locator(".bubble.failed")).to_have_count(0)
    dispatch(database_url)
    assert [r.body for r in sim.sent(token) if r.type == "text"] == [
        "Your refund is on its way"]
    expect(page.locator(".bubble.out .tick")).not_to_have_attribute(
        "data-status", "pending", timeout=20_000)


def _dead_letters(api_db: Engine, sim: SimulatorControl, database_url: str,
                  channel: tuple[uuid.UUID, str], phones: list[str], body: str) -> list[uuid.UUID]:
    """A message to each phone, refused by WhatsApp (400): dead letters
    (`body` with the index after it); the simulator accepts again after."""
    ch, token = channel
    with Session(api_db) as s, s.begin():
        ids = [enqueue_text(s, channel_id=ch, to=phone, body=f"{body} {i}").message_id
               for i, phone in enumerate(phones)]
    sim.set_faults(token=token, error_status=400)
    dispatch(database_url)
    sim.clear_faults(token=token)
    return ids


def test_the_operator_retries_dead_letters_and_pauses_a_channel(
        page: Any, console_url: str, console_user: Callable[..., str], channel, api_db: Engine,
        sim: SimulatorControl, database_url: str) -> None:
    ch, token = channel
    _dead_letters(api_db, sim, database_url, channel,
                  [f"+1555060003{i}" for i in range(3)], "notice")
    sign_in(page, console_url, console_user("ops@example.com", role="admin"),
            next_path="/ops")
    dead = page.locator("#dead tbody tr")
    expect(dead).to_have_count(3)
    expect(page.locator(f"#channels tr[data-channel-id='{ch}'] td").nth(6)).to_have_text("3")

    # Two selected, retried at once: back in the queue, then sent.
    dead.nth(0).locator("input.pick").check()
    dead.nth(1).locator("input.pick").check()
    expect(page.locator("#retry-selected")).to_have_text("Retry 2 selected")
    page.click("#retry-selected")
    expect(dead).to_have_count(1)
    dispatch(database_url)
    assert len([r for r in sim.sent(token) if r.type == "text"]) == 2

    # Pause the channel: its queue stops, with the reason shown.
    page.once("dialog", lambda d: d.accept("carrier maintenance"))
    page.locator(f"#channels tr[data-channel-id='{ch}'] button.pause").click()
    row = page.locator(f"#channels tr[data-channel-id='{ch}']")
    expect(row).to_have_attribute("data-status", "paused")
    expect(row).to_contain_text("carrier maintenance")
    dead.first.locator("button.retry").click()
    expect(dead).to_have_count(0)
    expect(page.locator("#dead-empty")).to_be_visible()
    dispatch(database_url)
    assert len([r for r in sim.sent(token) if r.type == "text"]) == 2  # nothing more sent
    page.click("#refresh-channels")
    expect(row.locator("td.queued")).to_have_text("1")
    row.locator("button.resume").click()
    expect(row).to_have_attribute("data-status", "active")
    dispatch(database_url)
    assert len([r for r in sim.sent(token) if r.type == "text"]) == 3


def test_the_operator_cancels_dead_letters(
        page: Any, console_url: str, console_user: Callable[..., str], channel, api_db: Engine,
        sim: SimulatorControl, database_url: str) -> None:
    token = channel[1]
    ids = _dead_letters(api_db, sim, database_url, channel,
                        [f"+1555060035{i}" for i in range(5)], "promo")
    with api_db.begin() as conn:  # one failed long ago: the "since" filter leaves it out
        conn.execute(text("UPDATE outbox.messages SET created_at = now() - interval '3 days' "
                          "WHERE id = :m"), {"m": ids[4]})
    sign_in(page, console_url, console_user("ops@example.com", role="admin"), next_path="/ops")
    dead = page.locator("#dead tbody tr")
    expect(dead).to_have_count(5)
    page.select_option("#dead-since", label="Last 24 hours")
    expect(dead).to_have_count(4)
    expect(page.locator("#dead", has_text="promo 4")).to_have_count(0)

    # One: asked first; dismissed, nothing changes; accepted, it is gone.
    row = page.locator("#dead tbody tr", has_text="promo 0")
    page.once("dialog", lambda d: d.dismiss())
    row.locator("button.cancel").click()
    expect(dead).to_have_count(4)
    page.once("dialog", lambda d: d.accept())
    row.locator("button.cancel").click()
    expect(dead).to_have_count(3)
    assert query(api_db, "SELECT status FROM outbox.messages WHERE id = :m", m=ids[0]) == [
        ("cancelled",)]

    # All selected, cancelled at once; the selection is cleared after. A
    # refresh in between (the event stream's, for a message event) keeps it.
    page.check("#dead-all")
    expect(page.locator("#cancel-selected")).to_have_text("Cancel 3 selected")
    page.evaluate("Ops.refreshDeadLetters()")
    expect(page.locator("#cancel-selected")).to_have_text("Cancel 3 selected")
    expect(page.locator("#dead .pick:checked")).to_have_count(3)
    expect(page.locator("#dead-all")).to_be_checked()
    page.once("dialog", lambda d: d.accept())
    page.click("#cancel-selected")
    expect(dead).to_have_count(0)
    expect(page.locator("#dead-empty")).to_be_visible()
    expect(page.locator("#dead-all")).not_to_be_checked()
    expect(page.locator("#cancel-selected")).to_be_disabled()
    expect(page.locator("#retry-selected")).to_have_text("Retry selected")
    assert query(api_db, "SELECT m.status, o.status, count(*) FROM outbox.messages m "
                         "JOIN outbox.outbox_messages o ON o.message_id = m.id "
                         "GROUP BY 1, 2 ORDER BY 1") == [("cancelled", "cancelled", 4),
                                                         ("failed", "failed", 1)]
    page.select_option("#dead-since", label="Any time")
    expect(dead).to_have_count(1)
    expect(dead.first).to_contain_text("promo 4")
    dispatch(database_url)
    assert [r for r in sim.sent(token) if r.type == "text"] == []
    assert page.console_problems == []


def test_a_live_refresh_keeps_the_operators_place_in_a_long_dead_letter_list(
        page: Any, console_url: str, console_user: Callable[..., str], channel, api_db: Engine,
        sim: SimulatorControl, database_url: str) -> None:
    """Past the first page (More), the refresh the event stream makes lists
    as many rows as were shown, not the first page again; a new filter
    starts from the first page."""
    ids = _dead_letters(api_db, sim, database_url, channel,
                        [f"+15550607{i:03d}" for i in range(60)], "bulk")
    sign_in(page, console_url, console_user("ops@example.com", role="admin"), next_path="/ops")
    dead = page.locator("#dead tbody tr")
    expect(dead).to_have_count(50)
    page.click("#dead-more")
    expect(dead).to_have_count(60)
    expect(page.locator("#dead-more")).to_be_hidden()
    dead.nth(55).scroll_into_view_if_needed()
    with Session(api_db) as s, s.begin():  # someone else retries one: message.queued
        retry(s, ids[0], workspace_id="default")
    expect(dead).to_have_count(59)  # the first page alone would be 50
    page.select_option("#dead-since", label="Last 24 hours")
    expect(dead).to_have_count(50)
    expect(page.locator("#dead-more")).to_be_visible()
    assert page.console_problems == []


def test_the_operator_gives_a_channel_a_new_webhook_secret(
        page: Any, console_url: str, console_user: Callable[..., str], make_channel,
        api_db: Engine) -> None:
    """The old secret keeps working for the hours asked (Whapi's settings
    are changed over meanwhile); input that isn't a number changes nothing."""
    import httpx

    from outbox.admin.webhook_info import webhook_info
    from outbox.settings import get_settings
    from outbox.webhooks.apply import SECRET_HEADER

    ch = make_channel()
    with Session(api_db) as s:
        old = webhook_info(s, get_settings(), ch)["secret"]

    def hook(secret: str) -> int:
        return httpx.post(f"{console_url}/webhooks/whapi/{ch}", headers={SECRET_HEADER: secret},
                          json={"statuses": [], "event": {"type": "statuses",
                                                          "event": "post"}}).status_code

    sign_in(page, console_url, console_user("ops@example.com", role="admin"), next_path="/ops")
    row = page.locator(f"#channels tr[data-channel-id='{ch}']")
    page.once("dialog", lambda d: d.accept("soon"))
    row.locator("button.new-secret").click()
    expect(page.locator("#banner")).to_contain_text("keep_old_hours")
    page.console_problems.clear()  # that 422 was the point
    assert hook(old) == 200  # unchanged

    page.once("dialog", lambda d: d.accept("2"))
    row.locator("button.new-secret").click()
    box = page.locator("#webhook-info")
    expect(box).to_contain_text("The old secret works until")
    with Session(api_db) as s:
        new = webhook_info(s, get_settings(), ch)["secret"]
    assert new != old and new in box.text_content()
    assert (hook(new), hook(old)) == (200, 200)
    assert query(api_db, "SELECT previous_webhook_secret_until - now() "
                         "BETWEEN interval '119 minutes' AND interval '2 hours' "
                         "FROM outbox.channels WHERE id = :c", c=ch) == [(True,)]
    assert page.console_problems == []


def test_api_keys_and_users_from_the_console(
        page: Any, console_url: str, console_user: Callable[..., str], api_db: Engine) -> None:
    import httpx

    sign_in(page, console_url, console_user("ops@example.com", role="admin"), next_path="/ops")
    page.fill("#key-name", "crm")
    page.click("#key-form button[type=submit]")
    key = page.locator("#new-key-value").inner_text()
    assert key.startswith("wo_")
    expect(page.locator("#keys tbody tr")).to_have_count(1)
    r = httpx.get(f"{console_url}/v1/messages", headers={"Authorization": f"Bearer {key}"},
                  trust_env=False)
    assert r.status_code == 200
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#new-key")).to_be_hidden()  # shown once
    assert key not in page.content()
    page.once("dialog", lambda d: d.accept())
    page.locator("#keys button.revoke").click()
    expect(page.locator("#keys tbody tr").first).to_contain_text("revoked")
    r = httpx.get(f"{console_url}/v1/messages", headers={"Authorization": f"Bearer {key}"},
                  trust_env=False)
    assert r.status_code == 401

    page.fill("#user-email", "new.agent@example.com")
    page.select_option("#user-role", "agent")
    page.fill("#user-password", PASSWORD)
    page.click("#user-form button[type=submit]")
    expect(page.locator("#users tbody tr", has_text="new.agent@example.com")).to_have_count(1)
    assert query(api_db, "SELECT role FROM outbox.users WHERE email = 'new.agent@example.com'"
                 ) == [("agent",)]


def send_callbacks(database_url: str) -> Any:
    """One status-callback pass (what `outbox run` does on its schedule), in a
    thread like dispatch()."""
    from outbox.database import make_async_engine
    from outbox.events.callbacks import CallbackSender, send_callbacks_once

    async def run() -> Any:
        engine = make_async_engine(database_url, pool_size=2)
        try:
            return await send_callbacks_once(engine, CallbackSender(keys=[TEST_KEY]))
        finally:
            await engine.dispose()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def test_webhook_endpoints_from_the_console(
        page: Any, console_url: str, console_user: Callable[..., str], channel, api_db: Engine,
        sim: SimulatorControl, database_url: str, receiver: WebhookReceiver) -> None:
    ch, token = channel
    with api_db.begin() as conn:  # the events table was emptied: fan out from its start
        conn.execute(text("UPDATE outbox.webhook_fanout SET last_event_id = 0"))
    sign_in(page, console_url, console_user("ops@example.com", role="admin"), next_path="/ops")
    expect(page.locator("#endpoints-empty")).to_be_visible()

    # Bad input is refused with the API's message and adds nothing.
    page.fill("#endpoint-url", receiver.url + "/hooks")
    page.fill("#endpoint-types", "message.sent, message.nonsense")
    page.click("#endpoint-form button[type=submit]")
    expect(page.locator("#banner")).to_contain_text("unknown event type 'message.nonsense'")
    assert query(api_db, "SELECT count(*) FROM outbox.webhook_endpoints") == [(0,)]

    page.fill("#endpoint-types", "message.sent")
    page.click("#endpoint-form button[type=submit]")
    secret = page.locator("#new-endpoint-secret").inner_text()
    assert secret.startswith("whsec_")
    rows = page.locator("#endpoints tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(receiver.url + "/hooks")
    expect(rows.first).to_contain_text("message.sent")
    expect(rows.first).to_have_attribute("data-status", "active")
    assert query(api_db, "SELECT url, event_types FROM outbox.webhook_endpoints") == [
        (receiver.url + "/hooks", ["message.sent"])]
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#new-endpoint")).to_be_hidden()  # shown once
    assert secret not in page.content()

    # A message sent: its message.sent event is posted, signed, to the receiver.
    with Session(api_db) as s, s.begin():
        sent = enqueue_text(s, channel_id=ch, to="+15550600070", body="Your table is ready")
    dispatch(database_url)
    assert [r.body for r in sim.sent(token) if r.type == "text"] == ["Your table is ready"]
    assert send_callbacks(database_url).delivered == 1
    (got,) = receiver.wait_for(1)
    assert got.path == "/hooks"
    assert got.json["type"] == "message.sent"
    assert got.json["message_id"] == str(sent.message_id)
    assert got.headers["webhook-signature"].startswith("v1,")

    rows.first.locator("button.deliveries").click()
    deliveries = page.locator("#deliveries tbody tr")
    expect(deliveries).to_have_count(1)
    expect(deliveries.first).to_have_attribute("data-status", "delivered")
    expect(deliveries.first).to_contain_text("message.sent")
    expect(deliveries.first).to_contain_text("HTTP 200")
    expect(deliveries.first.locator("td.num")).to_have_text("1")  # one attempt
    expect(page.locator("#h-deliveries")).to_contain_text(receiver.url + "/hooks")

    # Removing asks first: dismissed, nothing changes; accepted, it is gone.
    page.once("dialog", lambda d: d.dismiss())
    rows.first.locator("button.remove").click()
    expect(rows).to_have_count(1)
    page.once("dialog", lambda d: d.accept())
    rows.first.locator("button.remove").click()
    expect(rows).to_have_count(0)
    expect(page.locator("#endpoints-empty")).to_be_visible()
    expect(page.locator("#deliveries-box")).to_be_hidden()
    assert query(api_db, "SELECT count(*) FROM outbox.webhook_endpoints") == [(0,)]
    assert query(api_db, "SELECT count(*) FROM outbox.webhook_deliveries") == [(0,)]


def test_a_disabled_endpoint_enabled_from_the_console(
        page: Any, console_url: str, console_user: Callable[..., str], channel, api_db: Engine,
        sim: SimulatorControl, database_url: str, receiver: WebhookReceiver) -> None:
    """A receiver that answered 410 Gone disabled its endpoint; once it is
    fixed, the operator enables it from the operations view: the delivery it
    had waiting goes at once, and its dead letter on request."""
    from outbox.admin.endpoints import add_endpoint

    ch, _ = channel
    with api_db.begin() as conn:  # the events table was emptied: fan out from its start
        conn.execute(text("UPDATE outbox.webhook_fanout SET last_event_id = 0"))
    with Session(api_db) as s, s.begin():
        endpoint = add_endpoint(s, workspace_id="default", url=receiver.url + "/hooks",
                                event_types=["message.sent"], encryption_key=TEST_KEY).endpoint.id
        for i in range(2):
            enqueue_text(s, channel_id=ch, to=f"+1555060012{i}", body=f"order {i} shipped")
    dispatch(database_url)
    # One answer is a 410 (that delivery dead, the endpoint disabled), the
    # other a 500: its retry waits, here an hour, so only enabling sends it now.
    receiver.script = [410]
    receiver.default_status = 500
    assert send_callbacks(database_url).endpoints_disabled == 1
    with api_db.begin() as conn:
        conn.execute(text("UPDATE outbox.webhook_deliveries SET next_attempt_at = "
                          "now() + interval '1 hour' WHERE status = 'pending'"))
    deliveries_by_status = ("SELECT status, count(*) FROM outbox.webhook_deliveries "
                            "GROUP BY 1 ORDER BY 1")
    assert query(api_db, deliveries_by_status) == [("failed", 1), ("pending", 1)]
    tried = len(receiver.requests)
    receiver.default_status = 200  # the receiver is fixed

    sign_in(page, console_url, console_user("ops@example.com", role="admin"), next_path="/ops")
    row = page.locator(f"#endpoints tr[data-endpoint-id='{endpoint}']")
    expect(row).to_have_attribute("data-status", "disabled")
    expect(row).to_contain_text("the receiver answered 410 Gone")
    expect(row.locator("td.num")).to_have_text(["1", "1"])  # waiting, failed
    expect(row.locator("button.retry-failed")).to_have_text("Enable and retry 1 failed")
    assert page.evaluate(_CONTRAST) == []
    assert send_callbacks(database_url).delivered == 0  # disabled: nothing goes
    assert len(receiver.requests) == tried

    row.locator("button.enable").click()
    expect(row).to_have_attribute("data-status", "active")
    expect(page.locator("#endpoint-note")).to_have_text(
        f"{receiver.url}/hooks is active: 1 delivery due now.")
    expect(row).not_to_contain_text("410 Gone")
    expect(row.locator("button.enable")).to_have_count(0)
    expect(row.locator("button.retry-failed")).to_have_text("Retry 1 failed")
    assert send_callbacks(database_url).delivered == 1  # due at once, not in an hour
    assert query(api_db, deliveries_by_status) == [("delivered", 1), ("failed", 1)]

    row.locator("button.deliveries").click()
    deliveries = page.locator("#deliveries tbody tr")
    # Either of the two may have been the one that got the 410.
    expect(deliveries).to_have_count(2)
    expect(deliveries.and_(page.locator("[data-status=delivered]"))).to_have_count(1)
    expect(deliveries.and_(page.locator("[data-status=failed]"))).to_contain_text("HTTP 410")
    # The dead letter, on request: the same event again, with its webhook-id.
    row.locator("button.retry-failed").click()
    expect(page.locator("#endpoint-note")).to_contain_text("1 delivery due now")
    assert send_callbacks(database_url).delivered == 1
    assert query(api_db, deliveries_by_status) == [("delivered", 2)]
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert len(ids) == tried + 2 and len(set(ids[tried:])) == 2 and set(ids) == set(ids[tried:])
    expect(row.locator("button.retry-failed")).to_have_count(0)
    row.locator("button.deliveries").click()
    expect(deliveries.locator("td:nth-child(2)")).to_have_text(["delivered", "delivered"])
    assert page.console_problems == []


def test_a_viewer_reads_but_cannot_send_or_operate(
        page: Any, console_url: str, console_user: Callable[..., str], make_channel,
        api_db: Engine) -> None:
    ch = make_channel()
    inbound(api_db, ch, "15550600040", "hello", name="Vera", at=T0)
    vera = chat_of(api_db, "15550600040@s.whatsapp.net")
    sign_in(page, console_url, console_user("viewer@example.com", role="viewer"),
            next_path=f"/chats/{vera}")
    expect(page.locator(".bubble")).to_have_count(1)
    expect(page.locator("#composer-readonly")).to_be_visible()
    expect(page.locator("#text")).to_be_hidden()
    expect(page.locator("#thread-actions")).to_be_hidden()
    expect(page.locator("#nav-ops")).to_be_hidden()
    # Opening it did not read it for the team (a viewer can't).
    assert query(api_db, "SELECT unread_count FROM outbox.chats") == [(1,)]
    page.goto(f"{console_url}/ops")
    expect(page.locator("#ops-denied")).to_be_visible()


def test_another_workspaces_chat_is_not_found(
        page: Any, console_url: str, console_user: Callable[..., str], make_channel,
        api_db: Engine) -> None:
    theirs = make_channel(workspace_id="team-b", phone="+15550000002")
    inbound(api_db, theirs, "15550600050", "private", name="Secret Customer", at=T0)
    other = chat_of(api_db, "15550600050@s.whatsapp.net")
    sign_in(page, console_url, console_user(), next_path=f"/chats/{other}")
    expect(page.locator("#thread-placeholder")).to_contain_text("Chat not found")
    assert "Secret Customer" not in page.content() and "private" not in page.content()
    page.goto(f"{console_url}/chats/not-a-uuid")
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#thread-placeholder")).to_contain_text("Chat not found")


def test_sign_in_errors_sign_out_and_a_small_screen(
        page: Any, console_url: str, console_user: Callable[..., str], make_channel,
        api_db: Engine) -> None:
    ch = make_channel()
    inbound(api_db, ch, "15550600060", "hi", name="Pat", at=T0)
    email = console_user()
    # A link that would send the user elsewhere after signing in lands on the inbox.
    page.goto(console_url + "/login?next=%2F%5Cevil.example%2Fx")
    page.fill("#email", email)
    page.fill("#password", "wrong password!!")
    page.click("#sign-in")
    expect(page.locator("#login-error")).to_have_text("Wrong email or password.")
    page.console_problems.clear()  # that 401 was the point
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    expect(page).to_have_url(console_url + "/")
    page.wait_for_selector("body[data-ready=true]")
    cookie = next(c for c in page.context.cookies() if c["name"] == "outbox_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # page scripts can't read the session

    page.set_viewport_size({"width": 375, "height": 740})
    expect(page.locator(".chat-list-pane")).to_be_visible()
    expect(page.locator(".thread-pane")).to_be_hidden()
    page.locator(".chat-row a").first.click()
    expect(page.locator(".chat-list-pane")).to_be_hidden()
    expect(page.locator("#text")).to_be_visible()
    expect(page.locator(".bubble")).to_have_count(1)
    shot(page, "thread-375px")
    page.click("#back")
    expect(page.locator(".chat-list-pane")).to_be_visible()

    page.click("#logout")
    expect(page).to_have_url(re.compile(r"/login$"))
    assert not [c for c in page.context.cookies() if c["name"] == "outbox_session"]
    page.goto(console_url + "/")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    assert page.console_problems == []


def test_signing_out_with_a_request_on_the_wire_lands_on_sign_in(
        page: Any, console_url: str, console_user: Callable[..., str], make_channel,
        api_db: Engine) -> None:
    """A request still out when the session ends would answer 401 (an
    error in the console, and a move to the sign-in with a way back,
    `?next=`, after the sign-out's own): signing out calls it off first."""
    ch = make_channel()
    inbound(api_db, ch, "15550600061", "hi", name="Pat", at=T0)
    sign_in(page, console_url, console_user())
    chats: list[Any] = []
    login: list[Any] = []
    from playwright.sync_api import Error as PlaywrightError

    called_off: list[str] = []
    page.on("requestfailed", lambda r: called_off.append(urlsplit(r.url).path))
    page.route(re.compile(r"/v1/chats(\?|$)"), _hold_the_first(chats))
    page.route(re.compile(r"/login(\?|$)"), _hold_the_first(login))
    page.evaluate("void Inbox.refreshList()")
    while not chats:
        page.wait_for_timeout(20)
    page.click("#logout")
    while not login:  # signed out, on the way to the sign-in page
        page.wait_for_timeout(20)
    assert "/v1/chats" in called_off
    with contextlib.suppress(PlaywrightError):  # the page gave up on it already
        chats[0].continue_()
    page.wait_for_timeout(300)
    login[0].continue_()
    expect(page).to_have_url(re.compile(r"/login$"))
    assert page.console_problems == []


def test_a_long_inbox_and_a_rich_thread(
        page: Any, console_url: str, console_user: Callable[..., str], channel, api_db: Engine,
        sim: SimulatorControl) -> None:
    ch, token = channel
    # 35 chats: the first page holds 30, scrolling down brings the rest.
    for i in range(35):
        inbound(api_db, ch, f"155506100{i:02d}", f"hello {i}", name=f"Customer {i:02d}",
                at=T0 + timedelta(minutes=i))
    # One chat with 55 messages: the thread shows the latest 50, then older.
    for i in range(55):
        inbound(api_db, ch, "15550610099", f"line {i}", name="Talkative",
                at=T0 + timedelta(hours=1, seconds=i))
    # Through the simulator's webhooks: a picture, a reaction, an edit, a deletion.
    first = sim.inbound(token, text="keep this", phone="15550610099", message_id="wa-keep",
                        wait=True)
    sim.inbound(token, text="typo", phone="15550610099", message_id="wa-typo", wait=True)
    sim.inbound(token, text="oops", phone="15550610099", message_id="wa-oops", wait=True)
    sim.inbound(token, kind="image", phone="15550610099", message_id="wa-pic", wait=True)
    sim.action(token, "wa-keep", "reaction", emoji="👍", phone="15550610099", wait=True)
    sim.action(token, "wa-typo", "edit", text="fixed", phone="15550610099", wait=True)
    sim.action(token, "wa-oops", "delete", phone="15550610099", wait=True)
    assert first.message_id == "wa-keep"
    talkative = chat_of(api_db, "15550610099@s.whatsapp.net")

    sign_in(page, console_url, console_user())
    rows = page.locator(".chat-row")
    expect(rows).to_have_count(30)
    rows.last.scroll_into_view_if_needed()
    expect(rows).to_have_count(36)

    page.locator(f".chat-row[data-chat-id='{talkative}'] a").click()
    bubbles = page.locator(".bubble")
    expect(bubbles).to_have_count(50)
    keep = page.locator(".bubble", has_text="keep this")
    expect(keep.locator(".reactions")).to_have_text("👍", timeout=20_000)
    edited = page.locator(".bubble", has_text="fixed")
    expect(edited.locator(".edited")).to_have_text("edited")
    expect(page.locator(".bubble .deleted")).to_have_text("This message was deleted")
    expect(page.locator(".bubble", has_text="oops")).to_have_count(0)
    expect(page.locator(".bubble .media")).to_have_count(1)
    page.click("#load-older")
    expect(bubbles).to_have_count(59)
    expect(page.locator("#load-older")).to_be_hidden()
    expect(page.locator(".bubble").first).to_contain_text("line 0")
    assert page.console_problems == []


def test_events_drive_the_page(
        page: Any, console_url: str, console_user: Callable[..., str], channel, api_db: Engine,
        sim: SimulatorControl, database_url: str) -> None:
    """static/live.js's contract with the event stream, without a stream:
    polling off, each event handed to it as the stream would, and the page
    refetches exactly what the event names."""
    import json

    ch, _ = channel
    inbound(api_db, ch, "15550600070", "hi", name="Lena", at=T0)
    lena = chat_of(api_db, "15550600070@s.whatsapp.net")
    sign_in(page, console_url, console_user(), next_path=f"/chats/{lena}")
    expect(page.locator(".bubble")).to_have_count(1)
    page.evaluate("Live.stop()")

    def event(kind: str, **fields: Any) -> None:
        body = {"id": 1, "type": kind, "occurred_at": "2026-01-01T00:00:00+00:00",
                "channel_id": str(ch), "chat_id": None, "message_id": None, "payload": {},
                **fields}
        page.evaluate("data => Live.handle({data})", json.dumps(body))

    # A new chat's first message: nothing moves until its event arrives.
    inbound(api_db, ch, "15550600071", "new here", name="Nora", at=T0 + timedelta(hours=1))
    nora = chat_of(api_db, "15550600071@s.whatsapp.net")
    page.wait_for_timeout(600)
    expect(page.locator(f".chat-row[data-chat-id='{nora}']")).to_have_count(0)
    event("message.received", chat_id=nora)
    row = page.locator(".chat-row").first
    expect(row).to_have_attribute("data-chat-id", nora)
    expect(row.locator(".badge")).to_have_text("1")

    # Another message in the open chat appears in its thread.
    inbound(api_db, ch, "15550600070", "one more thing", name="Lena",
            at=T0 + timedelta(hours=2))
    event("message.received", chat_id=lena)
    expect(page.locator(".bubble")).to_have_count(2)
    expect(page.locator(".bubble").last).to_contain_text("one more thing")

    # A reply's ticks move on its events only.
    page.fill("#text", "hello Lena")
    page.press("#text", "Enter")
    tick = page.locator(".bubble.out .tick")
    expect(tick).to_have_attribute("data-status", "pending")
    dispatch(database_url)
    mid = wait_for(lambda: query(api_db, "SELECT id FROM outbox.messages WHERE status = 'read' "
                                         "AND type = 'text' AND direction = 'outbound'"),
                   timeout=20)[0][0]
    page.wait_for_timeout(600)
    expect(tick).to_have_attribute("data-status", "pending")
    event("message.read", chat_id=lena, message_id=str(mid))
    expect(tick).to_have_attribute("data-status", "read")
    assert page.console_problems == []


def test_media_by_url(page: Any, console_url: str, console_user: Callable[..., str], channel,
                      api_db: Engine, sim: SimulatorControl, database_url: str) -> None:
    ch, token = channel
    inbound(api_db, ch, "15550600080", "send me the invoice", name="Ivo", at=T0)
    ivo = chat_of(api_db, "15550600080@s.whatsapp.net")
    sign_in(page, console_url, console_user(), next_path=f"/chats/{ivo}")
    page.click("#attach")
    page.select_option("#media-type", "document")
    page.fill("#media-url", "https://files.example.com/invoice-1042.pdf")
    page.fill("#text", "Your invoice")
    page.press("#text", "Enter")
    out = page.locator(".bubble.out")
    expect(out.locator("a.media")).to_have_attribute(
        "href", "https://files.example.com/invoice-1042.pdf")
    expect(out).to_contain_text("Your invoice")
    dispatch(database_url)
    (sent,) = [r for r in sim.sent(token) if r.type == "document"]
    assert sent.payload["media"] == "https://files.example.com/invoice-1042.pdf"
    assert sent.payload["caption"] == "Your invoice"


def test_lookup_cancel_and_assign_to_a_colleague(
        page: Any, console_url: str, console_user: Callable[..., str], make_channel,
        api_db: Engine) -> None:
    ch = make_channel()
    inbound(api_db, ch, "15550600090", "hello", name="Gus", at=T0)
    gus = chat_of(api_db, "15550600090@s.whatsapp.net")
    with Session(api_db) as s, s.begin():
        queued = enqueue_text(s, channel_id=ch, to="+15550600090", body="reminder",
                              idempotency_key="reminder-7")
    colleague = console_user("colleague@example.com", role="agent")
    sign_in(page, console_url, console_user("ops@example.com", role="admin"), next_path="/ops")

    page.fill("#lookup", "reminder-7")
    page.click("#lookup-form button")
    result = page.locator("#lookup-result")
    expect(result).to_contain_text(str(queued.message_id))
    page.once("dialog", lambda d: d.accept())
    result.locator("button.cancel").click()
    expect(result).to_contain_text("cancelled")
    assert query(api_db, "SELECT status FROM outbox.messages WHERE id = :m",
                 m=queued.message_id) == [("cancelled",)]
    page.fill("#lookup", "+1 555 060 0090")
    page.click("#lookup-form button")
    expect(result.locator(f"a[href='/chats/{gus}']")).to_have_count(1)
    page.fill("#lookup", str(uuid.uuid4()))
    page.click("#lookup-form button")
    expect(result).to_have_text("No such message in this workspace.")

    page.goto(f"{console_url}/chats/{gus}")
    page.wait_for_selector("body[data-ready=true]")
    page.select_option("#assign-to", label=colleague)
    expect(page.locator("#thread-assignee")).to_have_text(f"Assigned to {colleague}")
    assert query(api_db, "SELECT u.email FROM outbox.chats c JOIN outbox.users u "
                         "ON u.id = c.assigned_to") == [(colleague,)]


# Every visible text's contrast with what is behind it (WCAG 2 relative
# luminance): at least 4.5:1, or 3:1 for large text (24 px, or 18.66 px bold).
# Disabled controls are exempt, as WCAG says.
_CONTRAST = """() => {
  const lum = (c) => {
    const [r, g, b] = c.map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const rgba = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
  const background = (el) => {
    for (let n = el; n; n = n.parentElement) {
      const c = rgba(getComputedStyle(n).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const bad = [];
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length || el.closest("[hidden], :disabled")) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden") continue;
    const fg = rgba(style.color).slice(0, 3);
    const [a, b] = [lum(fg), lum(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    const text = el.textContent.trim().slice(0, 30);
    if (ratio < (large ? 3 : 4.5)) bad.push(`${el.tagName}.${el.className} "${text}" ${ratio}`);
  }
  return bad;
}"""


@pytest.mark.parametrize("page", [{"timezone_id": "Asia/Tokyo"}], indirect=True)
def test_times_in_the_browsers_zone_readable_text_and_keyboard(
        page: Any, console_url: str, console_user: Callable[..., str], make_channel,
        api_db: Engine) -> None:
    ch = make_channel()
    # 23:30 UTC on 31 December is 08:30 on 1 January in Tokyo.
    inbound(api_db, ch, "15550600100", "happy new year", name="Kenji",
            at=T0 - timedelta(minutes=30))
    kenji = chat_of(api_db, "15550600100@s.whatsapp.net")
    with Session(api_db) as s, s.begin():
        enqueue_text(s, channel_id=ch, to="+15550600100", body="same to you")
    sign_in(page, console_url, console_user("ops@example.com", role="admin"))
    assert page.evaluate(_CONTRAST) == []

    # Keyboard only: Tab to the search, type, Tab on to the chat, Enter.
    tab_to(page, "#search")
    page.keyboard.type("kenji")
    expect(page).to_have_url(re.compile(r"\?q=kenji"))
    expect(page.locator(".chat-row")).to_have_count(1)
    tab_to(page, f".chat-row[data-chat-id='{kenji}'] a")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(f"/chats/{kenji}"))
    expect(page.locator("#text")).to_be_focused()  # the composer is ready

    inbound_bubble = page.locator(".bubble.in")
    expect(inbound_bubble.locator("time")).to_have_text("08:30 AM")
    expect(page.locator(".day").first).to_have_text("Thursday, January 1, 2026")
    expect(page.locator(".bubble.out .tick")).to_have_attribute("data-status", "pending")
    assert page.evaluate(_CONTRAST) == []

    # Escape leaves the chat (focus back on its row); "/" goes to the search.
    page.keyboard.press("Escape")
    expect(page.locator("#thread")).to_be_hidden()
    expect(page.locator(f".chat-row[data-chat-id='{kenji}'] a")).to_be_focused()
    page.keyboard.press("/")
    expect(page.locator("#search")).to_be_focused()

    page.goto(f"{console_url}/ops")
    page.wait_for_selector("body[data-ready=true]")
    assert page.evaluate(_CONTRAST) == []
    page.goto(f"{console_url}/login")
    assert page.evaluate(_CONTRAST) == []


# The page scrolls sideways when something is wider than the window (a
# wide table must scroll inside its own box instead).
_OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll("body *")].filter((el) => {
    if (!el.getClientRects().length) return false;
    const r = el.getBoundingClientRect();
    return r.right > width + 1 && !el.closest(".table-wrap, .webhook-info, .visually-hidden");
  }).map((el) => `${el.tagName}#${el.id}.${el.className} `
                 + Math.round(el.getBoundingClientRect().right));
  return {scroll: document.documentElement.scrollWidth, width, wide: wide.slice(0, 5)};
}"""


def test_states_that_need_reading_on_a_small_screen(
        page: Any, console_url: str, console_user: Callable[..., str], channel, api_db: Engine,
        sim: SimulatorControl, database_url: str) -> None:
    """The operations view at 375 px scrolls only down; text stays readable
    (WCAG AA) with a paused channel, dead letters, the error banner, a failed
    bubble: the states the plain pages don't show."""
    from outbox.admin.channels import pause_channel

    ch, token = channel
    ines = _a_failed_reply(api_db, sim, database_url, channel, "15550600110", "Ines",
                           "Your order shipped")
    sim.clear_faults(token=token)
    with Session(api_db) as s, s.begin():
        pause_channel(s, ch, reason="carrier maintenance window")

    page.set_viewport_size({"width": 375, "height": 740})
    sign_in(page, console_url, console_user("ops@example.com", role="admin"), next_path="/ops")
    expect(page.locator(f"#channels tr[data-channel-id='{ch}']")).to_have_attribute(
        "data-status", "paused")
    expect(page.locator("#dead tbody tr")).to_have_count(1)
    layout = page.evaluate(_OVERFLOW)
    assert layout["scroll"] <= layout["width"] and layout["wide"] == [], layout
    assert page.evaluate(_CONTRAST) == []
    shot(page, "operations-375px", full_page=True)

    # An error in words, in the banner.
    page.fill("#endpoint-url", "https://example.com/hooks")
    page.fill("#endpoint-types", "message.nonsense")
    page.click("#endpoint-form button[type=submit]")
    expect(page.locator("#banner")).to_be_visible()
    page.console_problems.clear()  # that 422 was the point
    layout = page.evaluate(_OVERFLOW)
    assert layout["scroll"] <= layout["width"] and layout["wide"] == [], layout
    assert page.evaluate(_CONTRAST) == []

    # The failed bubble, with its reason and Retry, on the phone and on a desktop.
    page.goto(f"{console_url}/chats/{ines}")
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator(".bubble.failed")).to_contain_text("Not sent:")
    layout = page.evaluate(_OVERFLOW)
    assert layout["scroll"] <= layout["width"] and layout["wide"] == [], layout
    assert page.evaluate(_CONTRAST) == []
    page.set_viewport_size({"width": 1280, "height": 800})
    assert page.evaluate(_CONTRAST) == []
    assert page.console_problems == []


def test_the_pages_stay_live_from_the_event_stream(
        page: Any, console_url: str, console_user: Callable[..., str], channel, api_db: Engine,
        sim: SimulatorControl, database_url: str) -> None:
    """The real stream, not the polling fallback: an inbound message moves its
    chat to the top, a sent message's tick follows the statuses, and a pause
    made elsewhere shows on the operations view, all without a reload."""
    from outbox.admin.channels import pause_channel

    ch, token = channel
    inbound(api_db, ch, "15550600090", "first", name="Old Customer", at=T0)
    sign_in(page, console_url, console_user("live@example.com", role="admin"))
    _wait_live(page)

    sim.inbound(token, text="Live, please", phone="15550600091", sender_name="Live Customer",
                wait=True)
    top = page.locator(".chat-row").first
    # Under the fallback's 5 s poll: the stream brought it.
    expect(top).to_contain_text("Live Customer", timeout=4_000)
    expect(top.locator(".badge")).to_have_text("1")

    top.locator("a").click()
    _wait_live(page)
    box = page.locator("#text")
    box.type("Answered live")
    box.press("Enter")
    mine = page.locator(".bubble.out").last
    expect(mine.locator(".tick")).to_have_attribute("data-status", "pending")
    dispatch(database_url)
    expect(mine.locator(".tick")).to_have_attribute("data-status", "read", timeout=20_000)
    assert page.evaluate("Live.polling()") is False

    page.goto(console_url + "/ops")
    page.wait_for_selector("body[data-ready=true]")
    _wait_live(page)
    row = page.locator(f"tr[data-channel-id='{ch}']")
    expect(row).to_have_attribute("data-status", "active")
    with Session(api_db) as s, s.begin():
        pause_channel(s, ch, reason="paused from elsewhere")
    expect(row).to_have_attribute("data-status", "paused", timeout=4_000)
    expect(row).to_contain_text("paused from elsewhere")
    # A message queued elsewhere: the queue's depth moves, in the table and the chart.
    expect(row.locator("td.queued")).to_have_text("0")
    with Session(api_db) as s, s.begin():
        enqueue_text(s, channel_id=ch, to="+15550600092", body="queued elsewhere")
    expect(row.locator("td.queued")).to_have_text("1", timeout=4_000)
    expect(page.locator("#chart")).to_have_attribute("data-queued", "1")
    assert page.console_problems == []


def _wait_live(page: Any) -> None:
    """The page's stream is open and it is not polling (evaluated through the
    devtools protocol: the pages' CSP forbids wait_for_function's eval)."""
    wait_for(lambda: page.evaluate("Live.connected() && !Live.polling()"), timeout=15)

