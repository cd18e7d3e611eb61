"""Issue 19 item 5: the dispatcher's two time faults, in a world where time passes during calls;
and (issue 18) the budgets, paces and waits every request of a call keeps.

The port fakes (tests/fakes.py) hold the ledger and the queue; Fynd is the world's
(tests/world/fynd.py): every request costs its latency on the world's clock, and a call whose
answer would come after the invocation's deadline is cut there (`Killed`), as Lambda's
timeout cuts it, after Fynd applied it. `seconds_left` is the invocation's, from its start and
the function's 60 s timeout. The later tests use the fakes' `World`, whose clock moves only
when a step of the test or of a fake moves it.
"""

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest

from factories import invoice
from fakes import (
    SETTINGS,
    FakeClock,
    InMemoryLedger,
    InMemoryRateLimiter,
    RecordingQueue,
    ScriptedFynd,
    World,
    lost_answer,
)
from relay.domain.dispatch import Dispatcher
from relay.domain.errors import RateLimiterUnavailableError
from relay.domain.fynd import FyndThrottled
from relay.domain.intake import InvoiceAcceptance
from relay.domain.invoice import Invoice, InvoiceKey, InvoiceType
from relay.domain.ledger import InvoiceStatus, LastError
from relay.domain.messages import QueuedInvoice, ReceivedMessage
from relay.domain.policy import SHIPMENT_INFO, Backoff, CodePolicy, outage_backoff
from relay.domain.ports import Reservation
from relay.domain.shipment import ShipmentInfo
from world.clock import Invocation, Killed, Latencies, Latency, WorldClock
from world.fynd import WorldFynd

DISPATCH_TIMEOUT_SECONDS = 60  # template.yaml DispatchFunction Timeout


class TimedWorld:
    """The domain over the fakes, with Fynd's latencies fixed per request kind."""

    def __init__(self, *, call_seconds: float, read_seconds: float) -> None:
        self.clock = WorldClock()
        self.ledger = InMemoryLedger(self.clock)
        self.queue = RecordingQueue(self.clock, max_receive_count=SETTINGS.max_receive_count)
        fixed = {
            "fynd.token": Latency(0.3, sigma=0),
            "fynd.call": Latency(call_seconds, sigma=0),
            "fynd.read": Latency(read_seconds, sigma=0),
            "fynd.throttled": Latency(0.03, sigma=0),
        }
        self.fynd = WorldFynd(self.clock, Latencies(1, fixed), rate_per_second=1000)
        self.acceptance = InvoiceAcceptance(ledger=self.ledger, queue=self.queue, clock=self.clock)
        self.policy = CodePolicy(Backoff(30, 3600, lambda: 0.5), 86_400, outage_backoff(30, lambda: 0.5))
        self.killed = 0

    def accept(self, *invoices: Invoice) -> None:
        self.acceptance.accept(list(invoices), correlation_id="wh-1")

    def dispatch(self, batch: Sequence[ReceivedMessage]) -> None:
        """One invocation of the 60 s dispatcher; killed at its timeout, its batch unanswered."""
        dispatcher = Dispatcher(
            ledger=self.ledger,
            fynd=self.fynd.session(),
            queue=self.queue,
            policy=self.policy,
            settings=SETTINGS,
            owner=f"worker-{self.clock.now}",
            clock=self.clock,
        )
        with Invocation(self.clock, DISPATCH_TIMEOUT_SECONDS) as invocation:
            try:
                failures = dispatcher.dispatch(batch, invocation.seconds_left)
            except Killed:
                self.killed += 1
                return  # nothing answered: every message of the batch returns after its visibility
        self.queue.answer(batch, failures)

    def next_batch(self, wait: float = 1) -> list[ReceivedMessage]:
        """Move the clock to the next visible message (at least `wait` on), then receive."""
        visible_at = self.queue.next_visible_at()
        self.clock.now = max(self.clock.now + wait, visible_at or 0)
        return self.queue.receive(100)

    def drain(self, rounds: int = 50) -> None:
        for _ in range(rounds):
            if not self.queue.messages:
                return
            batch = self.next_batch()
            if batch:
                self.dispatch(batch)
        raise AssertionError("the queue did not drain")


def test_slow_shipment_info_reads_never_let_lambda_kill_a_send_that_fynd_applied() -> None:
    # Given three invoices of one location that failed once (Fynd answered 503), so each is read
    # before it is sent again, and Shipment Info reads that take 18 s each (inside the request
    # timeout), with an Update Invoice call that takes 8 s
    world = TimedWorld(call_seconds=8, read_seconds=18)
    orders = [invoice(f"FY-{n}", locationCode="LOC-1") for n in range(3)]
    world.accept(*orders)
    world.fynd.unavailable_until = world.clock.now + 1
    world.dispatch(world.next_batch(wait=0))
    assert {world.ledger.entries[order.key].status for order in orders} == {InvoiceStatus.RETRYING}

    # When the retry reads three times (54 s of a 60 s invocation) and then sends; and later
    # Shipment Info is unavailable, so nothing proves what an unrecorded send did
    world.dispatch(world.next_batch(wait=0))
    world.fynd.reads_unavailable = True
    world.drain()

    # Then every invoice is invoiced, and Fynd received each order once: a send never starts
    # unless its whole budget fits in what the invocation has left
    assert {world.ledger.entries[order.key].status for order in orders} == {InvoiceStatus.INVOICED}
    assert {order.orderId: world.fynd.sent[order.key] for order in orders} == dict.fromkeys(
        (order.orderId for order in orders), 1
    )


def test_an_invoice_deferred_for_lack_of_time_is_never_dead_lettered_while_fynd_is_healthy() -> None:
    # Given a healthy Fynd whose calls take 12 s each, and an invoice that SQS hands out last in
    # every batch, behind four new invoices of other locations (four calls, 48 s of a 60 s invocation)
    world = TimedWorld(call_seconds=12, read_seconds=0.2)
    victim = invoice("FY-LAST", locationCode="LOC-Z")
    world.accept(victim)
    rounds = SETTINGS.max_receive_count + 2

    # When it is deferred for lack of time in batch after batch (more batches than maxReceiveCount)
    for round_number in range(rounds):
        world.accept(*(invoice(f"FY-{round_number}-{n}", locationCode=f"LOC-{n}") for n in range(4)))
        batch = world.next_batch()
        batch.sort(key=lambda delivery: delivery.message.invoice.orderId == victim.orderId)
        world.dispatch(batch)
    world.drain()

    # Then it is sent once the batches leave it room, and was never dead-lettered
    entry = world.ledger.entries[victim.key]
    assert entry.status is InvoiceStatus.INVOICED
    assert entry.dead_lettered_at is None
    assert world.queue.dead_letters == []
    assert world.fynd.sent[victim.key] == 1


# ---- every request of a call keeps its budget, its pace and the batch's waits (issue 18) ----

RESERVE = SETTINGS.record_reserve_seconds
REQUEST = SETTINGS.request_seconds


def key(order_id: str) -> InvoiceKey:
    return InvoiceKey(order_id, InvoiceType.SALE)


def answers_lost(world: World, *orders: str, location: str | None = None) -> None:
    """Every order was sent once and its answer lost (Fynd applied nothing): each is RETRYING,
    in doubt, due now; and Shipment Info proves nothing of it, so its retry reads, then sends."""
    world.accept(*[invoice(order, locationCode=location) for order in orders])
    world.faults.fail("fynd.before", lost_answer())
    world.run(limit=len(orders))
    assert all(world.status(key(order)) is InvoiceStatus.RETRYING for order in orders)
    world.fynd.novel_status.update(orders)
    world.clock.now = world.queue.next_visible_at() or world.clock.now


def oversleeping(world: World, monkeypatch: pytest.MonkeyPatch, late: float) -> None:
    """Every sleep of the dispatcher ends `late` seconds after it was asked to (a busy machine)."""

    def sleep(seconds: float) -> None:
        FakeClock.sleep(world.clock, seconds + late)

    monkeypatch.setattr(world.clock, "sleep", sleep)


def only_copy(world: World) -> tuple[float, int]:
    """(seconds until the invoice's only message is visible, its receive count)."""
    (message,) = world.queue.messages.values()
    return message.visible_at - world.clock(), message.receive_count


def test_after_a_slow_claim_the_read_and_the_send_each_end_inside_the_lease() -> None:
    # Given an order in doubt, and a ledger whose claim takes 90 s of its 120 s lease
    world = World()
    answers_lost(world, "A")
    claimed_at = world.clock()
    world.faults.meanwhile("ledger.claim", lambda: world.clock.advance(90))
    # When it is read and sent in an invocation with plenty of time (the lease is the limit)
    world.run(seconds_left=900, timed=True)
    # Then the read leaves a whole request for the send before the lease ends (less the reserve
    # to record), and the send's budget ends there too: no request outlives the claim
    lease_end = claimed_at + SETTINGS.lease_seconds
    ((read_start, read_budget),) = world.fynd.read_budgets
    assert read_start + read_budget + REQUEST <= lease_end - RESERVE
    send_start, send_budget = world.fynd.call_starts[-1], world.fynd.budgets[-1]
    assert send_start + send_budget <= lease_end - RESERVE
    assert world.status(key("A")) is InvoiceStatus.INVOICED


def test_a_send_whose_wait_for_its_rate_slot_overran_is_deferred_a_second_in_doubt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an order in doubt on a pace of one request a second (its read takes the slot the
    # call took before its claim, so the send waits a second for the next), and a machine so
    # busy that the wait ends 25 s late
    world = World(limiter=InMemoryRateLimiter(1))
    answers_lost(world, "A")
    oversleeping(world, monkeypatch, late=25)
    # When it is read and sent in an invocation of 45 s
    world.run(seconds_left=45, timed=True)
    # Then the send, with less than a whole request left after the wait, is not made: the
    # claim is given back (still in doubt, so its retry reads first) and a fresh copy comes
    # back a second later, no receive spent
    assert world.fynd.sent[key("A")] == 0
    entry = world.ledger.entries[key("A")]
    assert (entry.status, entry.last_error) == (
        InvoiceStatus.RETRYING,
        LastError("out_of_time", "invocation ran out of time", nothing_sent=False),
    )
    assert only_copy(world) == (1, 0)


def test_a_send_whose_rate_slot_comes_too_late_is_deferred_to_the_slot_without_waiting() -> None:
    # Given an order in doubt, and another dispatcher meeting a 429 while it is read, so the
    # credential's next slot is 25 s away: past what the send's budget leaves it (36 - 18 s)
    world = World(limiter=InMemoryRateLimiter(20))
    answers_lost(world, "A")
    limiter = world.limiter
    assert limiter is not None
    read_at = world.clock()
    world.faults.meanwhile(
        "fynd.read", lambda: limiter.throttled("company", now=world.clock(), retry_after=25)
    )
    # When it is read and then sent in an invocation of 45 s
    world.run(seconds_left=45, timed=True)
    # Then the dispatcher neither sleeps for a slot it could not use nor books it from the
    # other dispatchers: the call is deferred, and its fresh copy comes back when the slot is free
    assert world.clock.sleep_calls == []
    assert [at for _, at in limiter.grants if at > read_at] == []
    assert world.fynd.sent[key("A")] == 0
    assert world.ledger.entries[key("A")].status is InvoiceStatus.RETRYING
    assert only_copy(world) == (25, 0)


def test_a_call_that_waited_out_a_429_sends_at_its_end_on_the_one_slot_it_took() -> None:
    # Given two calls (two locations) on a pace of 20 a second, and Fynd answering the first
    # with a 429 and Retry-After 5 s
    world = World(limiter=InMemoryRateLimiter(20))
    world.accept(invoice("A", locationCode="WH-1"), invoice("B", locationCode="WH-2"))
    world.faults.fail("fynd.before", FyndThrottled("429", retry_after=5, status=429))
    throttled_at = world.clock()
    # When the batch is dispatched
    world.run(seconds_left=60, timed=True)
    # Then the second call waits out the pause, takes the slot free at its end before its
    # claim, and is sent on it the moment the pause ends: one slot of the pace, not two
    limiter = world.limiter
    assert limiter is not None
    assert world.fynd.call_starts == [throttled_at, throttled_at + 5]
    assert [at for _, at in limiter.grants] == [throttled_at, throttled_at + 5]
    assert world.status(key("B")) is InvoiceStatus.INVOICED


def test_with_reads_paced_apart_a_429_on_a_send_holds_the_batch_and_slows_the_calls_pace() -> None:
    # Given Shipment Info reads on a pace of their own, two calls (two locations, the second
    # with its own credential), and Fynd answering the first call 429 with Retry-After 30 s
    calls, reads = InMemoryRateLimiter(20), InMemoryRateLimiter(20)
    world = World(limiter=calls, read_limiter=reads)
    world.fynd.credentials["WH-2"] = "wh2-credential"
    world.accept(invoice("A", locationCode="WH-1"), invoice("B", locationCode="WH-2"))
    world.faults.fail("fynd.before", FyndThrottled("429", retry_after=30, status=429))
    throttled_at = world.clock()
    # When the batch is dispatched
    world.run(seconds_left=60, timed=True)
    # Then the calls' pace waits out Retry-After, the reads' is untouched, and the second call
    # is not sent meanwhile, though its own credential's pace was not refused
    assert calls.throttles == [("company", throttled_at + 30)]
    assert reads.throttles == []
    assert len(world.fynd.call_starts) == 1
    assert world.status(key("B")) is InvoiceStatus.QUEUED


def test_a_429_on_a_read_slows_the_read_pace_of_its_locations_credential() -> None:
    # Given an order in doubt at a location with its own credential, Shipment Info reads on a
    # pace of their own (the only pace), and the read answered 429 with Retry-After 300 s
    world = World()
    world.fynd.credentials["WH-9"] = "wh9-credential"
    answers_lost(world, "A", location="WH-9")
    reads = InMemoryRateLimiter(20)
    world.read_limiter = reads
    world.faults.fail("fynd.read", FyndThrottled("429", retry_after=300, status=429))
    now = world.clock()
    # When it is dispatched
    world.run(seconds_left=60, timed=True)
    # Then the read took its slot on that credential's read pace, which then waits out
    # Retry-After, and the order backs off unsent
    assert [credential for credential, _ in reads.grants] == ["wh9-credential#shipment-info"]
    assert reads.throttles == [("wh9-credential#shipment-info", now + 300)]
    assert (world.status(key("A")), world.fynd.sent[key("A")]) == (InvoiceStatus.RETRYING, 0)


@pytest.mark.parametrize(
    ("retry_after", "pause"),
    [(None, 1.0), (18, 18)],
    ids=["no-retry-after", "exactly-the-calls-spare-time"],
)
def test_the_rest_of_the_batch_waits_out_a_429s_pause_and_goes_at_its_end(
    retry_after: float | None, pause: float
) -> None:
    # Given two calls (two locations), and Fynd answering the first 429: with no Retry-After
    # (the batch pauses a second), or with a Retry-After of 18 s, exactly what the second call
    # can spare (a 36 s budget less an 18 s request)
    world = World()
    world.accept(invoice("A", locationCode="WH-1"), invoice("B", locationCode="WH-2"))
    world.faults.fail("fynd.before", FyndThrottled("429", retry_after=retry_after, status=429))
    throttled_at = world.clock()
    # When the batch is dispatched
    world.run(seconds_left=60, timed=True)
    # Then the second call waits out the whole pause, in this invocation, and is sent at its end
    assert world.clock.sleep_calls == [pause]
    assert world.fynd.call_starts == [throttled_at, throttled_at + pause]
    assert world.status(key("B")) is InvoiceStatus.INVOICED


def test_a_call_whose_rate_slot_is_past_what_a_429s_pause_leaves_it_is_not_claimed() -> None:
    # Given two calls (two locations, one credential) in a 40 s invocation, Fynd answering the
    # first 429 with Retry-After 10 s, and the credential's pace booked 19 s ahead by another
    # dispatcher meanwhile: after the pause, the second call could spare 7 s, not the 9 s more
    world = World(limiter=InMemoryRateLimiter(20))
    limiter = world.limiter
    assert limiter is not None
    world.accept(invoice("A", locationCode="WH-1"), invoice("B", locationCode="WH-2"))
    world.faults.meanwhile(
        "fynd.before", lambda: limiter.throttled("company", now=world.clock(), retry_after=19)
    )
    world.faults.fail("fynd.before", FyndThrottled("429", retry_after=10, status=429))
    throttled_at = world.clock()
    # When the batch is dispatched
    world.run(seconds_left=40, timed=True)
    # Then the second call waits out the pause only, and is not claimed: a fresh copy comes
    # back when the slot is free, no receive spent
    assert world.clock.sleep_calls == [10]
    entry = world.ledger.entries[key("B")]
    assert (entry.status, entry.attempts) == (InvoiceStatus.QUEUED, 0)
    (copy,) = [
        m for m in world.queue.messages.values() if QueuedInvoice.from_body(m.body).invoice.orderId == "B"
    ]
    assert (copy.visible_at, copy.receive_count) == (throttled_at + 19, 0)


def test_a_call_with_no_time_to_spare_takes_no_slot_but_one_free_now(
    counted: list[tuple[str, float, dict[str, str]]],
) -> None:
    # Given an invocation that leaves a call exactly a whole request (23 s: 5 s kept to record),
    # and a pace of two a second whose slot another dispatcher has just taken
    world = World(limiter=InMemoryRateLimiter(2))
    limiter = world.limiter
    assert limiter is not None
    world.accept(invoice("A"))
    limiter.acquire("company", now=world.clock(), not_after=world.clock())
    # When it is dispatched
    world.run(seconds_left=23, timed=True)
    # Then it does not wait the half second for the next slot: a missed slot is counted, the
    # call is not claimed, and a fresh copy comes back a second later, no receive spent
    assert world.clock.sleep_calls == []
    assert [name for name, _, _ in counted if name == "RateSlotsMissed"] == ["RateSlotsMissed"]
    entry = world.ledger.entries[key("A")]
    assert (entry.status, entry.attempts) == (InvoiceStatus.QUEUED, 0)
    assert only_copy(world) == (1, 0)


class UnavailableLimiter(InMemoryRateLimiter):
    """A rate limiter whose table cannot be read (throttled): no slot can be sought."""

    def acquire(self, credential: str, *, now: float, not_after: float) -> Reservation:
        raise RateLimiterUnavailableError("rate table throttled")


def test_an_unavailable_rate_limiter_is_logged_and_counted_for_each_request_sent_unpaced(
    logged: Callable[[], list[dict[str, Any]]], counted: list[tuple[str, float, dict[str, str]]]
) -> None:
    # Given two orders in doubt in one call, and a rate limiter that cannot be reached
    world = World(limiter=UnavailableLimiter(20))
    answers_lost(world, "A", "B")
    seen = len(logged())
    counted.clear()
    # When they are read and sent (the call's slot, sought before the claims, then the second
    # read's and the send's own)
    world.run(seconds_left=60, timed=True)
    # Then each request goes unpaced (fail open), and a warning names the invoices it is about,
    # with the limiter's error, so the on-call can tell which requests went unpaced
    warnings = [
        doc for doc in logged()[seen:] if doc["message"] == "Fynd rate limiter unavailable; sending unpaced"
    ]
    assert [(doc["level"], doc["error"], doc["invoice_keys"]) for doc in warnings] == [
        ("WARNING", "rate table throttled", ["A#sale", "B#sale"]),
        ("WARNING", "rate table throttled", ["B#sale"]),
        ("WARNING", "rate table throttled", ["A#sale", "B#sale"]),
    ]
    assert [name for name, _, _ in counted if name == "RateLimiterUnavailable"] == [
        "RateLimiterUnavailable"
    ] * 3
    assert {world.status(key("A")), world.status(key("B"))} == {InvoiceStatus.INVOICED}


class ReadRendezvous(ScriptedFynd):
    """Every Shipment Info read waits until `parties` reads are in flight together (fails if
    they never are)."""

    def __init__(self, world: World, parties: int) -> None:
        super().__init__(world.clock, world.faults)
        # Generous: a loaded machine may start threads slowly; reads made one after another never meet
        self.barrier = threading.Barrier(parties, timeout=30)

    def shipment_info(
        self, order_id: str, location_code: str | None, *, time_budget_seconds: float
    ) -> ShipmentInfo:
        self.barrier.wait()
        return super().shipment_info(order_id, location_code, time_budget_seconds=time_budget_seconds)


def test_the_reads_of_a_call_go_out_together_up_to_fynd_concurrency() -> None:
    # Given two orders whose answer was lost after Fynd applied them, and two reads allowed in
    # flight (each read waits for the other to be in flight)
    world = World(settings=replace(SETTINGS, fynd_concurrency=2))
    world.fynd = ReadRendezvous(world, 2)
    world.accept(invoice("A"), invoice("B"))
    world.faults.fail("fynd.after", lost_answer())
    world.run()
    world.clock.now = world.queue.next_visible_at() or world.clock.now
    # When they are retried
    assert world.run() == []
    # Then both were read together, and each is recorded invoiced on that proof, never resent
    for order in ("A", "B"):
        entry = world.ledger.entries[key(order)]
        assert (entry.status, entry.confirmed_by) == (InvoiceStatus.INVOICED, SHIPMENT_INFO)
        assert (world.fynd.reads[order], world.fynd.sent[key(order)]) == (1, 1)


class CountedReads(ScriptedFynd):
    """Notes the most Shipment Info reads in flight at once. Each read lingers until a read
    beyond `allowed` is in flight, or half a second, so reads that may overlap do."""

    def __init__(self, world: World, allowed: int) -> None:
        super().__init__(world.clock, world.faults)
        self.allowed = allowed
        self.in_flight = 0
        self.most = 0
        self.too_many = threading.Event()
        self._lock = threading.Lock()

    def shipment_info(
        self, order_id: str, location_code: str | None, *, time_budget_seconds: float
    ) -> ShipmentInfo:
        with self._lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            if self.in_flight > self.allowed:
                self.too_many.set()
        self.too_many.wait(timeout=0.5)
        with self._lock:
            self.in_flight -= 1
        return super().shipment_info(order_id, location_code, time_budget_seconds=time_budget_seconds)


def test_no_more_reads_are_in_flight_than_fynd_concurrency() -> None:
    # Given four orders whose answer was lost after Fynd applied them, and two reads allowed in
    # flight (the Fynd client's connection pool)
    world = World(settings=replace(SETTINGS, fynd_concurrency=2))
    fynd = CountedReads(world, allowed=2)
    world.fynd = fynd
    world.accept(*[invoice(order) for order in "ABCD"])
    world.faults.fail("fynd.after", lost_answer())
    world.run()
    world.clock.now = world.queue.next_visible_at() or world.clock.now
    # When they are retried
    world.run()
    # Then they were read in waves of two at most, and each is recorded invoiced on its read
    assert fynd.most <= 2
    assert sum(fynd.reads.values()) == 4
    assert all(world.status(key(order)) is InvoiceStatus.INVOICED for order in "ABCD")
