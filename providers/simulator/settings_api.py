"""Whapi's own settings endpoints (Bearer auth), webhook part included, so the
simulator is configured exactly as a Whapi channel is:

    GET    /settings           schema Settings: callback_backoff_delay_ms,
                               max_callback_backoff_delay_ms, webhooks [...], and
                               whatever else was PATCHed (kept, no effect)
    PATCH  /settings           fields present change, others stay; answers schema
                               UpdateSettings {before_update, after_update, changes};
                               400 "Wrong settings format" on a bad body
    DELETE /settings           back to defaults (no webhooks); 409 if already reset
    GET    /settings/events    schema Events: every {type, method} the simulator emits

The settings live with the simulator's other webhook configuration
(outbox.providers.simulator.webhooks), under the caller's token; the simulator's own
knobs (status delays, echo, ...) of that token are kept by a PATCH.
"""

from __future__ import annotations

from aiohttp import web

from outbox.providers.simulator.channels import Channel, ChannelRegistry
from outbox.providers.simulator.http import authenticate, json_response, read_json, whapi_error
from outbox.providers.simulator.settings import (
    ALL_EVENTS,
    ChannelSettings,
    SettingsError,
    WebhookConfig,
    patch_settings,
)
from outbox.providers.simulator.webhooks import WebhookSender

__all__ = ["install_settings_api"]


def install_settings_api(
    app: web.Application, registry: ChannelRegistry, sender: WebhookSender
) -> None:
    def current(channel: Channel) -> WebhookConfig:
        # What the channel uses now: its own settings, else the default scope's.
        return sender.config_for(channel.token) or WebhookConfig(settings=ChannelSettings())

    async def get_settings(request: web.Request) -> web.StreamResponse:
        channel = authenticate(request, registry)
        if isinstance(channel, web.Response):
            return channel
        return json_response(current(channel).settings.as_whapi())

    async def patch(request: web.Request) -> web.StreamResponse:
        channel = authenticate(request, registry)
        if isinstance(channel, web.Response):
            return channel
        config = current(channel)
        try:
            new, changes = patch_settings(config.settings, await read_json(request))
        except (ValueError, SettingsError) as exc:
            return whapi_error(400, "Wrong settings format", str(exc))
        sender.set_config(channel.token, WebhookConfig(settings=new, behaviour=config.behaviour))
        return json_response({"before_update": config.settings.as_whapi(),
                              "after_update": new.as_whapi(), "changes": changes})

    async def delete(request: web.Request) -> web.StreamResponse:
        channel = authenticate(request, registry)
        if isinstance(channel, web.Response):
            return channel
        config = sender.configs.get(channel.token)
        if config is None or config.settings == ChannelSettings():
            return whapi_error(409, "Settings already reset")
        sender.set_config(channel.token, WebhookConfig(settings=ChannelSettings(),
                                                       behaviour=config.behaviour))
        return json_response({"success": True})

    async def events(request: web.Request) -> web.StreamResponse:
        channel = authenticate(request, registry)
        if isinstance(channel, web.Response):
            return channel
        return json_response([{"type": t, "method": m} for t, m in ALL_EVENTS])

    app.router.add_route("GET", "/settings", get_settings)
    app.router.add_route("PATCH", "/settings", patch)
    app.router.add_route("DELETE", "/settings", delete)
    app.router.add_route("GET", "/settings/events", events)
