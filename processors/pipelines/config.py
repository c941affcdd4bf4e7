"""The pipelines file (`REALTIME_PIPELINES`, YAML or JSON): schema, defaults, loading.

Read once at start-up by the worker (and by `realtime pipelines check`); a bad file stops
the process with every problem listed by its path in the file, e.g.
`pipelines[0] (metrics).windows.sizes[1]: not a duration: '10x' (use ms, s, m, h or d)`.
`processors/pipelines/plan.py` turns the result into the per-event plan.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

import yaml
from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from processors.pipelines.globs import glob_pattern
from processors.pipelines.predicates import PATH_PATTERN, Path, Predicate, PredicateError, parse
from processors.pipelines.retention import DEFAULT_RETENTION, MAX_EVENTS, RetentionRule
from processors.pipelines.routing import Template, TemplateError
from processors.pipelines.windows import WindowSpec
from realtime.core import jsoncodec
from realtime.core.topics import is_valid_topic

MAX_SIZES = 6
MIN_SIZE_MS = 100
MAX_SIZE_MS = 86_400_000
MAX_LATENESS_MS = 3_600_000
DEFAULT_LATENESS_MS = 1000
DEFAULT_WINDOW_TOPIC = "{topic}:{window}"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
GLOB_PATTERN = r"^[a-z0-9_.:*?\[\]!-]{1,256}$"

DEFAULT_PIPELINES: dict[str, Any] = {
    "pipelines": [
        {"name": "metrics", "match": "metrics.*", "windows": {"sizes": ["1s", "10s", "1m"]}}
    ]
}

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION_RE = re.compile(r"\s*([0-9]{1,9})\s*(ms|s|m|h|d)\s*")  # ASCII digits: int() reads others


class PipelinesError(ValueError):
    """The pipelines file cannot be used; `problems` lists each as 'path: message'."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"pipelines file {source} is invalid:\n{lines}")


def parse_duration(text: object) -> int:
    """'500ms', '10s', '1m', '2h', '1d' -> milliseconds; 0 is also accepted."""
    if isinstance(text, int) and not isinstance(text, bool) and text == 0:
        return 0
    if isinstance(text, str):
        match = _DURATION_RE.fullmatch(text)
        if match:
            return int(match[1]) * _UNITS[match[2]]
    raise ValueError(f"not a duration: {text!r} (a number with ms, s, m, h or d, e.g. 10s)")


def duration_label(ms: int) -> str:
    """The canonical name of a duration: the largest unit that divides it (60000 -> 1m)."""
    for unit in ("d", "h", "m", "s"):
        if ms and ms % _UNITS[unit] == 0:
            return f"{ms // _UNITS[unit]}{unit}"
    return f"{ms}ms"


class Duration(fields.Field[int]):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class PredicateField(fields.Field[Any]):
    """Keeps the source (for printing) and the parsed predicate."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        try:
            return (value, parse(value))
        except PredicateError as exc:
            raise ValidationError(str(exc)) from None


class Globs(fields.Field[tuple[str, ...]]):
    """One glob or a non-empty list of them."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise ValidationError("a glob such as 'metrics.*', or a non-empty list of globs")
        for item in items:
            if not isinstance(item, str) or not re.fullmatch(GLOB_PATTERN, item):
                raise ValidationError(
                    f"{item!r} is not a topic glob: topic characters plus * ? [ ] !"
                )
        return tuple(items)


def _topic_template(text: str, allowed: frozenset[str] | None) -> Template:
    """Parse a template and check its literal text can be part of a topic name."""
    try:
        template = Template(text, allowed)
    except TemplateError as exc:
        raise ValidationError(str(exc)) from None
    sample = template.fill(dict.fromkeys(template.names, "x"))
    if not is_valid_topic(sample):
        raise ValidationError(
            f"{text!r} cannot make a valid topic name (lowercase letters, digits, "
            "'_', '.', ':' and '-', at most 128 characters)"
        )
    return template


class WindowsSchema(Schema):
    class Meta:
        unknown = RAISE

    value_field = fields.String(
        data_key="field", load_default="value", validate=validate.Regexp(f"^{PATH_PATTERN}\\Z")
    )
    sizes = fields.List(Duration(), required=True, validate=validate.Length(1, MAX_SIZES))
    lateness = Duration(load_default=DEFAULT_LATENESS_MS)
    topic = fields.String(load_default=DEFAULT_WINDOW_TOPIC)

    @validates_schema
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        sizes = data.get("sizes") or []
        problems = [
            f"{duration_label(s)} is outside {duration_label(MIN_SIZE_MS)}..1d"
            for s in sizes
            if not MIN_SIZE_MS <= s <= MAX_SIZE_MS
        ]
        if len(set(sizes)) != len(sizes):
            problems.append("sizes must be distinct")
        elif sizes and any(s % min(sizes) for s in sizes):
            problems.append(
                f"every size must be a multiple of the smallest ({duration_label(min(sizes))})"
            )
        if problems:
            raise ValidationError(problems, field_name="sizes")
        lateness = data.get("lateness")
        if lateness is not None and lateness > MAX_LATENESS_MS:
            raise ValidationError("at most 1h", field_name="lateness")
        topic = data.get("topic")
        if topic is not None:
            try:
                template = _topic_template(topic, frozenset({"topic", "window"}))
            except ValidationError as exc:
                raise ValidationError(exc.messages, field_name="topic") from None
            if sorted(template.names) != ["topic", "window"]:
                raise ValidationError(
                    "must contain {topic} and {window} once each", field_name="topic"
                )

    @post_load
    def _build(self, data: dict[str, Any], **kwargs: Any) -> WindowsConfig:
        sizes = tuple(sorted(data["sizes"]))
        return WindowsConfig(
            field=tuple(data["value_field"].split(".")),
            spec=WindowSpec(sizes=sizes, lateness=data["lateness"]),
            labels=tuple(duration_label(s) for s in sizes),
            topic=Template(data["topic"], frozenset({"topic", "window"})),
        )


class RouteSchema(Schema):
    class Meta:
        unknown = RAISE

    to = fields.String(required=True)
    when = PredicateField(load_default=None)
    fallback = fields.String(load_default=None)

    @validates_schema
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "to" in data:
            try:
                _topic_template(data["to"], None)
            except ValidationError as exc:
                raise ValidationError(exc.messages, field_name="to") from None
        fallback = data.get("fallback")
        if fallback is not None and not is_valid_topic(fallback):
            raise ValidationError(f"{fallback!r} is not a valid topic name", field_name="fallback")

    @post_load
    def _build(self, data: dict[str, Any], **kwargs: Any) -> RouteConfig:
        when = data["when"]
        return RouteConfig(
            to=Template(data["to"]),
            when=None if when is None else when[1],
            when_source=None if when is None else when[0],
            fallback=data["fallback"],
        )


class PipelineSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(
        required=True,
        # fullmatch: Regexp's re.match lets `$` accept a trailing newline.
        validate=validate.Regexp(
            re.compile(NAME_PATTERN[:-1] + r"\Z"),
            error="lowercase letters, digits, '_' and '-', starting with a letter or digit, "
            "at most 64 characters",
        ),
    )
    match = Globs(required=True)
    passthrough = fields.Boolean(load_default=True)
    drop_if = PredicateField(load_default=None)
    windows = fields.Nested(WindowsSchema, load_default=None)
    routes = fields.List(
        fields.Nested(RouteSchema), load_default=list, validate=validate.Length(max=32)
    )

    @post_load
    def _build(self, data: dict[str, Any], **kwargs: Any) -> PipelineConfig:
        drop_if = data["drop_if"]
        return PipelineConfig(
            name=data["name"],
            match=data["match"],
            passthrough=data["passthrough"],
            drop_if=None if drop_if is None else drop_if[1],
            drop_if_source=None if drop_if is None else drop_if[0],
            windows=data["windows"],
            routes=tuple(data["routes"]),
        )


class RetentionSchema(Schema):
    """One `retention` rule: `{match, keep, max_events?}` (processors/pipelines/retention.py)."""

    class Meta:
        unknown = RAISE

    match = Globs(required=True)
    keep = Duration(required=True)  # 0: no time limit
    max_events = fields.Integer(strict=True, load_default=0, validate=validate.Range(1, MAX_EVENTS))

    @post_load
    def _build(self, data: dict[str, Any], **kwargs: Any) -> RetentionRule:
        return RetentionRule(data["match"], data["keep"], data["max_events"])


class PipelinesSchema(Schema):
    class Meta:
        unknown = RAISE

    version = fields.Integer(load_default=1, validate=validate.Equal(1))
    pipelines = fields.List(
        fields.Nested(PipelineSchema), required=True, validate=validate.Length(max=256)
    )
    retention = fields.List(
        fields.Nested(RetentionSchema), load_default=None, validate=validate.Length(max=256)
    )


@dataclass(frozen=True)
class WindowsConfig:
    field: Path
    spec: WindowSpec
    labels: tuple[str, ...]
    topic: Template

    def output(self, topic: str, label: str) -> str:
        return self.topic.fill({"topic": topic, "window": label})


@dataclass(frozen=True)
class RouteConfig:
    to: Template
    when: Predicate | None = None
    when_source: Any = None
    fallback: str | None = None


@dataclass(frozen=True)
class PipelineConfig:
    name: str
    match: tuple[str, ...]
    passthrough: bool = True
    drop_if: Predicate | None = None
    drop_if_source: Any = None
    windows: WindowsConfig | None = None
    routes: tuple[RouteConfig, ...] = ()
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", glob_pattern(self.match))

    def matches(self, topic: str) -> bool:
        return self._regex.match(topic) is not None

    def window_source(self, topic: str) -> str | None:
        """If `topic` is one of this pipeline's window outputs, the source topic."""
        if self.windows is None:
            return None
        for label in self.windows.labels:
            marker = "\x00"
            prefix, _, suffix = self.windows.output(marker, label).partition(marker)
            if (
                len(topic) > len(prefix) + len(suffix)
                and topic.startswith(prefix)
                and topic.endswith(suffix)
            ):
                source = topic[len(prefix) : len(topic) - len(suffix)]
                if self.matches(source):
                    return source
        return None


@dataclass(frozen=True)
class PipelinesConfig:
    pipelines: tuple[PipelineConfig, ...]
    source: str = "built-in default"
    retention: tuple[RetentionRule, ...] = DEFAULT_RETENTION  # first match wins

    def derived_from(self, topic: str) -> PipelineConfig | None:
        """The pipeline whose window outputs include `topic`, if any. Such topics are
        written only by the aggregator (their ids are window ends), never by ingest."""
        for pipeline in self.pipelines:
            if pipeline.window_source(topic) is not None:
                return pipeline
        return None


def _flatten(messages: Any, raw: Any, path: str = "") -> list[str]:
    """marshmallow's nested messages -> ['pipelines[0] (metrics).windows.sizes[1]: ...']."""
    if isinstance(messages, list):
        out: list[str] = []
        for message in messages:
            if isinstance(message, dict):
                out.extend(_flatten(message, raw, path))
            else:
                out.append(f"{path or '(file)'}: {message}")
        return out
    out = []
    for key, value in messages.items():
        if key == "_schema":
            label, child = path, raw
        elif isinstance(key, int):
            child = raw[key] if isinstance(raw, list) and 0 <= key < len(raw) else None
            label = f"{path}[{key}]"
            if isinstance(child, Mapping) and isinstance(child.get("name"), str):
                label += f" ({child['name']})"
        else:
            child = raw.get(key) if isinstance(raw, Mapping) else None
            label = f"{path}.{key}" if path else str(key)
        out.extend(_flatten(value, child, label))
    return out


def _cross_checks(config: PipelinesConfig) -> list[str]:
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, pipeline in enumerate(config.pipelines):
        where = f"pipelines[{i}] ({pipeline.name})"
        if pipeline.name in seen:
            problems.append(f"{where}.name: duplicate of pipelines[{seen[pipeline.name]}]")
        seen.setdefault(pipeline.name, i)
        for j, route in enumerate(pipeline.routes):
            targets = [("to", route.to.source)] if route.to.static else []
            if route.fallback is not None:
                targets.append(("fallback", route.fallback))
            for key, target in targets:
                other = config.derived_from(target)
                if other is not None:
                    problems.append(
                        f"{where}.routes[{j}].{key}: {target!r} is a window output of "
                        f"pipeline {other.name!r}; route to another topic"
                    )
        for j, earlier in enumerate(config.pipelines[:i]):
            if pipeline.windows and earlier.windows and set(pipeline.match) & set(earlier.match):
                clash = set(pipeline.windows.labels) & set(earlier.windows.labels)
                if clash and pipeline.windows.topic.source == earlier.windows.topic.source:
                    problems.append(
                        f"{where}.windows: outputs {sorted(clash)} collide with pipelines[{j}] "
                        f"({earlier.name}); set a different windows.topic"
                    )
    return problems


def build(raw: Any, source: str) -> PipelinesConfig:
    """Validate the parsed file content; PipelinesError lists every problem."""
    if not isinstance(raw, Mapping):
        raise PipelinesError(source, ["(file): must be a mapping with a 'pipelines' list"])
    try:
        loaded = PipelinesSchema().load(raw)
    except ValidationError as exc:
        raise PipelinesError(source, _flatten(exc.messages, raw)) from None
    retention = loaded["retention"]
    config = PipelinesConfig(
        pipelines=tuple(loaded["pipelines"]),
        source=source,
        retention=DEFAULT_RETENTION if retention is None else tuple(retention),
    )
    problems = _cross_checks(config)
    if problems:
        raise PipelinesError(source, problems)
    return config


def default_pipelines() -> PipelinesConfig:
    return build(DEFAULT_PIPELINES, "built-in default")


def parse_text(text: str, source: str) -> Any:
    """JSON for *.json, YAML otherwise."""
    try:
        if source.endswith(".json"):
            return jsoncodec.loads(text)
        return yaml.safe_load(text)
    except jsoncodec.JSONDecodeError as exc:
        raise PipelinesError(source, [f"(file): not valid JSON: {exc}"]) from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise PipelinesError(source, [f"(file): not valid YAML{where}: {problem}"]) from None


def load_pipelines(path: str | None) -> PipelinesConfig:
    """The pipelines from `path`, or the built-in default when `path` is empty/None."""
    if not path:
        return default_pipelines()
    try:
        text = FilePath(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelinesError(path, [f"(file): cannot read it: {exc}"]) from None
    return build(parse_text(text, path), path)


def describe(config: PipelinesConfig) -> str:
    """Human-readable summary, for `realtime pipelines check`."""
    lines = [f"{len(config.pipelines)} pipeline(s) from {config.source}:"]
    for p in config.pipelines:
        lines.append(f"- {p.name}: match {', '.join(p.match)}")
        lines.append(f"    passthrough: {'yes' if p.passthrough else 'no'}")
        if p.drop_if_source is not None:
            lines.append(f"    drop_if: {jsoncodec.dumps(p.drop_if_source)}")
        if p.windows is not None:
            w = p.windows
            lines.append(
                f"    windows: {', '.join(w.labels)} of data.{'.'.join(w.field)}, lateness "
                f"{duration_label(w.spec.lateness) if w.spec.lateness else '0'}, "
                f"-> {w.output('{topic}', w.labels[0])} ..."
            )
        for r in p.routes:
            extra = f" when {jsoncodec.dumps(r.when_source)}" if r.when_source is not None else ""
            extra += f" (fallback {r.fallback})" if r.fallback else ""
            lines.append(f"    route -> {r.to.source}{extra}")
    lines.append("other topics: passthrough")
    for rule in config.retention:
        keep = duration_label(rule.keep_ms) if rule.keep_ms else "no time limit"
        cap = f", at most {rule.max_events} events" if rule.max_events else ""
        lines.append(f"retention: {', '.join(rule.match)} keeps {keep}{cap}")
    lines.append("retention: other topics keep REALTIME_HISTORY_RETENTION_MS")
    return "\n".join(lines)
