"""The demo behind `scripts/demo` (see that file)."""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sys
import time

from sqlalchemy import text
from sqlalchemy.orm import Session


def main() -> int:
    parser = argparse.ArgumentParser(description="whapi-outbox demo")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--chats", type=int, default=300)
    parser.add_argument("--smoke", action="store_true", help="small and quick (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.messages, args.channels, args.chats = 300, 3, 40

    os.environ.setdefault("OUTBOX_ENCRYPTION_KEY", "demo-key-" + "0" * 32)
    from db.engine import database_url, make_engine
    from outbox.channels import create_channel
    from outbox.enqueue import enqueue_many
    from outbox.logging import configure_logging
    from outbox.message_types import TextMessage
    from outbox.migrate import upgrade
    from outbox.settings import get_settings

    settings = get_settings()
    configure_logging(level="WARNING")
    url = database_url(settings)
    print(f"database: {'embedded PostgreSQL in ' + str(settings.data_dir) if not settings.database_url else 'OUTBOX_DATABASE_URL'}")
    upgrade(url)
    engine = make_engine(url)

    rng = random.Random(7)
    with Session(engine) as s, s.begin():
        channels = [
            create_channel(s, name=f"demo-{i + 1}", phone_number=f"+1555000{1000 + i}",
                           token=secrets.token_hex(16), encryption_key=settings.require_encryption_key())
            for i in range(args.channels)
        ]
    phones = [f"+1555{2000000 + i:07d}" for i in range(args.chats)]
    t0 = time.perf_counter()
    with Session(engine) as s, s.begin():
        enqueue_many(s, [
            TextMessage(rng.choice(channels).id, rng.choice(phones), f"Your order #{n} has shipped")
            for n in range(args.messages)
        ])
    took = time.perf_counter() - t0
    print(f"enqueued {args.messages} messages over {args.channels} channels and "
          f"{args.chats} chats in one transaction ({args.messages / took:,.0f} msg/s)")
    with engine.connect() as conn:
        for row in conn.execute(text(
            "SELECT status, count(*) FROM outbox_messages GROUP BY status ORDER BY status")):
            print(f"  {row.status:<8} {row.count}")
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
