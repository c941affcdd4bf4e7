"""`realtime loadtest`: lean simulated clients (websocket and long-polling) against a
deployment, the runner that drives them, latency statistics and the report."""
