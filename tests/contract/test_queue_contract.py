"""The InvoiceQueue port's contract, the same test bodies against the queue fake and the SQS
adapter on moto (tests/contract/conftest.py), with Lambda's event source on the other side:
what ingest, the dispatcher and the reconciler may rely on whichever queue is behind the port."""

import pytest
from drivers import QueueUnderTest

from factories import invoice
from relay.domain.errors import QueueUnavailableError
from relay.domain.messages import QueuedInvoice


def messages(count: int, prefix: str = "Q") -> list[QueuedInvoice]:
    return [
        QueuedInvoice(
            invoice=invoice(f"{prefix}-{n}"), content_hash=f"h{n}", accepted_at=1.0, correlation_id="wh-1"
        )
        for n in range(count)
    ]


def drain(queue: QueueUnderTest) -> list[QueuedInvoice]:
    """Receive and delete until nothing is visible, as the event source does."""
    received: list[QueuedInvoice] = []
    while batch := queue.receive(10):
        for delivery in batch:
            received.append(delivery.message)
            queue.delete(delivery)
    return received


def test_every_message_sent_is_received_once_as_it_was_sent(queue_under_test: QueueUnderTest) -> None:
    # Given 25 messages: more than one SendMessageBatch holds
    sent = messages(25)
    # When they are sent, then received and deleted until none is visible
    queue_under_test.queue.send(sent)
    received = drain(queue_under_test)
    # Then each came back once, exactly as sent
    assert sorted(received, key=lambda m: m.invoice.orderId) == sorted(sent, key=lambda m: m.invoice.orderId)


def test_a_received_message_stays_hidden_until_its_visibility_is_changed(
    queue_under_test: QueueUnderTest,
) -> None:
    queue_under_test.queue.send(messages(1))
    (first,) = queue_under_test.receive(10)
    assert first.receive_count == 1
    # While it is in flight (the queue's 660 s visibility timeout), nothing is visible
    assert queue_under_test.receive(10) == []
    # When the dispatcher lets it come back at once
    queue_under_test.queue.change_visibility(first.receipt_handle, 0)
    # Then it is delivered again, the same message, counted
    (again,) = queue_under_test.receive(10)
    assert (again.message_id, again.message, again.receive_count) == (first.message_id, first.message, 2)


def test_a_message_sent_for_later_is_not_visible_before_its_delay(queue_under_test: QueueUnderTest) -> None:
    (message,) = messages(1)
    queue_under_test.queue.send_later(message, 600)
    assert queue_under_test.receive(10) == []


def test_a_partial_batch_failure_queues_the_rest_and_names_exactly_the_refused(
    queue_under_test: QueueUnderTest,
) -> None:
    # Given SendMessageBatch refusing the 2nd and 4th entries of the next send, however often sent
    sent = messages(5)
    queue_under_test.refuse_next(lambda index, _: index in (1, 3))
    # When ingest sends the five
    with pytest.raises(QueueUnavailableError) as refused:
        queue_under_test.queue.send(sent)
    # Then the error names exactly those two invoices, and the three others are queued
    assert sorted(refused.value.unsent, key=str) == sorted(
        [sent[1].invoice.key, sent[3].invoice.key], key=str
    )
    received = drain(queue_under_test)
    assert sorted(m.invoice.orderId for m in received) == ["Q-0", "Q-2", "Q-4"]
