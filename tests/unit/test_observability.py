"""Metrics and log lines written from the dispatcher's worker threads reach stdout (CloudWatch)
as whole lines: one JSON document each, no count lost."""

import io
import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout
from typing import Any

import pytest

from relay.observability import count, logger, metrics

THREADS = 4
ROUNDS = 60  # past Powertools' 100 values per metric, so it also prints a set early


class YieldingStdout(io.TextIOBase):
    """A stdout that hands the GIL to another thread after every write, as a slow pipe would."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.parts.append(text)
        time.sleep(0.0001)
        return len(text)

    def documents(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in "".join(self.parts).splitlines() if line]


@pytest.fixture
def stdout() -> Iterator[YieldingStdout]:
    """The stream the Logger writes to; the test body points sys.stdout (pytest's own
    between phases) at it too."""
    stream = YieldingStdout()
    previous = logger.registered_handler.setStream(stream)  # type: ignore[attr-defined]
    metrics.clear_metrics()
    yield stream
    metrics.clear_metrics()
    logger.registered_handler.setStream(previous)  # type: ignore[attr-defined]


def test_metrics_and_logs_from_worker_threads_arrive_as_whole_lines_and_none_is_lost(
    stdout: YieldingStdout,
) -> None:
    # Given worker threads that count with and without a dimension, and log, all at once
    def work(worker: int) -> None:
        for _ in range(ROUNDS):
            count("Retries", reason="IN403")
            count("InvoicesInvoiced")
            logger.info("invoice accepted by Fynd", extra={"worker": worker})

    with redirect_stdout(stdout), ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(work, range(THREADS)))
        metrics.flush_metrics()

    # Then every line on stdout is one JSON document
    documents = stdout.documents()
    # And every count arrived, in the documents CloudWatch reads
    totals: Counter[str] = Counter()
    for document in documents:
        for directive in document.get("_aws", {}).get("CloudWatchMetrics", []):
            for metric in directive["Metrics"]:
                value = document[metric["Name"]]
                totals[metric["Name"]] += sum(value) if isinstance(value, list) else value
    assert totals == {"Retries": THREADS * ROUNDS, "InvoicesInvoiced": THREADS * ROUNDS}
    assert (
        sum(document.get("message") == "invoice accepted by Fynd" for document in documents)
        == THREADS * ROUNDS
    )
