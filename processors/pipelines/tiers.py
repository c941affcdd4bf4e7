"""The resolution tiers of a topic (pure): the window outputs the pipelines make of it,
and the one a chart of a time range in about N points should draw
(`subscribe {topic, from, resolution: "auto", points}`, docs/protocol.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from processors.pipelines.config import PipelinesConfig
from processors.pipelines.retention import Retention

DEFAULT_POINTS = 600
RAW = "raw"  # the resolution of a topic served as it is


@dataclass(frozen=True)
class Tier:
    topic: str  # e.g. metrics.cpu:1m
    label: str  # e.g. 1m
    size_ms: int
    keep_ms: int  # how long its history is kept; 0: no time limit


def source_of(config: PipelinesConfig, topic: str) -> str:
    """The topic a window output is made of (`metrics.cpu:1m` -> `metrics.cpu`), else
    `topic` itself."""
    pipeline = config.derived_from(topic)
    source = None if pipeline is None else pipeline.window_source(topic)
    return topic if source is None else source


def tiers_of(config: PipelinesConfig, topic: str, retention: Retention) -> list[Tier]:
    """The window outputs the pipelines make of `topic` (or of its source, when `topic`
    is itself one), finest first; one per size (the first pipeline's, in file order)."""
    source = source_of(config, topic)
    found: dict[int, Tier] = {}
    for pipeline in config.pipelines:
        windows = pipeline.windows
        if windows is None or not pipeline.matches(source):
            continue
        for size, label in zip(windows.spec.sizes, windows.labels, strict=True):
            if size not in found:
                output = windows.output(source, label)
                found[size] = Tier(output, label, size, retention.keep_ms(output))
    return [found[size] for size in sorted(found)]


def pick(tiers: list[Tier], range_ms: int, points: int) -> Tier | None:
    """The tier to draw `range_ms` in about `points` points (None: no tiers, serve the
    topic raw). Among the tiers that keep at least `range_ms` (if none does, the one
    that keeps longest), the finest whose window is at least range_ms / points long;
    if every window is shorter, the coarsest."""
    if not tiers:
        return None
    held = [t for t in tiers if t.keep_ms == 0 or t.keep_ms >= range_ms]
    if not held:
        held = [max(tiers, key=lambda t: t.keep_ms)]
    step = range_ms / max(points, 1)
    for tier in held:
        if tier.size_ms >= step:
            return tier
    return held[-1]
