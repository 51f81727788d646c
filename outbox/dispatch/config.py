"""How a dispatcher behaves: `DispatcherConfig`, from settings or by hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from outbox.dispatch.backoff import RetryPolicy

FLUSH_INTERVAL_SECONDS = 0.02  # how long a finished send may wait to be recorded


@dataclass(frozen=True, slots=True)
class DispatcherConfig:
    batch_size: int = 200
    per_channel_claim: int = 50
    lease_seconds: float = 60.0
    concurrency: int = 256
    channel_concurrency: int = 32
    poll_interval_seconds: float = 1.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    rate_limit_pause_seconds: float = 30.0
    rate_limit_pause_cap_seconds: float = 900.0
    flush_interval_seconds: float = FLUSH_INTERVAL_SECONDS
    circuit_breaker_failures: int = 20  # 0: off
    circuit_breaker_pause_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: Any) -> DispatcherConfig:
        return cls(
            batch_size=settings.batch_size,
            per_channel_claim=settings.per_channel_claim,
            lease_seconds=settings.lease_seconds,
            concurrency=settings.concurrency,
            channel_concurrency=settings.channel_concurrency,
            poll_interval_seconds=settings.poll_interval_seconds,
            retry=RetryPolicy(settings.backoff_base_seconds, settings.backoff_cap_seconds),
            rate_limit_pause_seconds=settings.rate_limit_pause_seconds,
            rate_limit_pause_cap_seconds=settings.rate_limit_pause_cap_seconds,
            circuit_breaker_failures=settings.circuit_breaker_failures,
            circuit_breaker_pause_seconds=settings.circuit_breaker_pause_seconds,
        )

    def per_channel_for(self, batch: int) -> int:
        """A channel's share of a claim of `batch` rows (CLAIM's :per_channel)."""
        return min(self.per_channel_claim, batch)
