"""Time in the test world: one clock, a heap of events, seeded latencies, and Lambda's timeout.

The clock is the domain's `clock` callable. A fake advances it by each call's latency, so a
`seconds_left` derived from the invocation's start and the function's timeout runs out during
calls, as it does in Lambda. A call whose answer would arrive after the invocation's deadline
moves the clock to the deadline and raises `Killed`: Lambda stops the environment there, and
nothing after it runs (what the call did on the far side stands, e.g. Fynd applied it).

An invocation runs to its end in one go at its start time (its side effects land in the shared
state as its clock advances, not interleaved with other invocations' calls); concurrency is
accounted by the slots each invocation holds from its start to its end. That is the model's one
simplification of time: at the rates modelled, two invocations rarely touch the same key within
the same second, and a conflict that did would be settled by the ledger's conditions anyway.
"""

import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


class Killed(BaseException):
    """Lambda stopped the invocation at its timeout: nothing after this point runs."""


class WorldClock:
    """The one clock of the world: the domain calls it, fakes and the event loop move it."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.start = start
        self.now = start
        self.deadline = math.inf
        """The running invocation's deadline (its start plus its timeout); inf outside one."""

    def __call__(self) -> float:
        return self.now

    @property
    def elapsed(self) -> float:
        return self.now - self.start

    def spend(self, seconds: float) -> None:
        """A call that takes `seconds`: Killed at the deadline if its answer would come after it."""
        if self.now + seconds > self.deadline:
            self.now = self.deadline
            raise Killed(f"invocation timed out at {self.deadline - self.start:.3f}")
        self.now += seconds

    def would_pass_deadline(self, seconds: float) -> bool:
        return self.now + seconds > self.deadline


@dataclass
class Invocation:
    """One Lambda invocation: its start and timeout; `seconds_left` as the context reports it."""

    clock: WorldClock
    timeout_seconds: float
    started_at: float = field(init=False)

    def __post_init__(self) -> None:
        self.started_at = self.clock.now

    @property
    def deadline(self) -> float:
        return self.started_at + self.timeout_seconds

    def seconds_left(self) -> float:
        return self.deadline - self.clock.now

    def __enter__(self) -> "Invocation":
        self.clock.deadline = self.deadline
        return self

    def __exit__(self, *exc: object) -> None:
        self.clock.deadline = math.inf


@dataclass(frozen=True)
class Latency:
    """A log-normal latency with a median, a spread, and a rare slow tail, capped; seeded draws."""

    median: float
    sigma: float = 0.35
    tail_share: float = 0.0
    tail_max: float = 0.0
    cap: float = math.inf

    def draw(self, rng: random.Random) -> float:
        if self.tail_share and rng.random() < self.tail_share:
            return rng.uniform(self.median * 3, self.tail_max)
        return min(self.cap, rng.lognormvariate(math.log(self.median), self.sigma))


LATENCIES: dict[str, Latency] = {
    # DynamoDB single-item writes and reads in-Region: single-digit milliseconds.
    "dynamodb.read": Latency(0.004),
    "dynamodb.write": Latency(0.006),
    "dynamodb.transact": Latency(0.015, sigma=0.4),
    "dynamodb.query": Latency(0.012),
    # SQS SendMessageBatch / ChangeMessageVisibility.
    "sqs.send": Latency(0.010),
    "sqs.change": Latency(0.008),
    # Fynd: the token once per instance, Update Invoice with a tail to 5 s, Shipment Info.
    "fynd.token": Latency(0.300, sigma=0.3),
    "fynd.call": Latency(0.200, sigma=0.5, tail_share=0.01, tail_max=5.0, cap=5.0),
    "fynd.read": Latency(0.150, sigma=0.5, tail_share=0.01, tail_max=5.0, cap=5.0),
    "fynd.throttled": Latency(0.030),
}
"""Medians we assume (AWS publishes no latency figures; Fynd none at all). `docs/scale.md`."""


class Latencies:
    """Seeded draws per kind, each from its own stream so one kind's draws never shift another's."""

    def __init__(self, seed: int, table: dict[str, Latency] | None = None) -> None:
        self._table = dict(LATENCIES if table is None else table)
        self._rng = {name: random.Random(f"{seed}:{name}") for name in self._table}

    def draw(self, kind: str) -> float:
        return self._table[kind].draw(self._rng[kind])


class PerSecond:
    """Units used per whole second of the clock, against a limit per second.

    Invocations run out of order on the clock (each to its end at its start time), so a limit
    shared by several of them is kept per second, whatever order the seconds are charged in:
    a token bucket refilled from the last charge would starve an invocation that starts
    before another's later charges. Old seconds are forgotten as the clock moves on.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.used: dict[int, float] = {}
        self.peak = 0.0
        self._newest = 0

    def fits(self, now: float, amount: float = 1) -> bool:
        return self.used.get(int(now), 0.0) + amount <= self.limit

    def add(self, now: float, amount: float = 1) -> None:
        second = int(now)
        used = self.used.get(second, 0.0) + amount
        self.used[second] = used
        if used > self.peak:
            self.peak = used
        if second > self._newest + 600:
            self._newest = second
            self.used = {at: value for at, value in self.used.items() if at > second - 600}

    def take(self, now: float, amount: float = 1) -> bool:
        if not self.fits(now, amount):
            return False
        self.add(now, amount)
        return True


class EventLoop:
    """A heap of (time, seq, action): `run` pops the earliest, sets the clock, calls it."""

    def __init__(self, clock: WorldClock) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self.handled = 0

    def at(self, when: float, action: Callable[..., Any], *args: Any) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), action, args))

    def __len__(self) -> int:
        return len(self._heap)

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run(self, *, until: float = math.inf, stop: Callable[[], bool] | None = None) -> None:
        heap = self._heap
        while heap:
            when, _, action, args = heap[0]
            if when > until:
                return
            heapq.heappop(heap)
            self.clock.now = when
            action(*args)
            self.handled += 1
            if stop is not None and self.handled % 256 == 0 and stop():
                return

    def drain(self) -> Iterator[tuple[float, Callable[..., Any], tuple[Any, ...]]]:
        while self._heap:
            when, _, action, args = heapq.heappop(self._heap)
            yield when, action, args
