"""The README's screenshots of the console (docs/images/console-inbox.png and
console-operations.png), retaken on the current code: `scripts/screenshots`.
Skipped unless OUTBOX_CONSOLE_SCREENSHOTS names the folder to write them to.

The data goes through the real paths (customers write through the
simulator's webhooks, the dispatcher sends, an agent answers in the page),
with the pages on the live event stream. Only the hour's send times are
spread over the window afterwards, so the chart has a shape to show.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.enqueue import enqueue_text
from outbox.providers.simulator.control import SimulatorControl
from tests.api_fixtures import wait_for
from tests.inbox_helpers import chat_of, query, wire_webhooks
from tests.sim_fixtures import new_token
from tests.test_console_browser import dispatch, expect, sign_in

OUT = os.environ.get("OUTBOX_CONSOLE_SCREENSHOTS")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not OUT, reason="README screenshots: scripts/screenshots retakes them "
                    "(OUTBOX_CONSOLE_SCREENSHOTS=<folder>)")]

SIZE = {"width": 1280, "height": 760}
# Customers who wrote in, newest last: (name, phone, messages).
CUSTOMERS = [
    ("Bob Stone", "15552000101", ["Can I change the delivery address?"]),
    ("Omar Haddad", "15552000102", ["Do you deliver on Saturdays?", "Or only weekdays?"]),
    ("Aiko Tanaka", "15552000103", ["Thanks, got it!"]),
]
MARIA = ("Maria Silva", "15552000001", ["Hi! Did my order ship?", "It's order #10001"])
# Two recipients whose sends WhatsApp refuses: the dead letters.
REFUSED = ["15552000041", "15552000009"]


def test_readme_screenshots(
        page: Any, console_url: str, console_user: Callable[..., str], make_channel,
        sim: SimulatorControl, sim_url: str, api_db: Engine, database_url: str) -> None:
    assert OUT is not None
    out = Path(OUT)
    out.mkdir(parents=True, exist_ok=True)
    channels: list[tuple[uuid.UUID, str]] = []
    for i in range(3):
        token = new_token()
        ch = make_channel(name=f"shop-{i + 1}", phone=f"+1555000100{i}", token=token,
                          base_url=sim_url)
        wire_webhooks(sim, console_url, api_db, ch, token)
        channels.append((ch, token))

    # Order notices, some to numbers WhatsApp refuses; a few scheduled for later.
    for phone in REFUSED:
        sim.set_faults(to=f"{phone}@s.whatsapp.net", error_status=400)
    with Session(api_db) as s, s.begin():
        for n in range(240):
            ch, _ = channels[n % 3]
            phone = REFUSED[n // 120] if n in (0, 120) else f"155521{n % 60:05d}"
            enqueue_text(s, channel_id=ch, to=f"+{phone}",
                         body=f"Your order #{10000 + n} has shipped")
        for n in range(4):
            enqueue_text(s, channel_id=channels[0][0], to=f"+155520{n + 70:05d}",
                         body=f"Your order #{10400 + n} is ready for pickup",
                         send_at=datetime.now(UTC) + timedelta(hours=2))
    dispatch(database_url)
    sim.clear_faults()
    # The hour's traffic spread over the window (arrived up to 4 min before
    # it was sent), so the chart shows a working hour rather than one minute.
    with api_db.begin() as conn:
        conn.execute(text("""
            UPDATE outbox.outbox_messages
            SET sent_at = now() - make_interval(mins => CAST(2 + (id * 37) % 56 AS int),
                                                secs => CAST((id * 13) % 60 AS int)),
                created_at = now() - make_interval(mins => CAST(2 + (id * 37) % 56 AS int)
                                                          + CAST(id % 5 AS int))
            WHERE status = 'sent'"""))
        conn.execute(text("""
            UPDATE outbox.outbox_messages
            SET updated_at = now() - make_interval(mins => CAST(5 + id % 40 AS int))
            WHERE status = 'failed'"""))

    # Customers write in (Maria first: hers is the chat answered below).
    for name, phone, lines in [MARIA, *CUSTOMERS]:
        for line in lines:
            sim.inbound(channels[0][1] if name == MARIA[0] else channels[1][1], text=line,
                        phone=phone, sender_name=name, wait=True)
    maria = chat_of(api_db, f"{MARIA[1]}@s.whatsapp.net")

    page.set_viewport_size(SIZE)
    sign_in(page, console_url, console_user("shots@demo.example", role="admin"),
            next_path=f"/chats/{maria}")
    expect(page.locator("#live-state")).to_have_text("live")
    box = page.locator("#text")
    box.type("Yes! It shipped this morning, tracking 1Z999AA10123456784")
    box.press("Enter")
    dispatch(database_url)
    mine = page.locator(".bubble.out").last
    expect(mine.locator(".tick")).to_have_attribute("data-status", "read", timeout=20_000)
    wait_for(lambda: query(api_db, "SELECT count(*) FROM outbox.chats WHERE unread_count > 0"
                           ) == [(len(CUSTOMERS),)])
    expect(page.locator(".chat-row .badge")).to_have_count(len(CUSTOMERS))
    page.locator("#text").focus()
    page.screenshot(path=str(out / "console-inbox.png"))

    page.goto(f"{console_url}/ops")
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#live-state")).to_have_text("live")
    expect(page.locator("#dead tbody tr")).to_have_count(len(REFUSED))
    page.screenshot(path=str(out / "console-operations.png"))
    assert page.console_problems == []
