"""Background upkeep, one module per service (rescuer, unpauser, pruner).

Each is a plain async function over an engine, safe to run from several
processes at once (SKIP LOCKED / idempotent updates); the daemon also takes
an advisory lock so only one instance does the work at a time.
"""
