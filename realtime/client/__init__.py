"""The Python client SDK (public API: `from realtime.client import RealtimeClient`):
failover across URLs, resume after a reconnect, each event once. `watch.py` is the
`realtime watch` / `realtime publish` commands built on it."""

from realtime.client.sdk import ClientStats, ConnectRefused, RealtimeClient, SubscribeError

__all__ = ["ClientStats", "ConnectRefused", "RealtimeClient", "SubscribeError"]
