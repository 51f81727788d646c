"""Events: read them (reader), follow them live (hub), deliver them to
webhook endpoints (callbacks). db/event_queries.py holds their SQL."""
