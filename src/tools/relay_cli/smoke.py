"""`relay smoke`: one signed test invoice through a stack, end to end, then its status.

It proves what a deploy cannot prove by itself: the ERP's secret verifies, the invoice is
queued, the dispatcher runs, reads the Fynd credentials (of `--location`, when given),
gets a token and calls Fynd, and records Fynd's answer. So it passes when the invoice
reaches a final state *with Fynd's answer*: INVOICED, or REJECTED with a Fynd code (against
a real Fynd a made-up SMOKE- order is unknown: IN400 is that answer, and it is a pass).
Still QUEUED or RETRYING at the timeout is a failure, shown with the last error (a wrong
Fynd password shows as `fynd_auth`, an unreachable Fynd as `fynd_unavailable`).

While it waits it says so (`progress`): the order id first, before anything is sent, then
each change of state and, every PROGRESS_EVERY_SECONDS, that it is still waiting; so a
user who stops it with Ctrl-C knows which order to look up.
"""

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from relay_cli.webhook import RelayApi

FINAL = frozenset({"INVOICED", "REJECTED"})
_POLL_SECONDS = 1.0
PROGRESS_EVERY_SECONDS = 10.0
"""An unchanged state is said again this often, so a long wait never looks like a hang."""


@dataclass(frozen=True)
class SmokeResult:
    order_id: str
    accepted: int
    """HTTP status of the POST."""
    status: str | None
    code: str | None
    seconds: float
    passed: bool
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "orderId": self.order_id,
            "httpStatus": self.accepted,
            "status": self.status,
            "code": self.code,
            "seconds": round(self.seconds, 1),
            "passed": self.passed,
            "verdict": self.verdict,
        }


def smoke_invoice(order_id: str, location: str | None) -> dict[str, Any]:
    invoice: dict[str, Any] = {
        "orderId": order_id,
        "invoiceNumber": order_id,
        "invoiceType": "sale",
        "orderItems": [{"orderItemId": f"{order_id}-1", "quantity": 1}],
    }
    if location:
        invoice["locationCode"] = location
    return invoice


def new_order_id() -> str:
    """A smoke order's id: `SMOKE-`, the UTC time, and a random suffix."""
    return f"SMOKE-{datetime.now(UTC):%Y%m%d%H%M%S}-{secrets.token_hex(3)}"


def run_smoke(
    api: RelayApi,
    *,
    location: str | None,
    order_id: str,
    timeout: float,
    progress: Callable[[str], None] = lambda _: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SmokeResult:
    started = clock()
    progress(f"sending order {order_id}")
    posted = api.post(json.dumps(smoke_invoice(order_id, location)))
    if posted.status != 202:
        detail = posted.body.get("detail") if isinstance(posted.body, dict) else posted.body
        return SmokeResult(order_id, posted.status, None, None, 0.0, False, f"the POST was refused: {detail}")
    progress(f"{order_id} accepted (202); waiting up to {timeout:.0f} s for Fynd's answer")
    document: Any = None
    said: tuple[str | None, str | None] | None = None
    said_at = started
    while clock() - started < timeout:
        answer = api.status(order_id)
        document = answer.body if answer.status == 200 else None
        if document and document.get("status") in FINAL:
            break
        now = clock()
        seen = _state_of(document)
        if seen != said or now - said_at >= PROGRESS_EVERY_SECONDS:
            shown = seen[0] or "not recorded yet"
            progress(f"{now - started:5.0f} s  {shown}" + (f" (last error {seen[1]})" if seen[1] else ""))
            said, said_at = seen, now
        sleep(_POLL_SECONDS)
    seconds = clock() - started
    state = document.get("status") if document else None
    code = ((document or {}).get("lastError") or {}).get("code")
    if state == "INVOICED":
        return SmokeResult(
            order_id, 202, state, code, seconds, True, "invoiced by Fynd: the stack works end to end"
        )
    if state == "REJECTED" and code and code.startswith("IN"):
        verdict = f"Fynd answered {code}: the stack reached Fynd with working credentials"
        return SmokeResult(order_id, 202, state, code, seconds, True, verdict)
    verdict = f"not final after {timeout:.0f} s (last error: {code or 'none'})"
    return SmokeResult(order_id, 202, state, code, seconds, False, verdict)


def _state_of(document: Any) -> tuple[str | None, str | None]:
    if not isinstance(document, dict):
        return None, None
    return document.get("status"), (document.get("lastError") or {}).get("code")
