"""What one ingest event produces under the configured pipelines (pure, no I/O).

The worker's step between decoding an ingest entry (`processors/pipelines/transform.py`) and
writing: `Pipelines.plan(event)` returns a `Plan`.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from processors.pipelines.aggregates import numeric
from processors.pipelines.config import PipelineConfig, PipelinesConfig
from processors.pipelines.predicates import Path, get_path
from processors.pipelines.routing import INVALID_TOPIC, MISSING_KEY
from processors.pipelines.transform import IngestEvent, TopicEvent
from processors.pipelines.windows import WindowSpec
from realtime.core import jsoncodec
from realtime.core.topics import is_valid_topic

MAX_HOPS = 4
_INF = math.inf
HOPS_FIELD = "hops"
_MEMO_LIMIT = 100_000

# Why something was not produced (the `reason` label of a metric).
FILTERED = "filtered"  # a drop_if held
NOT_NUMERIC = "not_numeric"  # the window field is missing or not a number
DERIVED_TOPIC = "derived_topic"  # the topic is a window output; only the aggregator writes it
OUTPUT_CONFLICT = "output_conflict"  # an earlier pipeline already makes this window topic
INVALID_OUTPUT = "invalid_output_topic"  # the window output name breaks the topic rules
HOP_LIMIT = "hop_limit"  # routed MAX_HOPS times already: a routing loop
SELF_ROUTE = "self_route"  # a route to the event's own topic
REASONS = (
    FILTERED,
    NOT_NUMERIC,
    DERIVED_TOPIC,
    OUTPUT_CONFLICT,
    INVALID_OUTPUT,
    HOP_LIMIT,
    SELF_ROUTE,
    MISSING_KEY,
    INVALID_TOPIC,
)


class WindowFeed(NamedTuple):
    """One value for the windows of (pipeline, source topic). (NamedTuples: the per-event
    path builds these, and a frozen dataclass costs several times more to create.)"""

    pipeline: str
    spec: WindowSpec
    outputs: tuple[str, ...]  # the output topic of each size, in spec.sizes order
    value: float


@dataclass(frozen=True, slots=True)
class RoutedEvent:
    """A copy of an event for another topic: appended to that topic's ingest stream."""

    pipeline: str
    topic: str
    ts: int
    data: dict[str, Any]
    hops: int

    def ingest_fields(self) -> dict[str, bytes | str]:
        """The ingest entry, in the format `realtime.ingest.api` writes plus `hops`."""
        return {
            "topic": self.topic,
            "ts": str(self.ts),
            "data": jsoncodec.dumpb(self.data),
            HOPS_FIELD: str(self.hops),
        }


@dataclass(frozen=True, slots=True)
class Skip:
    pipeline: str
    reason: str
    detail: str = ""


class Plan(NamedTuple):
    passthrough: TopicEvent | IngestEvent | None  # IngestEvent: from `plan_entry`
    routed: list[RoutedEvent]
    feeds: list[WindowFeed]
    skipped: list[Skip]


# What the worker plans for an event of a topic that only passes through (no filter,
# window or route applies, `Pipelines.only_passes`): the event is written as it came,
# with no per-event Plan built. Compared by identity; never mutated.
PASS_THROUGH = Plan(None, [], [], [])


def hops_of(fields: Mapping[bytes | str, bytes | str]) -> int:
    """How many times an ingest entry was routed (0 for what producers posted)."""
    raw = fields.get(HOPS_FIELD, fields.get(HOPS_FIELD.encode()))
    if raw is None:
        return 0
    try:
        return max(0, int(raw))
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class _TopicPlan:
    """Everything about one topic that does not depend on the event: memoised."""

    derived: PipelineConfig | None
    pipelines: tuple[PipelineConfig, ...]
    droppers: tuple[PipelineConfig, ...]
    passthrough: bool
    windows: tuple[tuple[PipelineConfig, tuple[str, ...] | Skip], ...]
    routers: tuple[PipelineConfig, ...]
    # For the per-event path: (pipeline, spec, outputs, field path) of each windowed
    # pipeline whose outputs are usable, and the skips that hold for every event.
    feeds: tuple[tuple[str, WindowSpec, tuple[str, ...], Path], ...]
    skips: tuple[Skip, ...]
    only_passes: bool  # nothing but the pass-through applies: see PASS_THROUGH


class Pipelines:
    """The loaded pipelines, compiled for the per-event path."""

    def __init__(self, config: PipelinesConfig) -> None:
        self.config = config
        self._by_name = {p.name: p for p in config.pipelines}
        self._memo: dict[str, _TopicPlan] = {}

    def derived_from(self, topic: str) -> str | None:
        """The pipeline whose window outputs include `topic` (ingest must refuse it)."""
        derived = self._topic(topic).derived
        return None if derived is None else derived.name

    def window_outputs(self, pipeline: str, topic: str) -> tuple[str, ...] | None:
        """Output topics of `pipeline`'s windows for source `topic`; None if it no longer
        aggregates that topic (for restoring checkpoints after a config change)."""
        for candidate, outputs in self._topic(topic).windows:
            if candidate.name == pipeline and not isinstance(outputs, Skip):
                return outputs
        return None

    def spec(self, pipeline: str) -> WindowSpec | None:
        found = self._by_name.get(pipeline)
        return None if found is None or found.windows is None else found.windows.spec

    def _topic(self, topic: str) -> _TopicPlan:
        plan = self._memo.get(topic)
        if plan is None:
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            plan = self._memo[topic] = self._compile(topic)
        return plan

    def _compile(self, topic: str) -> _TopicPlan:
        derived = self.config.derived_from(topic)
        matching = tuple(p for p in self.config.pipelines if p.matches(topic))
        windows: list[tuple[PipelineConfig, tuple[str, ...] | Skip]] = []
        taken: dict[str, str] = {}
        for p in matching:
            if p.windows is None:
                continue
            outputs = tuple(p.windows.output(topic, label) for label in p.windows.labels)
            bad = next((o for o in outputs if not is_valid_topic(o)), None)
            clash = next((o for o in outputs if o in taken), None)
            if bad is not None:
                windows.append((p, Skip(p.name, INVALID_OUTPUT, f"{bad[:200]!r}")))
            elif clash is not None:
                windows.append(
                    (p, Skip(p.name, OUTPUT_CONFLICT, f"{clash} is made by {taken[clash]}"))
                )
            else:
                taken.update(dict.fromkeys(outputs, p.name))
                windows.append((p, outputs))
        droppers = tuple(p for p in matching if p.drop_if is not None)
        passthrough = all(p.passthrough for p in matching)
        routers = tuple(p for p in matching if p.routes)
        feeds = tuple(
            (p.name, p.windows.spec, outputs, p.windows.field)
            for p, outputs in windows
            if p.windows is not None and not isinstance(outputs, Skip)
        )
        skips = tuple(outputs for _, outputs in windows if isinstance(outputs, Skip))
        return _TopicPlan(
            derived=derived,
            pipelines=matching,
            droppers=droppers,
            passthrough=passthrough,
            windows=tuple(windows),
            routers=routers,
            feeds=feeds,
            skips=skips,
            only_passes=(
                derived is None and passthrough and not (droppers or routers or feeds or skips)
            ),
        )

    def plan_entry(self, event: IngestEvent, fields: Mapping[bytes | str, bytes | str]) -> Plan:
        """`plan` for the event of an ingest entry with `fields` (its hops are read only
        when a route needs them); PASS_THROUGH when nothing but the pass-through applies:
        the worker then writes the event itself."""
        topic = self._memo.get(event.topic) or self._topic(event.topic)
        if topic.only_passes:
            return PASS_THROUGH
        return self._plan(topic, event, hops_of(fields) if topic.routers else 0, as_is=True)

    def plan(self, event: IngestEvent, hops: int = 0) -> Plan:
        """What `event` (routed `hops` times so far) produces; see the module docstring."""
        return self._plan(self._topic(event.topic), event, hops)

    def _plan(
        self, topic: _TopicPlan, event: IngestEvent, hops: int, *, as_is: bool = False
    ) -> Plan:
        """`as_is`: the pass-through is `event` itself (the worker writes either kind),
        not a TopicEvent made for it."""
        if topic.derived is not None:
            detail = f"{event.topic} is a window output"
            return Plan(None, [], [], [Skip(topic.derived.name, DERIVED_TOPIC, detail)])
        data = event.data
        for p in topic.droppers:
            if p.drop_if is not None and p.drop_if(data):
                return Plan(None, [], [], [Skip(p.name, FILTERED)])
        passthrough: TopicEvent | IngestEvent | None = None
        if topic.passthrough:
            passthrough = (
                event if as_is else TopicEvent(event.topic, event.id, event.ts, data, event.raw)
            )
        feeds: list[WindowFeed] = []
        routed: list[RoutedEvent] = []
        skipped: list[Skip] = list(topic.skips)
        for name, spec, outputs, path in topic.feeds:
            raw = data.get(path[0]) if len(path) == 1 else get_path(data, path)
            # A finite float, the common case, inlined: as `numeric` makes it.
            value = raw + 0.0 if type(raw) is float and -_INF < raw < _INF else numeric(raw)
            if value is None:
                skipped.append(Skip(name, NOT_NUMERIC))
            else:
                feeds.append(WindowFeed(name, spec, outputs, value))
        for p in topic.routers:
            self._route(p, event, hops, routed, skipped)
        return Plan(passthrough, routed, feeds, skipped)

    def _route(
        self,
        p: PipelineConfig,
        event: IngestEvent,
        hops: int,
        routed: list[RoutedEvent],
        skipped: list[Skip],
    ) -> None:
        if hops >= MAX_HOPS:
            skipped.append(Skip(p.name, HOP_LIMIT, f"routed {hops} times: a loop?"))
            return
        for route in p.routes:
            if route.when is not None and not route.when(event.data):
                continue
            rendered = route.to.render(event.topic, event.data)
            target = rendered.topic
            reason, detail = rendered.problem, rendered.detail
            if target is not None and self._topic(target).derived is not None:
                reason, detail = DERIVED_TOPIC, f"{target} is a window output"
                target = None
            if target is None and route.fallback is not None:
                target = route.fallback
            if target is None:
                skipped.append(Skip(p.name, reason or INVALID_TOPIC, detail))
            elif target == event.topic:
                skipped.append(Skip(p.name, SELF_ROUTE, target))
            else:
                routed.append(RoutedEvent(p.name, target, event.ts, event.data, hops + 1))
