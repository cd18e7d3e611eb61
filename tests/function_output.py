"""What the relay's functions write while they run in this process: stdout and stderr lines
(Powertools JSON logs and EMF metric documents) and Python logging records.

The functions run on the local API's and the queue consumer's threads. Their prints reach
pytest's `capsys` (sys.stdout is one for all threads), but the Powertools Logger's handler
holds the stdout it found at import, so it is pointed at whatever sys.stdout is when it
writes. Logging records are collected by a handler on the root logger.

Each function invocation runs alone, as in a Lambda execution environment: Powertools keeps
one metric set per process, and handlers running at once on several threads would flush each
other's metrics (or trip over the shared dict). Reading the output takes the same gate, so no
line is lost half-written.
"""

import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from relay.observability import logger, metrics
from relay_local.lambda_context import LambdaFunction

SERVICE = "invoice-relay"


@dataclass(frozen=True)
class EmittedMetric:
    """One metric of one EMF document, with the dimensions it was published under."""

    namespace: str
    name: str
    unit: str
    dimensions: dict[str, str]
    values: tuple[float, ...]


class _CurrentStdout:
    """Writes to sys.stdout as it is at the time of writing, not as it was at import."""

    encoding = "utf-8"

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class FunctionOutput:
    def __init__(self, capsys: pytest.CaptureFixture[str], gate: threading.Lock, records: _Records) -> None:
        self._capsys = capsys
        self._gate = gate
        self._records = records
        self._stdout: list[str] = []
        self._stderr: list[str] = []

    @classmethod
    @contextmanager
    def capture(
        cls, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> Iterator["FunctionOutput"]:
        gate = threading.Lock()
        invoke: Callable[[LambdaFunction, dict[str, Any]], Any] = LambdaFunction.invoke

        def alone(function: LambdaFunction, event: dict[str, Any]) -> Any:
            with gate:
                return invoke(function, event)

        monkeypatch.setattr(LambdaFunction, "invoke", alone)
        handler = logger.registered_handler
        assert isinstance(handler, logging.StreamHandler)
        records = _Records()
        metrics.clear_metrics()  # nothing a previous test left unflushed
        previous_stream = handler.setStream(_CurrentStdout())  # type: ignore[arg-type]
        logging.getLogger().addHandler(records)
        try:
            yield cls(capsys, gate, records)
        finally:
            logging.getLogger().removeHandler(records)
            if previous_stream is not None:
                handler.setStream(previous_stream)

    def _read(self) -> tuple[str, str]:
        with self._gate:
            captured = self._capsys.readouterr()
        self._stdout.append(captured.out)
        self._stderr.append(captured.err)
        return "".join(self._stdout), "".join(self._stderr)

    # -- log lines ------------------------------------------------------------------------

    def lines(self) -> list[str]:
        """Every stdout and stderr line, and every logging record rendered with all it holds."""
        out, err = self._read()
        text = out + "\n" + err
        rendered = [_render(record) for record in self._records.records]
        return [line for line in text.splitlines() if line.strip()] + rendered

    def json_logs(self) -> list[dict[str, Any]]:
        """The Powertools Logger's JSON lines (not the EMF documents)."""
        return [document for document in self._documents() if "_aws" not in document and "level" in document]

    # -- metrics --------------------------------------------------------------------------

    def metrics(self) -> list[EmittedMetric]:
        found: list[EmittedMetric] = []
        for document in self._documents():
            if "_aws" not in document:
                continue
            for directive in document["_aws"]["CloudWatchMetrics"]:
                for dimension_set in directive["Dimensions"]:
                    dimensions = {name: str(document[name]) for name in dimension_set}
                    for metric in directive["Metrics"]:
                        raw = document[metric["Name"]]
                        values = tuple(float(v) for v in (raw if isinstance(raw, list) else [raw]))
                        found.append(
                            EmittedMetric(
                                directive["Namespace"], metric["Name"], metric["Unit"], dimensions, values
                            )
                        )
        return found

    def named(self, name: str) -> list[EmittedMetric]:
        return [metric for metric in self.metrics() if metric.name == name]

    def total(self, name: str, **dimensions: str) -> float:
        """The sum of `name` published under exactly {service, **dimensions}."""
        wanted = {"service": SERVICE, **dimensions}
        return sum(sum(metric.values) for metric in self.named(name) if metric.dimensions == wanted)

    def values(self, name: str, **dimensions: str) -> list[float]:
        wanted = {"service": SERVICE, **dimensions}
        return [
            value for metric in self.named(name) if metric.dimensions == wanted for value in metric.values
        ]

    def names(self) -> set[str]:
        return {metric.name for metric in self.metrics()}

    def _documents(self) -> Iterator[dict[str, Any]]:
        for line in self._read()[0].splitlines():
            if not line.startswith("{"):
                continue
            try:
                document = json.loads(line)
            except ValueError:
                continue
            if isinstance(document, dict):
                yield document


def _render(record: logging.LogRecord) -> str:
    text = f"{record.name} {record.levelname} {record.getMessage()} {record.__dict__!r}"
    if record.exc_info:
        text += "\n" + logging.Formatter().formatException(record.exc_info)
    return text
