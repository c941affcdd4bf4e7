"""The stream processor: ingest streams -> transforms -> topic history + fan-out."""
