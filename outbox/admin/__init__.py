"""Admin services, one module per thing they manage: channels (and their
token key rotation), chats, API keys, and the queue's status. Each works in
the caller's SQLAlchemy session; the CLI and the HTTP API call them."""
