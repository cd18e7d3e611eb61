"""Frappe's list filters, fields, ordering and paging, as `frappe.get_list` reads them.

`filters` is JSON: a list of `[field, op, value]` (or `[doctype, field, op, value]`), or an
object `{field: value}` / `{field: [op, value]}`. Operators: `=`, `!=`, `>`, `<`, `>=`, `<=`,
`like`, `not like` (`%` and `_` wildcards), `in`, `not in` (a list or a comma-separated
string), `is` (`set` / `not set`), `between` (`[low, high]`). Values compare as Frappe's SQL
does for the columns the simulator holds: numbers as numbers, anything else as text, so
datetimes (`2026-12-06 14:05:00.000000`) order by their text.
"""

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from erpnext_simulator.answers import FrappeError

Document = dict[str, Any]
DEFAULT_PAGE_LENGTH = 20
"""`limit_page_length` when none is given: Frappe's REST list pages by 20."""


def parse_filters(text: str | None) -> list[tuple[str, str, Any]]:
    """`[(field, op, value)]` from the query parameter; ValidationError (417) when malformed."""
    if not text:
        return []
    try:
        raw = json.loads(text)
    except ValueError:
        raise FrappeError("ValidationError", "filters must be JSON") from None
    if isinstance(raw, Mapping):
        items: list[Any] = [
            [field, *value] if isinstance(value, list) else [field, "=", value]
            for field, value in raw.items()
        ]
    elif isinstance(raw, list):
        items = raw
    else:
        raise FrappeError("ValidationError", "filters must be a list or an object")
    parsed = []
    for item in items:
        if not isinstance(item, list) or len(item) not in (2, 3, 4):
            raise FrappeError("ValidationError", f"Invalid filter: {item!r}")
        if len(item) == 4:
            item = item[1:]
        if len(item) == 2:
            item = [item[0], "=", item[1]]
        field, op, value = item
        if not isinstance(field, str) or not isinstance(op, str) or op.lower() not in _OPERATORS:
            raise FrappeError("ValidationError", f"Invalid filter: {item!r}")
        parsed.append((field, op.lower(), value))
    return parsed


def matches(document: Mapping[str, Any], filters: Sequence[tuple[str, str, Any]]) -> bool:
    return all(_OPERATORS[op](document.get(field), value) for field, op, value in filters)


def parse_fields(text: str | None) -> list[str]:
    """The `fields` parameter: a JSON list of names, `["*"]` for all; `["name"]` by default."""
    if not text:
        return ["name"]
    try:
        fields = json.loads(text)
    except ValueError:
        raise FrappeError("ValidationError", "fields must be a JSON list") from None
    if not isinstance(fields, list) or not all(isinstance(field, str) for field in fields):
        raise FrappeError("ValidationError", "fields must be a JSON list of field names")
    return fields


def project(document: Mapping[str, Any], fields: Sequence[str]) -> Document:
    if "*" in fields:
        return {key: value for key, value in document.items() if not isinstance(value, list)}
    return {field: document.get(field) for field in fields}


def ordered(documents: list[Document], order_by: str | None) -> list[Document]:
    """`order_by` as `field [asc|desc]`, comma-separated; `modified desc` by default."""
    keys = [part.split() for part in (order_by or "modified desc").split(",") if part.strip()]
    for words in reversed(keys):
        field = words[0].strip("`").split(".")[-1].strip("`")
        descending = len(words) > 1 and words[1].lower() == "desc"
        documents = sorted(documents, key=_by(field), reverse=descending)
    return documents


def _by(field: str) -> Callable[[Document], tuple[int, Any]]:
    return lambda document: _sortable(document.get(field))


def page(documents: list[Document], query: Mapping[str, str]) -> list[Document]:
    start = _int(query.get("limit_start"), "limit_start", 0)
    length = _int(
        query.get("limit_page_length", query.get("limit")), "limit_page_length", DEFAULT_PAGE_LENGTH
    )
    return documents[start : start + length] if length else documents[start:]


def _int(text: str | None, name: str, default: int) -> int:
    if text is None or text == "":
        return default
    if not text.isdigit():
        raise FrappeError("ValidationError", f"{name} must be a whole number")
    return int(text)


def _sortable(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, str(value))


def _compare(left: Any, right: Any) -> tuple[Any, Any] | None:
    if left is None:
        return None
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return left, right
    return str(left), str(right)


def _like(value: Any, pattern: Any) -> bool:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in str(pattern))
    return value is not None and re.fullmatch(regex, str(value), re.IGNORECASE | re.DOTALL) is not None


def _members(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value or [])
    return [str(item).strip() for item in items]


def _ordering(test: Any) -> Any:
    def check(left: Any, right: Any) -> bool:
        pair = _compare(left, right)
        return pair is not None and bool(test(*pair))

    return check


def _is(value: Any, wanted: Any) -> bool:
    is_set = value not in (None, "")
    return is_set if str(wanted).lower() == "set" else not is_set


def _between(value: Any, bounds: Any) -> bool:
    low, high = bounds
    return bool(_ordering(lambda a, b: a >= b)(value, low)) and bool(
        _ordering(lambda a, b: a <= b)(value, high)
    )


def _equal(value: Any, wanted: Any) -> bool:
    pair = _compare(value, wanted)
    return pair is not None and pair[0] == pair[1]


_OPERATORS: dict[str, Any] = {
    "=": _equal,
    "!=": lambda value, wanted: not _equal(value, wanted),
    ">": _ordering(lambda a, b: a > b),
    "<": _ordering(lambda a, b: a < b),
    ">=": _ordering(lambda a, b: a >= b),
    "<=": _ordering(lambda a, b: a <= b),
    "like": _like,
    "not like": lambda value, pattern: not _like(value, pattern),
    "in": lambda value, wanted: value is not None and str(value) in _members(wanted),
    "not in": lambda value, wanted: value is None or str(value) not in _members(wanted),
    "is": _is,
    "between": _between,
}
