"""The world's event source stops a batch before Lambda's 6 MB invocation payload (AWS, "Using
Lambda with Amazon SQS": a batch holds up to BatchSize records and at most 6 MB), so a backlog of
e-invoices reaches the dispatcher in batches far smaller than `DispatchBatchSize`."""

from factories import invoice
from relay.domain.messages import QueuedInvoice
from world.clock import Latencies, WorldClock
from world.sqs import EVENT_PAYLOAD_BYTES, RECORD_ENVELOPE_BYTES, WorldQueue


def queue() -> WorldQueue:
    return WorldQueue(
        WorldClock(), Latencies(1), visibility_timeout=30, max_receive_count=8, retention_seconds=345_600
    )


def e_invoice(order_id: str) -> QueuedInvoice:
    """An e-invoice's message: a signed invoice of about 4 KB in its body."""
    item = invoice(order_id, signedInvoice="s" * 4_000)
    return QueuedInvoice(invoice=item, content_hash=item.content_hash(), accepted_at=0.0)


def record_bytes(message: QueuedInvoice) -> int:
    """A record's size in the Lambda event: its body JSON-escaped, and the fields around it."""
    body = message.to_body()
    return len(body) + body.count('"') + RECORD_ENVELOPE_BYTES


def test_a_batch_of_e_invoices_stops_before_six_megabytes_and_leaves_the_rest_visible() -> None:
    # Given 2,000 e-invoices waiting: more than 6 MB of records together
    world = queue()
    world.send([e_invoice(f"O-{number}") for number in range(2_000)])

    # When the event source takes a batch of up to 2,000 within the payload
    batch = world.receive(2_000, max_bytes=EVENT_PAYLOAD_BYTES)

    # Then it stops at the payload, not the batch size, and says so: the records fit 6 MB, and
    # the next one would not; the rest stay visible, the next one first
    assert len(batch) < 2_000
    assert world.payload_full
    taken = sum(record_bytes(delivery.message) for delivery in batch)
    (following,) = world.receive(1)
    assert following.message.invoice.orderId == f"O-{len(batch)}"
    assert taken <= EVENT_PAYLOAD_BYTES < taken + record_bytes(following.message)
    assert world.visible() == 2_000 - len(batch) - 1


def test_a_batch_the_size_limit_ends_is_not_payload_full() -> None:
    # Given ten small invoices
    world = queue()
    world.send([e_invoice(f"O-{number}") for number in range(10)])
    # When a batch of up to five is taken within the payload
    batch = world.receive(5, max_bytes=EVENT_PAYLOAD_BYTES)
    # Then the batch size ended it
    assert (len(batch), world.payload_full) == (5, False)
