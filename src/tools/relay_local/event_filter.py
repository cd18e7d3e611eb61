"""Lambda's event filtering (an event source mapping's FilterCriteria), for the local event sources.

The EventBridge pattern rules the template's patterns use: a pattern is an object whose
fields the event must have; a nested object descends; a list at a leaf holds the values the
event's value may equal, or matchers: `{"exists": true|false}`, `{"prefix": "..."}`,
`{"anything-but": [...]}`. A field missing from the event matches only `{"exists": false}`.
A record that matches any one pattern is delivered; the others are dropped, never retried,
as Lambda drops them.
"""

from collections.abc import Iterable, Mapping
from typing import Any

_MISSING = object()


def matches_any(patterns: Iterable[Mapping[str, Any]], event: Mapping[str, Any]) -> bool:
    """No patterns: everything is delivered."""
    patterns = list(patterns)
    return not patterns or any(matches(pattern, event) for pattern in patterns)


def matches(pattern: Mapping[str, Any], event: Any) -> bool:
    for name, wanted in pattern.items():
        value = event.get(name, _MISSING) if isinstance(event, Mapping) else _MISSING
        if isinstance(wanted, Mapping):
            if not matches(wanted, value if isinstance(value, Mapping) else {}):
                return False
        elif isinstance(wanted, list):
            if not any(_leaf(rule, value) for rule in wanted):
                return False
        else:
            raise ValueError(f"a filter pattern's leaf is a list, not {wanted!r}")
    return True


def _leaf(rule: Any, value: Any) -> bool:
    if isinstance(rule, Mapping):
        ((kind, argument),) = rule.items()
        if kind == "exists":
            return (value is not _MISSING) is bool(argument)
        if value is _MISSING:
            return False
        if kind == "prefix":
            return isinstance(value, str) and value.startswith(str(argument))
        if kind == "anything-but":
            excluded = argument if isinstance(argument, list) else [argument]
            return value not in excluded
        raise ValueError(f"filter matcher {kind!r} is not emulated locally")
    if isinstance(value, list):
        return rule in value
    return value is not _MISSING and value == rule
