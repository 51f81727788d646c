"""Configuration: environment variables with the `OUTBOX_` prefix (or `.env`).

Every knob has a default that works on a laptop; production sets
`OUTBOX_DATABASE_URL` and `OUTBOX_ENCRYPTION_KEY`.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from outbox.db.pooler import Pooler
from outbox.db.schema import check_schema_name
from outbox.errors import ConfigurationError
from outbox.message_types import MAX_SCHEDULE_AHEAD

ENV_PREFIX = "OUTBOX_"
MIN_CRON_SECRET_LENGTH = 32
DEFAULT_WHAPI_BASE_URL = "https://gate.whapi.cloud"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # --- storage -------------------------------------------------------------
    # Secret types: a URL's password never shows in a repr, a dump or an error.
    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL URL. Unset: an embedded server in ./.outbox/pgdata.",
    )
    data_dir: Path = Field(
        default=Path(".outbox"), description="Where the embedded server keeps its data."
    )
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_pool_timeout_seconds: float = Field(
        default=5.0, gt=0, le=300,
        description="How long an API request waits for a free database connection before "
        "it is answered 503.",
    )
    db_pooler: Pooler = Field(
        default="none",
        description="'transaction' when OUTBOX_DATABASE_URL goes through a transaction-mode "
        "pooler (PgBouncer, Supabase port 6543): no prepared statements, no LISTEN through it.",
    )
    db_schema: str = Field(
        default="outbox",
        description="The PostgreSQL schema that holds every table of ours and our migration "
        "history, apart from the application's own.",
    )
    listen_database_url: SecretStr | None = Field(
        default=None,
        description="A direct (unpooled) URL for the daemon's LISTEN when OUTBOX_DATABASE_URL "
        "is a transaction pooler. Unset there: the daemon polls.",
    )

    # --- secrets -------------------------------------------------------------
    encryption_key: SecretStr | None = Field(
        default=None, description="The key for channel tokens and webhook secrets: 32 random "
        "bytes in base64 (`outbox keys generate` prints one)."
    )
    encryption_key_old: SecretStr | None = Field(
        default=None, description="Previous key, read during a key rotation."
    )

    accept_plaintext_webhook_secrets: bool = Field(
        default=False,
        description="Accept a webhook secret stored in the clear (as versions before 0.2 kept "
        "them) until `outbox tokens rotate-key` has encrypted it. Off: such a channel's "
        "webhooks are refused, since anyone who can write the database could plant one.",
    )

    allow_http_base_url: bool = Field(
        default=False,
        description="Let a channel's base URL be plain http on a host other than loopback "
        "(a simulator in another container); tokens then travel unencrypted.",
    )

    # --- provider ------------------------------------------------------------
    whapi_base_url: str = Field(default=DEFAULT_WHAPI_BASE_URL)
    whapi_timeout_seconds: float = Field(default=15.0, gt=0, le=300)
    default_region: str | None = Field(
        default=None,
        description="Region (e.g. US, GB) for phone numbers written in national format.",
    )

    max_schedule_ahead: timedelta = Field(
        default=MAX_SCHEDULE_AHEAD, gt=timedelta(0),
        description="How far ahead send_at may be (seconds or ISO 8601, e.g. P365D).",
    )

    # --- dispatcher ----------------------------------------------------------
    batch_size: int = Field(default=200, ge=1, le=5000)
    lease_seconds: float = Field(default=60.0, ge=1, le=3600)
    max_attempts: int = Field(default=5, ge=1, le=100)
    concurrency: int = Field(default=256, ge=1, le=4096, description="Sends in flight, total.")
    channel_concurrency: int = Field(
        default=32, ge=1, le=1024, description="Sends in flight per channel."
    )
    per_channel_claim: int = Field(
        default=50, ge=1, le=5000, description="Rows one claim takes from one channel (fairness)."
    )
    poll_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    backoff_base_seconds: float = Field(default=60.0, gt=0)
    backoff_cap_seconds: float = Field(default=960.0, gt=0)
    rate_limit_pause_seconds: float = Field(
        default=30.0, gt=0, description="First pause after a 429 without Retry-After."
    )
    rate_limit_pause_cap_seconds: float = Field(default=900.0, gt=0)
    prune_sent_after_seconds: float = Field(default=86400.0, ge=0)
    events_retention: timedelta = Field(
        default=timedelta(days=7), gt=timedelta(0),
        description="How long events are kept (seconds or ISO 8601, e.g. P7D).",
    )
    callback_concurrency: int = Field(
        default=64, ge=1, le=4096, description="Status callbacks in flight per process.")
    callback_endpoint_concurrency: int = Field(
        default=8, ge=1, le=4096, description="Of those, to one endpoint (a slow endpoint "
        "holds at most this many).")
    circuit_breaker_failures: int = Field(
        default=20, ge=0, description="Consecutive transient failures that pause a channel "
        "(0 turns the breaker off)."
    )
    circuit_breaker_pause_seconds: float = Field(default=30.0, gt=0)

    log_level: str = Field(default="INFO")
    heartbeat_file: Path | None = Field(
        default=None,
        description="`outbox run` and `outbox serve` touch this file every 10 s from their "
        "event loop; `outbox alive` checks it is fresh (the image's health check).",
    )

    @field_validator("default_region")
    @classmethod
    def _upper_region(cls, v: str | None) -> str | None:
        return v.upper() if v else None

    @field_validator("db_pooler", mode="before")
    @classmethod
    def _lower_pooler(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("db_schema")
    @classmethod
    def _check_schema(cls, v: str) -> str:
        return check_schema_name(v)

    @field_validator("cron_secret")
    @classmethod
    def _strong_cron_secret(cls, v: SecretStr | None) -> SecretStr | None:
        # A bearer secret on an endpoint that sends messages: guessable is open.
        if v is not None and 0 < len(v.get_secret_value()) < MIN_CRON_SECRET_LENGTH:
            raise ValueError(f"must be at least {MIN_CRON_SECRET_LENGTH} characters of random "
                             "text (e.g. `outbox keys generate`)")
        return v

    @field_validator("whapi_base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    def require_encryption_key(self) -> str:
        """OUTBOX_ENCRYPTION_KEY, which must be 32 random bytes in base64:
        `MissingEncryptionKey` or `WeakEncryptionKey` otherwise (checked
        here, where a key is needed, so commands that need none still run)."""
        from outbox.crypto import require_strong_key

        key = self.encryption_key.get_secret_value() if self.encryption_key else None
        return require_strong_key(key)

    def decryption_keys(self) -> list[str]:
        """The keys tokens may be encrypted with: the current one (strong),
        then OUTBOX_ENCRYPTION_KEY_OLD (which may be an older passphrase)."""
        keys = [self.require_encryption_key()]
        if self.encryption_key_old and self.encryption_key_old.get_secret_value():
            keys.append(self.encryption_key_old.get_secret_value())
        return keys

    # --- HTTP service (outbox serve) ------------------------------------------
    http_host: str = Field(default="127.0.0.1", description="Where `outbox serve` listens.")
    http_port: int = Field(default=8080, ge=0, le=65535)
    api_rate_limit_per_second: float = Field(
        default=50.0, ge=0,
        description="Requests a second each API key may make, per process (0: no limit).",
    )
    api_rate_limit_burst: int = Field(
        default=100, ge=1, description="Requests an API key may make at once above the rate.")
    max_queued_per_workspace: int = Field(
        default=1_000_000, ge=0,
        description="Queued messages a workspace may hold before the API answers 429 "
        "queue_full (0: no cap).",
    )
    api_docs: bool = Field(
        default=False,
        description="Serve /docs and /redoc (they load Swagger UI and ReDoc from a CDN); "
        "/openapi.json is always served.",
    )
    public_url: str | None = Field(
        default=None,
        description="Base URL Whapi reaches this service at (for channel webhook-info).",
    )
    cron_secret: SecretStr | None = Field(
        default=None, description="Bearer secret for POST /v1/cron/dispatch; unset: disabled."
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="`outbox run` and `outbox serve` serve /metrics on this port of "
        "OUTBOX_METRICS_HOST when set (never on the public listener).",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="The interface the metrics listener binds: loopback unless a scraper on "
        "another host must reach it (the metrics name every workspace's channels).",
    )
    metrics_cache_seconds: float = Field(
        default=5.0, ge=0, le=300,
        description="Scrapes within this many seconds share one read of the queue gauges.",
    )


def load_settings() -> Settings:
    """Read settings, turning pydantic's report into one line naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ENV_PREFIX + "_".join(str(p) for p in err["loc"]).upper()
        raise ConfigurationError(f"{name}: {err['msg']}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
