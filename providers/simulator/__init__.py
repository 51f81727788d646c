"""A Whapi.cloud simulator: a real HTTP server that behaves like Whapi
(../shared/WHAPI.md and the published spec), for tests, the demo and the
benchmark. `app` serves it; `control` starts and drives it from Python."""
