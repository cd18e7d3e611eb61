"""The ledger as DynamoDB serves it: latency per request, and capacity per partition.

The state rules are the ledger fake's (tests/fakes.py InMemoryLedger, the adapter's conditions);
this wrapper charges each request before the fake applies it, and refuses it as DynamoDB would:
- a write costs 1 WCU per 1 KB of the item, rounded up; in a transaction twice that;
- the ByStatus index (template.yaml) is keyed on `statusKey`, a handful of values, and its sort
  key (`updatedAt`) only grows, so each status value is one partition: every write that puts
  an entry into a status, moves it within one (a new updatedAt) or takes it out costs that
  partition 1 WCU per KB of the entry (projection ALL). A partition takes 1,000 WCU/s and
  3,000 RCU/s; past that the index throttles the base-table write (GSI back-pressure):
  `IndexWriteKeyRangeThroughputExceeded`, which the adapter turns into LedgerUnavailableError;
- the base table's keys are spread (hash of the invoice key), so its partitions are never the
  limit; the table as a whole is: a new on-demand table absorbs 4,000 WRU/s and 12,000 RRU/s at
  first, and doubles its previous peak within 30 minutes (modelled: every 30 minutes the limit
  becomes twice the peak second of the last 30 minutes, if that is higher);
- the dispatcher's client retries a throttled request (botocore standard mode, 3 attempts,
  backing off 50 ms then 100 ms); ingest's client makes one attempt (relay.wiring).

Entry sizes: ~0.6 KB for an entry (1 WCU), the body item the size of the queued message.
"""

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from fakes import InMemoryLedger
from relay.domain.errors import LedgerUnavailableError
from relay.domain.intake import Action, Admission
from relay.domain.invoice import InvoiceKey
from relay.domain.ledger import InvoiceStatus, LedgerEntry
from relay.domain.messages import QueuedInvoice
from relay.domain.policy import Invoiced, Verdict
from relay.domain.ports import Claim
from world.clock import Latencies, PerSecond, WorldClock

PARTITION_WCU = 1_000
PARTITION_RCU = 3_000
NEW_TABLE_WRU = 4_000
NEW_TABLE_RRU = 12_000
WARM_UP_SECONDS = 1_800
ENTRY_BYTES = 600
INDEX_THROTTLE = "IndexWriteKeyRangeThroughputExceeded"
TABLE_THROTTLE = "ThrottlingException"


def units(size: int, per: int = 1024) -> int:
    return max(1, math.ceil(size / per))


def index_key(entry: LedgerEntry | None) -> str | None:
    """The entry's ByStatus partition: its status, DEAD_LETTERED once marked, none when INVOICED."""
    if entry is None or entry.status is InvoiceStatus.INVOICED:
        return None
    return "DEAD_LETTERED" if entry.dead_lettered_at is not None else str(entry.status)


@dataclass
class Capacity:
    """Units consumed per second, per partition and for the table; throttles and peaks."""

    clock: WorldClock
    warm: bool = False
    """True: a table pre-warmed (WarmThroughput) or long in use, so the table limit never binds."""
    table_wru: float = NEW_TABLE_WRU
    table_rru: float = NEW_TABLE_RRU
    _seconds: dict[str, PerSecond] = field(default_factory=dict)
    throttles: Counter[str] = field(default_factory=Counter)
    _window_start: float = 0.0
    _window_peak: float = 0.0

    @property
    def peak(self) -> dict[str, float]:
        """Highest units in any one second, per resource (`table.write`, `ByStatus/QUEUED`, ...)."""
        return {resource: seconds.peak for resource, seconds in self._seconds.items()}

    def fits(self, charges: dict[str, float]) -> str | None:
        """Charge every resource, or none: the throttle's reason when one is full."""
        now = self.clock.now
        self._warm_up(int(now))
        meters = [(self._meter(resource), resource, amount) for resource, amount in charges.items()]
        for meter, resource, amount in meters:
            if not meter.fits(now, amount):
                self.throttles[resource] += 1
                return INDEX_THROTTLE if resource.startswith("ByStatus/") else TABLE_THROTTLE
        for meter, resource, amount in meters:
            meter.add(now, amount)
            if resource == "table.write":
                self._window_peak = max(self._window_peak, meter.used[int(now)])
        return None

    def _meter(self, resource: str) -> PerSecond:
        meter = self._seconds.get(resource)
        if meter is None:
            meter = self._seconds[resource] = PerSecond(self._limit(resource))
        elif resource.startswith("table."):
            meter.limit = self._limit(resource)
        return meter

    def _limit(self, resource: str) -> float:
        if resource == "table.write":
            return math.inf if self.warm else self.table_wru
        if resource == "table.read":
            return math.inf if self.warm else self.table_rru
        return PARTITION_RCU if resource.endswith(":read") else PARTITION_WCU

    def _warm_up(self, second: int) -> None:
        if not self._window_start:
            self._window_start = second
        if second - self._window_start >= WARM_UP_SECONDS:
            self.table_wru = max(self.table_wru, 2 * self._window_peak)
            self.table_rru = max(self.table_rru, 3 * self.table_wru)
            self._window_start, self._window_peak = second, 0.0


class WorldLedger:
    """The Ledger port (and the reconciler's StalledLedger) over InMemoryLedger, charged."""

    def __init__(
        self,
        clock: WorldClock,
        latencies: Latencies,
        capacity: Capacity,
        *,
        attempts: int = 3,
    ) -> None:
        self.inner = InMemoryLedger(clock)
        self.clock = clock
        self.latencies = latencies
        self.capacity = capacity
        self.attempts = attempts
        self.body_bytes: dict[InvoiceKey, int] = {}
        self.invoiced_at: dict[InvoiceKey, float] = {}
        self.requests: Counter[str] = Counter()
        self.unfinished: set[InvoiceKey] = set()

    def with_attempts(self, attempts: int) -> "WorldLedger":
        """The same table through a client making `attempts` attempts (ingest's makes one)."""
        view = WorldLedger.__new__(WorldLedger)
        view.__dict__.update(self.__dict__)
        view.attempts = attempts
        return view

    @property
    def entries(self) -> dict[InvoiceKey, LedgerEntry]:
        return self.inner.entries

    # ---- charging ----
    def _charge(self, kind: str, charges: dict[str, float]) -> None:
        """One request: its latency, then its units; throttled ones retried per the client."""
        self.requests[kind] += 1
        for attempt in range(1, self.attempts + 1):
            self.clock.spend(self.latencies.draw(kind))
            reason = self.capacity.fits(charges)
            if reason is None:
                return
            if attempt < self.attempts:
                self.clock.spend(0.05 * 2 ** (attempt - 1))
        raise LedgerUnavailableError(f"invoice ledger throttled the request ({reason})")

    def _moves(self, before: LedgerEntry | None, after_key: str | None, *, size: int) -> dict[str, float]:
        """Index units of one entry write: out of its old partition, into its new one."""
        charges: dict[str, float] = {}
        before_key = index_key(before)
        written = units(size)
        if before_key is not None:
            charges[f"ByStatus/{before_key}"] = written
        if after_key is not None:
            charges[f"ByStatus/{after_key}"] = charges.get(f"ByStatus/{after_key}", 0) + written
        return charges

    @staticmethod
    def _add(total: dict[str, float], more: dict[str, float]) -> None:
        for resource, amount in more.items():
            total[resource] = total.get(resource, 0) + amount

    # ---- the port ----
    def get(self, key: InvoiceKey) -> LedgerEntry | None:
        self._charge("dynamodb.read", {"table.read": 0.5})
        return self.inner.get(key)

    def get_many(self, keys: Iterable[InvoiceKey]) -> dict[InvoiceKey, LedgerEntry]:
        wanted = list(keys)
        self._charge("dynamodb.read", {"table.read": 0.5 * len(wanted)})
        return self.inner.get_many(wanted)

    def accept(self, admissions: Sequence[Admission], *, now: float, correlation_id: str | None) -> None:
        writes = [item for item in admissions if item.action in (Action.CREATE, Action.RESUBMIT)]
        if not writes:
            return
        table = 0.0
        index: dict[str, float] = {}
        sizes: dict[InvoiceKey, int] = {}
        for admission in writes:
            size = len(admission.invoice.model_dump_json()) + 200
            sizes[admission.invoice.key] = size
            table += 2 * (units(ENTRY_BYTES) + units(size))  # entry and body, in a transaction
            before = self.inner.entries.get(admission.invoice.key)
            self._add(index, self._moves(before, "QUEUED", size=ENTRY_BYTES))
        # Over 50 new invoices the adapter writes the bodies ahead in their own transactions.
        if 2 * len(writes) > 100:
            self._charge("dynamodb.transact", {"table.write": table / 2})
            self._charge("dynamodb.transact", {"table.write": table / 2, **index})
        else:
            self._charge("dynamodb.transact", {"table.write": table, **index})
        self.inner.accept(admissions, now=now, correlation_id=correlation_id)
        self.body_bytes.update(sizes)
        for admission in writes:
            self.unfinished.add(admission.invoice.key)

    def claim(
        self, message: QueuedInvoice, *, message_id: str, owner: str, now: float, lease_seconds: float
    ) -> Claim:
        before = self.inner.entries.get(message.invoice.key)
        charges = {"table.write": units(ENTRY_BYTES), **self._moves(before, "IN_PROGRESS", size=ENTRY_BYTES)}
        self._charge("dynamodb.write", charges)
        claim = self.inner.claim(
            message, message_id=message_id, owner=owner, now=self.clock.now, lease_seconds=lease_seconds
        )
        self._touched(message.invoice.key)
        return claim

    def record(
        self, key: InvoiceKey, verdict: Verdict, *, owner: str, now: float, ack_id: str | None
    ) -> bool:
        before = self.inner.entries.get(key)
        after = None if isinstance(verdict, Invoiced) else str(verdict.status)
        charges = {"table.write": units(ENTRY_BYTES), **self._moves(before, after, size=ENTRY_BYTES)}
        self._charge("dynamodb.write", charges)
        held = self.inner.record(key, verdict, owner=owner, now=self.clock.now, ack_id=ack_id)
        self._touched(key)
        if held and isinstance(verdict, Invoiced):
            self.invoiced_at[key] = self.clock.now
        return held

    def mark_send_failed(self, key: InvoiceKey, *, now: float) -> bool:
        before = self.inner.entries.get(key)
        self._charge(
            "dynamodb.write", {"table.write": 1, **self._moves(before, index_key(before), size=ENTRY_BYTES)}
        )
        return self.inner.mark_send_failed(key, now=self.clock.now)

    def mark_dead_lettered(self, message: QueuedInvoice, *, message_id: str, now: float) -> bool:
        before = self.inner.entries.get(message.invoice.key)
        charges = {"table.write": 1, **self._moves(before, "DEAD_LETTERED", size=ENTRY_BYTES)}
        self._charge("dynamodb.write", charges)
        return self.inner.mark_dead_lettered(message, message_id=message_id, now=self.clock.now)

    # ---- the reconciler's view ----
    def _touched(self, key: InvoiceKey) -> None:
        """Keep the set of unfinished keys (the index's view) up to date after a write."""
        entry = self.inner.entries.get(key)
        if entry is None or entry.status.is_final:
            self.unfinished.discard(key)
        else:
            self.unfinished.add(key)

    def stalled(self, status: InvoiceStatus, *, updated_before: float, limit: int) -> list[LedgerEntry]:
        """InMemoryLedger.stalled's rule over the unfinished entries only (INVOICED ones are
        not in the index), so a run does not walk a million final entries."""
        entries = self.inner.entries
        found = sorted(
            (
                entry
                for entry in (entries[key] for key in self.unfinished)
                if entry.status is status
                and entry.dead_lettered_at is None
                and entry.updated_at < updated_before
                and (entry.retry_at is None or entry.retry_at < updated_before)
                and (entry.lease_until is None or entry.lease_until < updated_before)
            ),
            key=lambda entry: (entry.updated_at, entry.key),
        )[:limit]
        read = sum(units(ENTRY_BYTES, 4096) for _ in found) / 2
        self._charge("dynamodb.query", {f"ByStatus/{status}:read": max(0.5, read)})
        return found

    def mark_reconciled(self, entry: LedgerEntry, *, now: float) -> bool:
        before = self.inner.entries.get(entry.key)
        self._charge(
            "dynamodb.write", {"table.write": 1, **self._moves(before, index_key(before), size=ENTRY_BYTES)}
        )
        return self.inner.mark_reconciled(entry, now=self.clock.now)

    def body(self, key: InvoiceKey) -> QueuedInvoice | None:
        self._charge("dynamodb.read", {"table.read": units(self.body_bytes.get(key, 1024), 4096) / 2})
        return self.inner.body(key)
