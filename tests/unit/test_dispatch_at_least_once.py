"""No worker acknowledges a message another worker may hold: a copy of a key it lost, or one
whose claim it could not even try.

SQS delivers at least once: the worker that takes an expired lease may have been handed this
very message, and a batch may carry a second delivery of the holder's own message. A standard queue may still delete a message by an older receipt handle ("Amazon
SQS can delete a message from a queue even if a visibility timeout setting causes the message
to be locked by another consumer", DeleteMessage), so the late worker's acknowledgement could
remove the new holder's only message; if that worker then dies, the invoice has no message
until the reconciler runs. Both found by the stateful property test (issue 18).
"""

from collections.abc import Callable
from typing import Any

import pytest

from factories import invoice
from fakes import Crash, World
from relay.domain.errors import LedgerUnavailableError, QueueUnavailableError
from relay.domain.fynd import FyndUnavailable
from relay.domain.ledger import InvoiceStatus
from relay.domain.messages import ReceivedMessage


@pytest.fixture
def world() -> World:
    world = World()
    world.queue.stale_handles_delete = True
    return world


def held_up_while_another_worker_takes_the_same_message(
    world: World, *, killed: bool, others: int = 0
) -> ReceivedMessage:
    """Worker 1 claims and calls Fynd, then stalls before recording; meanwhile its lease runs
    out and SQS hands the same message to worker 2, which claims it and finishes, or dies
    after Fynd answered it, holding the claim. `others`: more copies of the invoice, queued
    behind it (worker 1's batch is its message and these)."""
    world.accept(invoice("A"))
    world.queue_again(*[invoice("A")] * others)
    (mine,) = world.queue.receive(1)

    def take_over() -> None:
        world.clock.advance(world.settings.lease_seconds + 1)
        again = world.queue.redeliver(mine.message_id)
        assert again is not None
        with world.faults.suspended():
            if killed:
                world.faults.fail("ledger.record", Crash())
            try:
                world.dispatch([again], owner="worker-2")
            except Crash:
                world.queue.crash([again])

    world.faults.meanwhile("ledger.record", take_over)
    return mine


def test_a_lost_lease_with_a_final_answer_keeps_the_message_while_the_new_holder_is_unfinished(
    world: World,
) -> None:
    # Given worker 2 holds the invoice with this same message, and died before recording
    mine = held_up_while_another_worker_takes_the_same_message(world, killed=True)
    # When worker 1's final answer meets the lost lease
    world.dispatch([mine], owner="worker-1")
    # Then the invoice keeps a message: worker 1 keeps its own (its old handle could delete the
    # one worker 2 holds), or queues a fresh copy in its place
    assert world.queue.live_keys()[mine.message.invoice.key] >= 1
    # And the invoice ends INVOICED through it, sent to Fynd once
    world.drain()
    assert world.status(mine.message.invoice.key) is InvoiceStatus.INVOICED
    assert world.fynd.applied[mine.message.invoice.key] == 1


def test_a_lost_lease_acknowledges_once_the_new_holder_has_finished(world: World) -> None:
    # Given worker 2 took the same message and recorded the invoice final
    mine = held_up_while_another_worker_takes_the_same_message(world, killed=False)
    # When worker 1's answer meets the lost lease
    assert world.dispatch([mine], owner="worker-1") == []
    # Then nothing is left to do
    assert world.status(mine.message.invoice.key) is InvoiceStatus.INVOICED
    assert world.queue.messages == {}


def test_a_claim_outage_keeps_every_copy_of_the_batch_not_only_the_first(world: World) -> None:
    # Given an invoice RETRYING after Fynd was down, claimed with message A, and its copy B
    world.accept(invoice("A"))
    world.queue_again(invoice("A"))
    holder, copy = world.queue.receive(2)
    world.faults.fail("fynd.before", FyndUnavailable("503"))
    assert world.dispatch([holder]) == [holder.message_id]
    # When a batch carries B beside a second delivery of A, and the claim meets an outage
    again = world.queue.redeliver(holder.message_id)
    assert again is not None
    world.faults.fail("ledger.claim", LedgerUnavailableError("throttled"))
    failures = world.dispatch([copy, again], owner="worker-2")
    # Then both come back: A may be in a late worker's hands, B may be all it has left
    assert sorted(failures) == sorted([copy.message_id, holder.message_id])
    assert set(world.queue.messages) == {copy.message_id, holder.message_id}


LEASE_LOST = "lease lost before the outcome was recorded"


def test_a_lost_lease_is_logged_with_the_invoice_and_the_verdict_it_could_not_record(
    world: World, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given worker 2 holds the invoice with this same message, and died before recording
    mine = held_up_while_another_worker_takes_the_same_message(world, killed=True)
    # When worker 1's final answer meets the lost lease
    world.dispatch([mine], owner="worker-1")
    # Then a warning names the invoice, its webhook and the verdict that was not recorded
    (line,) = [doc for doc in logged() if doc["message"] == LEASE_LOST]
    assert (line["level"], line["invoice_key"], line["correlation_id"], line["verdict"]) == (
        "WARNING",
        "A#sale",
        "wh-1",
        "Invoiced",
    )


def test_a_lost_lease_keeps_the_message_as_no_failure_until_just_after_the_new_lease(world: World) -> None:
    # Given worker 2 holds the invoice with this same message, and died before recording
    mine = held_up_while_another_worker_takes_the_same_message(world, killed=True)
    # When worker 1's final answer meets the lost lease
    world.dispatch([mine], owner="worker-1")
    # Then a fresh copy waits (no receive spent) and comes back in the second after the new lease
    (fresh,) = [held for held in world.queue.messages.values() if held.message_id != mine.message_id]
    lease = world.settings.lease_seconds
    assert fresh.receive_count == 0
    assert lease < fresh.visible_at - world.clock() <= lease + 1


def test_a_lost_lease_that_cannot_read_the_entry_keeps_the_message(world: World) -> None:
    # Given worker 2 holds the invoice with this same message, and died before recording
    mine = held_up_while_another_worker_takes_the_same_message(world, killed=True)
    # When worker 1's answer meets the lost lease, and the ledger cannot say whether it is final
    world.faults.fail("ledger.get", LedgerUnavailableError("throttled"), times=None)
    world.dispatch([mine], owner="worker-1")
    world.faults.clear()
    # Then the invoice keeps a message, and ends INVOICED through it, applied once
    assert world.queue.live_keys()[mine.message.invoice.key] >= 1
    world.drain()
    assert world.status(mine.message.invoice.key) is InvoiceStatus.INVOICED
    assert world.fynd.applied[mine.message.invoice.key] == 1


def test_a_lost_lease_with_a_retry_holds_the_message_for_fynds_reason(
    world: World, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given worker 1's call fails on Fynd's 503 while worker 2 takes the message and finishes
    mine = held_up_while_another_worker_takes_the_same_message(world, killed=False)
    world.faults.fail("fynd.before", FyndUnavailable("Fynd answered 503"))
    # When worker 1's retry meets the lost lease
    world.dispatch([mine], owner="worker-1")
    # Then the lost lease names the retry, and the message is held for Fynd's reason
    (line,) = [doc for doc in logged() if doc["message"] == LEASE_LOST]
    assert line["verdict"] == "RetryLater"
    holds = [doc for doc in logged() if doc.get("invoice_key") == "A#sale" and "retry_in_s" in doc]
    assert [doc["reason"] for doc in holds] == ["fynd_unavailable"]


def test_a_lost_lease_keeps_the_batchs_other_copies_and_brings_them_back_at_once(world: World) -> None:
    # Given worker 1's batch holds two more copies of the invoice beside its message, and
    # worker 2 took that same message and died holding the invoice before recording
    mine = held_up_while_another_worker_takes_the_same_message(world, killed=True, others=2)
    others = world.queue.receive(10)
    assert len(others) == 2
    # When worker 1's answer meets the lost lease
    assert world.dispatch([mine, *others], owner="worker-1") == []
    # Then no copy of the unfinished invoice is acknowledged without a fresh one in its place:
    # the batch's other copies come back a second later to meet the outcome, its own message
    # after the new lease
    lease = world.settings.lease_seconds
    fresh = sorted(
        m.visible_at - world.clock() for m in world.queue.messages.values() if m.receive_count == 0
    )
    assert fresh == [1, 1, lease + 1]


def test_a_lost_lease_names_the_webhook_the_ledger_shows_not_the_one_its_message_carries(
    world: World, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given invoice A accepted by webhook wh-1 whose message SQS refused, then queued by the ERP's
    # resend under wh-2; worker 2 takes worker 1's message and dies holding it
    world.faults.fail("queue.send", QueueUnavailableError("SQS down"))
    with pytest.raises(QueueUnavailableError):
        world.accept(invoice("A"), correlation_id="wh-1")
    world.accept(invoice("A"), correlation_id="wh-2")
    (mine,) = world.queue.receive(1)
    assert mine.message.correlation_id == "wh-2"

    def take_over() -> None:
        world.clock.advance(world.settings.lease_seconds + 1)
        again = world.queue.redeliver(mine.message_id)
        assert again is not None
        with world.faults.suspended():
            world.faults.fail("ledger.record", Crash())
            with pytest.raises(Crash):
                world.dispatch([again], owner="worker-2")

    world.faults.meanwhile("ledger.record", take_over)
    # When worker 1's answer meets the lost lease
    world.dispatch([mine], owner="worker-1")
    # Then the warning names the webhook the status API shows for the invoice (the ledger's)
    (line,) = [doc for doc in logged() if doc["message"] == LEASE_LOST]
    assert (line["invoice_key"], line["correlation_id"]) == ("A#sale", "wh-1")
