"""How the `relay` command speaks: Rich tables for people, JSON for scripts, and exit codes.

| exit | meaning |
| --- | --- |
| 0 | done, and the answer is the one asked for |
| 1 | done, but the outcome needs attention: a refused request, an order not found, an invoice not replayed, a smoke test that did not finish, messages left on the dead-letter queue |
| 2 | the command line is wrong or incomplete: no signing secret, no `--endpoint-url`/`--stack` for a command that reads the ledger, no region (relay_cli.target.TargetNotGiven), or it asks for what the relay cannot answer (INVOICED from the index) |
| 3 | the relay could not be reached or found: no API answering, no stack, no AWS credentials |
"""

import json
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from enum import IntEnum
from typing import Any

from rich.console import Console
from rich.table import Table


class Exit(IntEnum):
    OK = 0
    ATTENTION = 1
    USAGE = 2
    UNREACHABLE = 3


EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 done but needs attention (refused, not found, not replayed, not final);"
    " 2 bad usage (incl. no secret or endpoint given); 3 relay or AWS not reachable."
)


def console() -> Console:
    shown = Console(soft_wrap=False)
    # Piped into a file or `less`, a table keeps each value on one line instead of folding at 80.
    return shown if shown.is_terminal else Console(soft_wrap=False, width=max(shown.width, 240))


def errors() -> Console:
    return Console(stderr=True)


def emit_json(document: Any) -> None:
    """One JSON document on stdout, nothing else: safe for `| jq`."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    shown = Table(title=title, title_justify="left")
    for column in columns:
        shown.add_column(column, overflow="fold")
    for row in rows:
        shown.add_row(*("" if value is None else str(value) for value in row))
    return shown


def pairs(title: str, rows: Iterable[Sequence[Any]]) -> Table:
    """A two-column name/value table, without a header row."""
    shown = table(title, ("", ""), rows)
    shown.show_header = False
    return shown


def iso(epoch: float | None) -> str | None:
    if not epoch:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_when(text: str, *, now: datetime, end_of_day: bool = False) -> float:
    """Unix seconds from `30m`/`24h`/`7d` (that long ago), a date (UTC; its end with
    `end_of_day`) or an ISO 8601 date-time (UTC unless it says otherwise)."""
    if match := _RELATIVE.match(text.strip()):
        amount, unit = match.groups()
        return (now - timedelta(**{_UNITS[unit]: int(amount)})).timestamp()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return (start + timedelta(days=1) - timedelta(milliseconds=1) if end_of_day else start).timestamp()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date, a date-time or a duration like 24h") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
