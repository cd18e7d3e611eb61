"""Breach 11, part 1: ingest's AWS calls and resends fit inside IngestFunction's timeout."""

import threading
from typing import Any

import pytest

from factories import invoice
from fakes import FakeClock, InMemoryLedger, RecordingQueue
from ingest_harness import queued_bodies
from relay.domain.errors import QueueUnavailableError
from relay.domain.messages import QueuedInvoice
from relay_local.stack import load_template


def ingest_timeout() -> float:
    return float(load_template()["Resources"]["IngestFunction"]["Properties"]["Timeout"])


def test_ingest_worst_case_fits_the_template_timeout() -> None:
    from relay import wiring

    # Given ingest's AWS client configuration, as wiring builds it
    config = wiring._INGEST_AWS_CONFIG
    attempt = config.connect_timeout + config.read_timeout
    # Then each call is one attempt (no botocore retries), bounded by connect + read
    assert config.retries == {"mode": "standard", "total_max_attempts": 1}
    assert attempt == wiring.INGEST_ATTEMPT_SECONDS
    # And the writes and the whole send reserve what their calls can take at worst
    send = (
        wiring.INGEST_SEND_ATTEMPTS * attempt
        + (wiring.INGEST_SEND_ATTEMPTS - 1) * wiring.INGEST_SEND_PAUSE_SECONDS
    )
    from relay.adapters.ledger import TRANSACTION_LIMIT
    from relay.domain.webhook import MAX_INVOICES_PER_WEBHOOK

    # (a webhook's bodies and states fit two transactions: bodies ahead, then the states)
    assert 2 * MAX_INVOICES_PER_WEBHOOK <= 2 * TRANSACTION_LIMIT
    assert wiring.INGEST_LEDGER_WRITES == 2
    assert 2 * attempt + send == wiring.INGEST_WRITE_RESERVE_SECONDS
    # And the worst POST (secret and ledger reads, writes and send, the answer margin) ends in time
    worst = attempt + attempt + wiring.INGEST_WRITE_RESERVE_SECONDS + wiring.INGEST_ANSWER_MARGIN_SECONDS
    assert worst == wiring.ingest_worst_case_seconds()
    assert worst <= ingest_timeout()


class SlowSqs:
    """SendMessageBatch that takes `seconds` of the fake clock and fails every entry (or none).
    The `batches` calls SqsInvoiceQueue makes at once all start before the clock moves, as they
    would in real time; then each ends `seconds` after it started."""

    def __init__(self, clock: "FakeMonotonic", seconds: float, *, batches: int, failing: bool = True) -> None:
        self.clock = clock
        self.seconds = seconds
        self.failing = failing
        self.calls = 0
        self.lock = threading.Lock()
        self.together = threading.Barrier(batches)

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        started = self.clock.now
        self.together.wait(timeout=10)
        with self.lock:
            self.calls += 1
            self.clock.now = max(self.clock.now, started + self.seconds)
        if not self.failing:
            return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}
        return {"Successful": [], "Failed": [{"Id": e["Id"], "Code": "InternalError"} for e in Entries]}


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def messages(count: int) -> list[QueuedInvoice]:
    return [
        QueuedInvoice(invoice=invoice(f"O-{n}"), content_hash=f"h{n}", accepted_at=0.0) for n in range(count)
    ]


def budgeted_queue(sqs: SlowSqs, clock: FakeMonotonic) -> Any:
    from relay import wiring
    from relay.adapters.queue import SqsInvoiceQueue

    return SqsInvoiceQueue(
        "url",
        sqs,  # type: ignore[arg-type]
        pause=wiring.INGEST_SEND_PAUSE_SECONDS,
        budget_seconds=wiring.INGEST_SEND_BUDGET_SECONDS,
        attempt_seconds=wiring.INGEST_ATTEMPT_SECONDS,
        clock=clock,
        sleep=clock.sleep,
    )


@pytest.mark.parametrize("count", [1, 25, 100])
def test_breach_11_the_queue_send_ends_within_its_budget(count: int) -> None:
    from relay import wiring

    # Given SQS taking the longest an attempt may take, and refusing everything
    clock = FakeMonotonic()
    sqs = SlowSqs(clock, wiring.INGEST_ATTEMPT_SECONDS, batches=-(-count // 10))
    # When ingest sends `count` messages
    with pytest.raises(QueueUnavailableError, match=f"{count} invoice"):
        budgeted_queue(sqs, clock).send(messages(count))
    # Then it gives up within the budget, after as many attempts per batch as fit in it
    assert clock.now <= wiring.INGEST_SEND_BUDGET_SECONDS
    assert sqs.calls == -(-count // 10) * wiring.INGEST_SEND_ATTEMPTS


def test_breach_11_a_full_webhook_is_queued_in_one_attempts_time() -> None:
    from relay import wiring

    # Given SQS as slow as an attempt may be, taking everything
    clock = FakeMonotonic()
    sqs = SlowSqs(clock, wiring.INGEST_ATTEMPT_SECONDS, batches=10, failing=False)
    # When the 100 messages of a full webhook are sent
    budgeted_queue(sqs, clock).send(messages(100))
    # Then all ten batches went at once, within the budget
    assert (sqs.calls, clock.now <= wiring.INGEST_SEND_BUDGET_SECONDS) == (10, True)


def test_breach_11_no_ledger_write_without_the_time_to_queue_after_it() -> None:
    from relay import wiring
    from relay.domain.intake import AcceptanceOutOfTime, InvoiceAcceptance

    clock = FakeClock()
    ledger, queue = InMemoryLedger(clock), RecordingQueue(clock)
    acceptance = InvoiceAcceptance(
        ledger=ledger, queue=queue, clock=clock, reserve_seconds=wiring.INGEST_WRITE_RESERVE_SECONDS
    )
    # Given less time left than a round can take at worst
    left = wiring.INGEST_WRITE_RESERVE_SECONDS - 0.01
    # When an invoice is accepted, Then nothing is written and the sender hears 503 (retry)
    with pytest.raises(AcceptanceOutOfTime) as refused:
        acceptance.accept([invoice()], correlation_id="wh", seconds_left=lambda: left)
    assert (ledger.entries, queued_bodies(queue)) == ({}, [])
    # And ingest's error log (the exception it logs) says why
    assert str(refused.value) == "too little time left to record and queue these invoices"


def test_a_round_with_time_enough_writes_and_queues() -> None:
    from relay import wiring
    from relay.domain.intake import InvoiceAcceptance

    clock = FakeClock()
    ledger, queue = InMemoryLedger(clock), RecordingQueue(clock)
    acceptance = InvoiceAcceptance(
        ledger=ledger, queue=queue, clock=clock, reserve_seconds=wiring.INGEST_WRITE_RESERVE_SECONDS
    )
    acceptance.accept(
        [invoice()], correlation_id="wh", seconds_left=lambda: wiring.INGEST_WRITE_RESERVE_SECONDS
    )
    assert (len(ledger.entries), len(queued_bodies(queue))) == (1, 1)


def test_batches_are_bounded_by_bytes_as_well_as_by_ten() -> None:
    from relay.adapters.queue import _batches
    from relay.domain.messages import MAX_MESSAGE_BYTES

    # Given messages of about 100 KB each
    big = [
        QueuedInvoice(
            invoice=invoice(f"O-{n}", packages=[{"blob": "x" * 100_000}]), content_hash="h", accepted_at=0.0
        )
        for n in range(5)
    ]
    # Then no batch holds more than one SQS request may carry
    batches = _batches(big)
    assert all(sum(m.queued_bytes() for m in batch) <= MAX_MESSAGE_BYTES for batch in batches)
    assert [len(batch) for batch in batches] == [2, 2, 1]


class QuickSqs:
    """SendMessageBatch that takes every entry at once."""

    def __init__(self) -> None:
        self.sent = 0

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.sent += len(Entries)
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


@pytest.mark.parametrize("count", [1, 10, 100])
def test_a_budgeted_send_on_the_real_clock_queues_everything(count: int) -> None:
    from relay import wiring
    from relay.adapters.queue import SqsInvoiceQueue

    # Given ingest's budget exactly one attempt long, on the real (always advancing) clock
    sqs = QuickSqs()
    queue = SqsInvoiceQueue(
        "url",
        sqs,  # type: ignore[arg-type]
        budget_seconds=wiring.INGEST_SEND_BUDGET_SECONDS,
        attempt_seconds=wiring.INGEST_ATTEMPT_SECONDS,
    )
    # When messages are sent, Then every one is taken: the first attempt is never skipped
    queue.send(messages(count))
    assert sqs.sent == count


def test_acceptance_built_without_reserves_writes_and_marks_however_little_time_is_left() -> None:
    from relay.domain.intake import InvoiceAcceptance

    # Given acceptance built with no reserve for its writes nor for a mark (the defaults), half a
    # second left, and SQS refusing the send
    clock = FakeClock()
    ledger, queue = InMemoryLedger(clock), RecordingQueue(clock)
    queue.refuse_next(lambda index, message: True)
    acceptance = InvoiceAcceptance(ledger=ledger, queue=queue, clock=clock)
    # When an invoice is accepted
    with pytest.raises(QueueUnavailableError):
        acceptance.accept([invoice()], correlation_id="wh", seconds_left=lambda: 0.5)
    # Then it was recorded, and marked for the sender's retry: no time check held either back
    assert ledger.entries[invoice().key].send_failed_at == clock.now
