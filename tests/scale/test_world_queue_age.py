"""The world's queue reports its age as SQS's ApproximateAgeOfOldestMessage does (AWS, "Available
CloudWatch metrics for Amazon SQS"): the oldest message not deleted, in flight or not, counted
from its send; a message received three times or more is moved to the back and no longer counted.
The reconciler's backlog rule (relay.domain.reconcile) is built on exactly that."""

from factories import invoice
from relay.domain.messages import QueuedInvoice
from world.clock import Latencies, WorldClock
from world.sqs import WorldQueue


def queue() -> WorldQueue:
    return WorldQueue(
        WorldClock(), Latencies(1), visibility_timeout=30, max_receive_count=8, retention_seconds=345_600
    )


def message(order_id: str) -> QueuedInvoice:
    item = invoice(order_id)
    return QueuedInvoice(invoice=item, content_hash=item.content_hash(), accepted_at=0.0)


def test_the_age_counts_a_message_in_flight_and_skips_one_received_three_times() -> None:
    # Given a message, received once (in flight) and then a second time
    world = queue()
    world.send([message("FIRST")])
    first_sent = world.clock.now
    for _ in range(2):
        (delivery,) = world.receive(1)
        assert delivery.message.invoice.orderId == "FIRST"
        world.clock.now += 31
    # And a second message sent later, once the first is visible again
    assert world.visible() == 1
    world.send([message("SECOND")])
    second_sent = world.clock.now
    # Then the first, received twice, is the oldest, in flight or not
    assert world.oldest_sent_at() == first_sent
    (delivery,) = world.receive(1)
    assert (delivery.message.invoice.orderId, delivery.receive_count) == ("FIRST", 3)
    # When it has been received a third time without being deleted, Then the age points at the
    # next message, received fewer times, whether the first is in flight or waiting at the back
    assert world.oldest_sent_at() == second_sent
    world.clock.now += 31
    assert world.visible() == 2
    assert world.oldest_sent_at() == second_sent
