"""realtime: a realtime server for live analytics dashboards.

Producers POST events; a consumer-group worker turns Redis Stream entries into topic
events; Socket.IO clients subscribed to a topic receive them on any server instance.
"""

__version__ = "0.1.0"
