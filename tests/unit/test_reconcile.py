"""The reconciler's rule (relay.domain.reconcile) over the port fakes: which unfinished entries
count as stalled, that each is queued again from its stored invoice at most once per window,
that one entry's failure never stops the others, and that what it heals reaches Fynd once
(breach 11, part 2; and breach 2's vanished message)."""

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

import relay.domain.reconcile as reconcile_module
from factories import invoice, ledger_entry
from fakes import Crash, InMemoryLedger, World
from relay.domain.errors import LedgerUnavailableError, QueueUnavailableError
from relay.domain.fynd import FyndUnavailable
from relay.domain.intake import Action
from relay.domain.invoice import InvoiceKey, InvoiceType
from relay.domain.ledger import InvoiceStatus, LedgerEntry, WorkList
from relay.domain.messages import QueuedInvoice
from relay.domain.reconcile import (
    DEAD_LETTER_RETENTION_SECONDS,
    SECONDS_KEPT_IN_HAND,
    WAVE,
    Reconciler,
    is_due_parked,
    is_expired_dead_letter,
    is_stalled,
)

MINUTE = 60.0
WINDOW = 15 * MINUTE


def key(order_id: str) -> InvoiceKey:
    return InvoiceKey(order_id, InvoiceType.SALE)


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, str]]]:
    """Every metric the reconciler counts, with its dimensions."""
    seen: list[tuple[str, dict[str, str]]] = []
    monkeypatch.setattr(reconcile_module, "count", lambda name, **dimensions: seen.append((name, dimensions)))
    return seen


def stored(
    world: World, order_id: str, status: InvoiceStatus, *, updated_ago: float, **fields: object
) -> None:
    """An entry in `status`, last written `updated_ago`, with the invoice ingest stored for it;
    no message on the queue."""
    item = invoice(order_id)
    world.ledger.entries[item.key] = LedgerEntry(
        key=item.key,
        status=status,
        content_hash=item.content_hash(),
        invoice_number=item.invoiceNumber,
        attempts=0,
        accepted_at=world.clock.now - 3600,
        updated_at=world.clock.now - updated_ago,
        **fields,  # type: ignore[arg-type]
    )
    world.ledger.bodies[item.key] = QueuedInvoice(
        invoice=item, content_hash=item.content_hash(), accepted_at=world.clock.now - 3600
    ).to_body()


def queued_orders(world: World) -> list[str]:
    return sorted(key.order_id for key in world.queue.live_keys().elements())


# ---- the rule ----

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("status", "updated_ago", "fields", "stalled"),
    [
        # QUEUED: nothing wrote it for the window (ingest crashed before the queue send)
        (InvoiceStatus.QUEUED, 16 * MINUTE, {}, True),
        (InvoiceStatus.QUEUED, 14 * MINUTE, {}, False),
        # RETRYING: its retryAt passed more than the window ago (its message is gone)
        (InvoiceStatus.RETRYING, 30 * MINUTE, {"retry_at": NOW - 16 * MINUTE}, True),
        (InvoiceStatus.RETRYING, 30 * MINUTE, {"retry_at": NOW - 14 * MINUTE}, False),
        (InvoiceStatus.RETRYING, 90 * MINUTE, {"retry_at": NOW + 30 * MINUTE}, False),  # an IN403 back-off
        # IN_PROGRESS: its lease ended more than the window ago (the holder died, its message vanished)
        (InvoiceStatus.IN_PROGRESS, 20 * MINUTE, {"lease_until": NOW - 16 * MINUTE}, True),
        (InvoiceStatus.IN_PROGRESS, 20 * MINUTE, {"lease_until": NOW - 14 * MINUTE}, False),
        (InvoiceStatus.IN_PROGRESS, 20 * MINUTE, {"lease_until": NOW + MINUTE}, False),
        # written within the window (a claim, a record, the reconciler's own mark): never
        (InvoiceStatus.RETRYING, 5 * MINUTE, {"retry_at": NOW - 60 * MINUTE}, False),
        # ... even when its due time in the work index is older
        (
            InvoiceStatus.RETRYING,
            5 * MINUTE,
            {"retry_at": NOW - 60 * MINUTE, "due_at": NOW - 60 * MINUTE},
            False,
        ),
        # stamped within the window by a dispatcher queueing a fresh copy (its due time moved): never
        (
            InvoiceStatus.RETRYING,
            30 * MINUTE,
            {"retry_at": NOW - 30 * MINUTE, "due_at": NOW - 5 * MINUTE},
            False,
        ),
        # moved exactly the window ago: not yet lost (lost means nothing since the cutoff, the cutoff included)
        (InvoiceStatus.QUEUED, 15 * MINUTE, {}, False),
        # final entries never, however old
        (InvoiceStatus.INVOICED, 600 * MINUTE, {}, False),
        (InvoiceStatus.REJECTED, 600 * MINUTE, {}, False),
    ],
)
def test_breach_11_stalled_means_no_progress_for_the_window_on_the_status_own_clock(
    status: InvoiceStatus, updated_ago: float, fields: dict[str, float], stalled: bool
) -> None:
    # Given an entry in `status`, last written `updated_ago`
    entry = ledger_entry(status, accepted_at=NOW - 7200, updated_at=NOW - updated_ago, **fields)
    # Then it is stalled exactly when its status' clock ran out more than the window ago
    assert is_stalled(entry, now=NOW, stall_seconds=WINDOW) is stalled


# ---- healing, end to end over the fakes ----


def test_an_invoice_whose_queue_send_never_happened_reaches_fynd_once(world: World) -> None:
    # Given ingest dies between the ledger transaction and the queue send
    world.faults.fail("queue.send", Crash())
    with pytest.raises(Crash):
        world.accept(invoice("FY-1"))
    assert (world.status(key("FY-1")), world.queue.messages) == (InvoiceStatus.QUEUED, {})
    # When the window passes without an ERP retry and the reconciler runs
    world.clock.advance(WINDOW + 1)
    report = world.reconcile()
    world.drain()
    # Then the invoice is queued again from its stored copy and reaches Fynd once
    assert report.requeued == {"QUEUED": ["FY-1#sale"]}
    assert world.status(key("FY-1")) is InvoiceStatus.INVOICED
    assert world.fynd.sent[key("FY-1")] == 1


def test_breach_2_an_invoice_whose_message_vanished_while_retrying_reaches_fynd(world: World) -> None:
    # Given an invoice Fynd could not take (5xx), recorded RETRYING, whose message then vanished
    # (a copy deleted as BUSY while the holder's visibility change failed)
    world.accept(invoice("FY-1"))
    world.faults.fail("fynd.before", FyndUnavailable("Fynd answered 503"))
    world.run()
    assert world.status(key("FY-1")) is InvoiceStatus.RETRYING
    world.queue.messages.clear()
    # When its retry time and then the window pass, and the reconciler runs
    retry_at = world.ledger.entries[key("FY-1")].retry_at
    assert retry_at is not None
    world.clock.now = retry_at + WINDOW + 1
    report = world.reconcile()
    world.drain()
    # Then it is queued again and invoiced
    assert report.requeued == {"RETRYING": ["FY-1#sale"]}
    assert world.status(key("FY-1")) is InvoiceStatus.INVOICED


def test_breach_11_a_copy_requeued_beside_a_slow_message_reaches_fynd_once(world: World) -> None:
    # Given a dispatcher that died holding the invoice: its lease ran out long ago, but its
    # message is still on the queue (nobody polled it yet), and the queue's age is unknown (so
    # the window alone decides, and the waiting message gets a copy)
    world.queue_age.known = False
    world.accept(invoice("FY-1"))
    world.faults.fail("fynd.before", Crash())
    with pytest.raises(Crash):
        world.run()
    world.clock.advance(120 + WINDOW + 1)
    # When the reconciler requeues it, and both copies are then dispatched
    assert world.reconcile().requeued == {"IN_PROGRESS": ["FY-1#sale"]}
    assert world.queue.live_keys()[key("FY-1")] == 2
    world.drain()
    # Then Fynd got it once: the claim let one copy through and dropped the other
    assert world.status(key("FY-1")) is InvoiceStatus.INVOICED
    assert world.fynd.sent[key("FY-1")] == 1


def test_breach_11_each_unfinished_status_is_healed_and_nothing_else(world: World) -> None:
    # Given a stalled entry in each unfinished state, and one that is fine in each
    now = world.clock.now
    stored(world, "Q-STALLED", InvoiceStatus.QUEUED, updated_ago=16 * MINUTE)
    stored(world, "Q-FRESH", InvoiceStatus.QUEUED, updated_ago=MINUTE)
    stored(world, "R-STALLED", InvoiceStatus.RETRYING, updated_ago=40 * MINUTE, retry_at=now - 20 * MINUTE)
    stored(world, "R-WAITING", InvoiceStatus.RETRYING, updated_ago=40 * MINUTE, retry_at=now + 20 * MINUTE)
    stored(
        world, "P-STALLED", InvoiceStatus.IN_PROGRESS, updated_ago=30 * MINUTE, lease_until=now - 28 * MINUTE
    )
    stored(world, "P-HELD", InvoiceStatus.IN_PROGRESS, updated_ago=MINUTE, lease_until=now + MINUTE)
    stored(world, "DONE", InvoiceStatus.INVOICED, updated_ago=600 * MINUTE)
    # When the reconciler runs
    report = world.reconcile()
    # Then exactly the stalled ones are queued again, each once
    assert queued_orders(world) == ["P-STALLED", "Q-STALLED", "R-STALLED"]
    assert report.requeued == {
        "QUEUED": ["Q-STALLED#sale"],
        "RETRYING": ["R-STALLED#sale"],
        "IN_PROGRESS": ["P-STALLED#sale"],
    }
    assert (report.failed, report.complete) == ([], True)


def test_breach_11_an_entry_is_queued_again_at_most_once_per_window(world: World) -> None:
    # Given a stalled entry queued again, whose copy is merely slow to be dispatched
    stored(world, "FY-1", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE)
    world.reconcile()
    # When the reconciler runs every 5 minutes for longer than the window, the copy still waiting
    for _ in range(5):
        world.clock.advance(5 * MINUTE)
        assert world.reconcile().requeued == {}
    # Then it was queued once: its copy is on the queue, which the queue's age says
    assert world.queue.live_keys()[key("FY-1")] == 1
    # And once that copy is gone without the entry moving, once more (after a run has seen it gone)
    world.queue.messages.clear()
    world.reconcile()
    world.clock.advance(2 * MINUTE)
    assert world.reconcile().requeued == {"QUEUED": ["FY-1#sale"]}
    assert world.queue.live_keys()[key("FY-1")] == 1


class ClaimedAfterListing(InMemoryLedger):
    """A dispatcher claims every entry right after the reconciler listed it."""

    def due(
        self, work: WorkList, *, due_by: float, limit: int, out_of_time: Callable[[], bool]
    ) -> tuple[list[LedgerEntry], bool]:
        found, more = super().due(work, due_by=due_by, limit=limit, out_of_time=out_of_time)
        for entry in found:
            self.entries[entry.key] = replace(
                entry,
                status=InvoiceStatus.IN_PROGRESS,
                updated_at=self._clock(),
                lease_until=self._clock() + 120,
            )
        return found, more


def test_breach_11_an_entry_that_moves_after_it_was_listed_is_left_alone(world: World) -> None:
    # Given a stalled QUEUED entry that a dispatcher claims right after the reconciler listed it
    world.ledger = ClaimedAfterListing(world.clock, world.faults)
    stored(world, "FY-1", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE)
    # When the reconciler runs
    report = world.reconcile()
    # Then its conditional mark fails and nothing is queued: the entry is moving
    assert world.queue.messages == {}
    assert (report.requeued, report.failed) == ({}, [])


def test_breach_11_two_reconcilers_racing_queue_an_entry_once(world: World) -> None:
    # Given a second reconciler run that listed the same stalled entry before the first marked it
    stored(world, "FY-1", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE)
    (listed_by_other,), _ = world.ledger.due(
        WorkList.QUEUED, due_by=world.clock.now - WINDOW, limit=10, out_of_time=lambda: False
    )
    # When the first run requeues it, and then the second marks what it listed
    world.reconcile()
    marked = world.ledger.mark_reconciled(listed_by_other, now=world.clock.now)
    # Then the second's mark is refused: one message in all
    assert marked is False
    assert world.queue.live_keys()[key("FY-1")] == 1


# ---- failures are counted, never fatal ----


def test_breach_11_a_stalled_entry_without_its_stored_invoice_is_reported_once_per_window(
    world: World, counted: list[tuple[str, dict[str, str]]]
) -> None:
    # Given a stalled entry accepted before invoices were stored, and one whose stored copy
    # holds other content (a losing racer's)
    stored(world, "OLD-1", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE)
    del world.ledger.bodies[key("OLD-1")]
    stored(world, "RACED-1", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE)
    world.ledger.bodies[key("RACED-1")] = QueuedInvoice(
        invoice=invoice("RACED-1", invoiceNumber="OTHER"),
        content_hash=invoice("RACED-1", invoiceNumber="OTHER").content_hash(),
        accepted_at=world.clock.now,
    ).to_body()
    # When the reconciler runs twice, 5 minutes apart
    first = world.reconcile()
    world.clock.advance(5 * MINUTE)
    second = world.reconcile()
    # Then nothing is sent, both are reported and counted once, and left alone for a window
    assert world.queue.messages == {}
    assert sorted(first.failed) == ["OLD-1#sale", "RACED-1#sale"]
    assert second.failed == []
    assert counted == [("ReconcileFailed", {}), ("ReconcileFailed", {})]


def test_a_queued_entry_the_reconciler_cannot_queue_is_queued_by_the_erps_resend(world: World) -> None:
    # Given a stalled QUEUED entry whose stored invoice is gone (accepted before bodies were stored)
    stored(world, "OLD-1", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE)
    del world.ledger.bodies[key("OLD-1")]
    # When the reconciler cannot queue it, and the operator has the ERP resend it (docs/runbook.md)
    assert world.reconcile().failed == ["OLD-1#sale"]
    (admission,) = world.accept(invoice("OLD-1"))
    # Then the resend queues it, and it reaches Fynd once
    assert admission.action is Action.REQUEUE
    world.drain()
    assert world.status(key("OLD-1")) is InvoiceStatus.INVOICED
    assert world.fynd.sent[key("OLD-1")] == 1


def test_breach_11_a_ledger_outage_on_one_entry_does_not_stop_the_others(
    world: World, counted: list[tuple[str, dict[str, str]]]
) -> None:
    # Given three stalled entries, and the ledger failing the second mark
    stored(world, "A-FINE", InvoiceStatus.QUEUED, updated_ago=30 * MINUTE)
    stored(world, "B-THROTTLED", InvoiceStatus.QUEUED, updated_ago=25 * MINUTE)
    stored(world, "C-FINE", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE)
    world.faults.fail("ledger.mark_reconciled", LedgerUnavailableError("throttled"), nth=2)
    # When the reconciler runs
    report = world.reconcile()
    # Then the other two are queued, the failure is reported and counted as what it is
    assert queued_orders(world) == ["A-FINE", "C-FINE"]
    assert report.failed == ["B-THROTTLED#sale"]
    assert sorted(name for name, _ in counted) == ["ReconcileFailed", "Reconciled", "Reconciled"]
    # And, unmarked, it is found again by the next run
    assert world.reconcile().requeued == {"QUEUED": ["B-THROTTLED#sale"]}


def test_breach_11_a_refused_send_is_reported_and_the_erps_resend_will_queue_it(
    world: World, counted: list[tuple[str, dict[str, str]]]
) -> None:
    # Given two stalled QUEUED entries, and the queue refusing the one SendMessageBatch they go in
    stored(world, "A-REFUSED", InvoiceStatus.QUEUED, updated_ago=30 * MINUTE)
    stored(world, "B-REFUSED", InvoiceStatus.QUEUED, updated_ago=25 * MINUTE)
    world.faults.fail("queue.send", QueueUnavailableError("2 invoice(s) could not be queued"))
    # When the reconciler runs
    report = world.reconcile()
    # Then both are reported, counted as failures (not as queued), and marked as ingest marks a failed send
    assert (world.queue.messages, sorted(report.failed)) == ({}, ["A-REFUSED#sale", "B-REFUSED#sale"])
    assert counted == [("ReconcileFailed", {}), ("ReconcileFailed", {})]
    assert all(world.ledger.entries[key(o)].send_failed_at is not None for o in ("A-REFUSED", "B-REFUSED"))


def test_breach_11_a_ledger_outage_while_listing_fails_the_run_for_the_next_schedule(world: World) -> None:
    # Given a ledger that cannot be queried
    stored(world, "FY-1", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE)
    world.faults.fail("ledger.due", LedgerUnavailableError("unreachable"))
    # When the reconciler runs, Then the run fails (Lambda counts an error; the alarm sees it)
    with pytest.raises(LedgerUnavailableError):
        world.reconcile()
    # And the next scheduled run heals the entry
    assert world.reconcile().requeued == {"QUEUED": ["FY-1#sale"]}


# ---- bounded work ----


def test_breach_11_a_run_requeues_at_most_its_limit_oldest_first_and_the_next_run_continues(
    world: World,
) -> None:
    # Given five stalled entries and a limit of three per run
    for minutes, order in enumerate(["E", "D", "C", "B", "A"]):
        stored(world, order, InvoiceStatus.QUEUED, updated_ago=(20 + minutes) * MINUTE)
    # When the reconciler runs twice
    first = world.reconcile(max_per_run=3)
    second = world.reconcile(max_per_run=3)
    # Then the oldest three go first, the run says it stopped early, and the next run takes the rest
    assert (first.requeued, first.complete) == ({"QUEUED": ["A#sale", "B#sale", "C#sale"]}, False)
    assert (second.requeued, second.complete) == ({"QUEUED": ["D#sale", "E#sale"]}, True)


def test_breach_11_a_run_stops_before_the_invocation_runs_out_of_time(world: World) -> None:
    # Given a stalled entry, and an invocation with less time left than the reconciler keeps in hand
    stored(world, "FY-1", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE)
    # When it runs, Then it queues nothing and says it stopped early
    report = world.reconcile(seconds_left=1.0)
    assert (world.queue.messages, report.complete) == ({}, False)


def test_a_run_with_exactly_the_time_it_keeps_in_hand_still_works(world: World) -> None:
    # Given a stalled entry, and an invocation with exactly the seconds the reconciler keeps in hand
    stored(world, "FY-1", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE)
    # When it runs, Then it still queues the entry: only less than that stops it
    report = world.reconcile(seconds_left=SECONDS_KEPT_IN_HAND)
    assert (queued_orders(world), report.complete) == (["FY-1"], True)


def test_a_run_that_runs_out_of_time_between_waves_says_it_stopped_early(world: World) -> None:
    # Given more stalled entries than one wave takes, and an invocation whose time runs out once
    # the first wave is on the queue
    for index in range(WAVE + 20):
        stored(world, f"FY-{index:03}", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE + index)
    report = world.reconcile(seconds_left=lambda: 1.0 if world.queue.messages else 60.0)
    # Then one wave was queued, and the report says the run is incomplete (the next run takes the rest)
    assert (len(report.requeued["QUEUED"]), report.complete) == (WAVE, False)
    assert world.reconcile().requeued["QUEUED"] == [f"FY-{index:03}#sale" for index in reversed(range(20))]


def test_a_send_refusing_some_invoices_queues_the_rest_and_reports_only_the_refused(
    world: World, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given two stalled QUEUED entries, and SendMessageBatch refusing one of the two entries
    stored(world, "A-TAKEN", InvoiceStatus.QUEUED, updated_ago=30 * MINUTE)
    stored(world, "B-REFUSED", InvoiceStatus.QUEUED, updated_ago=25 * MINUTE)
    world.queue.refuse_next(lambda _, message: message.invoice.orderId == "B-REFUSED")
    # When the reconciler runs
    report = world.reconcile()
    # Then the taken one is queued and counted queued, the refused one reported, logged with why,
    # and marked as ingest marks a failed send (the ERP's resend queues it)
    assert (queued_orders(world), report.requeued, report.failed) == (
        ["A-TAKEN"],
        {"QUEUED": ["A-TAKEN#sale"]},
        ["B-REFUSED#sale"],
    )
    assert [doc["reason"] for doc in logged() if doc["message"] == "invoice could not be queued again"] == [
        "queue_unavailable"
    ]
    sent_failed = {
        k.order_id for k, entry in world.ledger.entries.items() if entry.send_failed_at is not None
    }
    assert sent_failed == {"B-REFUSED"}


def marks_by_thread(world: World, *, together: int) -> list[tuple[str, int]]:
    """Wraps the ledger's reconciler mark: each mark records its thread's name and how many marks
    were in flight with it; the first `together` marks wait for one another (a pool that runs
    fewer at once fails them)."""
    seen: list[tuple[str, int]] = []
    in_flight = [0]
    lock = threading.Lock()
    meet = threading.Barrier(together, timeout=5)
    mark = world.ledger.mark_reconciled

    def marking(entry: LedgerEntry, *, now: float) -> bool:
        with lock:
            in_flight[0] += 1
            seen.append((threading.current_thread().name, in_flight[0]))
            first = len(seen) <= together
        if first:
            meet.wait()
        time.sleep(0.005)
        with lock:
            in_flight[0] -= 1
        return mark(entry, now=now)

    world.ledger.mark_reconciled = marking  # type: ignore[method-assign]
    return seen


def reconciler(world: World, **options: Any) -> Reconciler:
    return Reconciler(
        ledger=world.ledger,
        queue=world.queue,
        queue_age=world.queue_age,
        clock=world.clock,
        stall_seconds=WINDOW,
        **options,
    )


def test_a_reconciler_with_concurrency_works_a_wave_on_that_many_threads_of_its_own(world: World) -> None:
    # Given 12 stalled entries, and a reconciler allowed 2 ledger calls at once
    for index in range(12):
        stored(world, f"FY-{index:02}", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE + index)
    seen = marks_by_thread(world, together=2)
    # When it runs
    report = reconciler(world, concurrency=2).reconcile(lambda: 60.0)
    # Then every entry was marked and queued, two at a time at most and at least once two at once,
    # on two worker threads named for the reconciler (a thread dump of a stuck run says whose they are)
    assert len(report.requeued["QUEUED"]) == 12
    assert max(in_flight for _, in_flight in seen) == 2
    names = {name for name, _ in seen}
    assert len(names) == 2
    assert all(name.startswith("reconcile_") for name in names)


def test_a_reconciler_without_concurrency_works_on_the_callers_thread(world: World) -> None:
    # Given stalled entries, and a reconciler built with the default concurrency
    for index in range(3):
        stored(world, f"FY-{index}", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE + index)
    seen = marks_by_thread(world, together=1)
    # When it runs, Then it marked them one by one on the invocation's own thread: no pool
    assert len(reconciler(world).reconcile(lambda: 60.0).requeued["QUEUED"]) == 3
    assert seen == [(threading.current_thread().name, 1)] * 3


def test_breach_11_requeues_are_counted_by_the_status_they_were_found_in(
    world: World, counted: list[tuple[str, dict[str, str]]]
) -> None:
    now = world.clock.now
    stored(world, "R-1", InvoiceStatus.RETRYING, updated_ago=40 * MINUTE, retry_at=now - 20 * MINUTE)
    stored(world, "P-1", InvoiceStatus.IN_PROGRESS, updated_ago=40 * MINUTE, lease_until=now - 38 * MINUTE)
    world.reconcile()
    assert counted == [("Reconciled", {"status": "IN_PROGRESS"}), ("Reconciled", {"status": "RETRYING"})]


def test_a_dead_lettered_invoice_is_left_to_the_operator_not_queued_again(world: World) -> None:
    # Given an invoice whose retries ran out on Fynd outages: its message is in the dead-letter queue
    world.accept(invoice("FY-1"))
    world.faults.fail("fynd.before", FyndUnavailable("Fynd answered 503"), times=None)
    world.drain()
    assert len(world.queue.dead_letters) == 1
    # When Fynd is back, the window passes many times over, and the reconciler runs each time
    world.faults.clear()
    for _ in range(4):
        world.clock.now += WINDOW + 1
        report = world.reconcile()
        assert report.requeued == {}
    # Then the entry waits, marked, with nothing queued again: the dead-letter queue is its end
    entry = world.ledger.entries[key("FY-1")]
    assert entry.status is InvoiceStatus.RETRYING
    assert entry.dead_lettered_at is not None
    assert world.queue.messages == {}


def test_a_redriven_invoice_clears_its_dead_letter_mark_and_is_reconciled_again_if_lost(world: World) -> None:
    # Given a dead-lettered invoice, marked
    world.accept(invoice("FY-1"))
    world.faults.fail("fynd.before", FyndUnavailable("Fynd answered 503"), times=None)
    world.drain()
    world.faults.clear()
    # When an operator redrives it, and the redriven message's attempt fails on Fynd again
    world.queue.send([QueuedInvoice.from_body(world.queue.dead_letters.pop().body)])
    world.clock.now = (world.ledger.entries[key("FY-1")].retry_at or 0) + 1
    world.faults.fail("fynd.before", FyndUnavailable("Fynd answered 503"))
    world.run()
    # Then the claim cleared the mark: the entry is the reconciler's again should that message vanish
    assert world.ledger.entries[key("FY-1")].dead_lettered_at is None
    world.queue.messages.clear()
    world.clock.now += 2 * WINDOW
    assert world.reconcile().requeued == {"RETRYING": ["FY-1#sale"]}


def test_a_ledger_outage_as_the_message_leaves_costs_one_reconciled_copy_not_the_invoice(
    world: World,
) -> None:
    # Given an invoice on its last receive, failing on Fynd, while the ledger refuses the mark
    world.accept(invoice("FY-1"))
    world.faults.fail("fynd.before", FyndUnavailable("Fynd answered 503"), times=None)
    world.faults.fail("ledger.mark_dead_lettered", LedgerUnavailableError("throttled"), times=None)
    world.drain()
    # When Fynd recovers and the reconciler runs after the window
    world.faults.clear()
    world.clock.now += 2 * WINDOW
    report = world.reconcile()
    world.drain()
    # Then the unmarked entry was queued again and invoiced, once
    assert report.requeued == {"RETRYING": ["FY-1#sale"]}
    assert world.status(key("FY-1")) is InvoiceStatus.INVOICED
    assert world.fynd.applied[key("FY-1")] == 1


def test_a_dead_lettered_invoice_whose_message_expired_is_queued_again(world: World) -> None:
    # Given an invoice whose retries ran out on Fynd outages: its message is in the dead-letter queue
    world.accept(invoice("FY-1"))
    world.faults.fail("fynd.before", FyndUnavailable("Fynd answered 503"), times=None)
    world.drain()
    assert len(world.queue.dead_letters) == 1
    marked_at = world.ledger.entries[key("FY-1")].dead_lettered_at
    assert marked_at is not None
    world.faults.clear()
    # When nobody redrives it: a day before the dead-letter queue's retention is out, the reconciler leaves it
    world.clock.now = marked_at + DEAD_LETTER_RETENTION_SECONDS - 86_400
    assert world.reconcile().requeued == {}
    # And once the retention is out, the dead-letter queue has dropped the message (SQS deletes it unread)
    world.queue.dead_letters.clear()
    world.clock.now = marked_at + DEAD_LETTER_RETENTION_SECONDS + 1
    report = world.reconcile()
    # Then the reconciler queued it again from its stored invoice, and it reaches Fynd
    assert report.requeued == {"RETRYING": ["FY-1#sale"]}
    world.drain()
    assert world.status(key("FY-1")) is InvoiceStatus.INVOICED
    assert world.fynd.applied[key("FY-1")] == 1
    # And the next runs find nothing more to queue
    world.clock.now += DEAD_LETTER_RETENTION_SECONDS + 1
    assert world.reconcile().requeued == {}


# ---- what the on-call reads of a run ----


def test_a_lost_invoice_queued_again_is_logged_with_its_key_state_and_webhook(
    world: World, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given a stalled RETRYING entry accepted by the webhook wh-9
    now = world.clock.now
    stored(
        world,
        "FY-1",
        InvoiceStatus.RETRYING,
        updated_ago=40 * MINUTE,
        retry_at=now - 20 * MINUTE,
        correlation_id="wh-9",
    )
    # When the reconciler queues it again
    world.reconcile()
    # Then its warning names the invoice, the status it was found in, that it was not parked,
    # the webhook that accepted it, how long it was stalled (since its retryAt) and its attempts
    (line,) = [doc for doc in logged() if doc["message"] == "stalled invoice queued again"]
    assert {
        name: line[name]
        for name in (
            "level",
            "invoice_key",
            "status",
            "parked",
            "correlation_id",
            "stalled_for_seconds",
            "attempts",
        )
    } == {
        "level": "WARNING",
        "invoice_key": "FY-1#sale",
        "status": "RETRYING",
        "parked": False,
        "correlation_id": "wh-9",
        "stalled_for_seconds": 20 * 60,
        "attempts": 0,
    }


def test_an_invoice_that_could_not_be_queued_again_is_logged_with_the_reason(
    world: World, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given a stalled QUEUED entry of the webhook wh-9 whose stored invoice is gone
    stored(world, "OLD-1", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE, correlation_id="wh-9")
    del world.ledger.bodies[key("OLD-1")]
    # When the reconciler cannot queue it
    world.reconcile()
    # Then an error line names the invoice, its state and webhook, and why
    (line,) = [doc for doc in logged() if doc["message"] == "invoice could not be queued again"]
    assert {
        name: line[name] for name in ("level", "invoice_key", "status", "parked", "correlation_id", "reason")
    } == {
        "level": "ERROR",
        "invoice_key": "OLD-1#sale",
        "status": "QUEUED",
        "parked": False,
        "correlation_id": "wh-9",
        "reason": "no_stored_invoice",
    }


def test_a_ledger_outage_reading_the_stored_invoice_leaves_the_entry_to_the_reconciler_not_the_erp(
    world: World, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given a stalled QUEUED entry, and the ledger failing as its stored invoice is read
    stored(world, "FY-1", InvoiceStatus.QUEUED, updated_ago=20 * MINUTE)
    world.faults.fail("ledger.body", LedgerUnavailableError("throttled"))
    # When the reconciler runs
    assert world.reconcile().failed == ["FY-1#sale"]
    # Then the entry is not marked as a failed send: an outage is not the ERP's to heal, and a
    # later run finds the entry again once it is due
    assert world.ledger.entries[key("FY-1")].send_failed_at is None
    assert [doc["reason"] for doc in logged() if doc["message"] == "invoice could not be queued again"] == [
        "ledger_unavailable"
    ]


def test_a_refused_send_whose_mark_meets_a_ledger_outage_still_ends_the_run_with_every_entry(
    world: World,
) -> None:
    # Given two stalled QUEUED entries, the queue refusing their send, and the ledger refusing the marks
    stored(world, "A-1", InvoiceStatus.QUEUED, updated_ago=30 * MINUTE)
    stored(world, "B-1", InvoiceStatus.QUEUED, updated_ago=25 * MINUTE)
    world.faults.fail("queue.send", QueueUnavailableError("2 invoice(s) could not be queued"))
    world.faults.fail("ledger.mark_send_failed", LedgerUnavailableError("throttled"), times=None)
    # When the reconciler runs, Then it reports both as failed and raises nothing
    report = world.reconcile()
    assert (sorted(report.failed), report.complete) == (["A-1#sale", "B-1#sale"], True)


def entry_at(status: InvoiceStatus, **fields: Any) -> LedgerEntry:
    return ledger_entry(
        status, accepted_at=NOW - 7200, updated_at=fields.pop("updated_at", NOW - 3600), **fields
    )


@pytest.mark.parametrize(
    ("entry", "expired"),
    [
        # marked, unfinished, not written since the retention ago (to the second): its message is gone
        (entry_at(InvoiceStatus.RETRYING, dead_lettered_at=NOW - 100, updated_at=NOW - 100), True),
        (entry_at(InvoiceStatus.QUEUED, dead_lettered_at=NOW - 100, updated_at=NOW - 200), True),
        # written after: a redrive, a claim
        (entry_at(InvoiceStatus.RETRYING, dead_lettered_at=NOW - 100, updated_at=NOW - 99), False),
        # never dead-lettered, however old
        (entry_at(InvoiceStatus.RETRYING, updated_at=NOW - 10_000), False),
        # final, however old its mark
        (entry_at(InvoiceStatus.INVOICED, dead_lettered_at=NOW - 10_000, updated_at=NOW - 10_000), False),
    ],
)
def test_a_dead_letter_is_expired_only_unfinished_marked_and_untouched_since_the_retention(
    entry: LedgerEntry, expired: bool
) -> None:
    # Given `entry`, When asked with the retention ago at NOW - 100
    # Then it is expired exactly when it is unfinished, marked and not written since
    assert is_expired_dead_letter(entry, due_by=NOW - 100) is expired


@pytest.mark.parametrize(
    ("entry", "due"),
    [
        (entry_at(InvoiceStatus.RETRYING, parked=True, retry_at=NOW), True),
        (entry_at(InvoiceStatus.RETRYING, parked=True, retry_at=NOW + 1), False),
        # not parked: its message brings it back, not the reconciler
        (entry_at(InvoiceStatus.RETRYING, retry_at=NOW - 60), False),
        # claimed or final since it was listed
        (entry_at(InvoiceStatus.IN_PROGRESS, parked=True, retry_at=NOW - 60), False),
        (entry_at(InvoiceStatus.INVOICED, parked=True, retry_at=NOW - 60), False),
    ],
)
def test_a_parked_wait_is_due_only_while_parked_and_retrying_once_its_retry_at_has_come(
    entry: LedgerEntry, due: bool
) -> None:
    assert is_due_parked(entry, now=NOW) is due
