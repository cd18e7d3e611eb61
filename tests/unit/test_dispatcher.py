"""The dispatcher's rules (relay/domain/dispatch.py's docstring), one test each, over the port
fakes, with faults injected between the steps where they hurt: a write that throttles, an
answer that is lost, a message delivered twice, a lease that runs out mid-call, a worker that
dies after Fynd answered."""

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from factories import invoice
from fakes import SETTINGS, Crash, InMemoryRateLimiter, World, lost_answer
from relay.domain.errors import LedgerUnavailableError, QueueUnavailableError, RateLimiterUnavailableError
from relay.domain.fynd import FyndCall, FyndNotSent, FyndReceipt, FyndThrottled, FyndUnavailable
from relay.domain.invoice import InvoiceKey, InvoiceType
from relay.domain.ledger import SEND_STAMP_SECONDS, InvoiceStatus, LastError, LedgerEvent
from relay.domain.policy import REFUSED_ALONE, code_policy


def key(order_id: str, invoice_type: InvoiceType = InvoiceType.SALE) -> InvoiceKey:
    return InvoiceKey(order_id, invoice_type)


@pytest.fixture
def world() -> World:
    return World()


# ---- collapsing, claiming and dropping copies ----


def test_copies_inside_one_batch_reach_fynd_once(world: World) -> None:
    # Given one invoice queued three times (a retry after a failed send, the reconciler)
    world.accept(invoice("A"))
    world.queue_again(invoice("A"), invoice("A"))
    # When one batch carries all three
    assert world.run() == []
    # Then Fynd saw the order once, and every copy is gone
    assert world.fynd.sent[key("A")] == 1
    assert world.queue.messages == {}
    assert world.status(key("A")) is InvoiceStatus.INVOICED


def test_a_copy_of_a_final_invoice_is_acknowledged_without_a_send(world: World) -> None:
    world.accept(invoice("A"))
    world.queue_again(invoice("A"))
    first, second = world.queue.receive(2)
    world.dispatch([first])
    # When the second copy arrives in a later batch
    assert world.dispatch([second]) == []
    # Then it is deleted, and never sent
    assert world.fynd.sent[key("A")] == 1
    assert world.queue.messages == {}


def test_a_copy_of_a_key_another_worker_holds_waits_for_the_lease(world: World) -> None:
    # Given two messages of one invoice, and worker 1 holding the key with its own message
    world.accept(invoice("A"))
    world.queue_again(invoice("A"))
    held, copy = world.queue.receive(2)
    claim = world.ledger.claim(
        held.message, message_id=held.message_id, owner="worker-1", now=world.clock(), lease_seconds=120
    )
    assert claim.granted
    assert claim.entry is not None
    assert claim.entry.lease_until is not None
    # When worker 2 gets the other message
    failures = world.dispatch([copy], owner="worker-2")
    # Then the copy is not sent: a fresh copy of it comes back after the lease, beside the
    # holder's message, and waiting spent none of its receives
    assert failures == []
    (fresh,) = [m for m in world.queue.messages.values() if m.message_id != held.message_id]
    assert held.message_id in world.queue.messages
    assert fresh.visible_at > claim.entry.lease_until
    assert fresh.receive_count == 0
    assert world.fynd.sent[key("A")] == 0


def test_a_copy_of_a_busy_invoice_waits_for_the_lease_as_the_holders_message_may_be_gone(
    world: World,
) -> None:
    # Given an invoice queued twice (a retry after a failed send, the reconciler: B beside A),
    # with A received by worker 1 and delivered again to worker 2 beside B (at least once)
    world.accept(invoice("A"))
    world.queue_again(invoice("A"))
    a, b = world.queue.receive(2)
    a_again = world.queue.redeliver(a.message_id)
    assert a_again is not None
    # And worker 2 claims with B, Fynd is down, and its batch's other copy (A) is replaced by a
    # fresh copy (never acknowledged while the invoice is unfinished)
    world.faults.fail("fynd.before", FyndUnavailable("503"))
    assert world.dispatch([b, a_again], owner="worker-2") == [b.message_id]
    assert world.queue.live_keys()[key("A")] == 2
    assert a.message_id not in world.queue.messages
    # And worker 1, late, claims with A once the back-off is over, and dies after Fynd answered
    retry_at = world.ledger.entries[key("A")].retry_at
    assert retry_at is not None
    world.clock.now = retry_at
    world.faults.fail("ledger.record", Crash())
    with pytest.raises(Crash):
        world.dispatcher("worker-1").dispatch([a], lambda: 60)
    world.queue.crash([a])
    holder = world.ledger.entries[key("A")]
    assert (holder.status, holder.claim_message_id) == (InvoiceStatus.IN_PROGRESS, a.message_id)
    # When B comes back while worker 1's lease is live
    world.run(owner="worker-3")
    # Then B is not acknowledged: the invoice keeps a message, which returns after the lease
    assert world.queue.live_keys()[key("A")] >= 1
    world.drain()
    # And the invoice is invoiced, with one order applied at Fynd
    assert world.status(key("A")) is InvoiceStatus.INVOICED
    assert world.fynd.applied[key("A")] == 1


def test_the_holders_own_message_delivered_twice_waits_for_the_lease(world: World) -> None:
    # Given worker 1 claimed the invoice with its message
    world.accept(invoice("A"))
    (held,) = world.queue.receive(1)
    world.ledger.claim(
        held.message, message_id=held.message_id, owner="worker-1", now=world.clock(), lease_seconds=120
    )
    # When SQS delivers the same message to worker 2 as well (at least once)
    again = world.queue.redeliver(held.message_id)
    assert again is not None
    failures = world.dispatch([again], owner="worker-2")
    # Then worker 2 replaces it with a fresh copy that comes back once the lease has run out
    assert failures == []
    (fresh,) = world.queue.messages.values()
    assert fresh.visible_at > world.clock() + 120
    # And when worker 1's own answer is lost (its handle went stale, its visibility change fails)
    world.clock.advance(121)
    world.drain()
    # Then the invoice is still delivered, once
    assert world.status(key("A")) is InvoiceStatus.INVOICED
    assert world.fynd.sent[key("A")] == 1


def test_a_copy_of_a_retrying_invoice_waits_for_its_retry_at(world: World) -> None:
    # Given Fynd was down, so the invoice is RETRYING with a back-off
    world.accept(invoice("A"))
    world.queue_again(invoice("A"))
    first, copy = world.queue.receive(2)
    world.faults.fail("fynd.before", FyndUnavailable("503"))
    world.dispatch([first])
    entry = world.ledger.entries[key("A")]
    assert entry.status is InvoiceStatus.RETRYING
    assert entry.retry_at is not None
    # When the second copy arrives before retryAt
    failures = world.dispatch([copy])
    # Then it is not sent, and a fresh copy of it comes back after retryAt, no receive spent
    assert failures == []
    assert len(world.fynd.calls) == 0
    fresh = [m for m in world.queue.messages.values() if m.message_id != first.message_id]
    assert [(m.visible_at > entry.retry_at, m.receive_count) for m in fresh] == [(True, 0)]


def test_a_copy_of_a_retrying_invoice_does_not_take_the_holders_own_message_with_it(world: World) -> None:
    # Given an invoice queued twice (A by ingest, B by the reconciler or a retry after a failed send)
    world.accept(invoice("A"))
    world.queue_again(invoice("A"))
    (a,) = world.queue.receive(1)
    # And worker 1's call with A failed: the invoice is RETRYING, A waits out the back-off
    world.faults.fail("fynd.before", FyndUnavailable("503"))
    assert world.dispatch([a], owner="worker-1") == [a.message_id]
    retry_at = world.ledger.entries[key("A")].retry_at
    assert retry_at is not None
    # And SQS delivers A again (at least once): to worker 3, slow to start, and beside B to worker 2
    a_late = world.queue.redeliver(a.message_id)
    a_copy = world.queue.redeliver(a.message_id)
    assert a_late is not None
    assert a_copy is not None
    (b,) = world.queue.receive(1)
    # When worker 2 meets the back-off with B and A's copy
    failures = world.dispatch([b, a_copy], owner="worker-2")
    # Then neither is acknowledged without a replacement: each is queued afresh for retryAt
    assert failures == []
    assert world.queue.live_keys()[key("A")] == 2
    assert all(m.visible_at > retry_at for m in world.queue.messages.values())
    # And when worker 3 claims with A's stale delivery after the back-off, beside both fresh
    # copies, and Fynd fails again
    world.clock.now = retry_at + 1
    fresh = world.queue.receive(10)
    world.faults.fail("fynd.before", FyndUnavailable("503"))
    world.dispatch([a_late, *fresh], owner="worker-3")
    # Then the invoice still has a message (A's hold keeps nothing: SQS deleted A), and is
    # invoiced once it comes back
    assert world.queue.live_keys()[key("A")] >= 1
    world.drain()
    assert world.status(key("A")) is InvoiceStatus.INVOICED
    assert world.fynd.applied[key("A")] == 1


def test_a_stale_copy_is_acknowledged_when_the_ledger_holds_corrected_content(world: World) -> None:
    # Given Fynd rejected an invoice, and the ERP sent a corrected one (new content, same key)
    world.fynd.codes["A"] = "IN422"
    world.accept(invoice("A", invoiceNumber="INV-1"))
    world.queue_again(invoice("A", invoiceNumber="INV-1"))
    first, stale = world.queue.receive(2)
    world.dispatch([first])
    world.fynd.codes.clear()
    world.accept(invoice("A", invoiceNumber="INV-2"))
    # When the old copy arrives
    assert world.dispatch([stale]) == []
    # Then it is dropped, and the corrected invoice is the one sent
    world.drain()
    assert [i.invoiceNumber for call in world.fynd.calls for i in call.invoices] == ["INV-1", "INV-2"]
    assert world.status(key("A")) is InvoiceStatus.INVOICED


# ---- calls ----


def test_calls_group_by_location_and_type(world: World) -> None:
    world.accept(invoice("A"), invoice("B", locationCode="WH-2"), invoice("C", invoiceType="return"))
    world.run()
    groups = sorted(
        (call.location_code or "", call.invoice_type, len(call.invoices)) for call in world.fynd.calls
    )
    assert groups == [("", "return", 1), ("", "sale", 1), ("WH-2", "sale", 1)]


def test_a_whole_call_4xx_splits_the_call_down_to_the_refused_invoice(world: World) -> None:
    # Given ten invoices, and Fynd refusing any call that carries order R (a 422 naming no order)
    world.fynd.refuse_alone.add("R")
    world.accept(*[invoice(f"O-{n}") for n in range(9)], invoice("R"))
    # When they are dispatched in one batch
    assert world.run() == []
    # Then the nine others are invoiced, and R alone is rejected with the HTTP status
    assert all(world.status(key(f"O-{n}")) is InvoiceStatus.INVOICED for n in range(9))
    rejected = world.ledger.entries[key("R")]
    assert rejected.status is InvoiceStatus.REJECTED
    assert rejected.last_error is not None
    assert rejected.last_error.code == REFUSED_ALONE
    assert "HTTP 422" in rejected.last_error.message
    assert world.fynd.applied.total() == 9


def test_a_split_finds_the_refused_invoice_halving_the_refused_half_each_time(world: World) -> None:
    # Given ten invoices of one call, and Fynd refusing any call that carries R (the last)
    world.fynd.refuse_alone.add("R")
    world.accept(*[invoice(f"O-{n}") for n in range(9)], invoice("R"))
    update_invoices = world.fynd.update_invoices

    def call_fynd(call: FyndCall, *, time_budget_seconds: float) -> FyndReceipt:
        # A split that made no progress would call Fynd forever: stop it past any honest split.
        assert len(world.fynd.call_starts) < 2 * 10, "the split does not converge"
        return update_invoices(call, time_budget_seconds=time_budget_seconds)

    world.fynd.update_invoices = call_fynd  # type: ignore[method-assign]
    # When the batch is dispatched
    world.run()
    # Then each refused call is halved, the half without R is taken whole, and the half with R
    # is halved again: nine calls in all (each a rate slot), not one per invoice
    assert [len(call.invoices) for call in world.fynd.calls] == [10, 5, 5, 2, 3, 1, 2, 1, 1]
    assert world.status(key("R")) is InvoiceStatus.REJECTED


def test_breach_06_an_oversized_call_is_split_until_fynd_takes_it(world: World) -> None:
    # Given Fynd answers 413 to any call of more than 5 orders
    world.fynd.refuse_calls_over = 5
    world.accept(*[invoice(f"O-{n}") for n in range(10)])
    world.run()
    # Then all ten are invoiced in calls of at most five
    assert all(world.status(key(f"O-{n}")) is InvoiceStatus.INVOICED for n in range(10))
    assert world.fynd.applied.total() == 10


def test_each_call_gets_a_budget_that_leaves_time_to_record(world: World) -> None:
    world.accept(invoice("A"))
    # When the invocation has 30 s left (call budget 36 s, reserve 5 s)
    world.run(seconds_left=30)
    # Then the call may take 25 s in all, not the connect + read timeouts of one request
    assert world.fynd.budgets == [25]


def test_no_call_starts_without_time_for_one_request(world: World) -> None:
    world.accept(invoice("A"))
    # When 20 s remain: less than one request (18 s) after the 5 s reserve
    assert world.run(seconds_left=20) == []
    # Then nothing is sent or claimed, and a fresh copy comes back soon, no receive spent
    assert world.fynd.calls == []
    assert world.status(key("A")) is InvoiceStatus.QUEUED
    (fresh,) = world.queue.messages.values()
    assert (fresh.receive_count, fresh.visible_at <= world.clock() + 2) == (0, True)


# ---- recording outcomes: once Fynd has answered, nothing raises ----


def test_a_record_that_throttles_holds_the_message_until_the_lease_ends(world: World) -> None:
    # Given two invoices in one call, and the ledger throttling the first record after Fynd answered
    world.accept(invoice("A"), invoice("B"))
    world.faults.fail("ledger.record", LedgerUnavailableError("throttled"))
    batch = world.queue.receive()
    # When the batch is dispatched, nothing raises
    failures = world.dispatch(batch)
    # Then B is recorded, and A's message comes back only after its lease has run out
    a_message = next(d.message_id for d in batch if d.message.invoice.orderId == "A")
    assert failures == [a_message]
    assert world.status(key("B")) is InvoiceStatus.INVOICED
    lease_until = world.ledger.entries[key("A")].lease_until
    assert lease_until is not None
    assert world.queue.messages[a_message].visible_at > lease_until
    # And the retry learns from IN453 that A was invoiced
    world.drain()
    assert world.status(key("A")) is InvoiceStatus.INVOICED
    assert world.fynd.applied[key("A")] == 1


def test_a_failed_requeue_returns_the_message_instead_of_raising(world: World) -> None:
    # Given an order Fynd calls too early, at its second-to-last receive
    world.fynd.early_until["A"] = world.clock() + 3600
    world.accept(invoice("A"))
    world.queue.messages[next(iter(world.queue.messages))].receive_count = (
        world.settings.max_receive_count - 2
    )
    world.faults.fail("queue.send_later", QueueUnavailableError("SQS down"))
    # When the fresh copy cannot be queued
    failures = world.run()
    # Then the message itself comes back, and the entry waits as RETRYING
    assert failures == list(world.queue.messages)
    assert world.status(key("A")) is InvoiceStatus.RETRYING


def killed_after_fynd_answered(world: World) -> None:
    """Invoice A is accepted; its worker dies between Fynd's answer and the ledger write."""
    world.accept(invoice("A"))
    world.faults.fail("ledger.record", Crash())
    batch = world.queue.receive()
    with pytest.raises(Crash):
        world.dispatcher().dispatch(batch, lambda: 60)
    world.queue.crash(batch)


def test_a_worker_killed_after_fynd_answered_is_verified_without_a_second_send(world: World) -> None:
    # Given the worker dies between Fynd's answer and the ledger write
    killed_after_fynd_answered(world)
    # When the message returns after its visibility timeout (the lease is long gone)
    world.drain()
    # Then Shipment Info proves it invoiced: recorded as verified, never sent twice
    entry = world.ledger.entries[key("A")]
    assert (entry.status, entry.confirmed_by) == (InvoiceStatus.INVOICED, "shipment-info")
    assert (world.fynd.sent[key("A")], world.fynd.already[key("A")]) == (1, 0)


def test_without_shipment_info_a_killed_worker_learns_from_in453(world: World) -> None:
    # Given the worker died after Fynd answered, and Shipment Info is down when the retry comes
    killed_after_fynd_answered(world)
    world.faults.fail("fynd.read", FyndUnavailable("503"), times=None)
    world.drain()
    # Then it is sent again as before the read existed, and IN453 proves it invoiced
    entry = world.ledger.entries[key("A")]
    assert (entry.status, entry.confirmed_by, entry.already_invoiced) == (
        InvoiceStatus.INVOICED,
        "IN453",
        True,
    )
    assert (world.fynd.applied[key("A")], world.fynd.already[key("A")]) == (1, 1)


def test_a_lease_that_runs_out_mid_call_never_raises_and_never_reopens(world: World) -> None:
    # Given worker 1's call to Fynd outlives its lease, and worker 2 takes the key meanwhile
    world.accept(invoice("A"))
    world.queue_again(invoice("A"))
    mine, copy = world.queue.receive(2)
    original = world.fynd.update_invoices

    def slow_call(call: FyndCall, *, time_budget_seconds: float) -> FyndReceipt:
        world.clock.advance(world.settings.lease_seconds + 1)
        world.fynd.update_invoices = original  # type: ignore[method-assign]
        assert world.dispatch([copy], owner="worker-2") == []
        return original(call, time_budget_seconds=time_budget_seconds)

    world.fynd.update_invoices = slow_call  # type: ignore[method-assign]
    # When worker 1's answer comes back after worker 2 recorded the invoice
    assert world.dispatch([mine], owner="worker-1") == []
    # Then the entry stays as worker 2 recorded it, and no message is left
    assert world.status(key("A")) is InvoiceStatus.INVOICED
    assert world.queue.messages == {}


# ---- outages back off by receive count ----


def test_a_ledger_outage_at_claim_fails_only_the_messages_it_touched(world: World) -> None:
    world.accept(invoice("A"), invoice("B"))
    world.faults.fail("ledger.claim", LedgerUnavailableError("throttled"))
    batch = world.queue.receive()
    failures = world.dispatch(batch)
    assert failures == [batch[0].message_id]
    assert world.status(batch[1].message.invoice.key) is InvoiceStatus.INVOICED


@pytest.mark.parametrize(
    ("step", "error"),
    [("ledger.claim", LedgerUnavailableError("down")), ("fynd.before", FyndUnavailable("503"))],
)
def test_a_thirty_minute_outage_dead_letters_nothing(world: World, step: str, error: Exception) -> None:
    # Given the ledger (or Fynd) is down for 30 minutes from the first attempt
    world.accept(invoice("A"), invoice("B"))
    world.faults.fail(step, error, times=None)
    outage_ends = world.clock() + 30 * 60
    while world.clock() < outage_ends:
        world.run()
        world.clock.now = min(outage_ends, world.queue.next_visible_at() or outage_ends)
    # When it recovers
    world.faults.clear()
    world.drain()
    # Then nothing was dead-lettered, and both are invoiced once
    assert world.queue.dead_letters == []
    assert [world.status(key(o)) for o in "AB"] == [InvoiceStatus.INVOICED] * 2
    assert world.fynd.already.total() == 0


def test_infrastructure_failures_at_the_last_receive_go_to_the_dead_letter_queue(
    world: World, counted: list[tuple[str, float, dict[str, str]]]
) -> None:
    world.accept(invoice("A"))
    world.faults.fail("fynd.before", FyndUnavailable("503"), times=None)
    world.drain()
    assert len(world.queue.dead_letters) == 1
    assert ("DeadLettered", 1, {"reason": "fynd_unavailable"}) in counted


# ---- per-order codes ----


@pytest.mark.parametrize("code", ["IN401", "IN400", "IN422"])
def test_terminal_codes_reject_without_retry(world: World, code: str) -> None:
    world.fynd.codes["A"] = code
    world.accept(invoice("A"))
    assert world.run() == []
    assert world.status(key("A")) is InvoiceStatus.REJECTED
    assert len(world.fynd.calls) == 1


def test_an_early_order_is_requeued_fresh_before_its_last_receive(world: World) -> None:
    # Given an order Fynd calls too early for a long time
    world.fynd.early_until["A"] = world.clock() + 6 * 3600
    world.accept(invoice("A"))
    world.drain(max_rounds=2000)
    # Then it was never dead-lettered, and was invoiced once confirmed
    assert world.queue.dead_letters == []
    assert world.status(key("A")) is InvoiceStatus.INVOICED


def test_an_early_order_is_rejected_at_its_deadline(world: World) -> None:
    world.fynd.early_until["A"] = world.clock() + 10 * 86_400
    world.accept(invoice("A"))
    world.drain(max_rounds=2000)
    entry = world.ledger.entries[key("A")]
    assert entry.status is InvoiceStatus.REJECTED
    assert entry.last_error is not None
    assert entry.last_error.code == "IN403_DEADLINE"


def test_a_replayed_early_order_waits_a_fresh_deadline_from_its_replay(world: World) -> None:
    # Given an order rejected at its IN403 deadline, then confirmed by Fynd a day later
    world.fynd.early_until["A"] = world.clock() + 2 * 86_400
    world.accept(invoice("A"))
    world.drain(max_rounds=2000)
    rejected = world.ledger.entries[key("A")]
    assert rejected.last_error is not None
    assert rejected.last_error.code == "IN403_DEADLINE"
    # When an operator replays it, as InvoiceLedger.replay records it: QUEUED, a replay event,
    # and acceptedAt still the first acceptance
    world.clock.now = rejected.accepted_at + 86_400 + 3600
    world.ledger.entries[key("A")] = replace(
        rejected,
        status=InvoiceStatus.QUEUED,
        attempts=0,
        last_error=None,
        retry_at=None,
        updated_at=world.clock(),
        history=(LedgerEvent("replay", world.clock(), "ops", "order confirmed late", rejected.last_error),),
    )
    world.queue_again(invoice("A"))
    world.drain(max_rounds=2000)
    # Then it is not rejected again at once for a deadline counted from the first acceptance:
    # it waits for Fynd from the replay, and is invoiced once the order is confirmed
    entry = world.ledger.entries[key("A")]
    assert entry.status is InvoiceStatus.INVOICED
    assert entry.accepted_at == rejected.accepted_at


def test_breach_14_an_unknown_fynd_code_is_counted_as_other(
    world: World, counted: list[tuple[str, float, dict[str, str]]]
) -> None:
    world.fynd.codes["A"] = "IN777"
    world.accept(invoice("A"))
    world.run()
    retries = [dims for name, _, dims in counted if name == "Retries"]
    assert retries == [{"reason": "other"}]


def test_a_lost_answer_is_checked_not_resent(
    world: World, counted: list[tuple[str, float, dict[str, str]]]
) -> None:
    # Given Fynd applied the call but its answer was lost
    world.accept(invoice("A"))
    world.faults.fail("fynd.after", lost_answer())
    world.drain()
    # Then the retry reads Shipment Info, which proves it: no IN453, one send
    entry: Any = world.ledger.entries[key("A")]
    assert (entry.status, entry.confirmed_by) == (InvoiceStatus.INVOICED, "shipment-info")
    assert (world.fynd.sent[key("A")], world.fynd.already[key("A")]) == (1, 0)
    assert ("VerifiedWithoutResend", 1, {}) in counted


def test_a_lost_answer_before_fynd_applied_anything_is_sent_again_after_the_check(
    world: World, counted: list[tuple[str, float, dict[str, str]]]
) -> None:
    # Given the call failed before Fynd applied it (a 5xx), so Shipment Info says not invoiced
    world.accept(invoice("A"))
    world.faults.fail("fynd.before", FyndUnavailable("503"))
    world.drain()
    # Then it is sent again once, and the answer confirms it
    entry = world.ledger.entries[key("A")]
    assert (entry.status, entry.confirmed_by) == (InvoiceStatus.INVOICED, "answer")
    assert world.fynd.reads["A"] == 1
    assert ("ResentAfterCheck", 1, {}) in counted


@pytest.mark.parametrize("fault", ["unknown status", "read fails"])
def test_a_check_that_proves_nothing_sends_as_before(world: World, fault: str) -> None:
    # Given an answer was lost, and Shipment Info answers a status never seen (or fails)
    world.accept(invoice("A"))
    world.faults.fail("fynd.after", lost_answer())
    if fault == "unknown status":
        world.fynd.novel_status.add("A")
    else:
        world.faults.fail("fynd.read", FyndUnavailable("503"), times=None)
    world.drain()
    # Then it is sent again, and IN453 (today's rule) proves it invoiced: nothing lost
    entry = world.ledger.entries[key("A")]
    assert (entry.status, entry.confirmed_by) == (InvoiceStatus.INVOICED, "IN453")
    assert (world.fynd.applied[key("A")], world.fynd.already[key("A")]) == (1, 1)


def test_an_order_confirmed_thirty_minutes_late_is_sent_again_without_reads(world: World) -> None:
    # Given Fynd confirms the order 30 minutes after the first attempt (IN403 until then)
    world.fynd.early_until["A"] = world.clock() + 30 * 60
    world.accept(invoice("A"))
    world.drain(max_rounds=200)
    # Then it went again in a call at each attempt (an IN403 proves nothing was applied), with
    # no Shipment Info read, and was applied once: the last send, after the confirmation
    assert world.status(key("A")) is InvoiceStatus.INVOICED
    assert world.fynd.sent[key("A")] > 2
    assert world.fynd.reads["A"] == 0
    assert (world.fynd.applied[key("A")], world.fynd.already[key("A")]) == (1, 0)


def test_a_doubt_ended_by_a_read_is_not_read_again_at_every_wait(world: World) -> None:
    # Given an order whose first answer was lost, and that Fynd answers IN403 for 30 minutes
    world.fynd.early_until["A"] = world.clock() + 30 * 60
    world.accept(invoice("A"))
    world.faults.fail("fynd.after", lost_answer())
    world.drain(max_rounds=200)
    # Then one read settled the doubt (not invoiced), and every later attempt after an IN403
    # went without one, until it was applied once
    assert world.status(key("A")) is InvoiceStatus.INVOICED
    assert world.fynd.reads["A"] == 1
    assert world.fynd.sent[key("A")] > 3
    assert world.fynd.already[key("A")] == 0


def test_an_order_cancelled_while_waiting_is_rejected_in401_and_never_applied(world: World) -> None:
    world.fynd.early_until["A"] = world.clock() + 6 * 3600
    world.accept(invoice("A"))
    world.run()
    # When the seller cancels it while it waits for confirmation
    world.fynd.codes["A"] = "IN401"
    world.drain()
    entry = world.ledger.entries[key("A")]
    assert entry.status is InvoiceStatus.REJECTED
    assert entry.last_error is not None
    assert entry.last_error.code == "IN401"
    assert world.fynd.applied[key("A")] == 0


def test_an_order_waiting_for_confirmation_comes_back_within_five_minutes_each_time(world: World) -> None:
    # Given the deployed policy, and an order Fynd answers IN403 for two hours
    world.policy = code_policy(
        base_seconds=30, max_seconds=3600, too_early_deadline_seconds=86_400, jitter=lambda: 0.99
    )
    world.fynd.early_until["A"] = world.clock() + 2 * 3600
    world.accept(invoice("A"))
    world.run()
    # When it has waited through many attempts
    waits = []
    for _ in range(12):
        due = world.queue.next_visible_at()
        assert due is not None
        waits.append(due - world.clock())
        world.clock.now = due
        world.run()
    # Then no wait is longer than 299 s (sent again within 5 minutes of its confirmation), each
    # is a fresh message (no receive spent: never dead-lettered), and none is parked or in flight
    assert max(waits) <= 299
    entry = world.ledger.entries[key("A")]
    assert (entry.status, entry.parked) == (InvoiceStatus.RETRYING, False)
    assert all(held.receive_count == 0 for held in world.queue.messages.values())
    assert world.queue.dead_letters == []


def test_a_throttled_read_backs_off_without_a_send(world: World) -> None:
    world.accept(invoice("A"))
    world.faults.fail("fynd.before", FyndUnavailable("503"))
    world.run()
    world.clock.now = world.queue.next_visible_at() or world.clock.now
    # When the read before the resend meets a 429 with Retry-After
    world.faults.fail("fynd.read", FyndThrottled("429", retry_after=300))
    (message_id,) = world.run()
    # Then nothing is sent, and the message waits at least the Retry-After
    assert world.fynd.sent[key("A")] == 0
    assert world.queue.messages[message_id].visible_at >= world.clock() + 300


# ---- what the on-call reads of a batch ----


def lines(logged: Callable[[], list[dict[str, Any]]], message: str) -> list[dict[str, Any]]:
    return [doc for doc in logged() if doc["message"] == message]


def test_a_call_with_no_time_left_names_its_invoices_as_not_claimed(
    world: World, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given two invoices of one call, and a batch with too little time for a call
    world.accept(invoice("A"), invoice("B"))
    # When the batch is dispatched with 20 s left
    world.run(seconds_left=20)
    # Then one warning names both invoices, left unclaimed
    (line,) = lines(logged, "no time left for a Fynd call; not claimed")
    assert (line["level"], line["invoice_keys"]) == ("WARNING", ["A#sale", "B#sale"])


def test_a_failed_dead_letter_mark_is_logged_for_the_operator(
    world: World, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given an invoice failing on Fynd on every receive, and the ledger refusing the dead-letter mark
    world.accept(invoice("A"))
    world.faults.fail("fynd.before", FyndUnavailable("Fynd answered 503"), times=None)
    world.faults.fail("ledger.mark_dead_lettered", LedgerUnavailableError("throttled"), times=None)
    # When its message leaves for the dead-letter queue
    world.drain()
    assert len(world.queue.dead_letters) == 1
    # Then a warning names the invoice, its webhook and why it left, for the reconciler queues it again
    (line,) = lines(logged, "could not mark the entry dead-lettered; the reconciler will queue it again")
    assert (line["level"], line["invoice_key"], line["correlation_id"], line["reason"]) == (
        "WARNING",
        "A#sale",
        "wh-1",
        "fynd_unavailable",
    )


def test_a_shipment_info_read_that_fails_is_logged_with_its_reason_and_the_invoice_is_sent(
    world: World, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given an invoice whose first call failed with a 5xx (it may have reached Fynd)
    world.accept(invoice("A"))
    world.faults.fail("fynd.before", FyndUnavailable("503"))
    world.run()
    world.clock.now = world.queue.next_visible_at() or world.clock.now
    # When the read before the resend fails too
    world.faults.fail("fynd.read", FyndUnavailable("Shipment Info answered 502"))
    world.run()
    # Then the failure is logged with the invoice, its webhook, the reason and Fynd's words,
    # and the invoice is sent as without the read
    (line,) = lines(logged, "Shipment Info unavailable")
    assert {name: line[name] for name in ("level", "invoice_key", "correlation_id", "reason", "error")} == {
        "level": "INFO",
        "invoice_key": "A#sale",
        "correlation_id": "wh-1",
        "reason": "fynd_unavailable",
        "error": "Shipment Info answered 502",
    }
    assert world.status(key("A")) is InvoiceStatus.INVOICED


def test_a_shipment_info_read_logs_what_it_decided(
    world: World, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given Fynd applied the call but its answer was lost
    world.accept(invoice("A"))
    world.faults.fail("fynd.after", lost_answer())
    # When the retry reads Shipment Info
    world.drain()
    # Then the read's line says the shipment is invoiced and what that decided: Invoiced, no send
    (line,) = lines(logged, "Shipment Info read")
    assert (line["invoice_key"], line["shipment_state"], line["decided"]) == (
        "A#sale",
        "invoiced",
        "Invoiced",
    )


def test_a_split_keeps_the_calls_location_and_invoice_type(world: World) -> None:
    # Given four credit notes of one location, and Fynd refusing any call that carries R
    world.fynd.refuse_alone.add("R")
    world.accept(*[invoice(f"O-{n}", locationCode="WH-7", invoiceType="return") for n in range(3)])
    world.accept(invoice("R", locationCode="WH-7", invoiceType="return"), correlation_id="wh-2")
    # When the call is split down to R
    world.run()
    # Then every half went to the same location, as credit notes
    assert len(world.fynd.calls) > 1
    assert {(call.location_code, call.invoice_type) for call in world.fynd.calls} == {
        ("WH-7", InvoiceType.RETURN)
    }


class UnreachableLimiter(InMemoryRateLimiter):
    """A rate limiter that grants slots but cannot be slowed (its table throttled)."""

    def throttled(self, credential: str, *, now: float, retry_after: float) -> None:
        raise RateLimiterUnavailableError("rate table throttled")


def test_a_429_slows_the_limiter_of_the_calls_own_credential() -> None:
    # Given a location with its own Fynd credential, and Fynd answering 429 with Retry-After 30
    world = World(limiter=InMemoryRateLimiter(20))
    world.fynd.credentials["WH-9"] = "wh9-credential"
    world.accept(invoice("A", locationCode="WH-9"))
    world.faults.fail("fynd.before", FyndThrottled("429", retry_after=30))
    # When the call is made
    world.run()
    # Then that credential, not the company's, waits the Retry-After
    assert world.limiter is not None
    assert world.limiter.throttles == [("wh9-credential", world.clock() + 30)]


def test_a_429_holds_the_rest_of_the_batch_for_its_retry_after(world: World) -> None:
    # Given two calls in one batch (two locations), and Fynd answering the first with 429, Retry-After 30
    world.accept(invoice("A", locationCode="WH-1"), invoice("B", locationCode="WH-2"))
    world.faults.fail("fynd.before", FyndThrottled("429", retry_after=30))
    # When the batch is dispatched
    world.run()
    # Then the second call is not sent meanwhile: it waits at least the Retry-After
    assert len(world.fynd.call_starts) == 1
    assert all(held.visible_at >= world.clock() + 30 for held in world.queue.messages.values())


def test_a_limiter_that_cannot_be_slowed_is_logged_and_the_429_still_backs_off(
    logged: Callable[[], list[dict[str, Any]]],
) -> None:
    # Given a rate limiter that cannot be written, and Fynd answering 429
    world = World(limiter=UnreachableLimiter(20))
    world.accept(invoice("A"))
    world.faults.fail("fynd.before", FyndThrottled("429", retry_after=30))
    # When the call is made
    world.run()
    # Then a warning says the pace could not be slowed, and why; the invoice still waits its turn
    (line,) = lines(logged, "could not slow the Fynd rate limiter")
    assert (line["level"], line["error"]) == ("WARNING", "rate table throttled")
    assert world.status(key("A")) is InvoiceStatus.RETRYING


def test_a_call_that_runs_out_of_time_after_its_claims_records_that_nothing_was_sent(world: World) -> None:
    # Given an invoice whose claim takes 45 s of a 60 s invocation (a slow ledger)
    world.accept(invoice("A"))
    world.faults.meanwhile("ledger.claim", lambda: world.clock.advance(45))
    # When the batch is dispatched, leaving less than a whole request for the call
    world.run(seconds_left=60, timed=True)
    # Then nothing is sent, the claim is given back with the reason, and that nothing was sent
    # (so the next attempt needs no Shipment Info read first)
    entry = world.ledger.entries[key("A")]
    assert world.fynd.call_starts == []
    assert entry.status is InvoiceStatus.RETRYING
    assert entry.last_error == LastError("out_of_time", "invocation ran out of time", nothing_sent=True)
    # And a fresh copy comes back a second later, no receive spent
    (fresh,) = world.queue.messages.values()
    assert (fresh.receive_count, fresh.visible_at - world.clock()) == (0, 1)


def held(logged: Callable[[], list[dict[str, Any]]], message: str) -> list[tuple[str, str, int]]:
    """(invoice_key, reason, retry_in_s) of every line `message` about a held message."""
    return [(doc["invoice_key"], doc["reason"], doc["retry_in_s"]) for doc in lines(logged, message)]


def test_a_message_queued_afresh_is_counted_and_logged_with_its_reason_and_wait(
    world: World,
    counted: list[tuple[str, float, dict[str, str]]],
    logged: Callable[[], list[dict[str, Any]]],
) -> None:
    # Given an invoice, and a batch with too little time for its call
    world.accept(invoice("A"))
    # When it is dispatched with 20 s left
    world.run(seconds_left=20)
    # Then its fresh copy is counted as a retry for lack of time, and logged with its wait
    assert [dims for name, _, dims in counted if name == "Retries"] == [{"reason": "out_of_time"}]
    assert held(logged, "invoice queued afresh for its next attempt") == [("A#sale", "out_of_time", 1)]


def test_a_retry_on_fynds_failure_is_counted_and_logged_with_its_reason_and_wait(
    world: World,
    counted: list[tuple[str, float, dict[str, str]]],
    logged: Callable[[], list[dict[str, Any]]],
) -> None:
    # Given Fynd answering 503 to the call
    world.accept(invoice("A"))
    world.faults.fail("fynd.before", FyndUnavailable("Fynd answered 503"))
    # When it is dispatched
    (message_id,) = world.run()
    # Then the message comes back after its back-off, counted and logged with Fynd's reason
    wait = round(world.queue.messages[message_id].visible_at - world.clock())
    assert [dims for name, _, dims in counted if name == "Retries"] == [{"reason": "fynd_unavailable"}]
    assert held(logged, "invoice will be retried") == [("A#sale", "fynd_unavailable", wait)]


def test_a_message_leaving_for_the_dead_letter_queue_is_logged_as_an_error_with_its_reason(
    world: World, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given Fynd answering 503 on every receive
    world.accept(invoice("A"))
    world.faults.fail("fynd.before", FyndUnavailable("Fynd answered 503"), times=None)
    # When the message runs out of receives
    world.drain()
    # Then one error line says it leaves for the dead-letter queue, and why
    (line,) = lines(logged, "invoice leaves for the dead-letter queue")
    assert (line["level"], line["invoice_key"], line["reason"]) == ("ERROR", "A#sale", "fynd_unavailable")


def test_a_fresh_copy_sqs_refuses_is_logged_and_the_message_itself_comes_back(
    world: World, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given a batch with too little time for its call, and SQS refusing the fresh copy
    world.accept(invoice("A"))
    world.faults.fail("queue.send_later", QueueUnavailableError("throttled"))
    # When it is dispatched with 20 s left
    failures = world.run(seconds_left=20)
    # Then a warning says so, and the message itself comes back (named to Lambda)
    assert held(logged, "could not queue a fresh copy; the message comes back") == [
        ("A#sale", "out_of_time", 1)
    ]
    assert len(failures) == 1


def test_a_copy_of_a_final_invoice_is_counted_as_suppressed_by_the_ledger_and_logged(
    world: World,
    counted: list[tuple[str, float, dict[str, str]]],
    logged: Callable[[], list[dict[str, Any]]],
) -> None:
    # Given an invoice already INVOICED, and two more copies of it queued
    world.accept(invoice("A"))
    world.run()
    world.queue_again(invoice("A"), invoice("A"))
    counted.clear()
    # When both copies arrive in one batch
    world.run()
    # Then both are counted as duplicates the ledger suppressed, and one line says why
    assert ("DuplicatesSuppressed", 2, {"stage": "ledger"}) in counted
    (line,) = lines(logged, "invoice not sent again")
    assert (line["invoice_key"], line["status"]) == ("A#sale", "INVOICED")


def test_copies_of_a_key_another_worker_holds_are_logged_as_waiting_for_the_lease(
    world: World, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given worker 1 holding A with its own message, and a copy of A
    world.accept(invoice("A"))
    world.queue_again(invoice("A"))
    holder, copy = world.queue.receive(2)
    claim = world.ledger.claim(
        holder.message, message_id=holder.message_id, owner="worker-1", now=world.clock(), lease_seconds=120
    )
    assert claim.granted
    # When worker 2 gets the copy, and later a second delivery of the holder's own message
    world.dispatch([copy], owner="worker-2")
    world.dispatch([holder], owner="worker-2")
    # Then each waits for the lease, and the lines tell the holder's own message from a copy
    waits = [doc for doc in logged() if "waits for the lease" in doc["message"]]
    assert [(doc["message"], doc["invoice_key"], doc["status"]) for doc in waits] == [
        ("invoice held by another worker; the copy waits for the lease", "A#sale", "IN_PROGRESS"),
        ("holder's own message delivered twice; it waits for the lease", "A#sale", "IN_PROGRESS"),
    ]
    # And each fresh copy comes back in the second after the lease
    lease_until = claim.entry.lease_until if claim.entry else None
    assert lease_until is not None
    fresh = [m for m in world.queue.messages.values() if m.receive_count == 0]
    assert len(fresh) == 2
    assert all(lease_until < m.visible_at <= lease_until + 1 for m in fresh)


def test_a_copy_meeting_a_back_off_is_logged_and_comes_back_just_after_it(
    world: World, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given an invoice RETRYING after Fynd's 503, and a copy of it queued
    world.accept(invoice("A"))
    world.faults.fail("fynd.before", FyndUnavailable("503"))
    world.run()
    retry_at = world.ledger.entries[key("A")].retry_at
    assert retry_at is not None
    world.queue_again(invoice("A"))
    # When the copy arrives before the back-off is over
    copy = next(m for m in world.queue.receive(10) if m.receive_count == 1)
    world.dispatch([copy], owner="worker-2")
    # Then one line says it waits for its next attempt, and its fresh copy comes back just after retryAt
    (line,) = lines(logged, "invoice waits for its next attempt")
    assert (line["invoice_key"], line["status"]) == ("A#sale", "RETRYING")
    fresh = [m for m in world.queue.messages.values() if m.receive_count == 0]
    assert len(fresh) == 1
    assert retry_at < fresh[0].visible_at <= retry_at + 1


# ---- what the on-call counts and reads of each outcome (docs/runbook.md, the dashboard) ----


Counted = list[tuple[str, float, dict[str, str]]]
Logged = Callable[[], list[dict[str, Any]]]


def picked(line: dict[str, Any], *names: str) -> dict[str, Any]:
    """The named fields of a log line (None for one it lacks)."""
    return {name: line.get(name) for name in names}


def accepted_by_one_webhook_queued_by_another(world: World) -> None:
    """Invoice A accepted by webhook wh-1 whose message SQS refused (ingest answered 503), then
    resent by the ERP under webhook wh-2: the ledger (and the status API) names wh-1, while the
    invoice's only message carries wh-2."""
    world.faults.fail("queue.send", QueueUnavailableError("SQS down"))
    with pytest.raises(QueueUnavailableError):
        world.accept(invoice("A"), correlation_id="wh-1")
    world.accept(invoice("A"), correlation_id="wh-2")


def test_an_invoice_fynd_accepts_is_counted_and_logged_with_the_webhook_the_ledger_names(
    world: World, counted: Counted, logged: Logged
) -> None:
    # Given invoice A accepted by webhook wh-1, its message queued by the ERP's resend under wh-2
    accepted_by_one_webhook_queued_by_another(world)
    # When Fynd accepts it
    assert world.run() == []
    # Then it is counted as invoiced, not as a duplicate
    assert counted == [("InvoicesInvoiced", 1, {})]
    # And one line names it, its attempt, and the webhook the status API shows (the ledger's)
    (line,) = lines(logged, "invoice accepted by Fynd")
    assert picked(line, "level", "invoice_key", "correlation_id", "attempt", "already_invoiced") == {
        "level": "INFO",
        "invoice_key": "A#sale",
        "correlation_id": "wh-1",
        "attempt": 1,
        "already_invoiced": False,
    }


def test_an_invoice_fynd_already_had_is_counted_as_already_invoiced_and_logged_so(
    world: World, counted: Counted, logged: Logged
) -> None:
    # Given an invoice Fynd already holds (entered by hand, or an earlier send's answer lost)
    world.accept(invoice("A"))
    world.fynd.invoiced.add(key("A"))
    # When the relay sends it and Fynd answers IN453
    assert world.run() == []
    # Then it is invoiced, and counted as one a duplicate reached (the AlreadyInvoiced alarm)
    assert counted == [("InvoicesInvoiced", 1, {}), ("AlreadyInvoiced", 1, {})]
    (line,) = lines(logged, "invoice accepted by Fynd")
    assert picked(line, "level", "invoice_key", "attempt", "already_invoiced") == {
        "level": "INFO",
        "invoice_key": "A#sale",
        "attempt": 1,
        "already_invoiced": True,
    }


def test_an_invoice_fynd_rejects_is_counted_by_its_code_and_logged_as_an_error_with_fynds_words(
    world: World, counted: Counted, logged: Logged
) -> None:
    # Given Fynd refusing the invoice's order with IN422 (a bad invoice)
    world.fynd.codes["A"] = "IN422"
    world.accept(invoice("A"))
    # When it is sent
    assert world.run() == []
    # Then it is counted by its code (the InvoicesRejected alarm's dimension)
    assert counted == [("InvoicesRejected", 1, {"code": "IN422"})]
    # And an error line gives the on-call the invoice, its webhook, the code and Fynd's words
    (line,) = lines(logged, "invoice rejected by Fynd")
    assert picked(line, "level", "invoice_key", "correlation_id", "attempt", "code", "fynd_message") == {
        "level": "ERROR",
        "invoice_key": "A#sale",
        "correlation_id": "wh-1",
        "attempt": 1,
        "code": "IN422",
        "fynd_message": "fake Fynd says IN422",
    }


def test_a_wait_past_sqs_longest_delay_is_parked_counted_by_its_reason_and_logged(
    world: World, counted: Counted, logged: Logged
) -> None:
    # Given Fynd answering 429 with a Retry-After of 20 minutes, past SQS's longest delay
    world.accept(invoice("A"))
    world.faults.fail("fynd.before", FyndThrottled("429", retry_after=1200))
    # When the call is made
    assert world.run() == []
    # Then the invoice is parked in the ledger (no message waits in flight)
    entry = world.ledger.entries[key("A")]
    assert (entry.status, entry.parked, entry.retry_at) == (
        InvoiceStatus.RETRYING,
        True,
        world.clock() + 1200,
    )
    assert world.queue.messages == {}
    # And it is counted as parked for the throttle, and one line says how long it waits
    assert [metric for metric in counted if metric[0] == "Parked"] == [
        ("Parked", 1, {"reason": "fynd_throttled"})
    ]
    (line,) = lines(logged, "invoice parked until its next attempt")
    assert picked(line, "level", "invoice_key", "correlation_id", "attempt", "retry_in_s") == {
        "level": "INFO",
        "invoice_key": "A#sale",
        "correlation_id": "wh-1",
        "attempt": 1,
        "retry_in_s": 1200,
    }


def test_an_early_order_queued_afresh_is_counted_and_logged_as_fynds_in403(
    world: World, counted: Counted, logged: Logged
) -> None:
    # Given an order Fynd answers IN403 (not confirmed yet)
    world.fynd.early_until["A"] = world.clock() + 3600
    world.accept(invoice("A"))
    # When it is sent
    assert world.run() == []
    # Then its fresh copy is counted and logged under Fynd's code, with its wait
    (fresh,) = world.queue.messages.values()
    wait = round(fresh.visible_at - world.clock())
    assert [dims for name, _, dims in counted if name == "Retries"] == [{"reason": "IN403"}]
    assert held(logged, "invoice queued afresh for its next attempt") == [("A#sale", "IN403", wait)]


def test_a_failed_fynd_call_is_logged_with_its_reason_status_and_invoices(
    world: World, logged: Logged
) -> None:
    # Given two invoices of one call, and Fynd answering the call 503
    world.accept(invoice("A"), invoice("B"))
    world.faults.fail("fynd.before", FyndUnavailable("Fynd answered 503", status=503))
    # When the call is made
    world.run()
    # Then one warning names the failure, the HTTP status and every invoice of the call
    (line,) = lines(logged, "Fynd call failed")
    assert picked(line, "level", "reason", "status", "orders", "invoice_keys") == {
        "level": "WARNING",
        "reason": "fynd_unavailable",
        "status": 503,
        "orders": 2,
        "invoice_keys": ["A#sale", "B#sale"],
    }


def test_a_claimed_call_with_no_time_left_is_logged_with_its_invoices_and_wait(
    world: World, logged: Logged
) -> None:
    # Given an invoice whose claim takes 45 s of a 60 s invocation (a slow ledger)
    world.accept(invoice("A"))
    world.faults.meanwhile("ledger.claim", lambda: world.clock.advance(45))
    # When the call is left less than a whole request
    world.run(seconds_left=60, timed=True)
    # Then a warning names the invoice the call gives back, and how soon it comes back
    (line,) = lines(logged, "no time left for a Fynd call")
    assert picked(line, "level", "invoice_keys", "retry_in_s") == {
        "level": "WARNING",
        "invoice_keys": ["A#sale"],
        "retry_in_s": 1,
    }


def test_a_send_with_no_rate_slot_in_time_comes_back_no_sooner_than_its_slot() -> None:
    # Given a pace of one request every 25 s, and an invoice whose first call met a 503
    world = World(limiter=InMemoryRateLimiter(0.04))
    world.fynd.read_seconds = 0.5
    world.accept(invoice("A"))
    world.faults.fail("fynd.before", FyndUnavailable("503"))
    world.run()
    world.clock.advance(100)
    # When its retry reads Shipment Info first (0.5 s, on the call's slot), so the send's own
    # slot is 24.5 s away: more than the call may wait
    world.run()
    assert world.fynd.reads["A"] == 1
    assert world.fynd.sent[key("A")] == 0
    # Then it waits out of flight and comes back in whole seconds, never before its slot
    assert world.limiter is not None
    slot_at = world.limiter.state["company"]["next_at"]
    entry = world.ledger.entries[key("A")]
    (fresh,) = world.queue.messages.values()
    assert entry.retry_at is not None
    assert slot_at <= entry.retry_at < slot_at + 1
    assert (fresh.visible_at, fresh.receive_count) == (entry.retry_at, 0)


def test_a_deferral_before_the_claim_stamps_the_entry_for_the_stamp_period(world: World) -> None:
    # Given an invoice, and a batch with too little time for its call
    world.accept(invoice("A"))
    # When its fresh copy is queued without a claim
    world.run(seconds_left=20)
    # Then the entry is stamped as sent now, and not due to the reconciler for SEND_STAMP_SECONDS
    # (its copy may wait that long in a backlog without being taken for lost)
    entry = world.ledger.entries[key("A")]
    assert (entry.sent_at, entry.due_at) == (world.clock(), world.clock() + SEND_STAMP_SECONDS)


def test_a_send_stamp_that_fails_is_counted_and_logged_and_the_copy_goes_regardless(
    world: World, counted: Counted, logged: Logged
) -> None:
    # Given an invoice, a batch with too little time for its call, and the ledger throttling the stamp
    world.accept(invoice("A"))
    world.faults.fail("ledger.stamp_sent", LedgerUnavailableError("throttled"))
    # When its fresh copy is queued without a claim
    assert world.run(seconds_left=20) == []
    # Then the failed stamp is counted (a reconciler copy may follow) and a warning names the invoice
    assert ("SendStampFailed", 1, {}) in counted
    (line,) = lines(logged, "could not stamp the entry before queueing it afresh; the copy goes regardless")
    assert picked(line, "level", "invoice_key", "correlation_id", "error") == {
        "level": "WARNING",
        "invoice_key": "A#sale",
        "correlation_id": "wh-1",
        "error": "throttled",
    }
    # And the fresh copy went
    (fresh,) = world.queue.messages.values()
    assert fresh.receive_count == 0


def test_an_invoiced_entry_keeps_the_acknowledgement_id_of_fynds_answer(world: World) -> None:
    # Given an invoice
    world.accept(invoice("A"))
    # When Fynd accepts it
    world.run()
    # Then the ledger keeps the ack id Fynd answered with (shown to an operator tracing it at Fynd)
    entry = world.ledger.entries[key("A")]
    assert (entry.status, entry.fynd_ack_id) == (InvoiceStatus.INVOICED, "ack-1")


def test_a_record_outage_brings_the_message_back_in_the_second_after_the_lease_as_a_ledger_outage(
    world: World, counted: Counted, logged: Logged
) -> None:
    # Given the ledger throttling the record after Fynd answered
    world.accept(invoice("A"))
    world.faults.fail("ledger.record", LedgerUnavailableError("throttled"))
    # When the batch is dispatched
    (message_id,) = world.run()
    # Then the message comes back just after the lease, no sooner (a copy would meet a live lease)
    # and no later, counted and logged as a ledger outage
    lease_until = world.ledger.entries[key("A")].lease_until
    assert lease_until is not None
    assert lease_until < world.queue.messages[message_id].visible_at <= lease_until + 1
    assert [dims for name, _, dims in counted if name == "Retries"] == [{"reason": "ledger_unavailable"}]
    assert [reason for _, reason, _ in held(logged, "invoice will be retried")] == ["ledger_unavailable"]


def test_a_record_outage_keeps_the_batchs_other_copy_of_the_invoice(world: World) -> None:
    # Given two copies of one invoice in one batch, and the ledger throttling the record
    world.accept(invoice("A"))
    world.queue_again(invoice("A"))
    world.faults.fail("ledger.record", LedgerUnavailableError("throttled"))
    # When the batch is dispatched
    (message_id,) = world.run()
    # Then the other copy is not acknowledged without a fresh one in its place, after the lease
    lease_until = world.ledger.entries[key("A")].lease_until
    assert lease_until is not None
    fresh = [m for m in world.queue.messages.values() if m.message_id != message_id]
    assert [(m.receive_count, m.visible_at > lease_until) for m in fresh] == [(0, True)]


def test_a_parked_early_order_lets_the_batchs_other_copies_go(world: World) -> None:
    # Given an order Fynd has answered IN403 four times (each wait a fresh message)
    world.fynd.early_until["A"] = world.clock() + 86_400
    world.accept(invoice("A"))
    for _ in range(4):
        world.clock.now = world.queue.next_visible_at() or world.clock.now
        world.run()
    assert world.ledger.entries[key("A")].attempts == 4
    # And a second copy of it queued meanwhile
    world.queue_again(invoice("A"))
    world.clock.now = max(m.visible_at for m in world.queue.messages.values())
    # When both arrive in one batch and its fifth IN403 waits past 5 minutes (parked)
    assert world.run() == []
    # Then the ledger answers for it: parked, with no message left in the queue
    entry = world.ledger.entries[key("A")]
    assert (entry.status, entry.parked) == (InvoiceStatus.RETRYING, True)
    assert world.queue.messages == {}


def test_a_copy_of_a_final_invoice_is_logged_with_the_refusal_and_the_webhook_the_ledger_names(
    world: World, logged: Logged
) -> None:
    # Given invoice A accepted by webhook wh-1, its message queued by the ERP's resend under wh-2,
    # and that message delivered twice (SQS delivers at least once)
    accepted_by_one_webhook_queued_by_another(world)
    (message,) = world.queue.receive(1)
    again = world.queue.redeliver(message.message_id)
    assert again is not None
    world.dispatch([again])
    # When the other delivery meets the invoice already INVOICED
    assert world.dispatch([message], owner="worker-2") == []
    # Then one line says why it is not sent again, naming the webhook the status API shows
    (line,) = lines(logged, "invoice not sent again")
    assert picked(line, "invoice_key", "correlation_id", "reason", "status") == {
        "invoice_key": "A#sale",
        "correlation_id": "wh-1",
        "reason": "final",
        "status": "INVOICED",
    }


def throttled_for(world: World, seconds: float) -> None:
    """Invoice A, sent once and answered 429 with Retry-After `seconds`: RETRYING until then."""
    world.accept(invoice("A"))
    world.faults.fail("fynd.before", FyndThrottled("429", retry_after=seconds))
    world.run()
    assert world.ledger.entries[key("A")].retry_at == world.clock() + seconds


def test_a_copy_waiting_exactly_sqs_longest_delay_is_queued_afresh_without_spending_a_receive(
    world: World,
) -> None:
    # Given an invoice backing off for 899 s, and a copy of it arriving now
    throttled_for(world, 899)
    world.queue_again(invoice("A"))
    copy = next(m for m in world.queue.receive(10) if m.receive_count == 1)
    # When the copy must wait 900 s (just after retryAt): exactly SQS's longest delay
    failures = world.dispatch([copy], owner="worker-2")
    # Then it is replaced by a fresh copy delayed the whole 900 s: no receive spent
    assert failures == []
    assert copy.message_id not in world.queue.messages
    fresh = [m for m in world.queue.messages.values() if m.receive_count == 0]
    assert [m.visible_at - world.clock() for m in fresh] == [900]


@pytest.mark.parametrize(
    ("receive", "queued_afresh"),
    [(6, False), (7, True), (8, True)],
    ids=["earlier receive", "receive before the last", "last receive"],
)
def test_a_copy_waiting_past_sqs_longest_delay_is_queued_afresh_only_from_the_receive_before_the_last(
    world: World, receive: int, queued_afresh: bool
) -> None:
    # Given an invoice parked for 20 minutes (a 429's Retry-After), past SQS's longest delay
    throttled_for(world, 1200)
    # And a copy of it on its `receive`-th receive (of 8)
    world.queue_again(invoice("A"))
    (queued,) = world.queue.messages.values()
    queued.receive_count = receive - 1
    (copy,) = world.queue.receive(1)
    assert copy.receive_count == receive
    # When the copy meets the back-off
    failures = world.dispatch([copy], owner="worker-2")
    # Then before the receive before the last it waits in flight (a receive spent, its wait whole);
    # from then on a fresh copy waits SQS's longest delay instead of reaching the dead-letter queue
    if queued_afresh:
        assert failures == []
        (fresh,) = world.queue.messages.values()
        assert (fresh.receive_count, fresh.visible_at - world.clock()) == (0, 900)
    else:
        assert failures == [copy.message_id]
        assert world.queue.messages[copy.message_id].visible_at - world.clock() == 1201
    assert world.queue.dead_letters == []


# ---- the batch's copies, its budget and its pools ----


def test_copies_collapsed_inside_one_batch_are_counted_as_suppressed_by_the_batch(
    world: World, counted: Counted
) -> None:
    # Given invoice A queued three times, B twice and C once
    world.accept(invoice("A"), invoice("B"), invoice("C"))
    world.queue_again(invoice("A"), invoice("A"), invoice("B"))
    # When one batch carries all six
    world.run()
    # Then the copies beyond the first of A and of B, and only those, are counted as duplicates
    # the batch suppressed
    suppressed = [metric for metric in counted if metric[0] == "DuplicatesSuppressed"]
    assert sorted(suppressed, key=lambda metric: metric[1]) == [
        ("DuplicatesSuppressed", 1, {"stage": "batch"}),
        ("DuplicatesSuppressed", 2, {"stage": "batch"}),
    ]


def test_other_content_for_a_key_the_batch_sends_comes_back_a_second_later(world: World) -> None:
    # Given an invoice Fynd rejected, a stale copy of it queued, and the ERP's correction accepted
    world.fynd.codes["A"] = "IN422"
    world.accept(invoice("A", invoiceNumber="INV-1"))
    world.queue_again(invoice("A", invoiceNumber="INV-1"))
    world.run(1)
    world.fynd.codes.clear()
    world.accept(invoice("A", invoiceNumber="INV-2"))
    # When one batch carries the stale copy first and the correction after it
    assert world.run() == []
    # Then the stale copy's claim is refused, and the correction is not claimed beside it: a fresh
    # copy of it comes back a second later, no receive spent, and meets the claim then
    (fresh,) = world.queue.messages.values()
    assert (fresh.receive_count, fresh.visible_at - world.clock()) == (0, 1)
    world.drain()
    assert [i.invoiceNumber for call in world.fynd.calls for i in call.invoices] == ["INV-1", "INV-2"]


def test_a_claim_outage_is_counted_and_logged_as_a_ledger_outage(
    world: World, counted: Counted, logged: Logged
) -> None:
    # Given the ledger throttling the claim
    world.accept(invoice("A"))
    world.faults.fail("ledger.claim", LedgerUnavailableError("throttled"))
    # When the batch is dispatched
    world.run()
    # Then the message's retry is counted and logged as a ledger outage
    assert [dims for name, _, dims in counted if name == "Retries"] == [{"reason": "ledger_unavailable"}]
    assert [reason for _, reason, _ in held(logged, "invoice will be retried")] == ["ledger_unavailable"]


def test_a_call_with_exactly_one_requests_time_left_is_sent(world: World) -> None:
    # Given an invoice, and an invocation with 23 s left: the 5 s reserve and one 18 s request
    world.accept(invoice("A"))
    # When the batch is dispatched
    assert world.run(seconds_left=23) == []
    # Then the call goes, with that one request's time as its budget
    assert world.fynd.budgets == [18]
    assert world.status(key("A")) is InvoiceStatus.INVOICED


def test_a_call_paused_by_a_429_for_exactly_its_spare_time_waits_and_is_sent(world: World) -> None:
    # Given two calls in one batch (two locations), and Fynd answering the first 429, Retry-After
    # 18 s: exactly what the second call can spare (36 s of call budget, less one 18 s request)
    world.accept(invoice("A", locationCode="WH-1"), invoice("B", locationCode="WH-2"))
    world.faults.fail("fynd.before", FyndThrottled("429", retry_after=18))
    # When the batch is dispatched
    world.run(timed=True)
    # Then the second call waits out the pause and is sent, not deferred
    first, second = world.fynd.call_starts
    assert second - first == 18
    assert world.status(key("B")) is InvoiceStatus.INVOICED


def test_a_rate_limiter_unavailable_before_the_claims_is_logged_with_the_calls_invoices(
    logged: Logged,
) -> None:
    # Given a rate limiter whose table is throttled, and two invoices of one call
    world = World(limiter=UnavailableLimiter(20))
    world.accept(invoice("A"), invoice("B"))
    # When the call seeks its rate slot
    world.run()
    # Then the call goes unpaced, and a warning names the invoices it concerns
    (line,) = lines(logged, "Fynd rate limiter unavailable; sending unpaced")
    assert (line["level"], line["invoice_keys"]) == ("WARNING", ["A#sale", "B#sale"])
    assert world.status(key("A")) is InvoiceStatus.INVOICED


class UnavailableLimiter(InMemoryRateLimiter):
    """A rate limiter whose table cannot be read (throttled)."""

    def acquire(self, credential: str, *, now: float, not_after: float) -> Any:
        raise RateLimiterUnavailableError("rate table throttled")


def test_a_credential_unreadable_before_the_claims_fails_the_call_without_a_second_try() -> None:
    # Given a paced call, and the credential's secret unreadable once when its slot is sought
    world = World(limiter=InMemoryRateLimiter(20))
    world.accept(invoice("A"))
    world.faults.fail("fynd.credential", FyndNotSent("credential unreadable"))
    # When the batch is dispatched
    world.run()
    # Then every request of the call meets that failure: nothing is sent, and the invoice backs
    # off as a call that never left (no read needed before its retry)
    assert world.fynd.call_starts == []
    entry = world.ledger.entries[key("A")]
    assert entry.status is InvoiceStatus.RETRYING
    assert entry.last_error == LastError("fynd_unavailable", "credential unreadable", nothing_sent=True)


def test_the_rest_of_a_call_after_reads_keeps_its_location_and_invoice_type(world: World) -> None:
    # Given two invoices of one location whose call Fynd applied but whose answer was lost
    world.accept(invoice("A", locationCode="WH-7"), invoice("B", locationCode="WH-7"))
    world.faults.fail("fynd.after", lost_answer())
    world.run()
    world.clock.now = world.queue.next_visible_at() or world.clock.now
    # When the retry reads both: A's read proves it invoiced, B's read fails
    world.faults.fail("fynd.read", FyndUnavailable("503"), nth=2)
    world.run()
    # Then A is recorded without a send, and B alone goes in a call to the same location, as a sale
    assert [(call.location_code, call.invoice_type, len(call.invoices)) for call in world.fynd.calls] == [
        ("WH-7", InvoiceType.SALE, 2),
        ("WH-7", InvoiceType.SALE, 1),
    ]
    assert [world.status(key(order)) for order in "AB"] == [InvoiceStatus.INVOICED] * 2


def two_at_once(step: Callable[..., Any]) -> tuple[Callable[..., Any], list[str]]:
    """`step`, made to wait for a second call of it (a barrier that breaks, and fails the
    dispatch, unless both are in flight at once); and the names of the threads the calls ran on."""
    both_in_flight = threading.Barrier(2, timeout=5)
    threads: list[str] = []

    def beside_the_other(*arguments: Any, **keywords: Any) -> Any:
        threads.append(threading.current_thread().name)
        both_in_flight.wait()
        return step(*arguments, **keywords)

    return beside_the_other, threads


def test_claims_of_one_call_go_to_the_ledger_at_once_on_its_pool() -> None:
    # Given a dispatcher allowed two ledger writes at once, and two invoices of one call
    world = World(settings=replace(SETTINGS, ledger_concurrency=2))
    world.accept(invoice("A"), invoice("B"))
    world.ledger.claim, threads = two_at_once(world.ledger.claim)  # type: ignore[method-assign]
    # When the batch is dispatched
    assert world.run() == []
    # Then both claims were in flight at once, on the ledger's threads (as a stack dump names them)
    assert len(threads) == 2
    assert all(name.startswith("ledger") for name in threads)
    assert [world.status(key(order)) for order in "AB"] == [InvoiceStatus.INVOICED] * 2


def test_shipment_info_reads_of_one_call_go_at_once_on_their_pool() -> None:
    # Given a dispatcher allowed two Fynd reads at once, and two invoices whose answer was lost
    world = World(settings=replace(SETTINGS, fynd_concurrency=2))
    world.accept(invoice("A"), invoice("B"))
    world.faults.fail("fynd.after", lost_answer())
    world.run()
    world.clock.now = world.queue.next_visible_at() or world.clock.now
    world.fynd.shipment_info, threads = two_at_once(world.fynd.shipment_info)  # type: ignore[method-assign]
    # When the retry reads both before any resend
    assert world.run() == []
    # Then both reads were in flight at once, on the Fynd pool's threads, and proved both invoiced
    assert len(threads) == 2
    assert all(name.startswith("fynd") for name in threads)
    assert [world.status(key(order)) for order in "AB"] == [InvoiceStatus.INVOICED] * 2


def test_calls_of_one_batch_go_to_fynd_at_once_on_their_pool() -> None:
    # Given a dispatcher allowed two Fynd calls at once, and two calls (two locations)
    world = World(settings=replace(SETTINGS, call_concurrency=2))
    world.accept(invoice("A", locationCode="WH-1"), invoice("B", locationCode="WH-2"))
    world.fynd.update_invoices, threads = two_at_once(world.fynd.update_invoices)  # type: ignore[method-assign]
    # When the batch is dispatched
    assert world.run() == []
    # Then both calls were in flight at once, on the call pool's threads
    assert len(threads) == 2
    assert all(name.startswith("call") for name in threads)


def test_a_lost_answer_read_at_once_leaves_the_rest_of_a_split_to_be_sent() -> None:
    # Given reads on a pace of their own, Fynd refusing any call of more than one order (413),
    # and the answer to the first half of the split lost after Fynd applied it
    world = World(read_limiter=InMemoryRateLimiter(20))
    world.fynd.refuse_calls_over = 1
    world.accept(invoice("A"), invoice("B"))
    world.faults.fail("fynd.after", lost_answer())
    # When the batch is dispatched
    assert world.run() == []
    # Then A's lost answer is read at once and proves it invoiced, and B's half is still sent
    assert [len(call.invoices) for call in world.fynd.calls] == [2, 1, 1]
    assert world.fynd.reads["A"] == 1
    assert [world.status(key(order)) for order in "AB"] == [InvoiceStatus.INVOICED] * 2
