"""The Fynd simulator over real HTTP on 127.0.0.1 (an ephemeral port), as a client sees it.

Also drives it through SimulatorControl and runs `python -m fynd_simulator` as a process.
"""

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from fynd_simulator import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    INVOICE_PATH,
    SHIPMENT_INFO_PATH,
    TOKEN_PATH,
    Credential,
    FyndSimulator,
    SimulatorControl,
    SimulatorControlError,
)

SRC = Path(__file__).resolve().parents[2] / "src" / "tools"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def simulator() -> Iterator[FyndSimulator]:
    with FyndSimulator(location_credentials=[Credential("store-a", "store-a-pw", "LOC-A")]) as running:
        yield running


@pytest.fixture
def control(simulator: FyndSimulator) -> SimulatorControl:
    return SimulatorControl(simulator.url)


@pytest.fixture
def http() -> Iterator[urllib3.PoolManager]:
    # No automatic retries: each test sees exactly what the simulator answered.
    pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=10))
    yield pool
    pool.clear()


def request_token(
    http: urllib3.PoolManager,
    url: str,
    username: str = DEFAULT_USERNAME,
    password: str = DEFAULT_PASSWORD,
) -> urllib3.BaseHTTPResponse:
    return http.request("GET", url + TOKEN_PATH, fields={"username": username, "password": password})


def token_for(http: urllib3.PoolManager, url: str, *credentials: str) -> str:
    response = request_token(http, url, *credentials)
    assert response.status == 200
    token = response.json()["access_token"]
    assert isinstance(token, str)
    return token


def invoice(order_id: str) -> dict[str, str]:
    return {"orderId": order_id, "invoiceNumber": f"INV-{order_id}", "invoiceType": "sale"}


def post_invoices(
    http: urllib3.PoolManager,
    url: str,
    token: str,
    body: object,
    location: str | None = None,
) -> urllib3.BaseHTTPResponse:
    query = f"?locationCode={location}" if location else ""
    return http.request(
        "POST",
        url + INVOICE_PATH + query,
        body=json.dumps(body).encode(),
        headers={"x-access-token": token, "Content-Type": "application/json"},
    )


def error_codes(response: urllib3.BaseHTTPResponse) -> dict[str, str]:
    assert response.status == 200
    return {e["orderId"]: e["code"] for e in response.json()["errors"]}


# --- the two Fynd endpoints -----------------------------------------------------------------


def test_known_credentials_get_a_token_over_http(simulator: FyndSimulator, http: urllib3.PoolManager) -> None:
    # When the default credentials ask for a token
    response = request_token(http, simulator.url)
    # Then it is a JSON token with a one-hour lifetime
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["expires_in"] == 3600
    assert len(body["access_token"]) >= 32


def test_wrong_credentials_get_a_401_problem_over_http(
    simulator: FyndSimulator, http: urllib3.PoolManager
) -> None:
    response = request_token(http, simulator.url, DEFAULT_USERNAME, "wrong")
    assert response.status == 401
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["title"] == "Unauthorized"


def test_one_call_reaches_every_per_order_code(simulator: FyndSimulator, http: urllib3.PoolManager) -> None:
    # Given a token and one order of each kind
    token = token_for(http, simulator.url)
    orders = ["ORD-1", "CANCELLED-1", "UNKNOWN-1", "BADINV-1", "INVOICED-1", "EARLY-1"]
    # When they are invoiced in one call
    response = post_invoices(http, simulator.url, token, [invoice(o) for o in orders])
    # Then it is a 200 PARTIAL naming each failed order with its code
    body = response.json()
    assert (body["payloadCount"], body["successCount"], body["failedCount"]) == (6, 1, 5)
    assert body["status"] == "PARTIAL"
    assert error_codes(response) == {
        "CANCELLED-1": "IN401",
        "UNKNOWN-1": "IN400",
        "BADINV-1": "IN422",
        "INVOICED-1": "IN453",
        "EARLY-1": "IN403",
    }
    assert simulator.state.invoice_count("ORD-1") == 1


def test_more_than_twenty_invoices_get_400_over_http(
    simulator: FyndSimulator, http: urllib3.PoolManager
) -> None:
    token = token_for(http, simulator.url)
    response = post_invoices(http, simulator.url, token, [invoice(f"O-{i}") for i in range(21)])
    assert response.status == 400
    assert simulator.state.stats().invoiced == 0


def test_an_expired_token_gets_401_over_http(http: urllib3.PoolManager) -> None:
    # Given a simulator with a 60 s token lifetime and a clock we move
    clock = FakeClock()
    with FyndSimulator(token_ttl=60, clock=clock) as simulator:
        token = token_for(http, simulator.url)
        # When the token's lifetime has passed
        clock.now += 60
        response = post_invoices(http, simulator.url, token, [invoice("ORD-1")])
        # Then the call is refused
        assert response.status == 401
        assert simulator.state.invoice_count("ORD-1") == 0


def test_a_missing_token_gets_401_over_http(simulator: FyndSimulator, http: urllib3.PoolManager) -> None:
    response = http.request(
        "POST", simulator.url + INVOICE_PATH, body=json.dumps([invoice("ORD-1")]).encode()
    )
    assert response.status == 401


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("GET", INVOICE_PATH, 405),
        ("POST", TOKEN_PATH, 405),
        ("POST", SHIPMENT_INFO_PATH, 405),
    ],
)
def test_other_routes_and_methods_are_refused(
    simulator: FyndSimulator, http: urllib3.PoolManager, method: str, path: str, status: int
) -> None:
    assert http.request(method, simulator.url + path).status == status


def read_shipment(
    http: urllib3.PoolManager, url: str, token: str | None, order_id: str
) -> urllib3.BaseHTTPResponse:
    headers = {"x-access-token": token} if token else {}
    return http.request("GET", url + SHIPMENT_INFO_PATH, fields={"orderId": order_id}, headers=headers)


def test_shipment_info_over_http_follows_the_invoice(
    simulator: FyndSimulator, http: urllib3.PoolManager
) -> None:
    # Given a token and a confirmed order
    token = token_for(http, simulator.url)
    before = read_shipment(http, simulator.url, token, "ORD-1")
    # When it is invoiced and read again
    post_invoices(http, simulator.url, token, [invoice("ORD-1")])
    after = read_shipment(http, simulator.url, token, "ORD-1")
    # Then both reads are Fynd's shape, before and after the invoice
    assert before.status == after.status == 200
    assert [(o["id"], o["orderStatus"], o["shipmentStatus"]) for o in before.json()["orders"]] == [
        ("ORD-1", "CONFIRMED", "bag_confirmed")
    ]
    assert [(o["orderStatus"], o["shipmentStatus"]) for o in after.json()["orders"]] == [
        ("PROCESSING", "bag_invoiced")
    ]
    # And without a token the read is refused
    assert read_shipment(http, simulator.url, None, "ORD-1").status == 401


def test_shipment_info_faults_over_http(
    simulator: FyndSimulator, control: SimulatorControl, http: urllib3.PoolManager
) -> None:
    token = token_for(http, simulator.url)
    control.add_faults(
        {"kind": "status", "status": 502, "endpoint": "shipment"},
        {"kind": "novel_status", "endpoint": "shipment"},
        {"kind": "commit_then_drop", "endpoint": "shipment"},
    )
    assert read_shipment(http, simulator.url, token, "ORD-1").status == 502
    novel = read_shipment(http, simulator.url, token, "ORD-1").json()["orders"][0]
    assert novel["orderStatus"].startswith("SIM_NOVEL_")
    with pytest.raises(urllib3.exceptions.ProtocolError):
        read_shipment(http, simulator.url, token, "ORD-1")
    assert control.stats().shipment_reads == 3


def test_an_unconfirmed_fault_and_the_body_limit_over_http(
    simulator: FyndSimulator, control: SimulatorControl, http: urllib3.PoolManager
) -> None:
    token = token_for(http, simulator.url)
    control.add_faults({"kind": "unconfirmed", "shape": "success_false"})
    unconfirmed = post_invoices(http, simulator.url, token, [invoice("ORD-1")])
    assert (unconfirmed.status, unconfirmed.json()) == (200, {"success": False})
    assert control.invoice_count("ORD-1") == 1
    control.configure(max_body_bytes=10)
    too_large = post_invoices(http, simulator.url, token, [invoice("ORD-2")])
    assert too_large.status == 413
    assert control.invoice_count("ORD-2") == 0


# --- faults ---------------------------------------------------------------------------------


def test_a_503_fault_answers_503_and_invoices_nothing(
    simulator: FyndSimulator, control: SimulatorControl, http: urllib3.PoolManager
) -> None:
    token = token_for(http, simulator.url)
    control.add_faults({"kind": "status", "status": 503})
    failed = post_invoices(http, simulator.url, token, [invoice("ORD-1")])
    retried = post_invoices(http, simulator.url, token, [invoice("ORD-1")])
    assert failed.status == 503
    assert error_codes(retried) == {}
    assert control.invoice_count("ORD-1") == 1


def test_a_429_fault_sends_retry_after(
    simulator: FyndSimulator, control: SimulatorControl, http: urllib3.PoolManager
) -> None:
    token = token_for(http, simulator.url)
    control.add_faults({"kind": "status", "status": 429, "retry_after": 2})
    response = post_invoices(http, simulator.url, token, [invoice("ORD-1")])
    assert response.status == 429
    assert response.headers["Retry-After"] == "2"


def test_a_latency_fault_delays_the_answer(
    simulator: FyndSimulator, control: SimulatorControl, http: urllib3.PoolManager
) -> None:
    token = token_for(http, simulator.url)
    control.add_faults({"kind": "latency", "seconds": 0.3})
    started = time.monotonic()
    response = post_invoices(http, simulator.url, token, [invoice("ORD-1")])
    assert time.monotonic() - started >= 0.3
    assert error_codes(response) == {}


def test_commit_then_drop_invoices_then_closes_without_an_answer(
    simulator: FyndSimulator, control: SimulatorControl, http: urllib3.PoolManager
) -> None:
    token = token_for(http, simulator.url)
    # Given a commit_then_drop fault
    control.add_faults({"kind": "commit_then_drop"})
    # When a call meets it
    with pytest.raises(urllib3.exceptions.ProtocolError):
        post_invoices(http, simulator.url, token, [invoice("ORD-1")])
    # Then the order was invoiced all the same, and the retry gets IN453
    assert control.invoice_count("ORD-1") == 1
    retried = post_invoices(http, simulator.url, token, [invoice("ORD-1")])
    assert error_codes(retried) == {"ORD-1": "IN453"}
    assert [c.status for c in control.calls()] == [None, 200]


def test_an_expire_tokens_fault_forces_a_new_token(
    simulator: FyndSimulator, control: SimulatorControl, http: urllib3.PoolManager
) -> None:
    old = token_for(http, simulator.url)
    control.add_faults({"kind": "expire_tokens"})
    assert post_invoices(http, simulator.url, old, [invoice("ORD-1")]).status == 401
    new = token_for(http, simulator.url)
    assert error_codes(post_invoices(http, simulator.url, new, [invoice("ORD-1")])) == {}
    assert control.stats().token_requests == 2


def test_a_token_endpoint_fault_fails_the_token_request(
    simulator: FyndSimulator, control: SimulatorControl, http: urllib3.PoolManager
) -> None:
    control.add_faults({"kind": "status", "status": 503, "endpoint": "token"})
    assert request_token(http, simulator.url).status == 503
    assert request_token(http, simulator.url).status == 200


# --- locations and envelopes ------------------------------------------------------------------


def test_location_credentials_only_reach_their_location(
    simulator: FyndSimulator, control: SimulatorControl, http: urllib3.PoolManager
) -> None:
    control.configure_order("ORD-A", location="LOC-A")
    control.configure_order("ORD-B", location="LOC-B")
    token = token_for(http, simulator.url, "store-a", "store-a-pw")
    response = post_invoices(http, simulator.url, token, [invoice("ORD-A"), invoice("ORD-B")], "LOC-A")
    assert error_codes(response) == {"ORD-B": "IN400"}
    assert control.calls()[0].query == {"locationCode": "LOC-A"}


def test_the_snake_case_envelope_over_http(
    simulator: FyndSimulator, control: SimulatorControl, http: urllib3.PoolManager
) -> None:
    control.configure(envelope="snake")
    token = token_for(http, simulator.url)
    body = post_invoices(http, simulator.url, token, [invoice("INVOICED-1")]).json()
    assert body["data"]["payload_count"] == 1
    assert body["data"]["failed_count"] == 1
    assert body["data"]["errors"][0]["order_id"] == "INVOICED-1"
    assert body["data"]["errors"][0]["error_code"] == "IN453"
    assert body["meta"]["status"] == "FAILED"
    assert body["meta"]["ack_id"]


# --- the control API ----------------------------------------------------------------------------


def test_the_control_api_reports_calls_orders_and_stats(
    simulator: FyndSimulator, control: SimulatorControl, http: urllib3.PoolManager
) -> None:
    # Given an order that confirms after one attempt
    control.configure_orders({"ORD-1": {"state": "pending", "confirm_after_attempts": 1}})
    token = token_for(http, simulator.url)
    # When it is invoiced twice, once per call
    for _ in range(2):
        post_invoices(http, simulator.url, token, [invoice("ORD-1")], "LOC-9")
    # Then the records show both calls, the order invoiced once, and the counts
    calls = control.calls()
    assert [[(o.order_id, o.code) for o in c.outcomes] for c in calls] == [
        [("ORD-1", "IN403")],
        [("ORD-1", None)],
    ]
    assert all(c.token == token and c.location_code == "LOC-9" for c in calls)
    assert all(len(c.order_ids) <= 20 for c in calls)
    order = control.orders()["ORD-1"]
    assert (order.state, order.attempts, order.invoice_count) == ("invoiced", 2, 1)
    stats = control.stats()
    assert (stats.calls, stats.orders_received, stats.invoiced) == (2, 2, 1)
    # And the client reads back, over HTTP, exactly the records the simulator holds
    assert calls == simulator.state.calls()
    assert control.orders() == simulator.state.orders()
    assert stats == simulator.state.stats()


def test_the_control_api_lists_faults_and_resets(
    simulator: FyndSimulator, control: SimulatorControl, http: urllib3.PoolManager
) -> None:
    assert control.add_faults({"kind": "latency", "seconds": 0}, {"kind": "expire_tokens"}) == 2
    assert [f["kind"] for f in control.faults()] == ["latency", "expire_tokens"]
    control.reset()
    assert control.faults() == []
    assert control.calls() == []
    assert control.stats().token_requests == 0


def test_the_control_api_adds_credentials_and_expires_tokens(
    simulator: FyndSimulator, control: SimulatorControl, http: urllib3.PoolManager
) -> None:
    control.add_credential("store-b", "store-b-pw", "LOC-B")
    token = token_for(http, simulator.url, "store-b", "store-b-pw")
    control.expire_tokens()
    assert post_invoices(http, simulator.url, token, [invoice("ORD-1")]).status == 401


def test_the_control_client_raises_on_refused_requests(control: SimulatorControl) -> None:
    with pytest.raises(SimulatorControlError) as refused:
        control.add_faults({"kind": "meteor"})
    assert refused.value.status == 400
    assert "kind" in refused.value.detail


def test_the_control_client_waits_for_a_running_simulator(control: SimulatorControl) -> None:
    control.wait_until_ready(timeout=2)
    assert control.health()


def test_health_is_false_when_nothing_listens() -> None:
    with FyndSimulator() as simulator:
        url = simulator.url
    assert not SimulatorControl(url, timeout=1).health()


# --- process and lifecycle ------------------------------------------------------------------------


def test_request_logs_mask_passwords_and_never_show_tokens(
    http: urllib3.PoolManager, capsys: pytest.CaptureFixture[str]
) -> None:
    with FyndSimulator(quiet=False) as simulator:
        token = token_for(http, simulator.url)
        post_invoices(http, simulator.url, token, [invoice("ORD-1")])
    logged = capsys.readouterr().err
    assert "GET /aggregator/v1/token" in logged
    assert "password=***" in logged
    assert DEFAULT_PASSWORD not in logged
    assert token not in logged


def test_stop_does_not_wait_for_a_slow_call(http: urllib3.PoolManager) -> None:
    # Given a call held up by a 30 s latency fault
    simulator = FyndSimulator().start()
    token = token_for(http, simulator.url)
    simulator.state.add_faults([{"kind": "latency", "seconds": 30}])
    outcome: list[Any] = []

    def call() -> None:
        try:
            outcome.append(post_invoices(http, simulator.url, token, [invoice("ORD-1")]))
        except urllib3.exceptions.HTTPError as error:
            outcome.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 5
    while simulator.state.stats().faults_pending and time.monotonic() < deadline:
        time.sleep(0.01)  # until the call has taken its fault and is waiting
    # When the simulator is stopped
    started = time.monotonic()
    simulator.stop()
    caller.join(timeout=5)
    # Then it stops at once, and the held call never gets an answer
    assert time.monotonic() - started < 5
    assert isinstance(outcome[0], urllib3.exceptions.HTTPError)
    assert simulator.state.calls() == []


SUBPROCESS_SAFETY_NET_SECONDS = 120
"""How long a test lets a subprocess start or stop before calling it hung: never the expected path."""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_cli_serves_until_signalled_and_exits_cleanly(
    http: urllib3.PoolManager, signum: signal.Signals
) -> None:
    # Given `python -m fynd_simulator` on a free port
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    process = subprocess.Popen(
        [sys.executable, "-m", "fynd_simulator", "--port", "0", "--token-ttl", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        # Waits for the line (or the exit) itself; the bound is a safety net only: a loaded machine
        # took more than 10 s to start the interpreter and import the simulator (issue 18, item 7).
        ready, _, _ = select.select([process.stdout], [], [], SUBPROCESS_SAFETY_NET_SECONDS)
        assert ready, "the simulator printed no URL"
        url = process.stdout.readline().strip()
        # When it is used, then signalled
        response = request_token(http, url)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=SUBPROCESS_SAFETY_NET_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # Then it answered on the URL it printed, and exited 0 without a traceback
    assert url.startswith("http://127.0.0.1:")
    assert response.json()["expires_in"] == 120
    assert process.returncode == 0
    assert "Traceback" not in stderr
