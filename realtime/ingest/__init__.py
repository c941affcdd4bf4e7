"""Ingest: `POST /api/v1/events` -> the topic's ingest partition stream, with the schemas
that validate events and subscriptions, publish keys, and the rate limits."""
