"""Topic templates for routes and window outputs: `orders.by_region.{region}` (pure).

Used by `processors/pipelines/plan.py` to name the topic a routed event goes to. A
placeholder is `{topic}` (the source topic) or `{PATH}` (a field of the event's data,
`a.b` for nested fields). A field's value becomes part of a topic name as follows:
strings are lower-cased; integers (and integral floats) in decimal; true/false as
`true`/`false`; anything else (null, objects, lists, a missing field) has no key.
The rendered name must satisfy the topic rules (`realtime/core/topics.py`), else the event
gets an outcome saying why (`missing_key` or `invalid_topic`) instead of a topic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from processors.pipelines.predicates import MISSING, PATH_PATTERN, Path, get_path
from realtime.core.topics import is_valid_topic

_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
_PATH_RE = re.compile(PATH_PATTERN)
TOPIC_PLACEHOLDER = "topic"

MISSING_KEY = "missing_key"
INVALID_TOPIC = "invalid_topic"


class TemplateError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Rendered:
    """A template's result: `topic`, or `problem` (MISSING_KEY / INVALID_TOPIC) and detail."""

    topic: str | None
    problem: str | None = None
    detail: str = ""


def key_text(value: Any) -> str | None:
    """A data value as part of a topic name, or None if it cannot be one."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value.lower()
    return None


class Template:
    """A parsed topic template: literal text and placeholders, alternating."""

    __slots__ = ("literals", "paths", "source")

    def __init__(self, source: str, allowed: frozenset[str] | None = None) -> None:
        """`allowed`: the only placeholders permitted (None: `topic` and any field path)."""
        self.source = source
        literals: list[str] = []
        paths: list[Path | str] = []
        position = 0
        for match in _PLACEHOLDER_RE.finditer(source):
            literals.append(source[position : match.start()])
            name = match[1]
            if allowed is not None:
                if name not in allowed:
                    names = ", ".join("{" + a + "}" for a in sorted(allowed))
                    raise TemplateError(f"unknown placeholder {{{name}}}; allowed: {names}")
                paths.append(name)
            elif name == TOPIC_PLACEHOLDER:
                paths.append(name)
            elif _PATH_RE.fullmatch(name):
                paths.append(tuple(name.split(".")))
            else:
                raise TemplateError(f"{{{name}}} is not {{topic}} or a data field path")
            position = match.end()
        literals.append(source[position:])
        if any("{" in part or "}" in part for part in literals):
            raise TemplateError("unbalanced braces")
        self.literals = tuple(literals)
        self.paths = tuple(paths)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Template):
            return NotImplemented
        return (self.literals, self.paths) == (other.literals, other.paths)

    def __hash__(self) -> int:
        return hash((self.literals, self.paths))

    def __repr__(self) -> str:
        return f"Template({self.source!r})"

    @property
    def static(self) -> bool:
        return not self.paths

    @property
    def names(self) -> tuple[str, ...]:
        """Placeholder names as written (`topic`, `region`, `a.b`)."""
        return tuple(p if isinstance(p, str) else ".".join(p) for p in self.paths)

    def fill(self, values: Mapping[str, str]) -> str:
        """Substitute named placeholders (for templates built with `allowed`)."""
        out = [self.literals[0]]
        for name, literal in zip(self.names, self.literals[1:], strict=True):
            out.append(values[name])
            out.append(literal)
        return "".join(out)

    def render(self, topic: str, data: Mapping[str, Any]) -> Rendered:
        """The topic for an event of `topic` with `data`, or why there is none."""
        out = [self.literals[0]]
        for path, literal in zip(self.paths, self.literals[1:], strict=True):
            if isinstance(path, str):
                out.append(topic)
            else:
                value = get_path(data, path)
                text = None if value is MISSING else key_text(value)
                if text is None:
                    name = ".".join(path)
                    what = "missing" if value is MISSING else f"{type(value).__name__} value"
                    return Rendered(None, MISSING_KEY, f"field {name!r}: {what}")
                out.append(text)
            out.append(literal)
        name = "".join(out)
        if not is_valid_topic(name):
            return Rendered(None, INVALID_TOPIC, f"{name[:200]!r} is not a valid topic name")
        return Rendered(name)
