"""Trouble on the site's side, injected by tests and `/_sim/faults`: outages and slow answers.

A fault applies to the REST API (`/api/...`), never to the control API, in the order added:

| kind | does |
| --- | --- |
| `status` | answers `status` (503 by default) with an empty body, as a proxy in front of a down site does |
| `drop` | closes the connection without an answer: the caller cannot know whether a write happened (the write is not applied) |
| `latency` | waits `seconds`, then answers normally (a slow site; a client's timeout sees a timeout) |

`count` limits a fault to that many requests; `seconds_total` (an outage window) to that many
seconds from the first request it meets; with neither it lasts until cleared. `doctype`
limits it to requests for one DocType (an outage of the write-back only, say).
"""

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

FaultKind = Literal["status", "drop", "latency"]


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    status: int = 503
    seconds: float = 0.0
    count: int | None = None
    seconds_total: float | None = None
    doctype: str | None = None
    started_at: float | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Fault":
        kind = body.get("kind")
        if kind not in ("status", "drop", "latency"):
            raise ValueError("fault kind must be status, drop or latency")
        count = body.get("count")
        total = body.get("seconds_total")
        return cls(
            kind=kind,
            status=int(body.get("status", 503)),
            seconds=float(body.get("seconds", 0)),
            count=None if count is None else int(count),
            seconds_total=None if total is None else float(total),
            doctype=body.get("doctype"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "status": self.status,
            "seconds": self.seconds,
            "count": self.count,
            "seconds_total": self.seconds_total,
            "doctype": self.doctype,
        }


class Faults:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._clock = clock

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, doctype: str | None) -> Fault | None:
        """The fault this request meets, if any; counts it and retires spent or expired ones."""
        now = self._clock()
        with self._lock:
            self._faults = [
                fault
                for fault in self._faults
                if fault.seconds_total is None
                or fault.started_at is None
                or now - fault.started_at < fault.seconds_total
            ]
            for index, fault in enumerate(self._faults):
                if fault.doctype is not None and fault.doctype != doctype:
                    continue
                remaining = None if fault.count is None else fault.count - 1
                if remaining == 0:
                    del self._faults[index]
                else:
                    started = now if fault.started_at is None else fault.started_at
                    self._faults[index] = replace(fault, count=remaining, started_at=started)
                return fault
        return None
