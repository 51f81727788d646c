"""The Python examples in README.md and docs/enqueue.md, run as written.

Each ```python block is executed against the test database, with a real
channel that sends to the simulator: the names a block takes from the
reader's application (`engine`, `channel_id`, `order`, Django's
`CHANNEL_ID`) are real objects here. The block must queue its message and
a dispatcher must deliver it, so an example that calls a function the
wrong way, or enqueues nothing, fails here before a reader copies it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from outbox.providers.simulator.control import SimulatorControl
from tests.conftest import REPO
from tests.dispatch_helpers import run_dispatcher
from tests.driver_fixtures import configure_django

DOCS = (REPO / "README.md", REPO / "docs" / "enqueue.md")
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
ORDER_ID = 1042


def python_blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text(encoding="utf-8"))


EXAMPLES = [pytest.param(code, id=f"{path.name}-{n}")
            for path in DOCS for n, code in enumerate(python_blocks(path), 1)]


def test_the_examples_are_found() -> None:
    """README 1, docs/enqueue.md 2 (SQLAlchemy and Django): a changed fence
    or a moved page must not leave this module testing nothing."""
    assert [p.id for p in EXAMPLES] == ["README.md-1", "enqueue.md-1", "enqueue.md-2"]


@dataclass
class Order:
    """The reader's order. `save()` is Django's: an UPDATE of the order's
    row on Django's connection, inside the example's `atomic()` block."""

    id: int
    status: str = "paid"
    phone: str = "+15550100002"

    @property
    def pk(self) -> int:
        return self.id

    def save(self) -> None:
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute("UPDATE readme_orders SET status = %s WHERE id = %s",
                        [self.status, self.id])


@pytest.fixture
def django_orders(database_url: str) -> Iterator[None]:
    """Django set up on the test database, with the reader's orders table (a
    temporary one, on Django's connection: gone when the test closes it)."""
    configure_django(database_url)
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE readme_orders (id int PRIMARY KEY, status text)")
        cur.execute("INSERT INTO readme_orders VALUES (%s, 'paid')", [ORDER_ID])
    yield
    connection.close()


def _queued(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT m.body, m.idempotency_key, o.status FROM outbox.outbox_messages o "
            "JOIN outbox.messages m ON m.id = o.message_id"))]


@pytest.mark.parametrize("code", EXAMPLES)
def test_the_example_runs(code: str, request: pytest.FixtureRequest, clean_db: Engine,
                          make_channel: Any, sim: SimulatorControl, sim_url: str,
                          database_url: str) -> None:
    channel_id = make_channel(base_url=sim_url)
    order = Order(ORDER_ID)
    uses_django = "django" in code
    if uses_django:
        request.getfixturevalue("django_orders")
    namespace: dict[str, Any] = {"engine": clean_db, "channel_id": channel_id,
                                 "CHANNEL_ID": channel_id, "order": order}

    exec(compile(code, "<example>", "exec"), namespace)

    body = f"Order {ORDER_ID} has shipped"
    assert order.status == "shipped"
    assert _queued(clean_db) == [(body, f"order-shipped-{ORDER_ID}", "queued")]
    if uses_django:  # the business write committed with the message
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute("SELECT status FROM readme_orders WHERE id = %s", [ORDER_ID])
            assert cur.fetchone() == ("shipped",)
    assert asyncio.run(run_dispatcher(database_url)).sent == 1
    assert [r.body for r in sim.sent()] == [body]
