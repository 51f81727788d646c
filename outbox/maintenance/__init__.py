"""Background upkeep, one module per service.

* `rescuer`: rows whose worker died (lease expired) back to the queue;
* `unpauser`: channels whose timed pause ran out, active again;
* `pruner`: old `sent` outbox rows deleted;
* `event_pruner`: events past OUTBOX_EVENTS_RETENTION deleted;
* `delivery_pruner`: finished status callbacks deleted as old, a disabled
  endpoint's waiting ones dead-lettered after 3 days;
* `analyzer`: ANALYZE (and VACUUM) of the hot tables when they need it;
* `webhook_backlog`: early webhook statuses and actions matched again.

Each service owns its interval, its advisory lock key and `run_once`
(`service.py` says how a pass takes its turn). The daemon schedules all
but the last; the HTTP service runs the webhook backlog. `upkeep` is what
a cron pass (`dispatch --once`, `POST /v1/cron/dispatch`) runs before it
drains: the daemon's services, once each.
"""
