"""The Fynd simulator's model, without HTTP: tokens, orders, codes, faults, records.

Time is a FakeClock moved by hand, so nothing here sleeps.
"""

import json
from collections.abc import Mapping

import pytest

from fynd_simulator import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    INVOICE_PATH,
    AppliedInvoice,
    CommitThenDropFault,
    Credential,
    ErrorCode,
    ExpireTokensFault,
    Fault,
    FyndSimulator,
    LatencyFault,
    OrderOutcome,
    SimulatorConfigError,
    SimulatorState,
    Stats,
    StatusFault,
)
from fynd_simulator.admin import handle_admin
from fynd_simulator.faults import parse_fault
from fynd_simulator.replies import Reply


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> SimulatorState:
    return SimulatorState(
        token_ttl=60,
        location_credentials=[Credential("store-a", "store-a-pw", "LOC-A")],
        clock=clock,
    )


def token_for(
    state: SimulatorState, username: str = DEFAULT_USERNAME, password: str = DEFAULT_PASSWORD
) -> str:
    reply = state.token_request(username, password)
    assert reply.status == 200
    assert reply.body is not None
    token = reply.body["access_token"]
    assert isinstance(token, str)
    return token


def invoice(order_id: str, invoice_type: str = "sale") -> dict[str, object]:
    return {"orderId": order_id, "invoiceNumber": f"INV-{order_id}", "invoiceType": invoice_type}


def send(
    state: SimulatorState,
    token: str | None,
    body: object,
    *,
    location: str | None = None,
    fault: Fault | None = None,
) -> Reply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    query = {"locationCode": location} if location else {}
    return state.invoice_update(
        path=INVOICE_PATH,
        query=query,
        token=token,
        raw_body=raw,
        fault=fault,
    )


def codes(reply: Reply) -> dict[str, str]:
    assert reply.status == 200
    assert reply.body is not None
    errors = reply.body["errors"]
    assert isinstance(errors, list)
    return {e["orderId"]: e["code"] for e in errors}


def body_of(reply: Reply) -> Mapping[str, object]:
    assert reply.body is not None
    return reply.body


# --- tokens ---------------------------------------------------------------------------


def test_known_credentials_get_a_random_token_with_the_configured_lifetime(
    state: SimulatorState,
) -> None:
    # Given the default company-level credentials
    # When two tokens are requested
    first = state.token_request(DEFAULT_USERNAME, DEFAULT_PASSWORD)
    second = state.token_request(DEFAULT_USERNAME, DEFAULT_PASSWORD)
    # Then each is 200 with the configured expires_in, and they differ
    assert first.status == second.status == 200
    assert body_of(first)["expires_in"] == 60
    assert body_of(first)["access_token"] != body_of(second)["access_token"]
    assert state.stats().tokens_issued == 2


@pytest.mark.parametrize(
    ("username", "password"),
    [(DEFAULT_USERNAME, "wrong"), ("nobody", DEFAULT_PASSWORD), ("", "")],
)
def test_wrong_credentials_get_401_problem_and_are_counted(
    state: SimulatorState, username: str, password: str
) -> None:
    # When a token is requested with credentials the simulator does not know
    reply = state.token_request(username, password)
    # Then it is a 401 problem document, and the request is still counted
    assert reply.status == 401
    assert reply.content_type == "application/problem+json"
    assert "access_token" not in body_of(reply)
    assert state.stats().token_requests == 1
    assert state.stats().tokens_issued == 0


def test_a_token_stops_working_once_its_lifetime_is_over(state: SimulatorState, clock: FakeClock) -> None:
    # Given a token with a 60 s lifetime
    token = token_for(state)
    # When it is used just before and at expiry
    clock.advance(59.9)
    before = send(state, token, [invoice("ORD-1")])
    clock.advance(0.1)
    after = send(state, token, [invoice("ORD-2")])
    # Then the first call is answered and the second gets 401, invoicing nothing
    assert before.status == 200
    assert after.status == 401
    assert state.invoice_count("ORD-2") == 0


@pytest.mark.parametrize("token", [None, "", "not-a-token"])
def test_a_call_without_a_live_token_gets_401(state: SimulatorState, token: str | None) -> None:
    # When Update Invoice is called with a missing or unknown token
    reply = send(state, token, [invoice("ORD-1")])
    # Then it is refused and the order is untouched, but the call is recorded
    assert reply.status == 401
    assert state.order("ORD-1") is None
    assert [c.status for c in state.calls()] == [401]


def test_a_credential_never_shows_its_password() -> None:
    assert "s3cret" not in repr(Credential("user", "s3cret", "LOC-A"))


# --- payload ----------------------------------------------------------------------------


def test_twenty_invoices_in_one_call_are_accepted(state: SimulatorState) -> None:
    # When a call carries exactly 20 invoices
    reply = send(state, token_for(state), [invoice(f"ORD-{i}") for i in range(20)])
    # Then all 20 succeed
    assert body_of(reply)["payloadCount"] == 20
    assert body_of(reply)["successCount"] == 20
    assert body_of(reply)["status"] == "SUCCESS"


def test_twenty_one_invoices_are_refused_whole_and_recorded(state: SimulatorState) -> None:
    # When a call carries 21 invoices
    reply = send(state, token_for(state), [invoice(f"ORD-{i}") for i in range(21)])
    # Then it is a 400 naming the limit, nothing is invoiced, and the stats show 21
    assert reply.status == 400
    assert "1 to 20" in str(body_of(reply)["detail"])
    assert state.orders() == {}
    assert state.stats().max_orders_per_call == 21
    assert len(state.calls()[0].order_ids) == 21


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        [],
        {"orderId": "ORD-1", "invoiceNumber": "I", "invoiceType": "sale"},
        ["ORD-1"],
        [{"invoiceNumber": "I", "invoiceType": "sale"}],
        [{"orderId": "ORD-1", "invoiceType": "sale"}],
        [{"orderId": "ORD-1", "invoiceNumber": "I"}],
        [{"orderId": "", "invoiceNumber": "I", "invoiceType": "sale"}],
        [{"orderId": 7, "invoiceNumber": "I", "invoiceType": "sale"}],
    ],
    ids=[
        "not-json",
        "empty",
        "object",
        "string-item",
        "no-orderId",
        "no-number",
        "no-type",
        "blank-id",
        "int-id",
    ],
)
def test_a_body_that_is_not_an_invoice_array_gets_400(state: SimulatorState, body: object) -> None:
    # When the body is not a JSON array of 1..20 complete invoice objects
    reply = send(state, token_for(state), body)
    # Then the whole call is a 400 error JSON and nothing is invoiced
    assert reply.status == 400
    assert body_of(reply)["status"] == 400
    assert state.stats().invoiced == 0


def test_a_body_that_is_not_json_is_recorded_as_text(state: SimulatorState) -> None:
    send(state, token_for(state), b"{not json")
    assert state.calls()[0].body == "{not json"


# --- per-order codes --------------------------------------------------------------------


def test_a_confirmed_order_is_invoiced_once_and_a_second_invoice_gets_in453(
    state: SimulatorState,
) -> None:
    # Given an order with no special prefix (confirmed by default)
    token = token_for(state)
    # When it is invoiced twice
    first = send(state, token, [invoice("ORD-1")])
    second = send(state, token, [invoice("ORD-1")])
    # Then the first succeeds and moves it to invoiced, the second is IN453
    assert codes(first) == {}
    assert codes(second) == {"ORD-1": "IN453"}
    view = state.order("ORD-1")
    assert view is not None
    assert view.state == "invoiced"
    assert view.invoices == (AppliedInvoice(invoice_number="INV-ORD-1", invoice_type="sale"),)
    assert state.invoice_count("ORD-1") == 1
    assert state.stats().duplicates == 1


@pytest.mark.parametrize(
    ("order_id", "code"),
    [
        ("CANCELLED-1", "IN401"),
        ("UNKNOWN-1", "IN400"),
        ("BADINV-1", "IN422"),
        ("INVOICED-1", "IN453"),
        ("EARLY-1", "IN403"),
    ],
)
def test_an_unconfigured_order_answers_by_its_prefix(state: SimulatorState, order_id: str, code: str) -> None:
    # When an order with a special prefix is invoiced for the first time
    reply = send(state, token_for(state), [invoice(order_id)])
    # Then it fails with that prefix's code and is not invoiced
    assert codes(reply) == {order_id: code}
    assert body_of(reply)["status"] == "FAILED"
    assert state.invoice_count(order_id) == 0


def test_an_early_order_gets_in403_twice_then_succeeds(state: SimulatorState) -> None:
    token = token_for(state)
    # When an EARLY- order is invoiced three times
    answers = [codes(send(state, token, [invoice("EARLY-9")])) for _ in range(3)]
    # Then the first two are IN403 and the third invoices it
    assert answers == [{"EARLY-9": "IN403"}, {"EARLY-9": "IN403"}, {}]
    assert state.invoice_count("EARLY-9") == 1


def test_a_pending_order_confirms_after_the_configured_attempts(state: SimulatorState) -> None:
    # Given an order configured to confirm after 1 attempt
    state.configure_orders({"ORD-1": {"state": "pending", "confirm_after_attempts": 1}})
    token = token_for(state)
    # When it is invoiced twice
    answers = [codes(send(state, token, [invoice("ORD-1")])) for _ in range(2)]
    # Then IN403 first, then success
    assert answers == [{"ORD-1": "IN403"}, {}]


def test_a_pending_order_confirms_after_the_configured_seconds(
    state: SimulatorState, clock: FakeClock
) -> None:
    # Given an order confirmed 30 s after it was configured
    state.configure_order("ORD-1", confirm_after_seconds=30)
    token = token_for(state)
    # When it is invoiced at 29 s and at 30 s
    clock.advance(29)
    early = send(state, token, [invoice("ORD-1")])
    clock.advance(1)
    due = send(state, token, [invoice("ORD-1")])
    # Then IN403, then success
    assert codes(early) == {"ORD-1": "IN403"}
    assert codes(due) == {}


def test_a_pending_order_without_a_rule_stays_in403(state: SimulatorState) -> None:
    state.configure_order("ORD-1", "pending")
    token = token_for(state)
    answers = [codes(send(state, token, [invoice("ORD-1")])) for _ in range(5)]
    assert answers == [{"ORD-1": "IN403"}] * 5


def test_explicit_configuration_overrides_the_prefix(state: SimulatorState) -> None:
    # Given prefixed orders configured otherwise
    state.configure_orders({"CANCELLED-1": {"state": "confirmed"}, "ORD-2": {"state": "unknown"}})
    state.configure_order("ORD-3", "cancelled")
    state.configure_order("ORD-4", "bad_invoice")
    state.configure_order("ORD-5", "invoiced")
    # When they are invoiced
    reply = send(state, token_for(state), [invoice(o) for o in ("CANCELLED-1", "ORD-2", "ORD-3", "ORD-4")])
    again = send(state, token_for(state), [invoice("ORD-5")])
    # Then the configuration decides, not the prefix
    assert codes(reply) == {"ORD-2": "IN400", "ORD-3": "IN401", "ORD-4": "IN422"}
    assert body_of(reply)["status"] == "PARTIAL"
    assert body_of(reply)["successCount"] == 1
    assert body_of(reply)["failedCount"] == 3
    assert codes(again) == {"ORD-5": "IN453"}


def test_an_invoice_type_other_than_sale_or_return_gets_in422(state: SimulatorState) -> None:
    reply = send(state, token_for(state), [invoice("ORD-1", "gift"), invoice("ORD-2", "return")])
    assert codes(reply) == {"ORD-1": "IN422"}
    assert state.invoice_count("ORD-2") == 1


def test_error_entries_carry_order_code_and_message(state: SimulatorState) -> None:
    reply = send(state, token_for(state), [invoice("CANCELLED-1")])
    errors = body_of(reply)["errors"]
    assert isinstance(errors, list)
    assert errors[0]["orderId"] == "CANCELLED-1"
    assert errors[0]["code"] == "IN401"
    assert errors[0]["message"]


@pytest.mark.parametrize(
    "config",
    [
        {"state": "shipped"},
        {"confirm_after_attempts": -1},
        {"confirm_after_attempts": True},
        {"confirm_after_seconds": "soon"},
        {"location": 5},
        {"colour": "red"},
    ],
)
def test_an_invalid_order_configuration_is_refused_whole(
    state: SimulatorState, config: dict[str, object]
) -> None:
    with pytest.raises(SimulatorConfigError):
        state.configure_orders({"ORD-OK": {}, "ORD-BAD": config})
    assert state.orders() == {}


# --- locations ----------------------------------------------------------------------------


def test_a_location_token_only_invoices_orders_of_its_own_location(state: SimulatorState) -> None:
    # Given orders owned by LOC-A and LOC-B, and a token for LOC-A only
    state.configure_order("ORD-A", location="LOC-A")
    state.configure_order("ORD-B", location="LOC-B")
    token = token_for(state, "store-a", "store-a-pw")
    # When both are invoiced, even naming LOC-B in the query
    reply = send(state, token, [invoice("ORD-A"), invoice("ORD-B")], location="LOC-B")
    # Then LOC-A's order succeeds and LOC-B's is IN400
    assert codes(reply) == {"ORD-B": "IN400"}
    assert state.invoice_count("ORD-A") == 1
    assert state.invoice_count("ORD-B") == 0


def test_a_location_token_invoices_orders_with_no_configured_location(
    state: SimulatorState,
) -> None:
    reply = send(state, token_for(state, "store-a", "store-a-pw"), [invoice("ORD-FREE")])
    assert codes(reply) == {}


def test_a_company_token_is_scoped_by_the_location_code_query(state: SimulatorState) -> None:
    # Given an order owned by LOC-B and a company-level token
    state.configure_order("ORD-B", location="LOC-B")
    token = token_for(state)
    # When it is sent for LOC-A, then for LOC-B
    wrong = send(state, token, [invoice("ORD-B")], location="LOC-A")
    right = send(state, token, [invoice("ORD-B")], location="LOC-B")
    # Then IN400, then success; both calls record the locationCode
    assert codes(wrong) == {"ORD-B": "IN400"}
    assert codes(right) == {}
    assert [c.location_code for c in state.calls()] == ["LOC-A", "LOC-B"]


# --- snake_case envelope -------------------------------------------------------------------


def test_the_snake_case_envelope_carries_counts_errors_and_an_ack_id(
    state: SimulatorState,
) -> None:
    # Given the snake_case envelope
    state.configure(envelope="snake")
    # When one order succeeds and one is cancelled
    reply = send(state, token_for(state), [invoice("ORD-1"), invoice("CANCELLED-1")])
    # Then the answer is {"data": ..., "meta": ...} with snake_case keys
    body = body_of(reply)
    assert body["data"] == {
        "payload_count": 2,
        "success_count": 1,
        "failed_count": 1,
        "errors": [
            {
                "order_id": "CANCELLED-1",
                "error_code": "IN401",
                "message": "Order or order item already cancelled",
            }
        ],
    }
    meta = body["meta"]
    assert isinstance(meta, dict)
    assert meta["status"] == "PARTIAL"
    assert isinstance(meta["ack_id"], str)
    assert meta["ack_id"]


def test_an_unknown_envelope_is_refused(state: SimulatorState) -> None:
    with pytest.raises(SimulatorConfigError):
        state.configure(envelope="xml")
    assert state.envelope == "camel"


# --- faults ----------------------------------------------------------------------------------


def test_faults_are_taken_first_in_first_out_per_endpoint(state: SimulatorState) -> None:
    # Given three faults, one of them for the token endpoint
    state.add_faults(
        [
            {"kind": "status", "status": 503},
            {"kind": "status", "status": 500, "endpoint": "token"},
            {"kind": "latency", "seconds": 1.5},
        ]
    )
    # When faults are taken
    # Then each endpoint gets its own in queue order, then nothing
    assert state.take_fault("invoice") == StatusFault(503)
    assert state.take_fault("invoice") == LatencyFault(1.5)
    assert state.take_fault("invoice") is None
    assert state.take_fault("token") == StatusFault(500, endpoint="token")
    assert state.pending_faults() == []


def test_a_status_fault_answers_that_status_and_applies_nothing(state: SimulatorState) -> None:
    # When a call meets a 503 fault
    reply = send(state, token_for(state), [invoice("ORD-1")], fault=StatusFault(503))
    # Then it is a 503, the order is untouched, and the record names the fault
    assert reply.status == 503
    assert state.order("ORD-1") is None
    call = state.calls()[0]
    assert (call.status, call.fault, call.order_ids) == (503, "status", ("ORD-1",))


def test_a_429_fault_carries_retry_after(state: SimulatorState) -> None:
    reply = send(state, token_for(state), [invoice("ORD-1")], fault=StatusFault(429, 2))
    assert reply.status == 429
    assert ("Retry-After", "2") in reply.headers


def test_commit_then_drop_applies_the_invoices_and_answers_nothing(
    state: SimulatorState,
) -> None:
    token = token_for(state)
    # When a call meets commit_then_drop
    reply = send(state, token, [invoice("ORD-1")], fault=CommitThenDropFault())
    # Then there is no answer, yet the order is invoiced, and a retry gets IN453
    assert reply.drop
    assert state.invoice_count("ORD-1") == 1
    assert state.calls()[0].status is None
    assert codes(send(state, token, [invoice("ORD-1")])) == {"ORD-1": "IN453"}


def test_expire_tokens_makes_that_call_and_old_tokens_401(state: SimulatorState) -> None:
    old = token_for(state)
    # When a call meets expire_tokens
    reply = send(state, old, [invoice("ORD-1")], fault=ExpireTokensFault())
    # Then it is 401 and so is the next call with the old token; a new token works
    assert reply.status == 401
    assert send(state, old, [invoice("ORD-1")]).status == 401
    assert codes(send(state, token_for(state), [invoice("ORD-1")])) == {}


def test_token_endpoint_faults_apply_to_token_requests(state: SimulatorState) -> None:
    # When token requests meet a 503 and a commit_then_drop
    failed = state.token_request(DEFAULT_USERNAME, DEFAULT_PASSWORD, StatusFault(503, endpoint="token"))
    dropped = state.token_request(DEFAULT_USERNAME, DEFAULT_PASSWORD, CommitThenDropFault(endpoint="token"))
    # Then the first is 503 with no token, the second issues one but answers nothing
    assert failed.status == 503
    assert dropped.drop
    assert state.stats().token_requests == 2
    assert state.stats().tokens_issued == 1


@pytest.mark.parametrize(
    "raw",
    [
        "status",
        {"kind": "explode"},
        {"kind": "status"},
        {"kind": "status", "status": 200},
        {"kind": "status", "status": 429, "retry_after": -1},
        {"kind": "latency"},
        {"kind": "latency", "seconds": -1},
        {"kind": "commit_then_drop", "endpoint": "orders"},
    ],
)
def test_an_invalid_fault_is_refused(raw: object) -> None:
    with pytest.raises(SimulatorConfigError):
        parse_fault(raw)


def test_a_bad_fault_in_a_batch_queues_none_of_them(state: SimulatorState) -> None:
    with pytest.raises(SimulatorConfigError):
        state.add_faults([{"kind": "status", "status": 503}, {"kind": "nope"}])
    assert state.pending_faults() == []


# --- records ----------------------------------------------------------------------------------


def test_each_call_is_recorded_with_path_query_token_body_and_answer(
    state: SimulatorState,
) -> None:
    token = token_for(state)
    body = [invoice("ORD-1"), invoice("CANCELLED-1")]
    # When one call is made
    send(state, token, body, location="LOC-A")
    # Then its record holds what was sent and what it got
    (call,) = state.calls()
    assert call.seq == 1
    assert call.path == INVOICE_PATH
    assert call.query == {"locationCode": "LOC-A"}
    assert call.location_code == "LOC-A"
    assert call.token == token
    assert call.body == body
    assert call.order_ids == ("ORD-1", "CANCELLED-1")
    assert call.status == 200
    assert call.fault is None
    assert call.outcomes == (
        OrderOutcome(order_id="ORD-1", code=None),
        OrderOutcome(order_id="CANCELLED-1", code=ErrorCode.IN401),
    )


def test_stats_count_tokens_calls_orders_and_invoices(state: SimulatorState) -> None:
    token = token_for(state)
    send(state, token, [invoice("ORD-1"), invoice("ORD-2")])
    send(state, token, [invoice("ORD-1")])
    assert state.stats() == Stats(
        token_requests=1,
        tokens_issued=1,
        calls=2,
        orders_received=3,
        invoiced=2,
        duplicates=1,
        max_orders_per_call=2,
        faults_pending=0,
        shipment_reads=0,
        faulted_calls={},
    )


def test_the_control_api_json_of_each_record_is_pinned(state: SimulatorState, clock: FakeClock) -> None:
    # Given one answered call, one call a 503 fault refused, a configured order and a fault queued
    token = token_for(state)
    send(state, token, [invoice("ORD-1"), invoice("CANCELLED-1")], location="LOC-A")
    clock.advance(2.5)
    send(state, token, b"{not json", fault=StatusFault(503))
    state.configure_order("EARLY-7", "pending", location="LOC-B", confirm_after_seconds=30, kind="return")
    state.add_faults([{"kind": "status", "status": 429}])
    # When the control API lists calls, orders and stats
    calls, orders, stats = (body_of(admin(state, "GET", route)) for route in ("calls", "orders", "stats"))
    # Then each record is exactly this JSON on the wire (SimulatorControl and the chaos harness read it)
    assert json.loads(json.dumps(calls)) == {
        "calls": [
            {
                "seq": 1,
                "at": 1_000.0,
                "path": INVOICE_PATH,
                "query": {"locationCode": "LOC-A"},
                "location_code": "LOC-A",
                "token": token,
                "body": [invoice("ORD-1"), invoice("CANCELLED-1")],
                "order_ids": ["ORD-1", "CANCELLED-1"],
                "status": 200,
                "fault": None,
                "outcomes": [{"orderId": "ORD-1", "code": None}, {"orderId": "CANCELLED-1", "code": "IN401"}],
            },
            {
                "seq": 2,
                "at": 1_002.5,
                "path": INVOICE_PATH,
                "query": {},
                "location_code": None,
                "token": token,
                "body": "{not json",
                "order_ids": [],
                "status": 503,
                "fault": "status",
                "outcomes": [],
            },
        ]
    }
    assert json.loads(json.dumps(orders)) == {
        "orders": {
            "ORD-1": {
                "state": "invoiced",
                "location": None,
                "attempts": 1,
                "invoice_count": 1,
                "invoices": [{"invoiceNumber": "INV-ORD-1", "invoiceType": "sale"}],
                "confirm_after_attempts": None,
                "confirm_after_seconds": None,
                "kind": "forward",
                "reads": 0,
            },
            "CANCELLED-1": {
                "state": "cancelled",
                "location": None,
                "attempts": 1,
                "invoice_count": 0,
                "invoices": [],
                "confirm_after_attempts": None,
                "confirm_after_seconds": None,
                "kind": "forward",
                "reads": 0,
            },
            "EARLY-7": {
                "state": "pending",
                "location": "LOC-B",
                "attempts": 0,
                "invoice_count": 0,
                "invoices": [],
                "confirm_after_attempts": None,
                "confirm_after_seconds": 30.0,
                "kind": "return",
                "reads": 0,
            },
        }
    }
    assert json.loads(json.dumps(stats)) == {
        "token_requests": 1,
        "tokens_issued": 1,
        "calls": 2,
        "orders_received": 2,
        "invoiced": 1,
        "duplicates": 0,
        "max_orders_per_call": 2,
        "faults_pending": 1,
        "shipment_reads": 0,
        "faulted_calls": {"status": 1},
    }


def test_reset_forgets_orders_tokens_faults_and_records(state: SimulatorState) -> None:
    # Given a simulator that has seen traffic
    token = token_for(state)
    send(state, token, [invoice("ORD-1")])
    state.add_faults([{"kind": "status", "status": 503}])
    state.configure(envelope="snake")
    # When it is reset
    state.reset()
    # Then everything but the configuration is gone
    assert state.calls() == []
    assert state.orders() == {}
    assert state.pending_faults() == []
    assert state.stats().token_requests == 0
    assert send(state, token, [invoice("ORD-1")]).status == 401
    assert state.envelope == "snake"


def test_a_simulator_serves_a_state_made_from_its_options_or_the_one_it_is_given() -> None:
    # Given a simulator made with options for its state (nothing is bound until it starts)
    simulator = FyndSimulator(token_ttl=5, envelope="snake", max_body_bytes=1000)
    # Then the state it serves was made with them
    assert (simulator.state.token_ttl, simulator.state.envelope, simulator.state.max_body_bytes) == (
        5,
        "snake",
        1000,
    )
    # And one given a state serves that state, while a state and options together are refused
    given = SimulatorState()
    assert FyndSimulator(state=given).state is given
    with pytest.raises(TypeError):
        FyndSimulator(state=given, token_ttl=5)


# --- control routes (no HTTP) -------------------------------------------------------------------


def admin(state: SimulatorState, method: str, route: str, body: object = None) -> Reply:
    raw = b"" if body is None else json.dumps(body).encode()
    return handle_admin(state, method, f"/_sim/{route}", raw)


def test_control_routes_configure_and_report_orders(state: SimulatorState) -> None:
    configured = admin(state, "POST", "orders", {"orders": {"ORD-1": {"state": "pending", "location": "L"}}})
    listed = admin(state, "GET", "orders")
    assert body_of(configured) == {"configured": ["ORD-1"]}
    orders = body_of(listed)["orders"]
    assert isinstance(orders, dict)
    assert orders["ORD-1"]["state"] == "pending"
    assert orders["ORD-1"]["location"] == "L"
    assert orders["ORD-1"]["invoice_count"] == 0


@pytest.mark.parametrize(
    ("method", "route", "body", "status"),
    [
        ("GET", "nowhere", None, 404),
        ("DELETE", "orders", None, 405),
        ("POST", "orders", {"orders": ["ORD-1"]}, 400),
        ("POST", "orders", {"orders": {"ORD-1": {"state": "lost"}}}, 400),
        ("POST", "faults", {"faults": {"kind": "status"}}, 400),
        ("POST", "config", {"envelope": "xml"}, 400),
        ("POST", "config", {"token_ttl": 0}, 400),
        ("POST", "credentials", {"username": "u"}, 400),
        ("POST", "reset", [1], 400),
    ],
)
def test_control_routes_refuse_what_they_cannot_do(
    state: SimulatorState, method: str, route: str, body: object, status: int
) -> None:
    reply = admin(state, method, route, body)
    assert reply.status == status
    assert reply.content_type == "application/problem+json"


def test_control_route_config_and_credentials_take_effect(state: SimulatorState) -> None:
    assert body_of(admin(state, "POST", "config", {"token_ttl": 5, "envelope": "snake"})) == {
        "envelope": "snake",
        "token_ttl": 5,
        "max_body_bytes": 0,
        "fault_rates": [],
        "seed": None,
    }
    admin(state, "POST", "credentials", {"username": "b", "password": "p", "location_code": "B"})
    reply = state.token_request("b", "p")
    assert body_of(reply)["expires_in"] == 5


# --- keyed by order and invoice type, as the relay's ledger is ------------------------------


def test_a_credit_note_for_an_order_invoiced_here_succeeds_and_a_second_gets_in453(
    state: SimulatorState,
) -> None:
    # Given an order the simulator invoiced (its sale invoice applied)
    token = token_for(state)
    assert codes(send(state, token, [invoice("ORD-CN")])) == {}
    # When its credit note arrives, then the same credit note again, then the sale again
    credit_note = send(state, token, [invoice("ORD-CN", "return")])
    second_credit_note = send(state, token, [invoice("ORD-CN", "return")])
    second_sale = send(state, token, [invoice("ORD-CN")])
    # Then the credit note is applied (a document of its own, not a duplicate), and only a
    # repeat of the same (order, type) is IN453
    assert codes(credit_note) == {}
    assert codes(second_credit_note) == {"ORD-CN": "IN453"}
    assert codes(second_sale) == {"ORD-CN": "IN453"}
    view = state.order("ORD-CN")
    assert view is not None
    assert [applied.invoice_type for applied in view.invoices] == ["sale", "return"]


def test_an_order_invoiced_elsewhere_answers_in453_to_a_credit_note_too(state: SimulatorState) -> None:
    # Given an order named as invoiced elsewhere (no invoice applied here)
    # When its credit note arrives / Then it is IN453, as the prefix table says
    assert codes(send(state, token_for(state), [invoice("INVOICED-CN", "return")])) == {
        "INVOICED-CN": "IN453"
    }
