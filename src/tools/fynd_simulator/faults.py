"""Faults an integrator queues to see how a Fynd client copes; each is consumed by one call.

A fault applies to the Update Invoice endpoint unless it says `"endpoint": "token"`.
Kinds (JSON as sent to `POST /_sim/faults`):

- `{"kind": "status", "status": 503}`: answer that status (a problem document), apply
  nothing; `"retry_after": 2` (seconds, or any string, sent verbatim) adds `Retry-After`.
- `{"kind": "latency", "seconds": 1.5}`: wait, then answer normally.
- `{"kind": "commit_then_drop"}`: apply the call as usual, then close the connection
  without answering: the ambiguous outcome a client must not take for a clean failure.
- `{"kind": "expire_tokens"}`: every token issued so far stops working, so this call
  (and every later call with an old token) gets 401.
"""

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from fynd_simulator.replies import SimulatorConfigError

type Endpoint = Literal["invoice", "token"]
ENDPOINTS: tuple[Endpoint, ...] = ("invoice", "token")


@dataclass(frozen=True)
class StatusFault:
    status: int
    retry_after: int | str | None = None
    endpoint: Endpoint = "invoice"
    kind: Literal["status"] = "status"


@dataclass(frozen=True)
class LatencyFault:
    seconds: float
    endpoint: Endpoint = "invoice"
    kind: Literal["latency"] = "latency"


@dataclass(frozen=True)
class CommitThenDropFault:
    endpoint: Endpoint = "invoice"
    kind: Literal["commit_then_drop"] = "commit_then_drop"


@dataclass(frozen=True)
class ExpireTokensFault:
    endpoint: Endpoint = "invoice"
    kind: Literal["expire_tokens"] = "expire_tokens"


type Fault = StatusFault | LatencyFault | CommitThenDropFault | ExpireTokensFault


def parse_fault(raw: object) -> Fault:
    """Read one fault from its JSON form; raises SimulatorConfigError if it is not one."""
    if not isinstance(raw, Mapping):
        raise SimulatorConfigError("a fault must be a JSON object")
    endpoint = raw.get("endpoint", "invoice")
    if endpoint not in ENDPOINTS:
        raise SimulatorConfigError(f"fault endpoint must be one of {list(ENDPOINTS)}")
    ep: Endpoint = "token" if endpoint == "token" else "invoice"
    kind = raw.get("kind")
    if kind == "status":
        return _status_fault(raw, ep)
    if kind == "latency":
        seconds = raw.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise SimulatorConfigError("latency fault needs seconds >= 0")
        return LatencyFault(float(seconds), ep)
    if kind == "commit_then_drop":
        return CommitThenDropFault(ep)
    if kind == "expire_tokens":
        return ExpireTokensFault(ep)
    raise SimulatorConfigError("fault kind must be one of status, latency, commit_then_drop, expire_tokens")


def _status_fault(raw: Mapping[object, object], endpoint: Endpoint) -> StatusFault:
    status = raw.get("status")
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise SimulatorConfigError("status fault needs an HTTP error status (400-599)")
    retry_after = raw.get("retry_after")
    if retry_after is None or isinstance(retry_after, str):
        return StatusFault(status, retry_after, endpoint)
    if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
        raise SimulatorConfigError("retry_after must be whole seconds >= 0 or a string")
    return StatusFault(status, retry_after, endpoint)


def fault_to_json(fault: Fault) -> dict[str, object]:
    body: dict[str, object] = {"kind": fault.kind, "endpoint": fault.endpoint}
    if isinstance(fault, StatusFault):
        body["status"] = fault.status
        if fault.retry_after is not None:
            body["retry_after"] = fault.retry_after
    elif isinstance(fault, LatencyFault):
        body["seconds"] = fault.seconds
    return body


class FaultQueue:
    """Queued faults, first in first out per endpoint. Not locked: SimulatorState is."""

    def __init__(self) -> None:
        self._faults: deque[Fault] = deque()

    def extend(self, faults: Iterable[Fault | Mapping[str, object]]) -> int:
        """Queue faults in order, all or none; returns how many are pending now."""
        parsed = [parse_fault(f) if isinstance(f, Mapping) else f for f in faults]
        self._faults.extend(parsed)
        return len(self._faults)

    def take(self, endpoint: Endpoint) -> Fault | None:
        """Remove and return the oldest fault meant for this endpoint, if any."""
        for fault in self._faults:
            if fault.endpoint == endpoint:
                self._faults.remove(fault)
                return fault
        return None

    def pending(self) -> list[Fault]:
        return list(self._faults)
