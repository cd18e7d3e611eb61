"""A stateful property test of the relay's three promises, over the port fakes.

Hypothesis drives ingest (webhooks, ERP retries, conflicting content) and dispatchers (batches,
messages delivered twice, concurrent workers) through random interleavings with faults at any
step: a ledger write that throttles, a queue send that fails, Fynd down, an answer lost after
Fynd applied it, a worker that dies between Fynd's answer and the ledger write, and time
passing. After every step it checks:

- no key reaches Fynd twice unless an earlier answer for it was lost;
- an invoice once INVOICED stays INVOICED;
- every accepted key (answered 202) is final, or has a live message, or is non-final in the
  ledger with its body stored, so the reconciler will queue it again;
- `batchItemFailures` names only the batch's own messages (the queue fake asserts it).

At the end it heals everything (faults off, time passes, the reconciler runs) and checks that
every accepted invoice ends final or in the dead-letter queue.

`make test` runs 2,000 examples, derandomised so CI is repeatable; set HYPOTHESIS_PROFILE=explore
for a longer random search.
"""

import os
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import relay.domain.dispatch as dispatch_module
import relay.domain.intake as acceptance_module
import relay.domain.reconcile as reconcile_module
from factories import invoice
from fakes import Crash, World, lost_answer
from relay.domain.errors import AcceptRaceError, ConflictError, LedgerUnavailableError, QueueUnavailableError
from relay.domain.fynd import FyndThrottled, FyndUnavailable
from relay.domain.invoice import InvoiceKey
from relay.domain.ledger import InvoiceStatus
from relay.domain.messages import QueuedInvoice, ReceivedMessage
from relay.domain.reconcile import is_stalled
from relay.observability import logger

settings.register_profile(
    "ci",
    max_examples=2000,
    stateful_step_count=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "explore",
    max_examples=20_000,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

ORDERS = [f"O-{n}" for n in range(6)]
STALLED_SECONDS = 900
"""The reconciler's threshold: entries without progress for this long are queued again."""

INGEST_FAULTS = {
    "none": None,
    "ledger throttles": ("ledger.accept", LedgerUnavailableError("throttled")),
    "queue refuses": ("queue.send", QueueUnavailableError("SQS down")),
    "crash between ledger and queue": ("queue.send", Crash()),
}
DISPATCH_FAULTS = {
    "none": None,
    "claim throttles": ("ledger.claim", LedgerUnavailableError("throttled")),
    "record throttles": ("ledger.record", LedgerUnavailableError("throttled")),
    "second record throttles": ("ledger.record", LedgerUnavailableError("throttled")),
    "fynd down": ("fynd.before", FyndUnavailable("503")),
    "fynd throttles": ("fynd.before", FyndThrottled("429", retry_after=30)),
    "answer lost": ("fynd.after", lost_answer()),
    "killed after fynd answered": ("ledger.record", Crash()),
    "requeue fails": ("queue.send_later", QueueUnavailableError("SQS down")),
    "visibility change refused": ("queue.change_visibility", QueueUnavailableError("stale handle")),
}


class RelayMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World()
        self.accepted: set[InvoiceKey] = set()
        self.lost: Counter[InvoiceKey] = Counter()
        """Sends of a key whose answer never reached the ledger."""
        self.invoiced: set[InvoiceKey] = set()

    # ---- ingest ----
    @rule(
        orders=st.lists(st.sampled_from(ORDERS), min_size=1, max_size=4, unique=True),
        revision=st.sampled_from([1, 1, 1, 2]),
        fault=st.sampled_from(sorted(INGEST_FAULTS)),
    )
    def post(self, orders: list[str], revision: int, fault: str) -> None:
        invoices = [invoice(order_id, invoiceNumber=f"INV-{order_id}-r{revision}") for order_id in orders]
        self._inject(INGEST_FAULTS[fault])
        try:
            self.world.accept(*invoices)
        except (ConflictError, AcceptRaceError, LedgerUnavailableError, QueueUnavailableError, Crash):
            return  # 409, 503 or a dead ingest: the ERP was not told 202
        finally:
            self.world.faults.clear()
        self.accepted.update(item.key for item in invoices)

    # ---- dispatch ----
    @rule(
        limit=st.integers(1, 10),
        fault=st.sampled_from(sorted(DISPATCH_FAULTS)),
        worker=st.sampled_from(["worker-1", "worker-2"]),
    )
    def dispatch(self, limit: int, fault: str, worker: str) -> None:
        batch = self.world.queue.receive(limit)
        if not batch:
            return
        plan = DISPATCH_FAULTS[fault]
        if fault == "second record throttles" and plan is not None:
            self.world.faults.fail(plan[0], plan[1], nth=2)
        else:
            self._inject(plan)
        self._run(batch, worker)

    @precondition(lambda self: any(held.receive_count for held in self.world.queue.messages.values()))
    @rule(data=st.data())
    def deliver_twice(self, data: st.DataObject) -> None:
        """SQS delivers an in-flight message to a second, concurrent invocation."""
        in_flight = sorted(
            held.message_id for held in self.world.queue.messages.values() if held.receive_count
        )
        again = self.world.queue.redeliver(data.draw(st.sampled_from(in_flight)))
        if again is not None:
            self._run([again], "worker-3")

    @rule(seconds=st.sampled_from([1, 30, 130, 700, 1000, 3600]))
    def time_passes(self, seconds: int) -> None:
        self.world.clock.advance(seconds)

    @rule(order_id=st.sampled_from(ORDERS), code=st.sampled_from(["IN401", "IN422", "IN403"]))
    def fynd_refuses(self, order_id: str, code: str) -> None:
        if code == "IN403":
            self.world.fynd.early_until[order_id] = self.world.clock() + 2 * 3600
        else:
            self.world.fynd.codes[order_id] = code

    @rule()
    def reconcile(self) -> None:
        self._reconcile()

    # ---- invariants ----
    @invariant()
    def no_duplicate_reaches_fynd_unless_an_answer_was_lost(self) -> None:
        for key, duplicates in self.world.fynd.already.items():
            assert duplicates <= self.lost[key], f"{key}: {duplicates} IN453, {self.lost[key]} lost answers"
        assert all(count <= 1 for count in self.world.fynd.applied.values())

    @invariant()
    def invoiced_stays_invoiced(self) -> None:
        for key in self.invoiced:
            assert self.world.status(key) is InvoiceStatus.INVOICED, key
        self.invoiced.update(
            key for key, entry in self.world.ledger.entries.items() if entry.status is InvoiceStatus.INVOICED
        )

    @invariant()
    def every_accepted_invoice_is_final_or_has_a_way_back(self) -> None:
        live = self.world.queue.live_keys()
        dead = {QueuedInvoice.from_body(held.body).invoice.key for held in self.world.queue.dead_letters}
        for key in self.accepted:
            entry = self.world.ledger.entries.get(key)
            assert entry is not None, f"{key} was accepted but is not in the ledger"
            if entry.status.is_final or live[key]:
                continue
            if entry.dead_lettered_at is not None:
                # Hidden from the reconciler: only because its message is in the dead-letter queue.
                assert key in dead, f"{key} is marked dead-lettered but no message of it is there"
                continue
            assert key in self.world.ledger.bodies, f"{key} has no message and nothing to reconcile from"

    def teardown(self) -> None:
        """Heal: faults off, time passes, the reconciler runs; everything accepted ends somewhere."""
        world = self.world
        world.faults.clear()
        for _ in range(400):
            world.clock.advance(STALLED_SECONDS + 1)
            if not world.queue.messages and not self._stalled():
                break
            self._reconcile()
            while world.queue.messages:
                world.clock.now = max(world.clock.now, world.queue.next_visible_at() or world.clock.now)
                self._run(world.queue.receive(10), "worker-1")
        dead = {QueuedInvoice.from_body(held.body).invoice.key for held in world.queue.dead_letters}
        for key in self.accepted:
            status = world.status(key)
            assert (status is not None and status.is_final) or key in dead, f"{key} ended {status}"
        self.no_duplicate_reaches_fynd_unless_an_answer_was_lost()

    # ---- helpers ----
    def _inject(self, plan: tuple[str, BaseException] | None) -> None:
        if plan is not None:
            self.world.faults.fail(*plan)

    def _run(self, batch: list[ReceivedMessage], worker: str) -> None:
        sent_before = Counter(self.world.fynd.sent)
        try:
            self.world.dispatch(batch, owner=worker)
        except Crash:
            self.world.queue.crash(batch)
        finally:
            self.world.faults.clear()
        for key, times in (self.world.fynd.sent - sent_before).items():
            if self._answer_lost(key):
                self.lost[key] += times

    def _answer_lost(self, key: InvoiceKey) -> bool:
        """The ledger never learnt what Fynd said: the claim was never released (the record
        failed, or the worker died), or the answer itself was lost on the way."""
        entry = self.world.ledger.entries[key]
        ambiguous = entry.last_error is not None and entry.last_error.code == "fynd_ambiguous"
        return entry.status is InvoiceStatus.IN_PROGRESS or (
            entry.status is InvoiceStatus.RETRYING and ambiguous
        )

    def _stalled(self) -> list[InvoiceKey]:
        """Entries that made no progress for STALLED_SECONDS, or parked until a due time: what
        the reconciler queues again."""
        now = self.world.clock()
        return [
            key
            for key, entry in self.world.ledger.entries.items()
            if is_stalled(entry, now=now, stall_seconds=STALLED_SECONDS) or entry.parked
        ]

    def _reconcile(self) -> None:
        """The reconciler (relay.domain.reconcile) cannot see the queue: it queues every stalled
        entry again, at most once per STALLED_SECONDS (a copy is harmless; the dispatcher drops
        what it need not send)."""
        report = self.world.reconcile(stall_seconds=STALLED_SECONDS)
        assert report.failed == [], f"stalled entries it could not queue again: {report.failed}"


@pytest.fixture(autouse=True)
def quiet(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Thousands of examples: the relay's log lines and metrics are not what this test reads."""
    monkeypatch.setattr(dispatch_module, "count", lambda *_, **__: None)
    monkeypatch.setattr(acceptance_module, "count", lambda *_, **__: None)
    monkeypatch.setattr(reconcile_module, "count", lambda *_, **__: None)
    level = logger.log_level
    logger.setLevel("CRITICAL")
    yield
    logger.setLevel(level)


TestRelayPromises = RelayMachine.TestCase
TestRelayPromises.settings = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
