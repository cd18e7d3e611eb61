"""The local run's terminal: the functions' logs made readable, and a live status line.

In Lambda, Powertools writes one JSON object per log line to stdout and CloudWatch keeps
it; metrics leave the same way, as Embedded Metric Format (EMF) JSON. On a terminal that
is a wall of JSON. `FunctionOutput` stands in for the functions' stdout and turns each log
object into one short line (time, function, level, message, then the fields that say which
invoice: key, code, correlation id, ...), and swallows EMF lines into a running sum that
is printed once at the end. Anything else passes through untouched, so nothing is lost.
`raw=True` passes everything through, exactly as CloudWatch would receive it.

The function and the correlation id shown come from the invocation running on the writing
thread (relay_local.invocation), not from the JSON: locally both functions share one
Logger, whose keys belong to whichever invocation set them last.

`Console` owns the real stdout. On a TTY the tally is a status line redrawn in place under
the scrolling logs; otherwise (a pipe, a file, a test) it is printed as a line whenever it
changes, so a reader of the log still sees progress.

On a terminal the level of each line is coloured so ERROR (red) and WARNING (yellow) stand
out of a scrolling log; `wants_colour` says when: stdout is a TTY, NO_COLOR (no-color.org)
is unset or empty and TERM is not `dumb`. A pipe or a file gets plain text, never escapes.
"""

from __future__ import annotations

import io
import json
import shutil
import threading
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TextIO

from relay_local.invocation import Invocation, current

_CLEAR_LINE = "\r\x1b[K"
_RESET = "\x1b[0m"
LEVEL_COLOURS: Mapping[str, str] = {
    "CRITICAL": "\x1b[1;31m",
    "ERROR": "\x1b[1;31m",
    "WARNING": "\x1b[1;33m",
    "DEBUG": "\x1b[2m",
}
"""ANSI styles by log level: bold red, bold yellow, dim; INFO stays plain."""
# Keys every Powertools log line carries; they are shown in short form or not at all.
_STANDARD_KEYS = frozenset(
    {
        "level",
        "location",
        "message",
        "timestamp",
        "service",
        "cold_start",
        "function_name",
        "function_memory_size",
        "function_arn",
        "function_request_id",
        "correlation_id",
        "xray_trace_id",
        "sampling_rate",
        "exception",
        "exception_name",
        "stack_trace",
    }
)
_FIRST_KEYS = ("invoice_key", "invoice_keys", "code", "reason", "status")
_MAX_LISTED = 3


class Console:
    """Thread-safe writer of log lines and one status line to the real stdout."""

    def __init__(self, stream: TextIO, *, live: bool, colour: bool = False) -> None:
        self._stream = stream
        self._live = live
        self.colour = colour
        """Colour levels (wants_colour); FunctionOutput reads it for the functions' lines."""
        self._lock = threading.Lock()
        self._status = ""

    def print(self, text: str) -> None:
        """Write lines above the status line."""
        with self._lock:
            if self._live and self._status:
                self._stream.write(_CLEAR_LINE)
            self._stream.write(text if text.endswith("\n") else text + "\n")
            if self._live and self._status:
                self._stream.write(self._status)
            self._stream.flush()

    def warning(self, text: str) -> None:
        """A line of the run's own that must not be missed: in WARNING's colour when coloured."""
        self.print(paint(text, "WARNING") if self.colour else text)

    def status(self, text: str) -> None:
        """Show the tally: redrawn in place on a TTY, else printed when it changed.

        On a TTY the line is cut to the terminal's width: a wrapped line could not be
        cleared by one carriage return, and every redraw would leave a row behind."""
        if self._live:
            text = text[: max(shutil.get_terminal_size().columns - 1, 20)]
        with self._lock:
            if text == self._status:
                return
            self._status = text
            self._stream.write(f"{_CLEAR_LINE}{text}" if self._live else f"{text}\n")
            self._stream.flush()

    def close(self) -> None:
        """End the status line so the shell prompt starts on a line of its own."""
        with self._lock:
            if self._live and self._status:
                self._stream.write("\n")
                self._stream.flush()
            self._status = ""


class FunctionOutput(io.TextIOBase):
    """What the functions see as sys.stdout. Lines are gathered per thread: two batches
    logging at once never interleave inside one line."""

    def __init__(self, console: Console, *, raw: bool = False) -> None:
        super().__init__()
        self._console = console
        self._raw = raw
        self._pending = threading.local()
        self._lock = threading.Lock()
        self.metrics: Counter[str] = Counter()
        """Sum of every Count metric the functions emitted, by metric name."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        pending: str = getattr(self._pending, "text", "") + text
        *lines, self._pending.text = pending.split("\n")
        for line in lines:
            self._route(line, current())
        return len(text)

    def flush(self) -> None:
        """Lines are routed as soon as they end; a partial line waits for its newline."""

    def metrics_summary(self) -> str | None:
        with self._lock:
            if not self.metrics:
                return None
            counts = ", ".join(f"{name} {value:g}" for name, value in sorted(self.metrics.items()))
        return f"metrics (EMF, summed): {counts}"

    def _route(self, line: str, invocation: Invocation | None) -> None:
        document = _json_object(line)
        if document is None or self._raw:
            if line.strip():
                self._console.print(line)
            return
        if "_aws" in document:
            self._add_metrics(document)
        elif "level" in document and "message" in document:
            self._console.print(readable(document, invocation, colour=self._console.colour))
        else:
            self._console.print(line)

    def _add_metrics(self, document: dict[str, Any]) -> None:
        with self._lock:
            for directive in document["_aws"].get("CloudWatchMetrics", []):
                for metric in directive.get("Metrics", []):
                    name = metric.get("Name")
                    if metric.get("Unit") == "Count" and name in document:
                        values = document[name]
                        self.metrics[name] += sum(values) if isinstance(values, list) else values


def wants_colour(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Colour only for a person at a terminal that can show it, and who has not said no."""
    if environ.get("NO_COLOR") or environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def paint(text: str, level: str) -> str:
    """`text` in `level`'s colour (LEVEL_COLOURS); unchanged for a level without one."""
    style = LEVEL_COLOURS.get(level)
    return f"{style}{text}{_RESET}" if style else text


def readable(document: dict[str, Any], invocation: Invocation | None = None, *, colour: bool = False) -> str:
    """One Powertools log object as `time function LEVEL message key=value ... corr=...`.

    With the `invocation` that wrote it, its function and correlation id are taken from
    there; without (a line from outside any invocation), from the document. With `colour`,
    the level and the message are painted in the level's colour (ERROR, WARNING)."""
    if invocation is not None:
        function, correlation_id = invocation.function, invocation.correlation_id
        if correlation_id is None and "invoice_key" in document:
            # The dispatcher names, on each line about an invoice, the webhook that brought it.
            correlation_id = document.get("correlation_id")
    else:
        function = str(document.get("function_name") or document.get("service") or "-")
        correlation_id = document.get("correlation_id")
    function = function.removesuffix("Function").lower()
    level = str(document.get("level", ""))
    shown_level, message = f"{level:<7}", str(document.get("message", ""))
    if colour:
        shown_level, message = paint(shown_level, level), paint(message, level)
    parts = [_clock(str(document.get("timestamp", ""))), f"{function:<8}", shown_level, message]
    extra = [key for key in document if key not in _STANDARD_KEYS]
    ordered = [key for key in _FIRST_KEYS if key in extra] + [key for key in extra if key not in _FIRST_KEYS]
    parts += [f"{key}={_value(document[key])}" for key in ordered]
    if correlation_id:
        parts.append(f"corr={correlation_id}")
    if document.get("exception"):
        parts.append(f"\n    {str(document['exception']).rstrip().replace(chr(10), chr(10) + '    ')}")
    return " ".join(parts)


def _clock(timestamp: str) -> str:
    """Powertools' "2025-01-01 10:00:00,123+0000" as local wall-clock time, to the millisecond."""
    try:
        moment = datetime.strptime(timestamp, "%Y-%m-%d %H:%M:%S,%f%z").astimezone()
    except ValueError:
        return timestamp or "--:--:--.---"
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _value(value: Any) -> str:
    if isinstance(value, list) and len(value) > _MAX_LISTED:
        shown = ",".join(str(item) for item in value[:_MAX_LISTED])
        return f"{shown},+{len(value) - _MAX_LISTED} more"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    text = str(value)
    return json.dumps(text) if " " in text else text


def _json_object(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        document = json.loads(line)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None
