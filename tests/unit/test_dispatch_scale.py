"""The dispatcher's sale-day rules (relay/domain/dispatch.py's docstring, issue 19 walls 3 to 5),
over the port fakes with a clock that moves: Shipment Info reads and sleeps take time, and the
invocation's time left runs down with it (`timed=True`)."""

import itertools
import random
import threading
from dataclasses import replace

import pytest

from factories import invoice
from fakes import SETTINGS, InMemoryRateLimiter, ScriptedFynd, World, lost_answer
from relay.domain.fynd import FyndCall, FyndNotSent, FyndReceipt, FyndThrottled, FyndUnavailable
from relay.domain.invoice import Invoice, InvoiceKey, InvoiceType
from relay.domain.ledger import InvoiceStatus
from relay.domain.policy import SHIPMENT_INFO
from relay_local.stack import load_template

RESERVE = SETTINGS.record_reserve_seconds
REQUEST = SETTINGS.request_seconds


def key(order_id: str) -> InvoiceKey:
    return InvoiceKey(order_id, InvoiceType.SALE)


def answers_lost(world: World, *orders: str) -> None:
    """Every order was sent once and its answer lost: each is RETRYING, in doubt, due now."""
    world.accept(*[invoice(order) for order in orders])
    world.faults.fail("fynd.after", lost_answer())
    world.run(limit=len(orders))
    assert all(world.status(key(order)) is InvoiceStatus.RETRYING for order in orders)
    world.clock.now = world.queue.next_visible_at() or world.clock.now


# ---- the budget, computed again before every send and every read ----


def test_a_send_after_slow_reads_gets_only_the_time_the_invocation_has_left() -> None:
    # Given three orders in doubt, and Shipment Info taking 18 s a read (proving nothing), one at a time
    world = World()
    answers_lost(world, "A", "B", "C")
    world.fynd.read_seconds = 18
    world.fynd.novel_status.update("ABC")
    started = world.clock()
    # When a 60 s invocation reads them and sends
    world.run(seconds_left=60, timed=True)
    # Then every send's budget ends within the invocation, its reserve kept
    ends = started + 60
    sends = list(zip(world.fynd.call_starts[1:], world.fynd.budgets[1:], strict=True))
    assert sends, "the resend went out"
    assert all(start + budget <= ends - RESERVE for start, budget in sends)
    # And so does every read's
    assert all(start + budget <= ends - RESERVE for start, budget in world.fynd.read_budgets)


def test_a_wave_of_reads_fits_the_lease() -> None:
    # Given eight orders in doubt, reads of 18 s one at a time, and a 900 s invocation
    world = World()
    answers_lost(world, *"ABCDEFGH")
    world.fynd.read_seconds = 18
    # When they are read and sent
    world.run(seconds_left=900, timed=True)
    # Then no read and no send runs past its claim's lease (less the reserve to record)
    leases = {e.key.order_id: e.lease_until for e in world.ledger.entries.values()}
    assert all(until is None for until in leases.values()), "every claim was given back or recorded"
    claimed_at = world.fynd.read_budgets[0][0]
    lease_end = claimed_at + SETTINGS.lease_seconds
    assert all(start + budget <= lease_end - RESERVE for start, budget in world.fynd.read_budgets)
    assert all(
        start + budget <= lease_end - RESERVE
        for start, budget in zip(world.fynd.call_starts[1:], world.fynd.budgets[1:], strict=True)
    )
    # And what did not fit waits for the next invocation without spending a receive
    world.drain()
    assert world.queue.dead_letters == []
    assert all(world.status(key(order)) is InvoiceStatus.INVOICED for order in "ABCDEFGH")
    assert world.fynd.applied.total() == 8


# ---- waiting never spends a receive ----


def test_an_invoice_deferred_for_time_batch_after_batch_is_never_dead_lettered() -> None:
    # Given a healthy Fynd, and invocations that never have time for a call (20 s left)
    world = World()
    world.accept(invoice("A"))
    for _ in range(3 * SETTINGS.max_receive_count):
        world.clock.now = world.queue.next_visible_at() or world.clock.now
        world.run(seconds_left=20)
    # Then it waited without a claim, a write, or a spent receive
    assert world.queue.dead_letters == []
    (waiting,) = world.queue.messages.values()
    assert waiting.receive_count == 0
    assert (world.status(key("A")), world.ledger.writes["claim"]) == (InvoiceStatus.QUEUED, 0)
    # And the first invocation with time sends it
    world.drain()
    assert world.status(key("A")) is InvoiceStatus.INVOICED


def test_every_copy_of_a_call_with_no_time_left_is_kept() -> None:
    # Given two copies of one invoice in a batch with no time for a call (either may be the
    # invoice's only live message: the other may be a stale delivery of one already replaced)
    world = World()
    world.accept(invoice("A"))
    world.queue_again(invoice("A"))
    # When the batch is dispatched with 20 s left
    assert world.run(seconds_left=20) == []
    # Then both are queued afresh, none acknowledged without a fresh one in its place
    assert world.queue.live_keys()[key("A")] == 2
    assert all(m.receive_count == 0 for m in world.queue.messages.values())


def no_rate_slot_for(world: World, seconds: float) -> None:
    """Every dispatcher on the company credential must wait `seconds` for its next slot."""
    assert world.limiter is not None
    world.limiter.throttled("company", now=world.clock(), retry_after=seconds)


def test_a_call_with_no_rate_slot_in_time_is_not_claimed_and_spends_no_receive() -> None:
    # Given a call whose credential has no slot before the invocation's time runs out
    world = World(limiter=InMemoryRateLimiter(20))
    world.accept(invoice("A"))
    no_rate_slot_for(world, 25)
    # When the batch is dispatched (60 s: a call needs 18 s of the 36 s budget, 25 s is too late)
    assert world.run(seconds_left=60, timed=True) == []
    # Then nothing is sent and nothing claimed (the slot is sought before the claim: a booked
    # pace costs no claim, only the entry's send stamp), and a fresh copy waits for the slot
    entry = world.ledger.entries[key("A")]
    assert (entry.status, entry.attempts, entry.last_error) == (InvoiceStatus.QUEUED, 0, None)
    (fresh,) = world.queue.messages.values()
    assert (fresh.receive_count, fresh.visible_at >= world.clock() + 25) == (0, True)
    assert world.fynd.calls == []


# ---- parallel calls under one rate per credential ----


class Rendezvous(ScriptedFynd):
    """Every call waits until `parties` calls are in flight together (fails if they never are)."""

    def __init__(self, world: World, parties: int) -> None:
        super().__init__(world.clock)
        # Generous: a loaded machine may start threads slowly; calls made one after another never meet
        self.barrier = threading.Barrier(parties, timeout=60)

    def update_invoices(self, call: FyndCall, *, time_budget_seconds: float) -> FyndReceipt:
        self.barrier.wait()
        return super().update_invoices(call, time_budget_seconds=time_budget_seconds)


def test_the_calls_of_one_invocation_go_out_in_parallel() -> None:
    # Given four calls (four locations) and four calls allowed in flight
    world = World(settings=replace(SETTINGS, call_concurrency=4, ledger_concurrency=4))
    world.fynd = Rendezvous(world, 4)
    world.accept(*[invoice(f"O-{n}", locationCode=f"WH-{n}") for n in range(4)])
    # When one batch is dispatched (each call waits for the other three to be in flight)
    assert world.run() == []
    # Then all four went out together and were invoiced
    assert len(world.fynd.calls) == 4
    assert all(world.status(key(f"O-{n}")) is InvoiceStatus.INVOICED for n in range(4))


def test_two_dispatchers_share_one_pace_per_credential() -> None:
    # Given Fynd allows 5 calls a second, and two dispatcher instances starting at the same time
    world = World(limiter=InMemoryRateLimiter(5))
    world.accept(*[invoice(f"O-{n}", locationCode=f"WH-{n}") for n in range(6)])
    first, second = world.queue.receive(3), world.queue.receive(3)
    start = world.clock()
    world.dispatch(first, owner="worker-1")
    world.clock.now = start  # worker 2 starts at the same moment as worker 1
    world.dispatch(second, owner="worker-2")
    # Then the six calls started 0.2 s apart at least, whichever instance sent them
    assert world.limiter is not None
    starts = sorted(at for _, at in world.limiter.grants)
    assert len(starts) == 6
    assert all(later - earlier >= 0.2 - 1e-9 for earlier, later in itertools.pairwise(starts))
    assert all(world.status(key(f"O-{n}")) is InvoiceStatus.INVOICED for n in range(6))


def test_location_level_credentials_are_paced_apart() -> None:
    # Given WH-1 has its own credentials, and Fynd allows 1 call a second per credential
    world = World(limiter=InMemoryRateLimiter(1))
    world.fynd.credentials["WH-1"] = "wh1-user"
    world.accept(invoice("A", locationCode="WH-1"), invoice("B", locationCode="WH-2"))
    # When both calls go out
    world.run()
    # Then neither waited for the other's credential
    assert world.limiter is not None
    assert sorted(credential for credential, _ in world.limiter.grants) == ["company", "wh1-user"]
    assert world.clock.sleep_calls == []


# ---- a 429 holds the rest of the batch ----


def three_locations(world: World) -> None:
    world.accept(*[invoice(order, locationCode=f"WH-{order}") for order in "ABC"])


def test_a_429_holds_the_rest_of_the_batch_without_spending_receives() -> None:
    # Given three calls, and Fynd answering the first with 429, Retry-After 30 s
    world = World(limiter=InMemoryRateLimiter(20))
    three_locations(world)
    world.faults.fail("fynd.before", FyndThrottled("429", retry_after=30, status=429))
    throttled_at = world.clock()
    # When the batch is dispatched in a 60 s invocation (30 s leaves no time for a whole request)
    world.run(seconds_left=60, timed=True)
    # Then only the first call was tried; the others were not claimed, and come back after
    # Retry-After as fresh copies (no receive spent)
    assert len(world.fynd.budgets) == 1
    held = [m for m in world.queue.messages.values() if m.receive_count == 0]
    assert len(held) == 2
    assert all(m.visible_at >= throttled_at + 30 for m in held)
    assert sorted(o for o in "ABC" if world.status(key(o)) is InvoiceStatus.QUEUED) == ["B", "C"]
    # And every dispatcher on the credential waits too
    assert world.limiter is not None
    assert world.limiter.throttles == [("company", throttled_at + 30)]


def test_a_short_retry_after_is_waited_out_inside_the_invocation() -> None:
    # Given Fynd answering the first of three calls with 429, Retry-After 5 s
    world = World(limiter=InMemoryRateLimiter(20))
    three_locations(world)
    world.faults.fail("fynd.before", FyndThrottled("429", retry_after=5, status=429))
    throttled_at = world.clock()
    # When the batch is dispatched
    world.run(seconds_left=60, timed=True)
    # Then the other two calls were sent after Retry-After, in the same invocation
    assert [start >= throttled_at + 5 for start in world.fynd.call_starts[-2:]] == [True, True]
    assert sum(world.status(key(o)) is InvoiceStatus.INVOICED for o in "ABC") == 2


# ---- no Shipment Info read where nothing can have been sent ----


@pytest.mark.parametrize(
    "failure",
    [FyndThrottled("429", retry_after=1, status=429), FyndNotSent("connection refused")],
    ids=["429", "connection refused"],
)
def test_no_read_after_an_attempt_that_proves_nothing_was_sent(failure: Exception) -> None:
    # Given the first send failed in a way that proves Fynd applied nothing
    world = World()
    world.accept(invoice("A"))
    world.faults.fail("fynd.before", failure)
    world.run()
    entry = world.ledger.entries[key("A")]
    assert entry.last_error is not None
    assert entry.last_error.nothing_sent
    # When it is retried
    world.drain()
    # Then it is sent again without a Shipment Info read, and the answer confirms it
    assert world.fynd.reads["A"] == 0
    entry = world.ledger.entries[key("A")]
    assert (entry.status, entry.confirmed_by) == (InvoiceStatus.INVOICED, "answer")


def test_a_call_whose_slot_was_taken_before_its_claims_keeps_the_pace_through_its_reads() -> None:
    # Given an order in doubt (its answer was lost; Shipment Info proves nothing), and a pace of
    # one request a second
    world = World(limiter=InMemoryRateLimiter(1))
    answers_lost(world, "A")
    world.fynd.novel_status.add("A")
    world.fynd.read_seconds = 0.2
    reads_before = len(world.fynd.read_budgets)
    calls_before = len(world.fynd.call_starts)
    # When it is dispatched: a slot taken before the claim, a read, then the send
    world.run(seconds_left=60, timed=True)
    # Then the read starts on the slot taken before the claim and the send takes the next one:
    # the two requests are a whole interval apart, never on one slot
    read_start = world.fynd.read_budgets[reads_before][0]
    (send_start,) = world.fynd.call_starts[calls_before:]
    assert send_start - read_start >= 1
    assert world.status(key("A")) is InvoiceStatus.INVOICED


def test_reads_on_a_pace_of_their_own_leave_the_calls_pace_to_the_sends() -> None:
    # Given an order in doubt (its answer was lost; Shipment Info proves nothing), and Shipment
    # Info reads paced apart from the Update Invoice calls, one request a second each
    calls, reads = InMemoryRateLimiter(1), InMemoryRateLimiter(1)
    world = World(limiter=calls)
    answers_lost(world, "A")
    world.read_limiter = reads
    world.fynd.novel_status.add("A")
    calls_before = len(calls.grants)
    # When it is dispatched: a slot taken before the claim, a read, then the send
    world.run(seconds_left=60, timed=True)
    # Then the read takes a slot of the read pace, under its own key, and the send the slot its
    # call took before the claim: one slot of the calls' pace, none spent on the read
    assert [credential for credential, _ in reads.grants] == ["company#shipment-info"]
    assert [credential for credential, _ in calls.grants[calls_before:]] == ["company"]
    assert (world.fynd.reads["A"], world.status(key("A"))) == (1, InvoiceStatus.INVOICED)


def test_a_429_on_a_read_paced_apart_slows_the_read_pace_only() -> None:
    # Given an order in doubt and a new one for the same call, reads paced apart, and Shipment
    # Info answering 429 with a Retry-After longer than the invocation has left
    calls, reads = InMemoryRateLimiter(20), InMemoryRateLimiter(20)
    world = World(limiter=calls)
    answers_lost(world, "A")
    world.read_limiter = reads
    world.accept(invoice("B"))
    world.faults.fail("fynd.read", FyndThrottled("429", retry_after=300, status=429))
    # When they are dispatched
    now = world.clock()
    world.run(seconds_left=60, timed=True)
    # Then the read pace waits out Retry-After and slows, and the order read backs off; the
    # calls' pace is not touched, and the new order goes out in this invocation
    assert reads.throttles == [("company#shipment-info", now + 300)]
    assert calls.throttles == []
    assert world.status(key("A")) is InvoiceStatus.RETRYING
    assert world.status(key("B")) is InvoiceStatus.INVOICED


def test_a_lost_answer_is_read_at_once_when_reads_have_their_own_pace() -> None:
    # Given reads paced apart, and a call of two orders that Fynd applies but whose answer is lost
    world = World(limiter=InMemoryRateLimiter(20), read_limiter=InMemoryRateLimiter(20))
    world.accept(invoice("A"), invoice("B"))
    world.faults.fail("fynd.after", lost_answer())
    # When it is dispatched once
    failed = world.run(seconds_left=60, timed=True)
    # Then each order is read in the same invocation and recorded invoiced on that proof: sent
    # once, read once, and no message comes back
    for order in ("A", "B"):
        entry = world.ledger.entries[key(order)]
        assert (entry.status, entry.confirmed_by) == (InvoiceStatus.INVOICED, SHIPMENT_INFO)
        assert (world.fynd.sent[key(order)], world.fynd.reads[order]) == (1, 1)
    assert failed == []


def test_an_order_a_read_at_once_finds_not_invoiced_waits_in_doubt_for_its_retry() -> None:
    # Given reads paced apart, and a call whose answer is lost before Fynd applied it (or while
    # the request is still at Fynd: a read this soon cannot tell)
    world = World(limiter=InMemoryRateLimiter(20), read_limiter=InMemoryRateLimiter(20))
    world.accept(invoice("A"))
    world.faults.fail("fynd.before", lost_answer())
    # When it is dispatched once
    world.run(seconds_left=60, timed=True)
    # Then it is read at once but not sent again in that invocation: it waits in doubt
    assert (world.fynd.reads["A"], len(world.fynd.call_starts)) == (1, 1)
    entry = world.ledger.entries[key("A")]
    assert entry.status is InvoiceStatus.RETRYING
    assert entry.last_error is not None
    assert entry.last_error.nothing_sent is False
    # And its retry reads again before it sends, and sends it once
    world.drain()
    assert world.fynd.reads["A"] == 2
    assert (world.fynd.sent[key("A")], world.status(key("A"))) == (1, InvoiceStatus.INVOICED)


def test_an_unconfirmed_order_read_at_once_waits_for_its_confirmation_without_more_reads() -> None:
    # Given reads paced apart, an order Fynd answered IN403 (not confirmed yet), and the answer
    # to its next attempt lost
    world = World(limiter=InMemoryRateLimiter(20), read_limiter=InMemoryRateLimiter(20))
    world.fynd.early_until["E"] = world.clock() + 1200
    world.accept(invoice("E"))
    world.run(seconds_left=60, timed=True)
    world.clock.now = world.queue.next_visible_at() or world.clock.now
    world.faults.fail("fynd.after", lost_answer())
    # When that attempt is dispatched
    world.run(seconds_left=60, timed=True)
    # Then the read at once finds it waiting for confirmation, and that is recorded: IN403
    entry = world.ledger.entries[key("E")]
    assert entry.status is InvoiceStatus.RETRYING
    assert entry.last_error is not None
    assert entry.last_error.code == "IN403"
    assert world.fynd.reads["E"] == 1
    # And once confirmed, it is sent again without another read, and invoiced
    world.clock.now += 1200
    world.drain()
    assert (world.fynd.reads["E"], world.status(key("E"))) == (1, InvoiceStatus.INVOICED)


def test_a_read_at_once_refused_429_leaves_the_order_in_doubt_so_its_retry_reads_first() -> None:
    # Given reads paced apart, a call Fynd applies but whose answer is lost, and the read at
    # once refused 429
    world = World(limiter=InMemoryRateLimiter(20), read_limiter=InMemoryRateLimiter(20))
    world.accept(invoice("A"))
    world.faults.fail("fynd.after", lost_answer())
    world.faults.fail("fynd.read", FyndThrottled("429", retry_after=1, status=429))
    world.run(seconds_left=60, timed=True)
    entry = world.ledger.entries[key("A")]
    assert entry.last_error is not None
    assert (entry.status, entry.last_error.nothing_sent) == (InvoiceStatus.RETRYING, False)
    # When it is retried
    world.drain()
    # Then the retry reads before it sends (the refused read is not counted), finds it
    # invoiced, and never sends it twice
    assert (world.fynd.reads["A"], world.fynd.sent[key("A")]) == (1, 1)
    assert world.status(key("A")) is InvoiceStatus.INVOICED


def test_a_lost_answer_waits_for_its_retry_when_reads_share_the_calls_pace() -> None:
    # Given reads on the calls' pace, and a call whose answer is lost after Fynd applied it
    world = World(limiter=InMemoryRateLimiter(20))
    world.accept(invoice("A"))
    world.faults.fail("fynd.after", lost_answer())
    # When it is dispatched once
    world.run(seconds_left=60, timed=True)
    # Then no read spends a call's slot now: the order waits in doubt for its retry
    assert (world.fynd.reads["A"], world.status(key("A"))) == (0, InvoiceStatus.RETRYING)


def test_no_read_after_an_attempt_deferred_for_a_rate_slot() -> None:
    # Given a call deferred because no rate slot came in time
    world = World(limiter=InMemoryRateLimiter(20))
    world.accept(invoice("A"))
    no_rate_slot_for(world, 25)
    world.run(seconds_left=60, timed=True)
    # When it is retried
    world.drain()
    # Then it is sent without a read
    assert (world.fynd.reads["A"], world.status(key("A"))) == (0, InvoiceStatus.INVOICED)


def test_an_earlier_doubt_survives_a_429() -> None:
    # Given an answer was lost (the order may be at Fynd), then the read before the resend met a 429
    world = World()
    answers_lost(world, "A")
    world.faults.fail("fynd.read", FyndThrottled("429", retry_after=1, status=429))
    world.run()
    entry = world.ledger.entries[key("A")]
    assert entry.last_error is not None
    assert (entry.last_error.code, entry.last_error.nothing_sent) == ("fynd_throttled", False)
    # When it is retried
    world.drain()
    # Then Shipment Info is still read first, and proves it invoiced without a second send
    entry = world.ledger.entries[key("A")]
    assert (entry.confirmed_by, world.fynd.sent[key("A")]) == ("shipment-info", 1)


def test_a_5xx_is_read_first_as_it_may_have_been_applied() -> None:
    world = World()
    world.accept(invoice("A"))
    world.faults.fail("fynd.before", FyndUnavailable("502 from the gateway", status=502))
    world.drain()
    assert world.fynd.reads["A"] == 1


# ---- full calls at many locations ----


def fifty_locations(count: int) -> list[Invoice]:
    return [invoice(f"O-{n}", locationCode=f"WH-{n % 50:02d}") for n in range(count)]


def orders_per_call(batch_size: int, batches: int = 2, seed: int = 19) -> tuple[float, float]:
    """Full batches of `batch_size` from a backlog spread at random over 50 locations (what a
    Fynd-bound sale day looks like: calls are scarce, so the queue backs up and batches fill):
    the orders per call and the calls per invocation."""
    pick = random.Random(seed)
    world = World()
    backlog = [
        invoice(f"O-{n}", locationCode=f"WH-{pick.randrange(50):02d}") for n in range(batches * batch_size)
    ]
    for start in range(0, len(backlog), 100):
        world.accept(*backlog[start : start + 100])
    for _ in range(batches):
        world.run(limit=batch_size)
    assert world.fynd.applied.total() == len(backlog)
    return world.fynd.applied.total() / len(world.fynd.calls), len(world.fynd.calls) / batches


def test_calls_stay_full_at_fifty_locations_with_the_templates_batch_size() -> None:
    # Given the template's batch size, and invoices spread over 50 store locations
    batch_size = int(load_template()["Parameters"]["DispatchBatchSize"]["Default"])
    # When full batches are dispatched
    per_call, _ = orders_per_call(batch_size)
    # Then the calls carry 15 orders or more on average (one location per call, 20 at most)
    assert per_call >= 15
