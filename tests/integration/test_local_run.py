"""`python -m relay_local run` (what `make run` starts), as a separate process on free ports.

Everything crosses real HTTP on 127.0.0.1: the test signs and posts like an ERP, reads the
status API like an ERP, and reads the Fynd simulator's record through its control API.
Then it stops the process with a signal and checks that nothing is left: exit 0, no
traceback, every port free again, no process of its session alive.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import urllib3

from fynd_simulator import SimulatorControl
from relay_client import FAST_RETRIES, FINAL, RESENDS_AFTER_5XX
from relay_local import saved_run
from relay_local.signing import new_secret, signed_headers, status_headers

ROOT = Path(__file__).resolve().parents[2]
_URL = r"(http://127\.0\.0\.1:\d+)"


@dataclass
class LocalRun:
    """A running `python -m relay_local run` and what its banner said."""

    process: subprocess.Popen[str]
    secret: str
    output: list[str] = field(default_factory=list)
    api_url: str = ""
    fynd_url: str = ""
    aws_url: str = ""
    http: urllib3.PoolManager = field(default_factory=urllib3.PoolManager)
    reader: threading.Thread = field(default_factory=threading.Thread)
    """The thread reading its output into `output`; it ends when the output does."""

    def text(self) -> str:
        return "".join(self.output)

    def wait_for_output(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            assert self.process.poll() is None, f"run exited early:\n{self.text()}"
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} within {timeout} s:\n{self.text()}")

    def post(self, payload: Any) -> tuple[int, Any]:
        """Sign and post; a 5xx is resent as the same delivery, as an ERP would (RESENDS_AFTER_5XX)."""
        body = json.dumps(payload)
        headers = {"Content-Type": "application/json", **signed_headers(self.secret, body)}
        for _ in range(1 + RESENDS_AFTER_5XX):
            response = self.http.request("POST", f"{self.api_url}/v1/invoices", body=body, headers=headers)
            if response.status < 500:
                break
        return response.status, json.loads(response.data)

    def status(self, order_id: str, invoice_type: str = "sale") -> tuple[int, Any]:
        path, query = f"/v1/invoices/{order_id}", f"invoiceType={invoice_type}"
        headers = status_headers(self.secret, path, query)
        response = self.http.request("GET", f"{self.api_url}{path}?{query}", headers=headers)
        return response.status, json.loads(response.data)

    def wait_for_final(self, order_ids: list[str], timeout: float = 60) -> dict[str, Any]:
        found: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        while len(found) < len(order_ids) and time.monotonic() < deadline:
            for order_id in order_ids:
                status, body = self.status(order_id)
                if status == 200 and body["status"] in FINAL:
                    found[order_id] = body
            time.sleep(0.2)
        assert len(found) == len(order_ids), f"not final: {set(order_ids) - set(found)}\n{self.text()}"
        return found


def start_run(extra_env: dict[str, str] | None = None, *args: str) -> LocalRun:
    secret = new_secret()
    # The run keeps its state in a file of the test's, never in the user's .local/run.json.
    state = Path(tempfile.mkdtemp(prefix="relay-run-")) / "run.json"
    env = {
        **os.environ,
        "RELAY_API_PORT": "0",
        "WEBHOOK_SECRET": secret,
        "RELAY_LOCAL_STATE": str(state),
        **FAST_RETRIES,
        **(extra_env or {}),
    }
    env.pop("FYND_BASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "relay_local", "run", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the test can see anything it leaves
    )
    run = LocalRun(process, secret)
    assert process.stdout is not None
    stdout = process.stdout

    def collect() -> None:
        for line in stdout:
            run.output.append(line)

    run.reader = threading.Thread(target=collect, daemon=True)
    run.reader.start()
    return run


@pytest.fixture
def local_run() -> Iterator[LocalRun]:
    run = start_run()
    try:
        run.wait_for_output("Ctrl-C stops everything")
        run.api_url = run.wait_for_output(rf"API +{_URL}").group(1)
        run.fynd_url = run.wait_for_output(rf"Fynd +{_URL}").group(1)
        run.aws_url = run.wait_for_output(rf"AWS endpoint +{_URL}").group(1)
        yield run
    finally:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


def stop(run: LocalRun, signum: signal.Signals) -> tuple[int, float]:
    started = time.monotonic()
    run.process.send_signal(signum)
    code = run.process.wait(timeout=20)
    return code, time.monotonic() - started


def session_processes(session_id: int) -> list[int]:
    """Live processes of a session (Linux /proc): what a stopped run must not leave behind."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # ended while we looked
        if int(fields[3]) == session_id and fields[0] != "Z":  # fields: state ppid pgrp session
            found.append(int(stat.parent.name))
    return found


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except OSError:
        return None  # ended meanwhile


def port_is_free(url: str) -> bool:
    return saved_run.port_is_free(int(url.rsplit(":", 1)[1]))


def test_invoices_end_once_at_fynd_and_ctrl_c_leaves_nothing(local_run: LocalRun) -> None:
    # Given `make run`'s process, serving on the ports its banner printed
    fynd = SimulatorControl(local_run.fynd_url)
    fynd.wait_until_ready()
    good = ["FY-RUN-1", "FY-RUN-2", "FY-RUN-3"]
    invoices = {
        order_id: {"orderId": order_id, "invoiceNumber": f"INV-{order_id}", "invoiceType": "sale"}
        for order_id in [*good, "CANCELLED-RUN-4", "UNKNOWN-RUN-5", "EARLY-RUN-6"]
    }
    # When an ERP posts them signed, with duplicates inside a body and across bodies
    first = local_run.post([*invoices.values(), invoices["FY-RUN-1"]])
    again = local_run.post([invoices["FY-RUN-1"], invoices["FY-RUN-2"]])
    # Then every invoice is accepted, the duplicates once
    assert first[0] == 202
    assert [item["orderId"] for item in first[1]["invoices"]] == list(invoices)
    assert again[0] == 202
    # And each ends in its terminal state, as the status API tells
    final = local_run.wait_for_final(list(invoices))
    assert {order_id: body["status"] for order_id, body in final.items()} == {
        **dict.fromkeys([*good, "EARLY-RUN-6"], "INVOICED"),
        "CANCELLED-RUN-4": "REJECTED",
        "UNKNOWN-RUN-5": "REJECTED",
    }
    assert final["CANCELLED-RUN-4"]["lastError"]["code"] == "IN401"
    assert final["UNKNOWN-RUN-5"]["lastError"]["code"] == "IN400"
    assert final["EARLY-RUN-6"]["attempts"] == 3  # IN403 twice, then confirmed
    # And Fynd's record shows each order invoiced exactly once, never a duplicate
    orders = fynd.orders()
    assert {order_id: orders[order_id].invoice_count for order_id in invoices} == {
        **dict.fromkeys([*good, "EARLY-RUN-6"], 1),
        "CANCELLED-RUN-4": 0,
        "UNKNOWN-RUN-5": 0,
    }
    assert fynd.stats().duplicates == 0
    # And the live tally, read from the ledger and the queues, counted them
    local_run.wait_for_output(
        r"received 6 \| queued 0 \| in flight 0 \| invoiced 4 \| rejected 2 \| retrying 0 \| dead-lettered 0"
        r" \|\| SQS 0 waiting, 0 invisible"
    )
    # And the functions' logs were made readable: no Powertools JSON, no EMF
    assert "invoice rejected by Fynd invoice_key=CANCELLED-RUN-4#sale code=IN401" in local_run.text()
    assert '"_aws"' not in local_run.text()
    # And besides the run itself, only its functions' execution environments (worker processes) live
    others = set(session_processes(local_run.process.pid)) - {local_run.process.pid}
    assert {parent_of(pid) for pid in others} <= {local_run.process.pid}

    # When the user presses Ctrl-C
    code, took = stop(local_run, signal.SIGINT)
    # Then it exits 0, promptly, without a traceback
    assert (code, took < 15) == (0, True), local_run.text()
    assert "Traceback" not in local_run.text()
    assert local_run.text().rstrip().endswith("stopped")
    # And leaves no port bound and no process behind
    for url in (local_run.api_url, local_run.fynd_url, local_run.aws_url):
        assert port_is_free(url), url
    assert session_processes(local_run.process.pid) == []


def test_sigterm_stops_it_as_cleanly(local_run: LocalRun) -> None:
    # Given a running local relay
    # When it gets SIGTERM (what `kill`, systemd or a container runtime sends)
    code, took = stop(local_run, signal.SIGTERM)
    # Then it stops the same way: exit 0, no traceback, ports free, nothing left
    assert (code, took < 15) == (0, True), local_run.text()
    assert "Traceback" not in local_run.text()
    assert all(port_is_free(url) for url in (local_run.api_url, local_run.fynd_url, local_run.aws_url))
    assert session_processes(local_run.process.pid) == []


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RELAY_API_PORT": "three-thousand"}, "RELAY_API_PORT must be a port number"),
        ({"WEBHOOK_SECRET": "not-a-secret"}, "WEBHOOK_SECRET: a signing secret starts with 'whsec_'"),
        ({"RETRY_BASE_SECONDS": "-1"}, "RETRY_BASE_SECONDS must be a positive number"),
    ],
)
def test_a_bad_setting_stops_it_before_anything_starts(env: dict[str, str], message: str) -> None:
    # Given a malformed variable
    run = start_run(env)
    # When run starts, Then it says which variable and exits 2
    assert run.process.wait(timeout=20) == 2
    run.wait_for_output(re.escape(message), timeout=5)


def test_a_port_in_use_is_reported_not_a_traceback() -> None:
    # Given the API port taken by someone else
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # When run starts on it
        run = start_run({"RELAY_API_PORT": str(port)})
        # Then it says so, exits 1 and leaves nothing running
        assert run.process.wait(timeout=20) == 1
        run.wait_for_output(rf"cannot start: .* \(is RELAY_API_PORT {port} in use\?\)", timeout=5)
        assert "Traceback" not in run.text()
        assert session_processes(run.process.pid) == []
