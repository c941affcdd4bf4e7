"""The web process (`realtime serve`): the aiohttp app that puts ingest, transport,
delivery and fan-out together, the Socket.IO namespace (subscribe/unsubscribe), client
auth and access, the admin UI, the dashboard, health and `/metrics`."""
