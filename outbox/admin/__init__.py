"""Admin services, one module per thing they manage (channels, chats,
contacts, messages, API keys, users, ...; docs/architecture.md lists them).
Each works in the caller's SQLAlchemy session; the CLI and the HTTP API
call them."""
