"""What an ERP's duplicate of a QUEUED invoice puts on the queue: nothing, unless its sender
may not have heard the 202: the same delivery again (its webhook-id), or an entry whose send
failed (marked). What neither covers waits for the reconciler. Over the port fakes
(tests/fakes.py)."""

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from factories import invoice
from fakes import Crash, World
from relay.domain.errors import LedgerUnavailableError, QueueUnavailableError
from relay.domain.intake import Action, InvoiceAcceptance
from relay.domain.ledger import InvoiceStatus
from relay.observability import logger


@pytest.fixture
def world() -> World:
    return World()


def test_duplicates_of_a_queued_invoice_add_nothing_to_the_queue(world: World) -> None:
    # Given an invoice accepted and waiting in the queue
    world.accept(invoice("A"))
    # When the ERP sends it three more times before it is dispatched, each a new webhook
    answers = [world.accept(invoice("A"), correlation_id=f"wh-dup-{n}") for n in range(3)]
    # Then each copy is answered with its state, and the queue still holds one message
    assert {(admission.action, admission.status) for (admission,) in answers} == {
        (Action.ANSWER, InvoiceStatus.QUEUED)
    }
    assert len(world.queue.messages) == 1
    # And it reaches Fynd once
    world.drain()
    assert world.fynd.sent[invoice("A").key] == 1


def test_the_same_delivery_resent_after_ingest_died_queues_the_invoice_again(world: World) -> None:
    # Given ingest died between the ledger write and the queue send: QUEUED, no message, no mark
    world.faults.fail("queue.send", Crash())
    with pytest.raises(Crash):
        world.accept(invoice("A"), correlation_id="wh-1")
    assert (world.ledger.entries[invoice("A").key].send_failed_at, world.queue.messages) == (None, {})
    # When the sender, which never heard an answer, resends the same delivery (same webhook-id)
    (admission,) = world.accept(invoice("A"), correlation_id="wh-1")
    # Then it is queued again, and reaches Fynd once
    assert admission.action is Action.REQUEUE
    world.drain()
    assert world.status(invoice("A").key) is InvoiceStatus.INVOICED
    assert world.fynd.sent[invoice("A").key] == 1


def test_an_erp_retry_after_a_failed_send_queues_the_invoice_and_fynd_sees_it_once(world: World) -> None:
    # Given SQS refuses the first send: the sender hears 503, and the entry stays QUEUED, marked
    world.faults.fail("queue.send", QueueUnavailableError("1 invoice(s) could not be queued"))
    with pytest.raises(QueueUnavailableError):
        world.accept(invoice("A"))
    entry = world.ledger.entries[invoice("A").key]
    assert (entry.status, entry.send_failed_at) == (InvoiceStatus.QUEUED, world.clock.now)
    assert world.queue.messages == {}
    # When the ERP retries, with a new webhook-id
    (admission,) = world.accept(invoice("A"), correlation_id="wh-retry")
    # Then the retry queues it
    assert admission.action is Action.REQUEUE
    assert len(world.queue.messages) == 1
    # And once dispatched, Fynd saw it once and the claim cleared the mark
    world.drain()
    final = world.ledger.entries[invoice("A").key]
    assert (final.status, final.send_failed_at) == (InvoiceStatus.INVOICED, None)
    assert world.fynd.sent[invoice("A").key] == 1


def test_only_the_invoices_sqs_did_not_take_are_marked(world: World) -> None:
    # Given SQS takes A but not B
    world.faults.fail(
        "queue.send", QueueUnavailableError("1 invoice(s) could not be queued", [invoice("B").key])
    )
    # When a webhook of both is accepted
    with pytest.raises(QueueUnavailableError):
        world.accept(invoice("A"), invoice("B"))
    # Then only B is marked, so a retry queues B again and answers A
    assert world.ledger.entries[invoice("A").key].send_failed_at is None
    assert world.ledger.entries[invoice("B").key].send_failed_at is not None
    retried = world.accept(invoice("A"), invoice("B"), correlation_id="wh-retry")
    actions = [admission.action for admission in retried]
    assert actions == [Action.ANSWER, Action.REQUEUE]


def test_a_mark_the_ledger_refuses_still_answers_the_send_failure_and_the_reconciler_heals(
    world: World,
) -> None:
    # Given SQS refuses the send and the ledger refuses the mark
    world.faults.fail("queue.send", QueueUnavailableError("1 invoice(s) could not be queued"))
    world.faults.fail("ledger.mark_send_failed", LedgerUnavailableError("throttled"))
    # When the webhook is accepted
    # Then the sender hears of the queue's failure (503), not the ledger's
    with pytest.raises(QueueUnavailableError):
        world.accept(invoice("A"))
    # And the unmarked entry's retry under a new webhook-id queues nothing
    (admission,) = world.accept(invoice("A"), correlation_id="wh-retry")
    assert (admission.action, world.queue.messages) == (Action.ANSWER, {})
    # And the reconciler queues it once it has made no progress for its window
    world.clock.advance(901)
    assert world.reconcile().requeued == {"QUEUED": [str(invoice("A").key)]}
    world.drain()
    assert world.status(invoice("A").key) is InvoiceStatus.INVOICED
    assert world.fynd.sent[invoice("A").key] == 1


def test_a_failed_send_with_too_little_time_left_writes_no_mark(world: World) -> None:
    # Given ingest's clock: time enough for the writes and the send, and then less than one write
    left = iter([10.0, 1.0])
    acceptance = InvoiceAcceptance(
        ledger=world.ledger, queue=world.queue, clock=world.clock, reserve_seconds=5.7, mark_seconds=1.9
    )
    world.faults.fail("queue.send", QueueUnavailableError("1 invoice(s) could not be queued"))
    # When the send fails
    with pytest.raises(QueueUnavailableError):
        acceptance.accept([invoice("A")], correlation_id="wh-1", seconds_left=lambda: next(left))
    # Then no mark was written: the function answers before its timeout, and the reconciler heals
    assert world.ledger.entries[invoice("A").key].send_failed_at is None
    assert world.ledger.writes["mark_send_failed"] == 0


def test_a_failed_send_with_just_the_time_for_one_write_left_still_marks(world: World) -> None:
    # Given ingest's clock: after the send, exactly the time one mark needs
    left = iter([10.0, 1.9])
    acceptance = InvoiceAcceptance(
        ledger=world.ledger, queue=world.queue, clock=world.clock, reserve_seconds=5.7, mark_seconds=1.9
    )
    world.faults.fail("queue.send", QueueUnavailableError("1 invoice(s) could not be queued"))
    # When the send fails
    with pytest.raises(QueueUnavailableError):
        acceptance.accept([invoice("A")], correlation_id="wh-1", seconds_left=lambda: next(left))
    # Then the entry is marked, so the sender's retry queues it
    assert world.ledger.entries[invoice("A").key].send_failed_at == world.clock.now


@pytest.fixture
def warnings() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The relay's log lines at WARNING and above so far, as the JSON documents CloudWatch receives."""
    stream = io.StringIO()
    handler = logger.registered_handler
    # Swapped, not setStream: that flushes the stream it replaces, which a runner may have closed.
    previous, handler.stream = handler.stream, stream  # type: ignore[attr-defined]

    def lines() -> list[dict[str, Any]]:
        documents = [json.loads(line) for line in stream.getvalue().splitlines() if line]
        return [document for document in documents if document.get("level") in ("WARNING", "ERROR")]

    yield lines
    handler.stream = previous  # type: ignore[attr-defined]


UNMARKED = "invoices not queued nor marked for the sender's retry; the reconciler will queue them"


def test_the_invoices_a_failed_send_left_unmarked_are_named_for_the_operator(
    world: World, warnings: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given SQS refuses A, B and C, and the ledger refuses the second mark
    world.faults.fail("queue.send", QueueUnavailableError("3 invoice(s) could not be queued"))
    world.faults.fail("ledger.mark_send_failed", LedgerUnavailableError("throttled"), nth=2)
    # When the webhook is accepted
    with pytest.raises(QueueUnavailableError):
        world.accept(invoice("A"), invoice("B"), invoice("C"))
    # Then A is marked, and one warning names B and C, which only the reconciler will queue
    assert world.ledger.entries[invoice("A").key].send_failed_at is not None
    unmarked = [doc for doc in warnings() if doc["message"] == UNMARKED]
    assert [doc["invoice_keys"] for doc in unmarked] == [[str(invoice("B").key), str(invoice("C").key)]]


def test_a_failed_send_whose_every_invoice_is_marked_warns_of_nothing_unmarked(
    world: World, warnings: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given SQS refuses A and B, and the ledger takes both marks
    world.faults.fail("queue.send", QueueUnavailableError("2 invoice(s) could not be queued"))
    # When the webhook is accepted
    with pytest.raises(QueueUnavailableError):
        world.accept(invoice("A"), invoice("B"))
    # Then no warning says an invoice waits for the reconciler: the sender's retry queues both
    assert [doc for doc in warnings() if doc["message"] == UNMARKED] == []
