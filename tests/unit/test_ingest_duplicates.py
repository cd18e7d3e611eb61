"""What an ERP's duplicate of a QUEUED invoice puts on the queue: nothing, unless its sender
may not have heard the 202: the same delivery again (its webhook-id), or an entry whose send
failed (marked). What neither covers waits for the reconciler. Then how often acceptance reads
the ledger when copies race, and what it tells the on-call of each webhook (its metrics and
log lines, which the dashboards and alarms read). Over the port fakes (tests/fakes.py)."""

from collections.abc import Callable
from typing import Any

import pytest

import relay.domain.intake as intake_module
from factories import invoice
from fakes import Crash, World
from relay.domain.errors import AcceptRaceError, ConflictError, LedgerUnavailableError, QueueUnavailableError
from relay.domain.intake import ADMIT_ROUNDS, Action, InvoiceAcceptance
from relay.domain.ledger import InvoiceStatus
from relay.domain.messages import QueuedInvoice


@pytest.fixture
def world() -> World:
    return World()


def test_duplicates_of_a_queued_invoice_add_nothing_to_the_queue(world: World) -> None:
    # Given an invoice accepted and waiting in the queue
    world.accept(invoice("A"))
    # When the ERP sends it three more times before it is dispatched, each a new webhook
    answers = [world.accept(invoice("A"), correlation_id=f"wh-dup-{n}") for n in range(3)]
    # Then each copy is answered with its state, and the queue still holds one message
    assert {(admission.action, admission.status) for (admission,) in answers} == {
        (Action.ANSWER, InvoiceStatus.QUEUED)
    }
    assert len(world.queue.messages) == 1
    # And it reaches Fynd once
    world.drain()
    assert world.fynd.sent[invoice("A").key] == 1


def test_the_same_delivery_resent_after_ingest_died_queues_the_invoice_again(world: World) -> None:
    # Given ingest died between the ledger write and the queue send: QUEUED, no message, no mark
    world.faults.fail("queue.send", Crash())
    with pytest.raises(Crash):
        world.accept(invoice("A"), correlation_id="wh-1")
    assert (world.ledger.entries[invoice("A").key].send_failed_at, world.queue.messages) == (None, {})
    # When the sender, which never heard an answer, resends the same delivery (same webhook-id)
    (admission,) = world.accept(invoice("A"), correlation_id="wh-1")
    # Then it is queued again, and reaches Fynd once
    assert admission.action is Action.REQUEUE
    world.drain()
    assert world.status(invoice("A").key) is InvoiceStatus.INVOICED
    assert world.fynd.sent[invoice("A").key] == 1


def test_an_erp_retry_after_a_failed_send_queues_the_invoice_and_fynd_sees_it_once(world: World) -> None:
    # Given SQS refuses the first send: the sender hears 503, and the entry stays QUEUED, marked
    world.faults.fail("queue.send", QueueUnavailableError("1 invoice(s) could not be queued"))
    with pytest.raises(QueueUnavailableError):
        world.accept(invoice("A"))
    entry = world.ledger.entries[invoice("A").key]
    assert (entry.status, entry.send_failed_at) == (InvoiceStatus.QUEUED, world.clock.now)
    assert world.queue.messages == {}
    # When the ERP retries, with a new webhook-id
    (admission,) = world.accept(invoice("A"), correlation_id="wh-retry")
    # Then the retry queues it
    assert admission.action is Action.REQUEUE
    assert len(world.queue.messages) == 1
    # And once dispatched, Fynd saw it once and the claim cleared the mark
    world.drain()
    final = world.ledger.entries[invoice("A").key]
    assert (final.status, final.send_failed_at) == (InvoiceStatus.INVOICED, None)
    assert world.fynd.sent[invoice("A").key] == 1


def test_only_the_invoices_sqs_did_not_take_are_marked(world: World) -> None:
    # Given SQS takes A but not B
    world.faults.fail(
        "queue.send", QueueUnavailableError("1 invoice(s) could not be queued", [invoice("B").key])
    )
    # When a webhook of both is accepted
    with pytest.raises(QueueUnavailableError):
        world.accept(invoice("A"), invoice("B"))
    # Then only B is marked, so a retry queues B again and answers A
    assert world.ledger.entries[invoice("A").key].send_failed_at is None
    assert world.ledger.entries[invoice("B").key].send_failed_at is not None
    retried = world.accept(invoice("A"), invoice("B"), correlation_id="wh-retry")
    actions = [admission.action for admission in retried]
    assert actions == [Action.ANSWER, Action.REQUEUE]


def test_a_mark_the_ledger_refuses_still_answers_the_send_failure_and_the_reconciler_heals(
    world: World,
) -> None:
    # Given SQS refuses the send and the ledger refuses the mark
    world.faults.fail("queue.send", QueueUnavailableError("1 invoice(s) could not be queued"))
    world.faults.fail("ledger.mark_send_failed", LedgerUnavailableError("throttled"))
    # When the webhook is accepted
    # Then the sender hears of the queue's failure (503), not the ledger's
    with pytest.raises(QueueUnavailableError):
        world.accept(invoice("A"))
    # And the unmarked entry's retry under a new webhook-id queues nothing
    (admission,) = world.accept(invoice("A"), correlation_id="wh-retry")
    assert (admission.action, world.queue.messages) == (Action.ANSWER, {})
    # And the reconciler queues it once it has made no progress for its window
    world.clock.advance(901)
    assert world.reconcile().requeued == {"QUEUED": [str(invoice("A").key)]}
    world.drain()
    assert world.status(invoice("A").key) is InvoiceStatus.INVOICED
    assert world.fynd.sent[invoice("A").key] == 1


def test_a_failed_send_with_too_little_time_left_writes_no_mark(world: World) -> None:
    # Given ingest's clock: time enough for the writes and the send, and then less than one write
    left = iter([10.0, 1.0])
    acceptance = InvoiceAcceptance(
        ledger=world.ledger, queue=world.queue, clock=world.clock, reserve_seconds=5.7, mark_seconds=1.9
    )
    world.faults.fail("queue.send", QueueUnavailableError("1 invoice(s) could not be queued"))
    # When the send fails
    with pytest.raises(QueueUnavailableError):
        acceptance.accept([invoice("A")], correlation_id="wh-1", seconds_left=lambda: next(left))
    # Then no mark was written: the function answers before its timeout, and the reconciler heals
    assert world.ledger.entries[invoice("A").key].send_failed_at is None
    assert world.ledger.writes["mark_send_failed"] == 0


def test_a_failed_send_with_just_the_time_for_one_write_left_still_marks(world: World) -> None:
    # Given ingest's clock: after the send, exactly the time one mark needs
    left = iter([10.0, 1.9])
    acceptance = InvoiceAcceptance(
        ledger=world.ledger, queue=world.queue, clock=world.clock, reserve_seconds=5.7, mark_seconds=1.9
    )
    world.faults.fail("queue.send", QueueUnavailableError("1 invoice(s) could not be queued"))
    # When the send fails
    with pytest.raises(QueueUnavailableError):
        acceptance.accept([invoice("A")], correlation_id="wh-1", seconds_left=lambda: next(left))
    # Then the entry is marked, so the sender's retry queues it
    assert world.ledger.entries[invoice("A").key].send_failed_at == world.clock.now


@pytest.fixture
def warnings(logged: Callable[[], list[dict[str, Any]]]) -> Callable[[], list[dict[str, Any]]]:
    """The relay's log lines at WARNING and above so far."""
    return lambda: [document for document in logged() if document.get("level") in ("WARNING", "ERROR")]


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float, dict[str, str]]]:
    """Every metric acceptance counts: (name, value, dimensions)."""
    seen: list[tuple[str, float, dict[str, str]]] = []

    def count(name: str, value: float = 1, **dimensions: str) -> None:
        seen.append((name, value, dimensions))

    monkeypatch.setattr(intake_module, "count", count)
    return seen


UNMARKED = "invoices not queued nor marked for the sender's retry; the reconciler will queue them"


def test_the_invoices_a_failed_send_left_unmarked_are_named_for_the_operator(
    world: World, warnings: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given SQS refuses A, B and C, and the ledger refuses the second mark
    world.faults.fail("queue.send", QueueUnavailableError("3 invoice(s) could not be queued"))
    world.faults.fail("ledger.mark_send_failed", LedgerUnavailableError("throttled"), nth=2)
    # When the webhook is accepted
    with pytest.raises(QueueUnavailableError):
        world.accept(invoice("A"), invoice("B"), invoice("C"))
    # Then A is marked, and one warning names B and C, which only the reconciler will queue
    assert world.ledger.entries[invoice("A").key].send_failed_at is not None
    unmarked = [doc for doc in warnings() if doc["message"] == UNMARKED]
    assert [doc["invoice_keys"] for doc in unmarked] == [[str(invoice("B").key), str(invoice("C").key)]]


def test_a_failed_send_whose_every_invoice_is_marked_warns_of_nothing_unmarked(
    world: World, warnings: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given SQS refuses A and B, and the ledger takes both marks
    world.faults.fail("queue.send", QueueUnavailableError("2 invoice(s) could not be queued"))
    # When the webhook is accepted
    with pytest.raises(QueueUnavailableError):
        world.accept(invoice("A"), invoice("B"))
    # Then no warning says an invoice waits for the reconciler: the sender's retry queues both
    assert [doc for doc in warnings() if doc["message"] == UNMARKED] == []


def test_a_failed_send_with_no_time_left_to_mark_names_every_invoice_for_the_operator(
    world: World, warnings: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given ingest's clock: time enough for the writes and the send, and then less than one write
    left = iter([10.0, 1.0])
    acceptance = InvoiceAcceptance(
        ledger=world.ledger, queue=world.queue, clock=world.clock, reserve_seconds=5.7, mark_seconds=1.9
    )
    world.faults.fail("queue.send", QueueUnavailableError("2 invoice(s) could not be queued"))
    # When the send of A and B fails
    with pytest.raises(QueueUnavailableError):
        acceptance.accept(
            [invoice("A"), invoice("B")], correlation_id="wh-1", seconds_left=lambda: next(left)
        )
    # Then neither is marked, and one warning names both: only the reconciler will queue them
    unmarked = [doc for doc in warnings() if doc["message"] == UNMARKED]
    assert [doc["invoice_keys"] for doc in unmarked] == [[str(invoice("A").key), str(invoice("B").key)]]


ACCEPTED = "invoices accepted"


def test_an_accepted_webhook_counts_and_logs_what_it_queued_and_what_was_already_known(
    world: World,
    counted: list[tuple[str, float, dict[str, str]]],
    logged: Callable[[], list[dict[str, Any]]],
) -> None:
    # Given A and B accepted and waiting in the queue
    world.accept(invoice("A"), invoice("B"))
    counted.clear()
    # When the ERP sends A and B again beside the new C and D, under a new webhook-id
    world.accept(*(invoice(order) for order in "ABCD"), correlation_id="wh-2")
    # Then the metrics say four received, two queued and two duplicates suppressed at ingest
    assert counted == [
        ("InvoicesReceived", 4, {}),
        ("DuplicatesSuppressed", 2, {"stage": "ingest"}),
        ("InvoicesQueued", 2, {}),
    ]
    # And the log line names every key of the webhook, with what was queued and what was known
    (line,) = [doc for doc in logged() if doc["message"] == ACCEPTED and doc["already_known"] == 2]
    assert (line["level"], line["invoice_keys"], line["queued"]) == (
        "INFO",
        [str(invoice(order).key) for order in "ABCD"],
        2,
    )


def test_a_webhook_of_new_invoices_counts_no_duplicate(
    world: World,
    counted: list[tuple[str, float, dict[str, str]]],
    logged: Callable[[], list[dict[str, Any]]],
) -> None:
    # When a webhook of two new invoices is accepted
    world.accept(invoice("A"), invoice("B"))
    # Then both are counted received and queued, and no duplicate is counted
    assert counted == [("InvoicesReceived", 2, {}), ("InvoicesQueued", 2, {})]
    (line,) = [doc for doc in logged() if doc["message"] == ACCEPTED]
    assert (line["queued"], line["already_known"]) == (2, 0)


def test_each_queued_message_carries_the_webhook_id_of_the_delivery_that_queued_it(world: World) -> None:
    # When a webhook is accepted under the webhook-id wh-7
    world.accept(invoice("A"), invoice("B"), correlation_id="wh-7")
    # Then every message it queued names that delivery, for the dispatcher's log and trace
    bodies = [QueuedInvoice.from_body(held.body) for held in world.queue.messages.values()]
    assert [(body.invoice.orderId, body.correlation_id) for body in bodies] == [("A", "wh-7"), ("B", "wh-7")]


def test_a_conflict_is_counted_and_its_keys_named_for_the_operator(
    world: World,
    counted: list[tuple[str, float, dict[str, str]]],
    warnings: Callable[[], list[dict[str, Any]]],
) -> None:
    # Given A and B recorded
    world.accept(invoice("A"), invoice("B"))
    counted.clear()
    # When a webhook brings other invoices for A and B beside a new C
    changed = [invoice(order, invoiceNumber=f"INV-{order}-2") for order in "AB"]
    with pytest.raises(ConflictError):
        world.accept(*changed, invoice("C"), correlation_id="wh-2")
    # Then two conflicts are counted, one warning names both keys, and C is not recorded
    assert ("Conflicts", 2, {}) in counted
    conflicts = [doc for doc in warnings() if doc["message"] == "invoices conflict with recorded ones"]
    assert [doc["invoice_keys"] for doc in conflicts] == [[str(invoice("A").key), str(invoice("B").key)]]
    assert invoice("C").key not in world.ledger.entries


RACE = "an invoice key changed while accepting; reading it again"


def test_a_race_that_never_settles_is_read_again_at_most_admit_rounds_times_each_counted_and_logged(
    world: World,
    counted: list[tuple[str, float, dict[str, str]]],
    logged: Callable[[], list[dict[str, Any]]],
) -> None:
    # Given a ledger whose every write is refused because a key changed meanwhile
    world.faults.fail("ledger.accept", AcceptRaceError("changed"), times=None)
    # When a webhook is accepted (written first, unread, as it is small)
    with pytest.raises(AcceptRaceError) as refused:
        world.accept(invoice("A"))
    # Then the ledger was read ADMIT_ROUNDS times after the first write, and no more
    assert (world.faults.calls["ledger.get_many"], world.faults.calls["ledger.accept"]) == (
        ADMIT_ROUNDS,
        ADMIT_ROUNDS + 1,
    )
    # And each race after a read is counted and logged with its round; the error says how many
    assert [name for name, _, _ in counted].count("AcceptRaces") == ADMIT_ROUNDS
    assert [doc["round"] for doc in logged() if doc["message"] == RACE] == list(range(1, ADMIT_ROUNDS + 1))
    assert str(refused.value) == f"invoice keys kept changing over {ADMIT_ROUNDS} attempts to accept them"


def test_a_webhook_above_the_optimistic_limit_is_read_first_and_settles_on_its_last_round(
    world: World, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given acceptance that writes unread only webhooks of up to 2 invoices, and a ledger that
    # refuses the first ADMIT_ROUNDS - 1 writes
    acceptance = InvoiceAcceptance(
        ledger=world.ledger, queue=world.queue, clock=world.clock, optimistic_limit=2
    )
    world.faults.fail("ledger.accept", AcceptRaceError("changed"), times=ADMIT_ROUNDS - 1)
    # When a webhook of 3 invoices is accepted
    admissions = acceptance.accept([invoice("A"), invoice("B"), invoice("C")], correlation_id="wh-1")
    # Then every write came after a read, and the last round's write recorded and queued them all
    assert world.faults.calls["ledger.get_many"] == world.faults.calls["ledger.accept"] == ADMIT_ROUNDS
    assert [admission.action for admission in admissions] == [Action.CREATE] * 3
    assert len(world.queue.messages) == 3
    assert [doc["round"] for doc in logged() if doc["message"] == RACE] == list(range(1, ADMIT_ROUNDS))


@pytest.mark.parametrize(("size", "reads"), [(1, 0), (2, 0), (3, 1)])
def test_a_webhook_up_to_the_optimistic_limit_is_written_unread(world: World, size: int, reads: int) -> None:
    # Given acceptance that writes unread only webhooks of up to 2 invoices
    acceptance = InvoiceAcceptance(
        ledger=world.ledger, queue=world.queue, clock=world.clock, optimistic_limit=2
    )
    # When a webhook of `size` new invoices is accepted
    acceptance.accept([invoice(f"N-{n}") for n in range(size)], correlation_id="wh-1")
    # Then the ledger is read first only above the limit, and every invoice is queued
    assert (world.faults.calls["ledger.get_many"], len(world.queue.messages)) == (reads, size)


def test_without_an_optimistic_limit_new_invoices_are_written_unread(world: World) -> None:
    # When a webhook of new invoices is accepted by acceptance without a limit
    world.accept(invoice("A"), invoice("B"))
    # Then the write's conditions alone proved them new: the ledger was never read
    assert (world.faults.calls["ledger.get_many"], world.faults.calls["ledger.accept"]) == (0, 1)


def test_a_write_whose_answer_was_lost_is_marked_so_a_resend_without_the_webhook_id_queues_it(
    world: World,
) -> None:
    # Given the ledger applies the accept transaction and its answer is lost (a timeout): ingest
    # answers 503, and no message was sent
    world.faults.fail("ledger.accept.after", LedgerUnavailableError("read timeout"))
    with pytest.raises(LedgerUnavailableError):
        world.accept(invoice("A"), correlation_id=None)
    assert world.queue.messages == {}
    # When the ERP resends it with no webhook-id (ERPNext's webhooks carry none)
    world.accept(invoice("A"), correlation_id=None)
    # Then the resend queues it, rather than waiting for the reconciler's window, and Fynd gets it once
    assert len(world.queue.messages) == 1
    world.drain()
    assert world.status(invoice("A").key) is InvoiceStatus.INVOICED
    assert world.fynd.applied[invoice("A").key] == 1


def test_a_write_refused_before_it_applied_marks_nothing_and_the_resend_records_it(
    world: World, warnings: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given the ledger refuses the accept transaction outright
    world.faults.fail("ledger.accept", LedgerUnavailableError("throttled"))
    with pytest.raises(LedgerUnavailableError):
        world.accept(invoice("A"), correlation_id=None)
    # Then nothing is recorded, and no warning says an invoice waits for the reconciler
    assert world.ledger.entries == {}
    assert [doc for doc in warnings() if doc["message"] == UNMARKED] == []
    # And the resend records and queues it
    world.accept(invoice("A"), correlation_id=None)
    assert len(world.queue.messages) == 1
