"""Faults an integrator queues to see how a Fynd client copes; each is consumed by one call.

A fault applies to the Update Invoice endpoint unless it says `"endpoint": "token"` or
`"endpoint": "shipment"` (Get Shipment Info). Kinds (JSON as sent to `POST /_sim/faults`):

- `{"kind": "status", "status": 503}`: answer that status (a problem document), apply
  nothing; `"retry_after": 2` (seconds, or any string, sent verbatim) adds `Retry-After`.
- `{"kind": "latency", "seconds": 1.5}`: wait, then answer normally.
- `{"kind": "commit_then_drop"}`: apply the call as usual, then close the connection
  without answering: the ambiguous outcome a client must not take for a clean failure.
- `{"kind": "expire_tokens"}`: every token issued so far stops working, so this call
  (and every later call with an old token) gets 401.
- `{"kind": "unconfirmed", "shape": "empty"}` (Update Invoice only): a 200 that confirms
  nothing. With `"commit": true` (the default) the invoices are applied first, so the
  client cannot know they were; `false` applies nothing. Shapes (UNCONFIRMED_SHAPES):
  `empty` `{}`, `success_false`, `error` (`{"error": "..."}`), `message`, `data_null`,
  `string_counts` (the real answer, counts as strings), `failed_some` (`FAILED` naming all
  but the last real failure, no counts), `bad_counts` (payloadCount one too many), or
  `any` (one of these at random, from the simulator's seeded generator).
- `{"kind": "novel_status", "endpoint": "shipment"}` (Shipment Info only): the order's
  entry carries status values never used before (`SIM_NOVEL_<n>`, `bag_sim_novel_<n>`);
  `"field": "orderStatus"`, `"shipmentStatus"` or `"both"` (the default).

On a dropped answer for Shipment Info (`commit_then_drop`) there is nothing to commit: the
read is simply never answered.

Besides this queue, `POST /_sim/config {"fault_rates": [{"rate": 0.04, "fault": {...}}],
"seed": 7}` draws faults at random for calls that find the queue empty (FaultRates).
"""

import random
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from fynd_simulator.replies import SimulatorConfigError

type Endpoint = Literal["invoice", "token", "shipment"]
ENDPOINTS: tuple[Endpoint, ...] = ("invoice", "token", "shipment")
UNCONFIRMED_SHAPES = (
    "empty",
    "success_false",
    "error",
    "message",
    "data_null",
    "string_counts",
    "failed_some",
    "bad_counts",
)
NOVEL_FIELDS = ("both", "orderStatus", "shipmentStatus")


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


@dataclass(frozen=True)
class UnconfirmedFault:
    shape: str
    commit: bool = True
    endpoint: Endpoint = "invoice"
    kind: Literal["unconfirmed"] = "unconfirmed"


@dataclass(frozen=True)
class NovelStatusFault:
    field: str = "both"
    endpoint: Endpoint = "shipment"
    kind: Literal["novel_status"] = "novel_status"


type Fault = (
    StatusFault | LatencyFault | CommitThenDropFault | ExpireTokensFault | UnconfirmedFault | NovelStatusFault
)
KINDS = ("status", "latency", "commit_then_drop", "expire_tokens", "unconfirmed", "novel_status")


def parse_fault(raw: object) -> Fault:
    """Read one fault from its JSON form; raises SimulatorConfigError if it is not one."""
    if not isinstance(raw, Mapping):
        raise SimulatorConfigError("a fault must be a JSON object")
    kind = raw.get("kind")
    endpoint = raw.get("endpoint", "shipment" if kind == "novel_status" else "invoice")
    if endpoint not in ENDPOINTS:
        raise SimulatorConfigError(f"fault endpoint must be one of {list(ENDPOINTS)}")
    ep: Endpoint = "token" if endpoint == "token" else "shipment" if endpoint == "shipment" else "invoice"
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
    if kind == "unconfirmed":
        return _unconfirmed_fault(raw, ep)
    if kind == "novel_status":
        field = raw.get("field", "both")
        if ep != "shipment" or field not in NOVEL_FIELDS:
            raise SimulatorConfigError(f"novel_status is a shipment fault, field one of {list(NOVEL_FIELDS)}")
        return NovelStatusFault(str(field))
    raise SimulatorConfigError(f"fault kind must be one of {', '.join(KINDS)}")


def _unconfirmed_fault(raw: Mapping[object, object], endpoint: Endpoint) -> UnconfirmedFault:
    shape, commit = raw.get("shape", "any"), raw.get("commit", True)
    if endpoint != "invoice":
        raise SimulatorConfigError("unconfirmed is an Update Invoice fault")
    if shape != "any" and shape not in UNCONFIRMED_SHAPES:
        raise SimulatorConfigError(f"unconfirmed shape must be any or one of {list(UNCONFIRMED_SHAPES)}")
    if not isinstance(commit, bool):
        raise SimulatorConfigError("unconfirmed commit must be true or false")
    return UnconfirmedFault(str(shape), commit)


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
    elif isinstance(fault, UnconfirmedFault):
        body["shape"] = fault.shape
        body["commit"] = fault.commit
    elif isinstance(fault, NovelStatusFault):
        body["field"] = fault.field
    return body


@dataclass(frozen=True)
class FaultRate:
    rate: float
    fault: Fault


def parse_fault_rates(raw: object) -> tuple[FaultRate, ...]:
    """`[{"rate": 0.04, "fault": {...}}, ...]`, each rate in [0, 1]; all or nothing."""
    if not isinstance(raw, list):
        raise SimulatorConfigError('fault_rates must be a list of {"rate": 0..1, "fault": {...}}')
    rates = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise SimulatorConfigError('each fault rate is {"rate": 0..1, "fault": {...}}')
        rate = item.get("rate")
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise SimulatorConfigError("a fault rate must be a number from 0 to 1")
        rates.append(FaultRate(float(rate), parse_fault(item.get("fault"))))
    return tuple(rates)


def fault_rate_to_json(rate: FaultRate) -> dict[str, object]:
    return {"rate": rate.rate, "fault": fault_to_json(rate.fault)}


class FaultRates:
    """Faults drawn at random, each call at most one: the first entry for the endpoint whose
    draw falls under its rate. Seeded, so a chaos run can be repeated. Not locked."""

    def __init__(self, seed: int | None = None) -> None:
        self.rates: tuple[FaultRate, ...] = ()
        self.seed = seed
        self.random = random.Random(seed)  # noqa: S311 - a test double's dice, not a secret

    def reseed(self, seed: int) -> None:
        self.seed = seed
        self.random.seed(seed)

    def draw(self, endpoint: Endpoint) -> Fault | None:
        for entry in self.rates:
            if entry.fault.endpoint == endpoint and self.random.random() < entry.rate:
                return entry.fault
        return None


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
