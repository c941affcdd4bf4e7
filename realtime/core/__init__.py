"""The shared core: settings, Redis key names, topic and stream-id rules, errors, logging,
backoff, JSON, metrics and Redis connections; everything above imports it, it imports
nothing above it."""
