"""What the work index and parking change, measured over the port fakes (tests/fakes.py).

    .venv/bin/python tests/benchmarks/work_index_load.py

1. Index writes per partition and second, at a steady rate: every invoice accepted, claimed
   and invoiced within its second (fakes.IndexMeter counts DynamoDB's GSI writes: a delete and
   a put when an item's index key changes, 1 WCU each under 1 KB). The legacy ByStatus and the
   work index (WORK_INDEX_SHARDS shards) are metered on the same run.
2. SQS in flight with 12% of orders answering IN403 for 10-60 minutes, dispatch unbounded,
   the reconciler every 5 minutes, with long waits parked (today) and held (parking off). The
   run is smaller than a sale day (the fakes sort the queue on each receive); in flight scales
   with the rate, so the figure is also given per invoice/s.

Not part of `make test` or `make bench`: a measurement for docs/scale.md and the issue's note.
"""

import os
import random
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "invoice-relay")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "bench")
os.environ["POWERTOOLS_LOG_LEVEL"] = "CRITICAL"

import fakes
import relay.domain.dispatch as dispatch_module
import relay.domain.intake as intake_module
import relay.domain.reconcile as reconcile_module
from factories import invoice
from fakes import IndexMeter, World
from relay.domain.ledger import PARK_AFTER_SECONDS, is_parked_wait

for _module in (dispatch_module, intake_module, reconcile_module):
    if hasattr(_module, "count"):
        _module.count = lambda *_, **__: None  # type: ignore[attr-defined]  # no metrics here


def index_peaks(rate: int, seconds: int, shards: int) -> dict[str, object]:
    world = World()
    world.ledger = fakes.InMemoryLedger(world.clock, world.faults, shards=shards)
    world.acceptance = fakes.InvoiceAcceptance(ledger=world.ledger, queue=world.queue, clock=world.clock)
    serial = 0
    for _ in range(seconds):
        for start in range(0, rate, 100):
            world.accept(*(invoice(f"FY-{serial + i}") for i in range(min(100, rate - start))))
            serial += min(100, rate - start)
        while world.queue.messages:
            world.run(limit=100)
        world.clock.advance(1)
    work, work_partition = IndexMeter.peak(world.ledger.meter.work)
    legacy, legacy_partition = IndexMeter.peak(world.ledger.meter.by_status)
    return {
        "rate": rate,
        "shards": shards,
        "work index peak WCU/s": f"{work} ({work_partition})",
        "ByStatus peak WCU/s": f"{legacy} ({legacy_partition})",
    }


def in_flight(
    rate: int, seconds: int, *, park_after: float | str | None, seed: int = 19
) -> dict[str, object]:
    """`park_after`: waits longer than this are parked; "today": relay.domain.ledger.is_parked_wait;
    None: none is."""
    rng = random.Random(seed)
    world = World()
    world.policy = fakes.CodePolicy(
        fakes.Backoff(30, 3600, rng.random), 86_400, fakes.outage_backoff(30, rng.random)
    )
    peak = 0
    serial = 0
    started = world.clock.now

    def parks(delay: float, reason: str | None = None) -> bool:
        if park_after == "today":
            return is_parked_wait(delay, reason)
        return park_after is not None and delay > float(park_after)

    with ExitStack() as patched:
        patched.enter_context(mock.patch.object(dispatch_module, "is_parked_wait", parks))
        patched.enter_context(mock.patch.object(fakes, "is_parked_wait", parks))
        for second in range(seconds + 4 * 3600):
            if second < seconds:
                batch = [invoice(f"FY-{serial + i}") for i in range(rate)]
                for item in batch:
                    if rng.random() < 0.12:
                        world.fynd.early_until[item.orderId] = world.clock.now + rng.uniform(600, 3600)
                world.accept(*batch)
                serial += rate
            while any(h.visible_at <= world.clock.now for h in world.queue.messages.values()):
                world.run(limit=100)
            if second % 300 == 0:
                world.reconcile()
            if second % 10 == 0:
                now = world.clock.now
                held = sum(1 for h in world.queue.messages.values() if h.receive_count and h.visible_at > now)
                peak = max(peak, held)
            if (
                second >= seconds
                and not world.queue.messages
                and not world.ledger.listed(fakes.WorkList.PARKED)
            ):
                break
            world.clock.advance(1)
    unfinished = sum(1 for e in world.ledger.entries.values() if not e.status.is_final)
    return {
        "park after s": park_after,
        "rate": rate,
        "invoices": serial,
        "in-flight peak": peak,
        "in-flight per invoice/s": round(peak / rate, 1),
        "unfinished at end": unfinished,
        "applied twice": sum(1 for n in world.fynd.applied.values() if n > 1),
        "drained after s": round(world.clock.now - started),
    }


def main() -> None:
    began = time.perf_counter()
    for rate, shards in ((500, 16), (2000, 16), (500, 1)):
        print(index_peaks(rate, 5, shards), flush=True)
    for park_after in ("today", PARK_AFTER_SECONDS, None):
        print(in_flight(5, 3600, park_after=park_after), flush=True)
    print(f"run time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
