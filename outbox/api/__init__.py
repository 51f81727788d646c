"""The HTTP service (`outbox serve`): enqueue API, Whapi webhooks, cron
endpoint, health and metrics. `create_app` builds the ASGI app."""

from outbox.api.app import create_app

__all__ = ["create_app"]
