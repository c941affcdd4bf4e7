"""Delivery: from a topic event to each subscribed connection, once and in order: live
updates batched per tick, replay or snapshot after subscribe, catch-up after a blip,
conflation and slow-client handling, the drain at shutdown."""
