"""The ledger as DynamoDB serves it: latency per request, and capacity per partition.

The state rules are the ledger fake's (tests/fakes.py InMemoryLedger, the adapter's conditions);
this wrapper charges each request before the fake applies it, and refuses it as DynamoDB would:
- a write costs 1 WCU per 1 KB of the item, rounded up; in a transaction twice that;
- every index the template deploys is metered per partition: ByDue (`workShard`, "<list>#<n>",
  sorted by `dueAt`) and, while `LegacyByStatusIndex` keeps it, ByStatus (`statusKey`, a handful
  of values, sorted by an `updatedAt` that only grows, so each status is one hot partition).
  An entry write that moves the entry's index key costs a delete in the old partition and a put
  in the new one, one that keeps the key but changes a projected attribute costs one write
  (1 WCU per KB, projection ALL). A partition takes 1,000 WCU/s and 3,000 RCU/s; past that
  the index throttles the base-table write (GSI back-pressure): `IndexWriteKeyRangeThroughputExceeded`,
  which the adapter turns into LedgerUnavailableError;
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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from fakes import InMemoryLedger, cached_shard_of, due_of, work_list, work_partition
from relay.adapters.work_index import DEFAULT_WORK_SHARDS
from relay.domain.errors import LedgerUnavailableError
from relay.domain.intake import Action, Admission
from relay.domain.invoice import InvoiceKey
from relay.domain.ledger import InvoiceStatus, LedgerEntry, WorkList
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
    """The Ledger port (and the reconciler's view) over InMemoryLedger, charged per request.

    Every write method of the fake runs first; the entries it wrote (seen through the fake's
    `entries` dict) are then charged: the table, and each index the template deploys
    (`indexes`: ByDue, sharded by list; ByStatus while `LegacyByStatusIndex` keeps it). A write
    DynamoDB would have throttled is undone and raised as LedgerUnavailableError, as the
    adapter raises it. Methods the fake gains later are charged the same way (`__getattr__`).
    """

    def __init__(
        self,
        clock: WorldClock,
        latencies: Latencies,
        capacity: Capacity,
        *,
        attempts: int = 3,
        indexes: tuple[str, ...] = ("ByDue",),
        shards: int = DEFAULT_WORK_SHARDS,
    ) -> None:
        self.inner = InMemoryLedger(clock, shards=shards)
        self.clock = clock
        self.latencies = latencies
        self.capacity = capacity
        self.attempts = attempts
        self.indexes = indexes
        self.shards = shards
        self.body_bytes: dict[InvoiceKey, int] = {}
        self.invoiced_at: dict[InvoiceKey, float] = {}
        self.requests: Counter[str] = Counter()
        self.unfinished: set[InvoiceKey] = set()
        self._listed: dict[WorkList, set[InvoiceKey]] = {}
        """The keys in each work list, kept by every write of an entry, so a `due` query walks
        its own list, not every unfinished entry (half a million of them in a backlog)."""
        self._list_of: dict[InvoiceKey, WorkList] = {}
        self._writes: list[tuple[InvoiceKey, LedgerEntry | None, LedgerEntry]] = []
        writes = self._writes
        file = self._file
        base = type(self.inner.entries)

        class Recording(base):  # type: ignore[valid-type,misc]
            def __setitem__(self, key: InvoiceKey, entry: LedgerEntry) -> None:
                writes.append((key, self.get(key), entry))
                super().__setitem__(key, entry)
                file(key, entry)

        self.inner.entries.__class__ = Recording

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

    def _index_keys(self, entry: LedgerEntry | None) -> dict[str, tuple[str, float] | None]:
        keys: dict[str, tuple[str, float] | None] = {}
        if "ByDue" in self.indexes:
            partition = work_partition(entry, self.shards)
            keys["ByDue"] = None if entry is None or partition is None else (partition, due_of(entry))
        if "ByStatus" in self.indexes:
            status = index_key(entry)
            keys["ByStatus"] = None if entry is None or status is None else (status, entry.updated_at)
        return keys

    def _write_charges(
        self, writes: list[tuple[InvoiceKey, LedgerEntry | None, LedgerEntry]], *, transact: bool
    ) -> dict[str, float]:
        """Units of the entries written: the table's, and each index's (a changed index key is a
        delete and a put, a changed projected attribute one write; 1 per KB, entries < 1 KB)."""
        charges: dict[str, float] = {}
        factor = 2 if transact else 1
        for key, old, new in writes:
            charges["table.write"] = charges.get("table.write", 0) + factor * units(ENTRY_BYTES)
            before, after = self._index_keys(old), self._index_keys(new)
            for index, new_key in after.items():
                old_key = before.get(index)
                touched = [new_key] if old_key == new_key else [old_key, new_key]
                for index_entry in touched:
                    if index_entry is not None:
                        resource = f"{index}/{index_entry[0]}"
                        charges[resource] = charges.get(resource, 0) + units(ENTRY_BYTES)
            self._touched(key, new)
        return charges

    def _touched(self, key: InvoiceKey, entry: LedgerEntry | None) -> None:
        if entry is None or entry.status.is_final:
            self.unfinished.discard(key)
        else:
            self.unfinished.add(key)

    def _file(self, key: InvoiceKey, entry: LedgerEntry | None) -> None:
        """Keep `_listed` up to date with the entry just put in place (None: removed)."""
        listed = work_list(entry) if entry is not None else None
        before = self._list_of.get(key)
        if before is listed:
            return
        if before is not None:
            self._listed[before].discard(key)
        if listed is None:
            del self._list_of[key]
        else:
            self._list_of[key] = listed
            self._listed.setdefault(listed, set()).add(key)

    def _undo(self, writes: list[tuple[InvoiceKey, LedgerEntry | None, LedgerEntry]]) -> None:
        entries = self.inner.entries
        for key, old, _ in reversed(writes):
            if old is None:
                dict.pop(entries, key, None)
                self.inner.bodies.pop(key, None)
            else:
                dict.__setitem__(entries, key, old)
            self._file(key, old)
            self._touched(key, old)

    def _write(
        self, kind: str, method: Callable[..., Any], *args: Any, extra: float = 0, **kwargs: Any
    ) -> Any:
        """Run the fake's write, then charge what it wrote; undo it if DynamoDB throttles."""
        self._writes.clear()
        result = method(*args, **kwargs)
        writes = list(self._writes)
        self._writes.clear()
        charges = self._write_charges(writes, transact=kind == "dynamodb.transact")
        if extra:
            charges["table.write"] = charges.get("table.write", 0) + extra
        if not writes and not extra:
            self.requests[kind] += 1
            self.clock.spend(self.latencies.draw(kind))
            return result
        try:
            self._charge(kind, charges)
        except LedgerUnavailableError:
            self._undo(writes)
            raise
        return result

    def __getattr__(self, name: str) -> Any:
        """A method of the fake this wrapper does not name: charged as one write request."""
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        def charged(*args: Any, **kwargs: Any) -> Any:
            return self._write("dynamodb.write", attribute, *args, **kwargs)

        return charged

    # ---- reads ----
    def get(self, key: InvoiceKey) -> LedgerEntry | None:
        self._charge("dynamodb.read", {"table.read": 0.5})
        return self.inner.get(key)

    def get_many(self, keys: Iterable[InvoiceKey]) -> dict[InvoiceKey, LedgerEntry]:
        wanted = list(keys)
        self._charge("dynamodb.read", {"table.read": 0.5 * len(wanted)})
        return self.inner.get_many(wanted)

    def body(self, key: InvoiceKey) -> QueuedInvoice | None:
        self._charge("dynamodb.read", {"table.read": units(self.body_bytes.get(key, 1024), 4096) / 2})
        return self.inner.body(key)

    # ---- writes ----
    def accept(self, admissions: Sequence[Admission], *, now: float, correlation_id: str | None) -> None:
        bodies = 0.0
        for admission in admissions:
            if admission.action in (Action.CREATE, Action.RESUBMIT):
                size = len(admission.invoice.model_dump_json()) + 200
                self.body_bytes[admission.invoice.key] = size
                bodies += 2 * units(size)  # the body item, in the same (or its own) transaction
        # Over 50 new invoices the adapter writes the bodies ahead in their own transactions.
        if bodies > 0 and bodies / 2 > 50:
            self._charge("dynamodb.transact", {"table.write": bodies})
            bodies = 0
        self._write(
            "dynamodb.transact",
            self.inner.accept,
            admissions,
            now=now,
            correlation_id=correlation_id,
            extra=bodies,
        )

    def claim(
        self, message: QueuedInvoice, *, message_id: str, owner: str, now: float, lease_seconds: float
    ) -> Claim:
        return cast(
            Claim,
            self._write(
                "dynamodb.write",
                self.inner.claim,
                message,
                message_id=message_id,
                owner=owner,
                now=self.clock.now,
                lease_seconds=lease_seconds,
            ),
        )

    def record(
        self, key: InvoiceKey, verdict: Verdict, *, owner: str, now: float, ack_id: str | None
    ) -> bool:
        held = bool(
            self._write(
                "dynamodb.write",
                self.inner.record,
                key,
                verdict,
                owner=owner,
                now=self.clock.now,
                ack_id=ack_id,
            )
        )
        if held and isinstance(verdict, Invoiced):
            self.invoiced_at[key] = self.clock.now
        return held

    def stamp_sent(self, message: QueuedInvoice, *, now: float, until: float) -> bool:
        """A written stamp is charged as any write (the table, and a delete and a put in its ByDue
        shard: dueAt moves); a refused one still costs the table a write unit, as DynamoDB
        charges a failed conditional write (none on an index: nothing changed)."""
        self._writes.clear()
        stamped = self.inner.stamp_sent(message, now=self.clock.now, until=until)
        writes = list(self._writes)
        self._writes.clear()
        charges = (
            self._write_charges(writes, transact=False) if writes else {"table.write": units(ENTRY_BYTES)}
        )
        try:
            self._charge("dynamodb.write", charges)
        except LedgerUnavailableError:
            self._undo(writes)
            raise
        return stamped

    # ---- the reconciler's queries ----
    def due(
        self, work: WorkList, *, due_by: float, limit: int, out_of_time: Callable[[], bool]
    ) -> tuple[list[LedgerEntry], bool]:
        """InMemoryLedger.due's rule (per shard, an equal share of `limit`, earliest first) over
        the unfinished entries only, so a run does not walk a million final ones."""
        if limit <= 0:
            return [], True
        share = math.ceil(limit / self.shards)
        by_shard: dict[int, list[LedgerEntry]] = {}
        entries = self.inner.entries
        unfinished = self.unfinished
        for key in self._listed.get(work, ()):
            entry = entries[key]
            if key in unfinished and work_list(entry) is work and due_of(entry) <= due_by:
                by_shard.setdefault(cached_shard_of(key, self.shards), []).append(entry)
        found: list[LedgerEntry] = []
        more = False
        for shard in range(self.shards):
            if out_of_time():
                more = True
                continue
            in_shard = sorted(by_shard.get(shard, []), key=lambda entry: (due_of(entry), str(entry.key)))
            self._charge(
                "dynamodb.query", {f"ByDue/{work}#{shard}:read": max(0.5, min(len(in_shard), share) / 8)}
            )
            found += in_shard[:share]
            more = more or len(in_shard) > share
        found.sort(key=lambda entry: (due_of(entry), str(entry.key)))
        return found[:limit], more or len(found) > limit

    def stalled(self, status: InvoiceStatus, *, updated_before: float, limit: int) -> list[LedgerEntry]:
        """The ByStatus query (before the work index): the fake's rule over unfinished entries."""
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
            key=lambda entry: (entry.updated_at, str(entry.key)),
        )[:limit]
        self._charge("dynamodb.query", {f"ByStatus/{status}:read": max(0.5, len(found) / 8)})
        return found
