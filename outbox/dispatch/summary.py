"""What a dispatcher did: `Summary`, which `dispatch --once` prints."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Summary:
    """What a dispatcher did; `dispatch --once` prints it."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0
    # Sends whose outcome we could not know (timeout after the request left):
    # if the provider did accept them, the retry is a duplicate.
    ambiguous: int = 0
    # Completions that found their row already rescued (lease lost).
    stale: int = 0
    paused_channels: set[uuid.UUID] = field(default_factory=set)
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.sent / self.seconds if self.seconds > 0 else 0.0
        return (f"sent {self.sent}, retried {self.retried}, failed {self.failed}, "
                f"released {self.released}, paused channels {len(self.paused_channels)} "
                f"in {self.seconds:.1f}s ({rate:,.0f}/s)")

    def as_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed, "sent": self.sent, "retried": self.retried,
            "failed": self.failed, "released": self.released, "ambiguous": self.ambiguous,
            "stale": self.stale,
            "paused_channels": sorted(str(c) for c in self.paused_channels),
            "seconds": round(self.seconds, 3),
        }
