"""Issue 19 item 5: the dispatcher's two time faults, in a world where time passes during calls.

The port fakes (tests/fakes.py) hold the ledger and the queue; Fynd is the world's
(tests/world/fynd.py): every request costs its latency on the world's clock, and a call whose
answer would come after the invocation's deadline is cut there (`Killed`), as Lambda's
timeout cuts it, after Fynd applied it. `seconds_left` is the invocation's, from its start and
the function's 60 s timeout.
"""

from collections.abc import Sequence

from factories import invoice
from fakes import SETTINGS, InMemoryLedger, RecordingQueue
from relay.domain.dispatch import Dispatcher
from relay.domain.intake import InvoiceAcceptance
from relay.domain.invoice import Invoice
from relay.domain.ledger import InvoiceStatus
from relay.domain.messages import ReceivedMessage
from relay.domain.policy import Backoff, CodePolicy, outage_backoff
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
