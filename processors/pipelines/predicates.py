"""A small, safe predicate language over an event's data, for pipelines' `drop_if`/`when`.

Pure: parsed once when the pipelines file is loaded, then evaluated per event. No eval:
a predicate is one comparison on one data field, or an `any`/`all`/`not` combination.

Design notes: docs/design-notes.md.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from realtime.core import jsoncodec

Predicate = Callable[[Mapping[str, Any]], bool]
Path = tuple[str, ...]

MISSING: Any = object()
MAX_DEPTH = 8
MAX_ITEMS = 64

PATH_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_PATH_RE = re.compile(PATH_PATTERN)
_COMPARE_RE = re.compile(rf"\s*({PATH_PATTERN})\s*(==|!=|<=|>=|<|>)\s*(.+?)\s*")
_MEMBER_RE = re.compile(rf"\s*({PATH_PATTERN})\s+(not\s+in|in)\s+(.+?)\s*")
_PRESENCE_RE = re.compile(rf"\s*({PATH_PATTERN})\s+(exists|missing)\s*")

_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


class PredicateError(ValueError):
    """The predicate cannot be parsed; the message says why and shows the syntax."""


def parse_path(text: str) -> Path:
    if not _PATH_RE.fullmatch(text):
        raise PredicateError(f"{text!r} is not a field path (letters, digits, '_', dots)")
    return tuple(text.split("."))


def get_path(data: Mapping[str, Any], path: Path) -> Any:
    """data[path[0]][path[1]]..., or MISSING."""
    current: Any = data
    for part in path:
        if not isinstance(current, dict):
            return MISSING
        current = current.get(part, MISSING)
        if current is MISSING:
            return MISSING
    return current


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def typed_equal(a: object, b: object) -> bool:
    """JSON equality: 1 == 1.0, but true != 1 and "1" != 1."""
    if _is_number(a) and _is_number(b):
        return a == b
    return type(a) is type(b) and a == b


def _literal(text: str) -> Any:
    try:
        return jsoncodec.loads(text)
    except jsoncodec.JSONDecodeError:
        raise PredicateError(
            f'{text!r} is not a JSON literal (numbers, "strings" in double quotes, '
            "true, false, null)"
        ) from None


def _scalar(value: object) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _compare(path: Path, op: str, literal: Any) -> Predicate:
    if not _scalar(literal):
        raise PredicateError(f"compare with a number, string, true, false or null, not {literal!r}")
    if op in ("==", "!="):
        want = op == "=="

        def equality(data: Mapping[str, Any]) -> bool:
            value = get_path(data, path)
            return value is not MISSING and typed_equal(value, literal) == want

        return equality
    if not (_is_number(literal) or isinstance(literal, str)):
        raise PredicateError(f"{op} needs a number or a string, not {literal!r}")
    compare = _ORDER[op]
    numeric = _is_number(literal)

    def ordering(data: Mapping[str, Any]) -> bool:
        value = get_path(data, path)
        if numeric:
            return _is_number(value) and bool(compare(value, literal))
        return isinstance(value, str) and bool(compare(value, literal))

    return ordering


def _member(path: Path, negate: bool, literal: Any) -> Predicate:
    if not isinstance(literal, list) or not all(_scalar(v) for v in literal):
        raise PredicateError('in/not in need a JSON list of literals, e.g. ["eu", "us"]')
    if len(literal) > MAX_ITEMS:
        raise PredicateError(f"at most {MAX_ITEMS} items in a list")
    items = tuple(literal)

    def membership(data: Mapping[str, Any]) -> bool:
        value = get_path(data, path)
        if value is MISSING:
            return False
        return any(typed_equal(value, item) for item in items) != negate

    return membership


def _presence(path: Path, exists: bool) -> Predicate:
    def presence(data: Mapping[str, Any]) -> bool:
        return (get_path(data, path) is not MISSING) == exists

    return presence


def _parse_text(text: str) -> Predicate:
    match = _PRESENCE_RE.fullmatch(text)
    if match:
        return _presence(parse_path(match[1]), match[2] == "exists")
    match = _MEMBER_RE.fullmatch(text)
    if match:
        return _member(parse_path(match[1]), match[2] != "in", _literal(match[3]))
    match = _COMPARE_RE.fullmatch(text)
    if match:
        return _compare(parse_path(match[1]), match[2], _literal(match[3]))
    raise PredicateError(
        f"cannot parse {text!r}: write FIELD OP VALUE (OP one of == != < <= > >=), "
        "FIELD in [...], FIELD not in [...], FIELD exists or FIELD missing"
    )


def parse(spec: object, depth: int = 0) -> Predicate:
    """A predicate from its config form (a string or an any/all/not mapping)."""
    if depth > MAX_DEPTH:
        raise PredicateError(f"predicates nest at most {MAX_DEPTH} deep")
    if isinstance(spec, str):
        return _parse_text(spec)
    if isinstance(spec, Mapping) and len(spec) == 1:
        ((key, value),) = spec.items()
        if key == "not":
            inner = parse(value, depth + 1)
            return lambda data: not inner(data)
        if key in ("any", "all"):
            if not isinstance(value, list) or not value:
                raise PredicateError(f"{key} needs a non-empty list of predicates")
            if len(value) > MAX_ITEMS:
                raise PredicateError(f"at most {MAX_ITEMS} predicates in {key}")
            parts = tuple(parse(v, depth + 1) for v in value)
            if key == "any":
                return lambda data: any(p(data) for p in parts)
            return lambda data: all(p(data) for p in parts)
    raise PredicateError(
        'a predicate is a string such as "value < 0", or a mapping with one key: '
        "any: [...], all: [...] or not: ..."
    )
