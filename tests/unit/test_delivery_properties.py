"""A stateful property test of the relay's three promises, over the port fakes.

Hypothesis drives ingest and dispatchers through random interleavings with faults at any step.

Ingest: webhooks of a few invoices, sent under a new webhook-id, under none (as the ERP presets
send), or resent whole under the id of an earlier delivery (as a Standard Webhooks sender does
after a 5xx or a timeout); conflicting content; a ledger write that throttles, a transaction
cancelled with mixed CancellationReasons, a send that fails whole or in part (SendMessageBatch
taking some entries), a crash between the ledger and the queue.

Dispatch: batches now or held in hand by a late worker and run later, messages delivered twice
(alone or beside other copies in one batch), a receipt handle from an earlier receive that may
still delete (standard queues), a worker held up past its lease while another takes the key,
Fynd down or throttling, an answer lost after Fynd applied it, a worker killed between Fynd's
answer and the ledger write, record outages, a refused requeue, SQS refusing every fresh copy
for several steps (an outage), time passing.

After every step, before anything heals (the reconciler runs only as one of the random steps):

- no key reaches Fynd twice unless an earlier answer for it was lost;
- an invoice once INVOICED stays INVOICED;
- every unfinished key ingest answered 202 for has a live message, or is marked dead-lettered
  with its message in the dead-letter queue, or is owed a reconcile: ingest may have recorded
  it without queueing it (a 503 or a crash), and the reconciler queues it once it has made no
  progress for STALLED_SECONDS; or the dispatcher parked a long wait in the ledger, and the
  reconciler queues it at retryAt. Otherwise the dispatcher never drops an unfinished
  invoice's last message;
- a worker that ends its invocation still holding a claim (its record failed) leaves the
  claim's message invisible until the lease runs out (dispatch.py's lease rule), so it does not
  come back to meet the claim still live and spend a receive;
- `batchItemFailures` names only the batch's own messages (the queue fake asserts it).

At the end it heals everything (faults off, time passes, the reconciler and dispatchers run)
and checks that every accepted invoice, and every key owed a reconcile, ends final or in the
dead-letter queue.

tests/mutation/item3.py checks that this test alone kills each mutant of issue 18 item 3.
`make test` runs the `ci` profile (derandomised, so CI is repeatable, and bounded to a few
seconds); set HYPOTHESIS_PROFILE=explore for a longer random search.
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
    max_examples=1000,
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

ORDERS = [f"O-{n}" for n in range(4)]
STALLED_SECONDS = 900
VISIBILITY_TIMEOUT = 660
"""The queue's (template.yaml): no invocation holds a batch longer."""
"""The reconciler's threshold: entries without progress for this long are queued again."""

INGEST_FAULTS = {
    "none": None,
    "ledger throttles": ("ledger.accept", LedgerUnavailableError("throttled")),
    "queue refuses": ("queue.send", QueueUnavailableError("SQS down")),
    "crash between ledger and queue": ("queue.send", Crash()),
}
INGEST_RULES = {
    "partial batch send": lambda world: world.queue.refuse_next(lambda index, _: index % 2 == 1),
    "cancelled: a condition failed beside a throttle": lambda world: world.ledger.cancel_next(
        "None", "ConditionalCheckFailed", "ThrottlingError"
    ),
    "cancelled: conflict and throttle, no condition": lambda world: world.ledger.cancel_next(
        "TransactionConflict", "None", "ThrottlingError"
    ),
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
WEBHOOK_IDS = ["new", "none"]
HELD_UP = ["no", "no", "no", "another worker finishes", "another worker is killed"]


class RelayMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World()
        self.accepted: set[InvoiceKey] = set()
        self.owed: set[InvoiceKey] = set()
        """Keys ingest may have recorded without queueing (a 503 or a crash): owed a reconcile."""
        self.lost: Counter[InvoiceKey] = Counter()
        """Sends of a key whose answer never reached the ledger."""
        self.invoiced: set[InvoiceKey] = set()
        self.deliveries: list[tuple[str, list[str], int]] = []
        """Webhooks sent under an id: (webhook-id, orders, revision), for a sender's resend."""
        self.in_hand: list[tuple[list[ReceivedMessage], str, float]] = []
        """Batches a worker received and has not yet run (a late worker), and when."""
        self.ids = 0
        self.runs = 0
        self.requeues_refused = False
        """SQS is refusing the dispatchers' fresh copies (SendMessage) until it recovers."""

    # ---- ingest ----
    @rule(
        orders=st.lists(st.sampled_from(ORDERS), min_size=1, max_size=4, unique=True),
        revision=st.sampled_from([1, 1, 1, 2]),
        webhook_id=st.sampled_from(WEBHOOK_IDS),
        fault=st.sampled_from(sorted([*INGEST_FAULTS, *INGEST_RULES])),
        again=st.booleans(),
    )
    def post(self, orders: list[str], revision: int, webhook_id: str, fault: str, again: bool) -> None:
        """A webhook; `again`: its sender timed out and resends it at once, under the same id."""
        self.ids += 1
        identity = f"wh-{self.ids}" if webhook_id == "new" else None
        if identity is not None:
            self.deliveries.append((identity, orders, revision))
        self._post(orders, revision, identity, fault)
        if again:
            self._post(orders, revision, identity, "none")

    @precondition(lambda self: bool(self.deliveries))
    @rule(data=st.data(), fault=st.sampled_from(sorted([*INGEST_FAULTS, *INGEST_RULES])))
    def resend(self, data: st.DataObject, fault: str) -> None:
        """The sender resends an earlier delivery whole, under its webhook-id (it never heard a 2xx)."""
        identity, orders, revision = data.draw(st.sampled_from(self.deliveries))
        self._post(orders, revision, identity, fault)

    # ---- dispatch ----
    @rule(
        limit=st.sampled_from([1, 1, 2, 3, 10]),
        fault=st.sampled_from(sorted(DISPATCH_FAULTS)),
        worker=st.sampled_from(["worker-1", "worker-2"]),
        twice=st.booleans(),
        held_up=st.sampled_from(HELD_UP),
    )
    def dispatch(self, limit: int, fault: str, worker: str, twice: bool, held_up: str) -> None:
        """One batch, run now; `twice`: SQS also hands this batch a message in flight elsewhere;
        `held_up`: the worker stalls before its first record until its leases have run out, and
        another worker takes its messages meanwhile (and finishes, or is killed holding them)."""
        batch = self.world.queue.receive(limit)
        if twice:
            batch += self._redelivered(batch)
        if batch:
            self._run(batch, worker, fault, held_up=held_up)

    @rule(fault=st.sampled_from(sorted(DISPATCH_FAULTS)), sqs_down=st.booleans())
    def dispatch_one_beside_a_second_delivery(self, fault: str, sqs_down: bool) -> None:
        """One visible message, and beside it a second delivery of one in flight (of the same
        invoice when there is one): how a holder's own message meets its copies. `sqs_down`:
        SQS refuses every fresh copy meanwhile, so each copy must come back itself."""
        queue, now = self.world.queue, self.world.clock()
        in_flight = {
            QueuedInvoice.from_body(h.body).invoice.key for h in queue.messages.values() if h.visible_at > now
        }
        visible = sorted(h.message_id for h in queue.messages.values() if h.visible_at <= now)
        meeting = [
            m for m in visible if QueuedInvoice.from_body(queue.messages[m].body).invoice.key in in_flight
        ]
        first = queue.redeliver((meeting or visible)[0]) if visible else None  # SQS picks it
        batch = [first] if first is not None else []
        batch += self._redelivered(batch)
        if batch:
            if sqs_down:
                self.world.faults.fail("queue.send_later", QueueUnavailableError("SQS down"), times=None)
            self._run(batch, "worker-2", fault)

    @rule(limit=st.sampled_from([1, 1, 2, 3, 10]), worker=st.sampled_from(["worker-1", "worker-2"]))
    def take_in_hand(self, limit: int, worker: str) -> None:
        """A worker receives a batch and is slow to start on it: other steps happen first."""
        batch = self.world.queue.receive(limit)
        if batch:
            self.in_hand.append((batch, worker, self.world.clock()))

    @precondition(lambda self: bool(self.in_hand))
    @rule(fault=st.sampled_from(sorted(DISPATCH_FAULTS)), held_up=st.sampled_from(HELD_UP))
    def run_in_hand(self, fault: str, held_up: str) -> None:
        batch, worker, taken_at = self.in_hand.pop(0)
        if self.world.clock() - taken_at >= VISIBILITY_TIMEOUT:
            # No invocation outlives the visibility timeout (Lambda's rule: 6 x its timeout):
            # this one timed out long ago, answering nothing.
            self.world.queue.crash(batch)
            return
        self._run(batch, worker, fault, held_up=held_up)

    @precondition(lambda self: any(held.receive_count for held in self.world.queue.messages.values()))
    @rule(data=st.data())
    def deliver_twice(self, data: st.DataObject) -> None:
        """SQS delivers an in-flight message to a second, concurrent invocation."""
        in_flight = sorted(
            held.message_id for held in self.world.queue.messages.values() if held.receive_count
        )
        again = self.world.queue.redeliver(data.draw(st.sampled_from(in_flight)))
        if again is not None:
            self._run([again], "worker-3", "none")

    @rule()
    def stale_handles_delete(self) -> None:
        """From now on a receipt handle from an earlier receive may still delete (standard queues)."""
        self.world.queue.stale_handles_delete = True

    @rule(refused=st.booleans())
    def sqs_refuses_fresh_copies(self, refused: bool) -> None:
        """SQS refuses (or takes again) every fresh copy a dispatcher queues, for as many steps
        as it lasts: each message that was to wait afresh must come back itself instead."""
        self.requeues_refused = refused

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
    def every_unfinished_key_has_a_live_message_or_is_owed_a_reconcile(self) -> None:
        """No healing first: the reconciler is not asked to cover for the dispatcher."""
        queue = self.world.queue
        queue.expire()
        live = Counter(
            (message.invoice.key, message.content_hash)
            for message in (QueuedInvoice.from_body(held.body) for held in queue.messages.values())
        )
        dead = {QueuedInvoice.from_body(held.body).invoice.key for held in queue.dead_letters}
        for key in sorted(self.accepted | self.owed, key=str):
            entry = self.world.ledger.entries.get(key)
            if entry is None:
                assert key not in self.accepted, f"{key} was accepted but is not in the ledger"
                continue
            if entry.status.is_final:
                continue
            if live[key, entry.content_hash]:  # a message of other content is no answer for it
                self.owed.discard(key)  # from here on, the dispatcher answers for it
                continue
            if entry.dead_lettered_at is not None:
                # Hidden from the reconciler: only because its message is in the dead-letter queue.
                assert key in dead, f"{key} is marked dead-lettered but no message of it is there"
                continue
            if entry.parked:
                # A long wait parked in the ledger: the reconciler owes it a message at retryAt.
                self.owed.add(key)
                continue
            assert key in self.owed, (
                f"{key} is {entry.status} (claimed by {entry.claim_message_id}) and has no message:"
                " the dispatcher dropped an unfinished invoice's last message"
            )
            assert key in self.world.ledger.bodies, f"{key} is owed a reconcile but has no stored body"

    def teardown(self) -> None:
        """Heal (faults off, time passes, the reconciler and dispatchers run): everything
        accepted ends final or dead-lettered, and so does every key owed a reconcile, which
        only the reconciler could queue."""
        world = self.world
        world.faults.clear()
        for batch, _, _ in self.in_hand:
            world.queue.crash(batch)  # a late worker that never ran: its messages come back
        for _ in range(400):
            world.clock.advance(STALLED_SECONDS + 1)
            if not world.queue.messages and not self._stalled():
                break
            self._reconcile()
            while world.queue.messages:
                world.clock.now = max(world.clock.now, world.queue.next_visible_at() or world.clock.now)
                self._run(world.queue.receive(10), "worker-1", "none")
        dead = {QueuedInvoice.from_body(held.body).invoice.key for held in world.queue.dead_letters}
        for key in self.accepted:
            status = world.status(key)
            assert (status is not None and status.is_final) or key in dead, f"{key} ended {status}"
        for key in self.owed:  # only the reconciler could queue these: it was reached
            status = world.status(key)
            assert status is None or status.is_final or key in dead, f"owed {key} ended {status}"
        self.no_duplicate_reaches_fynd_unless_an_answer_was_lost()

    # ---- helpers ----
    def _post(self, orders: list[str], revision: int, webhook_id: str | None, fault: str) -> None:
        invoices = [invoice(order_id, invoiceNumber=f"INV-{order_id}-r{revision}") for order_id in orders]
        if fault in INGEST_RULES:
            INGEST_RULES[fault](self.world)
        else:
            self._inject(INGEST_FAULTS[fault])
        try:
            self.world.accept(*invoices, correlation_id=webhook_id)
        except (ConflictError, AcceptRaceError, LedgerUnavailableError, QueueUnavailableError, Crash):
            # 409, 503 or a dead ingest: the ERP was not told 202. What the ledger now holds
            # without a message is owed a reconcile (or this sender's resend).
            self.owed.update(item.key for item in invoices)
            return
        finally:
            self.world.faults.clear()
            self.world.queue.refusals.clear()  # planned for this post only, used or not
            self.world.ledger.cancellations.clear()
        self.accepted.update(item.key for item in invoices)

    def _inject(self, plan: tuple[str, BaseException] | None) -> None:
        if plan is not None:
            self.world.faults.fail(*plan)

    def _redelivered(self, batch: list[ReceivedMessage]) -> list[ReceivedMessage]:
        """At-least-once: a message in flight with another worker, handed out again, one of an
        invoice this batch carries if there is one (where a second delivery does harm)."""
        keys = {item.message.invoice.key for item in batch}
        taken = {item.message_id for item in batch}
        in_flight = sorted(
            (QueuedInvoice.from_body(held.body).invoice.key not in keys, held.message_id)
            for held in self.world.queue.messages.values()
            if held.receive_count and held.message_id not in taken
        )
        again = self.world.queue.redeliver(in_flight[0][1]) if in_flight else None
        return [again] if again is not None else []

    def _run(self, batch: list[ReceivedMessage], worker: str, fault: str, *, held_up: str = "no") -> None:
        plan = DISPATCH_FAULTS[fault]
        if fault == "second record throttles" and plan is not None:
            self.world.faults.fail(plan[0], plan[1], nth=2)
        else:
            self._inject(plan)
        if self.requeues_refused:
            self.world.faults.fail("queue.send_later", QueueUnavailableError("SQS down"), times=None)
        if held_up != "no":
            killed = held_up == "another worker is killed"
            self.world.faults.meanwhile("ledger.record", lambda: self._takeover(batch, killed=killed))
        sent_before = Counter(self.world.fynd.sent)
        queued_before = set(self.world.queue.messages)
        self.runs += 1
        owner = f"{worker}/{self.runs}"  # one invocation: Lambda's request id
        try:
            failures = self.world.dispatch(batch, owner=owner)
        except Crash:
            self.world.queue.crash(batch)
        else:
            self._claims_left_stay_invisible(batch, owner)
            fresh = set(self.world.queue.messages) - queued_before
            self._acknowledged_only_what_it_may(batch, failures, owner, fresh)
        finally:
            self.world.faults.clear()
        for key, times in (self.world.fynd.sent - sent_before).items():
            if self._answer_lost(key):
                self.lost[key] += times

    def _acknowledged_only_what_it_may(
        self, batch: list[ReceivedMessage], failures: list[str], owner: str, fresh: set[str]
    ) -> None:
        """An invocation acknowledges a copy of an unfinished invoice (same content) only when it
        made the invoice's latest claim itself, or queued a fresh copy of it meanwhile, or kept
        another copy of this batch that answers for it; and never the message the invoice's
        current claim was taken with, unless it took that claim. Any other acknowledgement may
        delete a message another worker has in hand (SQS delivers at least once, and a standard
        queue may delete by an older receipt handle): possibly the invoice's last message."""
        ledger = self.world.ledger
        fresh_keys = {QueuedInvoice.from_body(self.world.queue.messages[m].body).invoice.key for m in fresh}
        kept = {item.message.invoice.key for item in batch if item.message_id in failures}
        for delivery in batch:
            if delivery.message_id in failures:
                continue
            key = delivery.message.invoice.key
            entry = ledger.entries.get(key)
            if entry is None or entry.status.is_final or entry.content_hash != delivery.message.content_hash:
                continue
            if ledger.claimants.get(key) == owner or key in fresh_keys:
                continue
            why = f"{owner} acknowledged {delivery.message_id} of {key}, {entry.status}, claimed by"
            why += f" {ledger.claimants.get(key)} with {entry.claim_message_id}"
            assert delivery.message_id != entry.claim_message_id, why
            assert key in kept or (key, owner) in ledger.claimed, why

    def _claims_left_stay_invisible(self, batch: list[ReceivedMessage], owner: str) -> None:
        """The invocation ended holding claims it could not record: each claim's message must
        not come back before its lease runs out. (Only where its receipt handle is still the
        message's latest: an older one changes nothing, and SQS may hand the message out again
        under another worker's visibility, as at-least-once delivery allows.)"""
        now = self.world.clock()
        handles = {item.message_id: item.receipt_handle for item in batch}
        for key in {item.message.invoice.key for item in batch}:
            entry = self.world.ledger.entries.get(key)
            if entry is None or entry.lease_owner != owner or not entry.lease_is_live(now):
                continue
            held = self.world.queue.messages.get(entry.claim_message_id or "")
            if held is None or handles.get(held.message_id) != held.receipt_handle:
                continue
            assert held.visible_at >= (entry.lease_until or 0), (
                f"{key}: {owner} still holds its claim until {entry.lease_until}, and the claim's"
                f" message {held.message_id} comes back at {held.visible_at}"
            )

    def _takeover(self, batch: list[ReceivedMessage], *, killed: bool) -> None:
        """The worker is held up before recording: its leases run out, and SQS hands its
        messages (at least once) to another worker, which claims and finishes first, or is
        killed after Fynd answered it, holding the claims."""
        self.world.clock.advance(self.world.settings.lease_seconds + 1)
        again = [
            delivery
            for item in batch
            if (delivery := self.world.queue.redeliver(item.message_id)) is not None
        ]
        if again:
            # Only its own fault, none of the held-up worker's.
            with self.world.faults.suspended():
                self._run(again, "worker-4", "killed after fynd answered" if killed else "none")

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
