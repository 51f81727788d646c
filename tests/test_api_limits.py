"""Abuse limits: requests per API key, queued messages per workspace (429 + Retry-After).

The token bucket is checked on its own with a clock the test moves; then
both limits through a real server and database: what is refused writes
nothing, and another key or workspace is not affected.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import Engine, text

from outbox.api.limits import QUEUE_COUNT_TTL_SECONDS, KeyRateLimiter, WorkspaceQueueCap
from outbox.errors import RateLimited
from tests.api_fixtures import app_settings, auth, row_counts, run_server


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_is_on_by_default() -> None:
    from outbox.settings import Settings

    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert defaults.api_rate_limit_per_second > 0 and defaults.max_queued_per_workspace > 0


def test_bucket_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = KeyRateLimiter(per_second=2, burst=3, clock=clock)
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("k") == pytest.approx(0.5)  # empty: the next token in half a second
    assert limiter.take("other") == 0.0  # keys don't share a bucket
    clock.now += 0.5
    assert limiter.take("k") == 0.0
    assert limiter.take("k") == pytest.approx(0.5)
    clock.now += 60  # refills up to the burst, not beyond
    assert [limiter.take("k") for _ in range(4)][-1] == pytest.approx(0.5)


def test_bucket_off_and_the_error_it_raises() -> None:
    assert KeyRateLimiter(per_second=0, burst=1).take("k") == 0.0
    limiter = KeyRateLimiter(per_second=0.5, burst=1, clock=Clock())
    limiter.check("k")
    with pytest.raises(RateLimited) as info:
        limiter.check("k")
    assert info.value.retry_after == pytest.approx(2.0) and info.value.http_status == 429


def _send(url: str, key: str, channel: object, n: int = 0) -> httpx.Response:
    return httpx.post(f"{url}/v1/messages", headers=auth(key),
                      json={"channel_id": str(channel), "to": "+15550100001", "text": f"m{n}"})


def test_a_key_over_its_rate_gets_429_with_retry_after(
        database_url: str, api_db: Engine, api_key, make_channel) -> None:
    from outbox.api import create_app

    busy, calm = api_key(), api_key()
    channel = make_channel()
    app = create_app(app_settings(database_url, api_rate_limit_per_second=0.2,
                                  api_rate_limit_burst=3))
    with run_server(app) as url:
        assert [_send(url, busy, channel, n).status_code for n in range(3)] == [201] * 3
        before = row_counts(api_db)
        refused = _send(url, busy, channel, 3)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 5
        assert row_counts(api_db) == before
        assert httpx.get(f"{url}/v1/chats", headers=auth(busy)).status_code == 429
        assert _send(url, calm, channel, 4).status_code == 201  # another key: its own bucket


def test_a_workspace_at_its_cap_gets_429_queue_full(
        database_url: str, api_db: Engine, api_key, make_channel) -> None:
    from outbox.api import create_app

    full, other = api_key("full"), api_key("other")
    ch_full = make_channel(workspace_id="full", name="f")
    ch_other = make_channel(workspace_id="other", name="o", phone="+15550000002")
    app = create_app(app_settings(database_url))
    clock = Clock()
    app.state.outbox.queue_cap = WorkspaceQueueCap(2, clock=clock)
    with run_server(app) as url:
        assert _send(url, full, ch_full, 0).status_code == 201
        assert _send(url, full, ch_full, 1).status_code == 201
        before = row_counts(api_db)
        refused = _send(url, full, ch_full, 2)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "queue_full"
        assert "OUTBOX_MAX_QUEUED_PER_WORKSPACE" in refused.json()["error"]["message"]
        assert int(refused.headers["Retry-After"]) >= 1
        assert row_counts(api_db) == before
        assert _send(url, other, ch_other, 3).status_code == 201
        # Sent rows don't count: once the queue drains, the workspace may queue again.
        with api_db.begin() as conn:
            conn.execute(text("UPDATE outbox.outbox_messages SET status = 'sent', "
                              "sent_at = now() WHERE workspace_id = 'full'"))
        clock.now += QUEUE_COUNT_TTL_SECONDS + 0.1  # the count is taken again
        assert _send(url, full, ch_full, 5).status_code == 201
