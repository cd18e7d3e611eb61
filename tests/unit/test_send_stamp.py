"""Issue 19, wall 7 with a paced dispatcher, over the port fakes: a call deferred before its
claim (no Fynd rate slot in time) queues its messages afresh and writes nothing else, so the
dispatcher stamps each entry first (Ledger.stamp_sent, at most once per SEND_STAMP_SECONDS), and
the reconciler reads the stamp: no copy of an order waiting through deferrals, however long,
while a message really lost after a stamp is still queued again (docs/scale.md, "The reconciler
in a backlog")."""

import pytest

import relay.domain.dispatch as dispatch_module
from factories import invoice, ledger_entry
from fakes import InMemoryRateLimiter, World
from relay.domain.errors import LedgerUnavailableError
from relay.domain.fynd import FyndUnavailable
from relay.domain.invoice import InvoiceKey, InvoiceType
from relay.domain.ledger import SEND_STAMP_SECONDS, InvoiceStatus
from relay.domain.messages import QueuedInvoice
from relay.domain.reconcile import is_stalled

MINUTE = 60.0
WINDOW = 15 * MINUTE
PERIOD = 5 * MINUTE
"""The reconciler's schedule."""


def key(order_id: str) -> InvoiceKey:
    return InvoiceKey(order_id, InvoiceType.SALE)


@pytest.fixture
def world() -> World:
    return World(limiter=InMemoryRateLimiter(20))


def pace_booked(world: World, seconds: float = 50) -> None:
    """Other dispatchers hold every slot of the credential for the next `seconds`: a call that
    cannot start within its invocation is deferred before its claims."""
    assert world.limiter is not None
    world.limiter.throttled("company", now=world.clock(), retry_after=seconds)


def run_visible(world: World) -> None:
    """Dispatch batches until no message is visible."""
    while any(held.visible_at <= world.clock() for held in world.queue.messages.values()):
        world.run()


def delete_message_of(world: World, order_id: str) -> None:
    (message_id,) = [
        held.message_id
        for held in world.queue.messages.values()
        if QueuedInvoice.from_body(held.body).invoice.orderId == order_id
    ]
    del world.queue.messages[message_id]


def waiting_in_a_booked_pace(
    world: World, *, minutes: int, deleted: tuple[str, int] | None = None
) -> dict[str, float]:
    """Each minute: a datapoint of the queue's age, the pace booked for the next 50 s, every
    visible message dispatched (so deferred afresh); the reconciler every 5 minutes. `deleted`:
    (order, minute) whose message is deleted then. When each order was queued again."""
    queued_again: dict[str, float] = {}
    for minute in range(1, minutes + 1):
        world.clock.advance(MINUTE)
        world.queue_age.observe()
        pace_booked(world)
        run_visible(world)
        if deleted is not None and minute == deleted[1]:
            delete_message_of(world, deleted[0])
        if minute % 5 == 0:
            for keys in world.reconcile().requeued.values():
                for queued in keys:
                    queued_again.setdefault(InvoiceKey.parse(queued).order_id, world.clock.now)
    return queued_again


def retrying(world: World, order_id: str) -> None:
    """The order's first call fails (Fynd 503): RETRYING, its message back after the back-off."""
    world.accept(invoice(order_id))
    world.faults.fail("fynd.before", FyndUnavailable("Fynd answered 503"))
    world.run()
    assert world.status(key(order_id)) is InvoiceStatus.RETRYING


# ---- the dispatcher stamps ----


def test_a_call_deferred_before_its_claim_stamps_each_entry_before_its_fresh_copy(world: World) -> None:
    # Given two orders whose call finds the pace booked ahead
    world.accept(invoice("FY-1"), invoice("FY-2"))
    pace_booked(world)
    stamped_at_send: list[float | None] = []
    world.faults.meanwhile(
        "queue.send_later", lambda: stamped_at_send.append(world.ledger.entries[key("FY-1")].sent_at)
    )
    # When the batch is dispatched
    now = world.clock()
    assert world.run() == []
    # Then each entry carries the stamp, written before the first fresh copy went out, and its
    # due time in the work index moved past every copy the stamp covers
    assert stamped_at_send == [now]
    for order_id in ("FY-1", "FY-2"):
        entry = world.ledger.entries[key(order_id)]
        assert (entry.sent_at, entry.due_at) == (now, now + SEND_STAMP_SECONDS)
        # And nothing else: still QUEUED, unclaimed, its last write the acceptance
        assert (entry.status, entry.attempts, entry.updated_at, entry.lease_owner) == (
            InvoiceStatus.QUEUED,
            0,
            now,
            None,
        )
    assert world.queue.live_keys() == {key("FY-1"): 1, key("FY-2"): 1}


def test_an_order_waiting_through_deferrals_is_stamped_once_per_cover_not_once_per_deferral(
    world: World,
) -> None:
    # Given an order deferred every minute for 40 minutes (the pace stays booked)
    world.accept(invoice("FY-1"))
    waiting_in_a_booked_pace(world, minutes=40)
    # Then it was stamped once per SEND_STAMP_SECONDS (7.5 min), not at each of its 40 deferrals:
    # at minutes 1, 9, 17, 25 and 33, each the first deferral after the last stamp's cover
    assert SEND_STAMP_SECONDS == 7.5 * MINUTE
    assert world.queue.live_keys() == {key("FY-1"): 1}
    assert world.ledger.writes["stamp_sent"] == 5
    assert world.ledger.entries[key("FY-1")].sent_at == world.clock.now - 7 * MINUTE


def test_a_failed_stamp_neither_loses_nor_holds_the_message(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted: list[str] = []
    monkeypatch.setattr(dispatch_module, "count", lambda name, **_: counted.append(name))
    # Given a deferred call whose stamp meets a ledger outage
    world.accept(invoice("FY-1"))
    pace_booked(world)
    world.faults.fail("ledger.stamp_sent", LedgerUnavailableError("invoice ledger unavailable"))
    # When the batch is dispatched
    failures = world.run()
    # Then the fresh copy went anyway, spending no receive (the message is not held back), and
    # the failure is counted; the entry is as it was
    assert failures == []
    (fresh,) = world.queue.messages.values()
    assert fresh.receive_count == 0
    assert QueuedInvoice.from_body(fresh.body).invoice.key == key("FY-1")
    assert "SendStampFailed" in counted
    assert world.ledger.entries[key("FY-1")].sent_at is None


# ---- the reconciler reads the stamp ----


@pytest.mark.parametrize("state", ["queued", "retrying"])
def test_an_order_waiting_through_deferrals_longer_than_the_window_gets_no_copy(
    world: World, state: str
) -> None:
    # Given an order (QUEUED, or RETRYING after a 503) whose copies are deferred every minute for
    # 40 minutes, more than twice the window, always sent afresh (the queue's watermark passes
    # its last write within minutes)
    if state == "queued":
        world.accept(invoice("FY-1"))
    else:
        retrying(world, "FY-1")
    # When the reconciler runs every 5 minutes meanwhile
    queued_again = waiting_in_a_booked_pace(world, minutes=40)
    # Then it queues no copy: the order was waiting, not lost
    assert queued_again == {}
    assert world.queue.live_keys() == {key("FY-1"): 1}


def test_a_message_lost_after_its_stamp_is_queued_again_once_the_stamp_and_window_pass(
    world: World,
) -> None:
    # Given an order waiting through deferrals whose message is deleted at minute 20
    start = world.clock()
    world.accept(invoice("FY-1"))
    queued_again = waiting_in_a_booked_pace(world, minutes=60, deleted=("FY-1", 20))
    # Then the reconciler queues it again, once, within the stamp's cover, the window and a
    # period after the deletion
    deleted_at = start + 20 * MINUTE
    assert list(queued_again) == ["FY-1"]
    assert deleted_at < queued_again["FY-1"] <= deleted_at + SEND_STAMP_SECONDS + WINDOW + PERIOD
    # And, once the pace frees, it reaches Fynd once
    world.drain()
    assert world.status(key("FY-1")) is InvoiceStatus.INVOICED
    assert list(world.fynd.sent.values()) == [1]


def test_orders_waiting_through_deferrals_are_not_read_so_a_small_budget_still_finds_a_loss(
    world: World,
) -> None:
    # Given 20 orders waiting through deferrals from minute 0, and one accepted at minute 2
    # whose message is lost at once (never received, never stamped)
    start = world.clock()
    world.accept(*(invoice(f"FY-{n:02}") for n in range(20)))
    world.clock.advance(2 * MINUTE)
    world.accept(invoice("LOST"))
    delete_message_of(world, "LOST")
    # When the reconciler runs every 5 minutes with a budget of one QUEUED entry a run
    queued_again: dict[str, float] = {}
    for minute in range(3, 31):
        world.clock.advance(MINUTE)
        world.queue_age.observe()
        pace_booked(world)
        run_visible(world)
        if minute % 5 == 0:
            for keys in world.reconcile(max_per_run=1).requeued.values():
                for queued in keys:
                    queued_again.setdefault(InvoiceKey.parse(queued).order_id, world.clock.now)
    # Then the waiting orders, earlier in the QUEUED list than the lost one, took none of the
    # budget (the stamp moved them past the watermark in the index) and got no copy; the lost
    # one was found at the first run a window after its acceptance
    assert list(queued_again) == ["LOST"]
    assert queued_again["LOST"] <= start + 2 * MINUTE + WINDOW + PERIOD


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("status", "fields"),
    [
        (InvoiceStatus.QUEUED, {}),
        (InvoiceStatus.RETRYING, {"retry_at": NOW - 50 * MINUTE}),
        (InvoiceStatus.IN_PROGRESS, {"lease_until": NOW - 50 * MINUTE}),
    ],
)
@pytest.mark.parametrize(
    ("stamp_ends_ago", "oldest_sent_ago", "stalled"),
    [
        # the stamp covers a copy that may still wait on the queue: not lost, however old the write
        (10 * MINUTE, 30 * MINUTE, False),
        # the queue has moved past the stamp's end, but the window has not
        (10 * MINUTE, 5 * MINUTE, False),
        # both have: lost
        (20 * MINUTE, 5 * MINUTE, True),
        # the age unknown: the window alone decides, on the stamp's end as on a write
        (10 * MINUTE, None, False),
        (20 * MINUTE, None, True),
    ],
)
def test_the_lost_rule_reads_the_send_stamp_as_the_entrys_last_move(
    status: InvoiceStatus,
    fields: dict[str, float],
    stamp_ends_ago: float,
    oldest_sent_ago: float | None,
    stalled: bool,
) -> None:
    # Given an entry last written and due an hour ago, stamped since: its due time in the work
    # index is the stamp's end
    entry = ledger_entry(
        status,
        accepted_at=NOW - 7200,
        updated_at=NOW - 60 * MINUTE,
        sent_at=NOW - stamp_ends_ago - SEND_STAMP_SECONDS,
        due_at=NOW - stamp_ends_ago,
        **fields,
    )
    oldest = None if oldest_sent_ago is None else NOW - oldest_sent_ago
    # Then it is lost only once the queue's watermark and the window are both past the stamp's end
    assert is_stalled(entry, now=NOW, stall_seconds=WINDOW, oldest_sent_at=oldest) is stalled
