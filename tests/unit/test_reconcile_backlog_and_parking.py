"""Issue 19, walls 6 and 7, over the port fakes: the reconciler tells a healthy backlog from a
lost message by the queue's age, visits each list with its own budget, and queues parked long
waits again when due; a parked invoice is found again whatever befalls one reconciler run."""

from dataclasses import replace

import pytest

import relay.domain.reconcile as reconcile_module
from factories import invoice, ledger_entry
from fakes import Crash, World
from relay.domain.errors import LedgerUnavailableError
from relay.domain.fynd import FyndUnavailable
from relay.domain.invoice import InvoiceKey, InvoiceType
from relay.domain.ledger import EARLY_ORDER_CODE, InvoiceStatus, LedgerEntry, is_parked_wait
from relay.domain.messages import QueuedInvoice
from relay.domain.policy import TOO_EARLY, Backoff, CodePolicy, outage_backoff

MINUTE = 60.0
WINDOW = 15 * MINUTE


def key(order_id: str) -> InvoiceKey:
    return InvoiceKey(order_id, InvoiceType.SALE)


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every metric the reconciler counts."""
    seen: list[str] = []
    monkeypatch.setattr(reconcile_module, "count", lambda name, **_: seen.append(name))
    return seen


# ---- a healthy backlog is not a loss ----


def backlog(world: World, *, deleted: str) -> tuple[dict[str, float], dict[str, float]]:
    """400 invoices accepted 40 a minute for 10 minutes and dispatched 10 a minute: a backlog
    whose oldest message reaches 30 minutes, twice the window. The message of `deleted` is
    deleted on purpose a minute after it was queued. The reconciler runs every 5 minutes,
    CloudWatch takes a datapoint each minute. When each order was queued again, and invoiced."""
    queued_again: dict[str, float] = {}
    invoiced_at: dict[str, float] = {}
    for minute in range(1, 90):
        if minute <= 10:
            world.accept(*(invoice(f"FY-{index:03}") for index in range((minute - 1) * 40, minute * 40)))
        world.clock.advance(MINUTE)
        world.queue_age.observe()
        if minute == 6:
            (message_id,) = [
                held.message_id
                for held in world.queue.messages.values()
                if QueuedInvoice.from_body(held.body).invoice.orderId == deleted
            ]
            del world.queue.messages[message_id]
        world.run(limit=10)
        if minute % 5 == 0:
            for keys in world.reconcile().requeued.values():
                queued_again |= {InvoiceKey.parse(k).order_id: world.clock.now for k in keys}
        for entry in world.ledger.entries.values():
            if entry.status is InvoiceStatus.INVOICED:
                invoiced_at.setdefault(entry.key.order_id, world.clock.now)
    return queued_again, invoiced_at


def test_wall_7_a_healthy_backlog_gets_no_copies_and_a_message_deleted_in_it_is_healed(
    world: World,
) -> None:
    # Given a backlog twice as old as the 15-minute window, in which one message is deleted
    queued_again, invoiced_at = backlog(world, deleted="FY-200")
    # Then the reconciler queued exactly one copy: the lost one's
    assert list(queued_again) == ["FY-200"]
    # And it did so within 10 minutes of the backlog reaching its place (a datapoint's lag, the
    # margin and the 5-minute schedule), long before the backlog ended
    assert queued_again["FY-200"] - invoiced_at["FY-201"] <= 10 * MINUTE
    assert queued_again["FY-200"] < invoiced_at["FY-399"]
    # And every invoice reached Fynd once
    assert len(invoiced_at) == 400
    assert set(world.fynd.sent.values()) == {1}


def test_wall_7_without_the_queues_age_the_window_alone_decides_copies_not_losses(world: World) -> None:
    # Given the same backlog, with CloudWatch unreachable (the age unknown)
    world.queue_age.known = False
    queued_again, invoiced_at = backlog(world, deleted="FY-200")
    # Then the reconciler falls back to the window: it queues copies of waiting messages (what the
    # age prevents), and still loses nothing and sends nothing twice
    assert len(queued_again) > 1
    assert len(invoiced_at) == 400
    assert set(world.fynd.sent.values()) == {1}


# ---- retries waiting behind a backlog are not losses either ----


def retrying_backlog(
    world: World, *, deleted: str | None = None
) -> tuple[dict[str, float], dict[str, float], float]:
    """The backlog above (400 invoices, the oldest message reaching 30 minutes), in which Fynd
    fails (503) the calls made at minutes 6 and 9: those 20 orders are RETRYING with a short
    back-off, and when it ends their messages wait behind the backlog, visible, for longer than
    the window (a retry's message keeps its send time; here it rejoins the line at its back).
    `deleted`: that order's message is deleted on purpose once its retry is due (its entry then
    has nothing behind it). When each order was queued again and invoiced, and the longest any
    RETRYING entry a reconciler run saw had been past its retryAt."""
    queued_again: dict[str, float] = {}
    invoiced_at: dict[str, float] = {}
    overdue = 0.0
    for minute in range(1, 90):
        if minute <= 10:
            world.accept(*(invoice(f"FY-{index:03}") for index in range((minute - 1) * 40, minute * 40)))
        world.clock.advance(MINUTE)
        world.queue_age.observe()
        if minute in (6, 9):
            world.faults.fail("fynd.before", FyndUnavailable("Fynd answered 503"))
        if deleted is not None and minute == 12:
            (message_id,) = [
                held.message_id
                for held in world.queue.messages.values()
                if QueuedInvoice.from_body(held.body).invoice.orderId == deleted
            ]
            assert world.ledger.entries[key(deleted)].status is InvoiceStatus.RETRYING
            del world.queue.messages[message_id]
        world.run(limit=10)
        if minute % 5 == 0:
            overdue = max(
                [overdue]
                + [
                    world.clock.now - entry.retry_at
                    for entry in world.ledger.entries.values()
                    if entry.status is InvoiceStatus.RETRYING and entry.retry_at is not None
                ]
            )
            for keys in world.reconcile().requeued.values():
                queued_again |= {InvoiceKey.parse(k).order_id: world.clock.now for k in keys}
        for entry in world.ledger.entries.values():
            if entry.status is InvoiceStatus.INVOICED:
                invoiced_at.setdefault(entry.key.order_id, world.clock.now)
    return queued_again, invoiced_at, overdue


def retried_orders(world: World) -> list[str]:
    return sorted(entry.key.order_id for entry in world.ledger.entries.values() if entry.attempts > 1)


def test_wall_7_retries_waiting_behind_a_healthy_backlog_get_no_copies(world: World) -> None:
    # Given a backlog twice as old as the window, with 20 orders RETRYING behind it
    queued_again, invoiced_at, overdue = retrying_backlog(world)
    assert len(retried_orders(world)) == 20
    # And some reconciler run saw a RETRYING entry more than the window past its retryAt, its
    # message waiting in the line (what the window alone calls lost)
    assert overdue > WINDOW
    # Then the reconciler queued no copy at all: every message was on its way
    assert queued_again == {}
    # And every invoice reached Fynd once
    assert len(invoiced_at) == 400
    assert set(world.fynd.sent.values()) == {1}


def test_wall_7_a_retrys_message_deleted_in_a_backlog_is_healed_once_the_backlog_passes_it(
    world: World,
) -> None:
    # Given the same backlog, in which one RETRYING order's message is deleted once its retry is due
    queued_again, invoiced_at, _ = retrying_backlog(world, deleted="FY-085")
    # Then the reconciler queued exactly one copy: the lost one's
    assert list(queued_again) == ["FY-085"]
    # And within 10 minutes of the backlog reaching its place in the line (its retryAt: the
    # other orders of its failed call, due with it, were dispatched then), before the backlog ended
    reached = max(invoiced_at[order] for order in retried_orders(world) if order != "FY-085")
    assert queued_again["FY-085"] - reached <= 10 * MINUTE
    assert queued_again["FY-085"] < max(invoiced_at.values())
    # And every invoice reached Fynd once
    assert len(invoiced_at) == 400
    assert set(world.fynd.sent.values()) == {1}


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("status", "fields", "oldest_sent_ago", "stalled"),
    [
        # the queue still holds a message sent before the entry was due: it may be that one, waiting
        (InvoiceStatus.RETRYING, {"retry_at": NOW - 20 * MINUTE}, 40 * MINUTE, False),
        (InvoiceStatus.IN_PROGRESS, {"lease_until": NOW - 20 * MINUTE}, 40 * MINUTE, False),
        (InvoiceStatus.QUEUED, {}, 40 * MINUTE, False),
        # the queue has moved past the entry's time (less the margin): its message is gone
        (InvoiceStatus.RETRYING, {"retry_at": NOW - 20 * MINUTE}, 10 * MINUTE, True),
        (InvoiceStatus.IN_PROGRESS, {"lease_until": NOW - 20 * MINUTE}, 10 * MINUTE, True),
        (InvoiceStatus.QUEUED, {}, 10 * MINUTE, True),
        # within the margin of the oldest message: not yet
        (InvoiceStatus.RETRYING, {"retry_at": NOW - 20 * MINUTE}, 19.5 * MINUTE, False),
        # the age unknown: the window alone decides
        (InvoiceStatus.RETRYING, {"retry_at": NOW - 20 * MINUTE}, None, True),
    ],
)
def test_wall_7_every_unfinished_status_is_lost_only_once_the_queue_has_moved_past_it(
    status: InvoiceStatus, fields: dict[str, float], oldest_sent_ago: float | None, stalled: bool
) -> None:
    # Given an entry due and last written 20 and 22 minutes ago (past the 15-minute window), and
    # the send time of the oldest message on the queue (of those received fewer than 3 times)
    written_ago = (20 if status is InvoiceStatus.QUEUED else 22) * MINUTE
    entry = ledger_entry(status, accepted_at=NOW - 7200, updated_at=NOW - written_ago, **fields)
    oldest = None if oldest_sent_ago is None else NOW - oldest_sent_ago
    # Then it is lost only when the queue moved past its time: the same rule for every status
    assert reconcile_module.is_stalled(entry, now=NOW, stall_seconds=WINDOW, oldest_sent_at=oldest) is stalled


# ---- each list its own budget, 10 per send ----


def stored(world: World, order_id: str, status: InvoiceStatus, *, due_ago: float, **fields: object) -> None:
    item = invoice(order_id)
    now = world.clock.now
    world.ledger.entries[item.key] = LedgerEntry(
        key=item.key,
        status=status,
        content_hash=item.content_hash(),
        invoice_number=item.invoiceNumber,
        attempts=1,
        accepted_at=now - 7200,
        updated_at=now - due_ago - 60,
        due_at=now - due_ago,
        **fields,  # type: ignore[arg-type]
    )
    world.ledger.bodies[item.key] = QueuedInvoice(
        invoice=item, content_hash=item.content_hash(), accepted_at=now - 7200
    ).to_body()


def test_wall_7_a_run_in_a_healthy_backlog_reads_no_waiting_entry_so_its_budgets_stay_whole(
    world: World,
) -> None:
    # Given 30 RETRYING entries 20 minutes past their retryAt, while the queue's oldest message
    # was sent 40 minutes ago (they wait behind it)
    now = world.clock.now
    for index in range(30):
        stored(
            world, f"R-{index:02}", InvoiceStatus.RETRYING, due_ago=20 * MINUTE, retry_at=now - 20 * MINUTE
        )
    world.queue_age.oldest_sent_at = lambda: now - 40 * MINUTE  # type: ignore[method-assign]
    # When a run with a budget of 10 per list comes
    report = world.reconcile(max_per_run=10)
    # Then it queued nothing and read to the end of every list: the query stops at the queue's
    # watermark, so waiting entries never fill a budget a real loss would need
    assert (report.requeued, report.complete) == ({}, True)
    assert world.queue.messages == {}


def test_wall_7_each_list_has_its_own_budget_so_a_flood_of_one_does_not_starve_another(world: World) -> None:
    # Given 40 lost QUEUED entries, and one lost entry in each other list, and one parked due
    now = world.clock.now
    for index in range(40):
        stored(world, f"Q-{index:02}", InvoiceStatus.QUEUED, due_ago=20 * MINUTE)
    stored(world, "P-1", InvoiceStatus.IN_PROGRESS, due_ago=20 * MINUTE, lease_until=now - 20 * MINUTE)
    stored(world, "R-1", InvoiceStatus.RETRYING, due_ago=20 * MINUTE, retry_at=now - 20 * MINUTE)
    stored(world, "W-1", InvoiceStatus.RETRYING, due_ago=MINUTE, retry_at=now - MINUTE, parked=True)
    # When the reconciler runs with a budget of 16 per list
    report = world.reconcile(max_per_run=16, max_parked_per_run=16)
    # Then every list was visited: the QUEUED flood took its own budget, not the others'
    assert report.requeued["IN_PROGRESS"] == ["P-1#sale"]
    assert report.requeued["RETRYING"] == ["R-1#sale"]
    assert report.returned == ["W-1#sale"]
    assert 0 < len(report.requeued["QUEUED"]) <= 16
    assert report.complete is False
    # And each list's were queued in one send (the SQS adapter sends 10 per SendMessageBatch), not
    # one send per entry
    assert world.queue.requests["send"] == 4


def test_wall_7_an_entry_written_after_the_queues_oldest_message_is_left_however_old_its_due_time(
    world: World,
) -> None:
    # Given a RETRYING entry listed as due 40 minutes ago but written 20 minutes ago (past the
    # window), while the queue's oldest message was sent 30 minutes ago: its message, sent
    # around its last write, may wait behind that backlog
    now = world.clock.now
    stored(world, "R-1", InvoiceStatus.RETRYING, due_ago=40 * MINUTE, retry_at=now - 40 * MINUTE)
    entry = world.ledger.entries[key("R-1")]
    world.ledger.entries[key("R-1")] = replace(entry, updated_at=now - 20 * MINUTE)
    world.queue_age.oldest_sent_at = lambda: now - 30 * MINUTE  # type: ignore[method-assign]
    # When the reconciler runs, Then it is not called lost: the queue has not moved past its write
    assert world.reconcile().requeued == {}
    assert world.queue.messages == {}


def test_wall_6_the_parked_list_is_visited_with_its_own_budget_not_the_lost_lists(world: World) -> None:
    # Given three parked waits come due, and budgets of one per lost list and a hundred for the parked
    now = world.clock.now
    for index in range(3):
        stored(
            world,
            f"W-{index}",
            InvoiceStatus.RETRYING,
            due_ago=MINUTE + index,
            retry_at=now - MINUTE,
            parked=True,
        )
    # When the reconciler runs, Then all three return in the one run
    report = world.reconcile(max_per_run=1, max_parked_per_run=100)
    assert (sorted(report.returned), report.complete) == (["W-0#sale", "W-1#sale", "W-2#sale"], True)


# ---- long waits parked in the ledger ----


def parking_world() -> World:
    """A world whose back-off starts at 30 minutes: the first IN403 is a long wait."""
    world = World()
    world.policy = CodePolicy(Backoff(1800, 3600, lambda: 0.5), 86_400, outage_backoff(30, lambda: 0.5))
    return world


def test_wall_6_a_long_wait_is_parked_in_the_ledger_not_held_in_flight(counted: list[str]) -> None:
    # Given an order Fynd answers IN403 for 40 minutes, and a back-off past 15 minutes
    world = parking_world()
    world.fynd.early_until["A"] = world.clock.now + 40 * MINUTE
    world.accept(invoice("A"))
    # When it is dispatched
    assert world.run() == []
    # Then its message is acknowledged (nothing in flight), and the entry is parked until retryAt
    entry = world.ledger.entries[key("A")]
    assert world.queue.messages == {}
    assert (entry.status, entry.parked) == (InvoiceStatus.RETRYING, True)
    assert entry.retry_at is not None
    assert entry.retry_at - world.clock.now > 15 * MINUTE
    # When the reconciler runs before it is due, Then nothing is queued
    assert world.reconcile().returned == []
    # When it runs once it is due, Then it is queued again, as returned (not as lost: no alarm)
    world.clock.now = entry.retry_at
    report = world.reconcile()
    assert (report.returned, report.requeued) == (["A#sale"], {})
    assert counted == ["ParkedReturned"]
    # And it reaches Fynd once it is confirmed, without a second send before
    world.drain()
    assert world.status(key("A")) is InvoiceStatus.INVOICED
    assert world.fynd.applied[key("A")] == 1


def parked_and_due(world: World) -> LedgerEntry:
    world.fynd.early_until["A"] = world.clock.now + 40 * MINUTE
    world.accept(invoice("A"))
    world.run()
    entry = world.ledger.entries[key("A")]
    assert entry.parked
    assert entry.retry_at is not None
    world.clock.now = entry.retry_at + 1
    return entry


def test_wall_6_a_parked_invoice_is_found_again_after_a_reconciler_run_fails() -> None:
    # Given a parked invoice that came due, and a reconciler run that cannot read the ledger
    world = parking_world()
    parked_and_due(world)
    world.faults.fail("ledger.due", LedgerUnavailableError("throttled"), nth=4)
    with pytest.raises(LedgerUnavailableError):
        world.reconcile()
    # When the next scheduled run comes, Then it is queued again, and invoiced
    world.clock.advance(5 * MINUTE)
    assert world.reconcile().returned == ["A#sale"]
    world.drain()
    assert world.status(key("A")) is InvoiceStatus.INVOICED


def test_wall_6_a_parked_invoice_is_found_again_after_a_run_that_timed_out_before_it() -> None:
    # Given a parked invoice that came due, and a run whose time is up before it reaches PARKED
    world = parking_world()
    parked_and_due(world)
    left = iter([60.0, 60.0, 60.0])
    report = world.reconcile(seconds_left=lambda: next(left, 1.0))
    assert (report.returned, report.complete, world.queue.messages) == ([], False, {})
    # When the next run comes, Then it is queued again
    world.clock.advance(5 * MINUTE)
    assert world.reconcile().returned == ["A#sale"]


def test_wall_6_a_parked_invoice_is_found_again_after_a_run_died_between_its_mark_and_its_send() -> None:
    # Given a parked invoice that came due, and a reconciler killed after marking it, before the send
    world = parking_world()
    parked_and_due(world)
    world.faults.fail("queue.send", Crash())
    with pytest.raises(Crash):
        world.reconcile()
    assert world.queue.messages == {}
    # When runs come every 5 minutes, Then the mark keeps it for a window, after which it is lost:
    # queued again, counted as lost (the alarm sees a real loss), and invoiced once
    requeued: dict[str, list[str]] = {}
    for _ in range(4):
        world.clock.advance(5 * MINUTE)
        requeued |= world.reconcile().requeued
    assert requeued == {"RETRYING": ["A#sale"]}
    world.drain()
    assert world.status(key("A")) is InvoiceStatus.INVOICED
    assert world.fynd.applied[key("A")] == 1


def test_wall_6_a_dispatcher_that_dies_after_parking_leaves_a_copy_that_waits_and_no_second_send() -> None:
    # Given a dispatcher that records the park and dies before acknowledging the message
    world = parking_world()
    world.fynd.early_until["A"] = world.clock.now + 40 * MINUTE
    world.accept(invoice("A"))
    world.faults.fail("ledger.record.after", Crash())
    batch = world.queue.receive()
    with pytest.raises(Crash):
        world.dispatcher().dispatch(batch, lambda: 60.0)
    world.queue.crash(batch)
    # When its message returns, the reconciler queues the parked entry at its due time, and all drains
    world.drain(max_rounds=1000)
    # Then the invoice is invoiced, applied once
    assert world.status(key("A")) is InvoiceStatus.INVOICED
    assert world.fynd.applied[key("A")] == 1


@pytest.mark.parametrize(
    ("reason", "delay", "parked"),
    [
        ("IN403", 299, False),  # shorter than the reconciler's period: held, back on time
        ("IN403", 300, True),  # an early order's wait from 5 minutes
        ("fynd_unavailable", 900, False),  # an outage's back-off spends receives: a lasting one dead-letters
        ("fynd_throttled", 901, True),  # past SQS's longest delay: parked whatever the reason
        ("IN777", 1800, True),
    ],
)
def test_wall_6_which_waits_are_parked(reason: str, delay: int, parked: bool) -> None:
    assert is_parked_wait(delay, reason) is parked
    # And the early order's code is the policy's own
    assert EARLY_ORDER_CODE == TOO_EARLY


def test_wall_6_an_early_orders_five_minute_wait_is_parked_and_an_outages_is_held(world: World) -> None:
    # Given an early order whose back-off has reached 6 minutes, and an order whose Fynd call
    # failed on an outage on its seventh receive (a 15-minute back-off)
    world.policy = CodePolicy(Backoff(480, 3600, lambda: 0.5), 86_400, outage_backoff(30, lambda: 0.5))
    world.fynd.early_until["EARLY"] = world.clock.now + 3600
    world.accept(invoice("EARLY"))
    world.run()
    # Then the early order's message is gone and the entry parked
    assert world.queue.messages == {}
    assert world.ledger.entries[key("EARLY")].parked
    # And the outage's message is held in flight (it comes back and spends its receives)
    world.accept(invoice("DOWN"))
    (held,) = world.queue.messages.values()
    held.receive_count = 6
    world.faults.fail("fynd.before", FyndUnavailable("503"))
    assert len(world.run()) == 1
    assert not world.ledger.entries[key("DOWN")].parked
