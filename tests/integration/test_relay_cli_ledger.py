"""`relay list`, `stats`, `report` and `replay` against the local relay's ledger and queues."""

import csv
import io
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from factories import invoice_dict
from relay.adapters.ledger import InvoiceLedger
from relay.domain.messages import QueuedInvoice
from relay_cli_support import run_relay
from relay_client import RelayClient

TODAY = datetime.now(UTC).date()


def test_list_reads_rejected_invoices_by_code_from_the_index_never_a_scan(relay: RelayClient) -> None:
    # Given one invoice Fynd cancelled (IN401), one it does not know (IN400) and one it invoiced
    orders = ("CANCELLED-L1", "UNKNOWN-L1", "FY-L1")
    relay.post([invoice_dict(order_id) for order_id in orders])
    relay.settle(*orders)
    # When an operator lists the rejected ones, all of them and IN401 only
    rejected = run_relay(relay, "list", "--status", "REJECTED", "--since", "1h", "--json")
    cancelled = run_relay(relay, "list", "--status", "REJECTED", "--code", "IN401", "--json")
    table = run_relay(relay, "list")
    # Then both rejections come back with their codes; the code filter keeps one; the table shows them
    assert rejected.exit_code == 0
    assert {(row["orderId"], row["code"]) for row in rejected.json()} == {
        ("CANCELLED-L1", "IN401"),
        ("UNKNOWN-L1", "IN400"),
    }
    assert [row["orderId"] for row in cancelled.json()] == ["CANCELLED-L1"]
    assert "CANCELLED-L1" in table.stdout
    assert "UNKNOWN-L1" in table.stdout
    assert "FY-L1" not in table.stdout


def test_list_of_invoiced_entries_explains_the_sparse_index(relay: RelayClient) -> None:
    # Given the ByStatus index, which holds no INVOICED entry (contract: INVOICED removes statusKey)
    # When an operator lists INVOICED
    run = run_relay(relay, "list", "--status", "INVOICED")
    # Then the command refuses with exit 2 and says where to look instead
    assert run.exit_code == 2
    assert "sparse" in run.stderr
    assert "relay status" in run.stderr


def test_a_malformed_since_is_a_usage_error(relay: RelayClient) -> None:
    run = run_relay(relay, "list", "--since", "yesterday-ish")
    assert run.exit_code == 2
    assert "24h" in run.stderr


def test_stats_counts_by_state_and_code_and_reads_the_queues(relay: RelayClient) -> None:
    # Given two IN401s, one IN400 and one invoiced order
    orders = ("CANCELLED-S1", "CANCELLED-S2", "UNKNOWN-S1", "FY-S1")
    relay.post([invoice_dict(order_id) for order_id in orders])
    relay.settle(*orders)
    # When an operator asks for stats
    run = run_relay(relay, "stats", "--json")
    shown = run_relay(relay, "stats")
    # Then the counts are by state and code, INVOICED included, and the queues are empty,
    # nothing in flight
    assert run.exit_code == 0
    document = run.json()
    assert document["byStatus"]["REJECTED"] == 3
    assert document["parked"] == 0  # RETRYING entries parked in the ledger, none here
    assert (document["byStatus"]["INVOICED"], document["invoiced"]) == (1, 1)
    counts = {(row["status"], row["code"]): row["count"] for row in document["byStatusAndCode"]}
    assert counts == {("REJECTED", "IN400"): 1, ("REJECTED", "IN401"): 2}
    assert (document["queue"], document["inFlight"], document["deadLetterQueue"]) == (0, 0, 0)
    assert shown.exit_code == 0
    assert "IN401" in shown.stdout
    assert "INVOICED" in shown.stdout
    assert "in flight" in shown.stdout


@pytest.mark.parametrize("pipeline_config", [{"consume": False}], indirect=True)
def test_stats_counts_the_messages_a_dispatcher_holds_as_in_flight(relay: RelayClient) -> None:
    # Given two invoices on the queue, one of them received by a dispatcher that has not finished
    relay.post([invoice_dict("FY-F1"), invoice_dict("FY-F2")])
    (held,) = relay.receive(1)
    assert held
    # When an operator asks for stats, skipping the INVOICED scan
    run = run_relay(relay, "stats", "--no-invoiced", "--json")
    # Then one message waits and one is in flight; INVOICED is not counted
    assert run.exit_code == 0
    document = run.json()
    assert (document["queue"], document["inFlight"], document["invoiced"]) == (1, 1, None)
    assert document["byStatus"]["QUEUED"] == 2


@pytest.mark.parametrize("pipeline_config", [{"consume": False}], indirect=True)
def test_report_is_a_csv_of_rejected_with_reason_and_pending_in_the_window(
    relay: RelayClient, tmp_path: Path
) -> None:
    # Given two invoices still waiting on the queue and one the dispatcher rejected
    relay.post([invoice_dict("FY-R1"), invoice_dict("FY-R2"), invoice_dict("CANCELLED-R1")])
    records = relay.receive(3)
    relay.dispatch(*(r for r in records if "CANCELLED-R1" in r["body"]))
    # When finance asks for today's report, as CSV on stdout and in a file, and for tomorrow's
    today = run_relay(relay, "report", "--from", str(TODAY), "--to", str(TODAY))
    to_file = run_relay(
        relay, "report", "--from", str(TODAY), "--to", str(TODAY), "-o", str(tmp_path / "r.csv")
    )
    tomorrow = str(TODAY + timedelta(days=1))
    later = run_relay(relay, "report", "--from", tomorrow, "--to", tomorrow, "--json")
    # Then today's CSV has the pending two and the rejected one with Fynd's reason
    assert today.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(today.stdout)))
    assert Counter(row["status"] for row in rows) == Counter({"QUEUED": 2, "REJECTED": 1})
    (rejected,) = [row for row in rows if row["status"] == "REJECTED"]
    assert (rejected["orderId"], rejected["code"]) == ("CANCELLED-R1", "IN401")
    assert rejected["reason"]
    assert (tmp_path / "r.csv").read_text() == today.stdout
    assert to_file.stdout == ""
    assert "INVOICED" in today.stderr  # the limit is stated, not hidden
    # And nothing was updated tomorrow
    assert later.json()["rows"] == []


def test_report_refuses_an_end_before_its_start(relay: RelayClient) -> None:
    run = run_relay(relay, "report", "--from", "2026-02-02", "--to", "2026-02-01")
    assert run.exit_code == 2


def test_replay_requeues_a_fixed_rejection_and_the_status_api_shows_who_when_why(relay: RelayClient) -> None:
    # Given an order Fynd answered "cancelled" (IN401), so the relay rejected its invoice
    payload = invoice_dict("FY-P1")
    relay.simulator.state.configure_orders({"FY-P1": {"state": "cancelled"}})
    relay.post(payload)
    assert relay.settle("FY-P1")["FY-P1"]["lastError"]["code"] == "IN401"
    # And the seller has since reinstated the order in Fynd
    relay.simulator.state.configure_orders({"FY-P1": {"state": "confirmed"}})
    # When an operator checks with a dry run, then replays it, saying who and why
    dry = run_relay(relay, "replay", "FY-P1", "--dry-run", "--json")
    assert relay.status("FY-P1").body["status"] == "REJECTED"
    run = run_relay(
        relay, "replay", "FY-P1", "--by", "ops@seller.example", "--reason", "order reinstated", "--json"
    )
    # Then the dry run changed nothing, the replay queued it, and it is invoiced this time
    assert (dry.exit_code, dry.json()[0]["result"]) == (0, "would replay")
    assert run.exit_code == 0, run.stderr
    assert run.json() == [
        {
            "orderId": "FY-P1",
            "invoiceType": "sale",
            "result": "replayed",
            "previousCode": "IN401",
            "detail": "queued again (was IN401)",
        }
    ]
    final = relay.wait_for_final(("FY-P1", "sale"))[("FY-P1", "sale")]
    assert final["status"] == "INVOICED"
    assert relay.simulator.state.invoice_count("FY-P1") == 1
    # And the status API returns the audit trail: who, when, why, and the rejection undone
    (event,) = relay.status("FY-P1").body["history"]
    assert (event["action"], event["by"], event["reason"]) == (
        "replay",
        "ops@seller.example",
        "order reinstated",
    )
    assert event["previousError"]["code"] == "IN401"
    assert event["at"].startswith(str(TODAY))
    shown = run_relay(relay, "status", "FY-P1")
    assert "order reinstated" in shown.stdout


def test_replay_refuses_what_it_must_not_requeue(relay: RelayClient) -> None:
    # Given an invoiced order, a rejected one whose content was never stored, and an unknown one
    relay.post([invoice_dict("FY-Q1"), invoice_dict("UNKNOWN-Q1")])
    relay.settle("FY-Q1", "UNKNOWN-Q1")
    dynamodb = relay.pipeline.dynamodb()
    assert relay.pipeline.stack is not None
    dynamodb.delete_item(TableName=relay.pipeline.stack.table_name, Key={"pk": {"S": "body#UNKNOWN-Q1#sale"}})
    # When an operator replays all three
    run = run_relay(relay, "replay", "FY-Q1", "UNKNOWN-Q1", "NEVER-Q1", "--reason", "try", "--json")
    missing_reason = run_relay(relay, "replay", "UNKNOWN-Q1")
    # Then none is queued, each says why, and the command exits 1
    assert run.exit_code == 1
    assert {row["orderId"]: row["result"] for row in run.json()} == {
        "FY-Q1": "not rejected",
        "UNKNOWN-Q1": "content not stored",
        "NEVER-Q1": "not found",
    }
    assert relay.status("UNKNOWN-Q1").body["status"] == "REJECTED"
    assert missing_reason.exit_code == 2


def test_replay_by_status_and_code_picks_only_that_code(relay: RelayClient) -> None:
    # Given an IN401 and an IN400 rejection, both with their content stored
    payloads = [invoice_dict("CANCELLED-C1"), invoice_dict("UNKNOWN-C1")]
    relay.post(payloads)
    relay.settle("CANCELLED-C1", "UNKNOWN-C1")
    # When an operator replays the IN400s only, as a dry run
    run = run_relay(relay, "replay", "--status", "REJECTED", "--code", "IN400", "--dry-run", "--json")
    # Then only the IN400 is picked
    assert run.exit_code == 0
    assert [(row["orderId"], row["result"]) for row in run.json()] == [("UNKNOWN-C1", "would replay")]


@pytest.mark.parametrize("pipeline_config", [{"consume": False}], indirect=True)
def test_list_dead_lettered_shows_the_invoices_waiting_for_a_redrive(relay: RelayClient) -> None:
    # Given two accepted invoices, one of whose messages left for the dead-letter queue
    relay.post([invoice_dict("FY-DL1"), invoice_dict("FY-DL2")])
    (record,) = [r for r in relay.receive(2) if "FY-DL1" in r["body"]]
    assert relay.pipeline.stack is not None
    ledger = InvoiceLedger(relay.pipeline.stack.table_name, relay.pipeline.dynamodb())
    assert ledger.mark_dead_lettered(
        QueuedInvoice.from_body(record["body"]), message_id=record["messageId"], now=time.time()
    )
    # When an operator lists the dead-lettered invoices, and the QUEUED ones
    dead = run_relay(relay, "list", "--dead-lettered", "--json")
    queued = run_relay(relay, "list", "--status", "QUEUED", "--json")
    # Then the marked one is listed apart, and only there
    assert dead.exit_code == 0
    assert [row["orderId"] for row in dead.json()] == ["FY-DL1"]
    assert [row["orderId"] for row in queued.json()] == ["FY-DL2"]
