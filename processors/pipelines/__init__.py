"""Pipelines, pure: the pipelines file, transforms, routing, predicates, event-time windows
and their aggregates. No I/O; the worker runs them, the web reads the config to refuse
window-output topics at ingest."""
