"""`make bench`: the relay measured on this machine, through the same local pipeline as `make run`.

Prints, for the record (nothing here is asserted: speed is measured, never tested):
- import cost of each handler in a fresh interpreter (a Lambda cold start pays it);
- ingest latency for one signed invoice, over HTTP, p50 and p95;
- 1,000 invoices in webhooks of 100: time until all are INVOICED, Fynd calls and orders per
  call, and AWS requests (DynamoDB, SQS) per invoice, counted on the relay's own clients.
"""

import json
import statistics
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import urllib3

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src" / "functions"), str(ROOT / "src" / "tools"), str(ROOT / "tests")]

import conftest  # noqa: E402, F401  - the functions' static environment, as in the tests
from factories import invoice_dict  # noqa: E402
from relay_local.pipeline import LocalPipeline, PipelineConfig  # noqa: E402
from relay_local.signing import new_secret, signed_headers  # noqa: E402

INVOICES = 1000
PER_WEBHOOK = 100


def import_cost(module: str, runs: int = 5) -> float:
    """Median milliseconds to import `module` in a fresh interpreter, interpreter start excluded."""
    script = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    samples = [
        float(
            subprocess.run(
                [sys.executable, "-c", script],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT / "src" / "functions",
            ).stdout
        )
        for _ in range(runs)
    ]
    return statistics.median(samples) * 1000


def post(http: urllib3.PoolManager, url: str, secret: str, payload: Any) -> int:
    body = json.dumps(payload)
    headers = {"Content-Type": "application/json", **signed_headers(secret, body)}
    return http.request("POST", f"{url}/v1/invoices", body=body, headers=headers).status


def main() -> None:
    # A status GET publishes no metric but the cold start; Powertools warns about that.
    warnings.filterwarnings("ignore", "No application metrics to publish")
    for module in ("relay.handlers.ingest", "relay.handlers.dispatch"):
        print(f"import {module}: {import_cost(module):.0f} ms (median of 5, fresh interpreter)")

    calls: Counter[str] = Counter()
    boto3.setup_default_session()
    # Clients the relay builds from the default session count every API call they make.
    boto3.DEFAULT_SESSION.events.register("before-call", lambda event_name, **_: calls.update([event_name]))  # type: ignore[union-attr]

    secret = new_secret()
    config = PipelineConfig(webhook_secret=secret, consume=False)
    with LocalPipeline(config) as pipeline:
        http = urllib3.PoolManager()
        latencies = []
        for n in range(200):
            started = time.perf_counter()
            assert post(http, pipeline.api_url, secret, invoice_dict(f"LAT-{n}")) == 202
            latencies.append((time.perf_counter() - started) * 1000)
        quantiles = statistics.quantiles(latencies, n=20)
        print(
            f"ingest, 1 invoice per webhook: p50 {statistics.median(latencies):.1f} ms, p95 {quantiles[18]:.1f} ms (200 requests)"
        )

        calls.clear()
        started = time.perf_counter()
        for start in range(0, INVOICES, PER_WEBHOOK):
            batch = [invoice_dict(f"BENCH-{n:04}") for n in range(start, start + PER_WEBHOOK)]
            assert post(http, pipeline.api_url, secret, batch) == 202
        accepted = time.perf_counter() - started
        ingest_calls = Counter(calls)
        calls.clear()
        pipeline.start_consumer()
        drain(pipeline, len(latencies) + INVOICES)
        delivered = time.perf_counter() - started
        assert pipeline.simulator is not None
        fynd = [call for call in pipeline.simulator.state.calls() if call.order_ids[0].startswith("BENCH-")]
        sizes = [len(call.order_ids) for call in fynd]
        print(
            f"{INVOICES} invoices in webhooks of {PER_WEBHOOK}: accepted in {accepted:.2f} s;"
            f" these and the {len(latencies)} above all INVOICED {delivered:.2f} s after the first post"
        )
        print(
            f"  Fynd calls: {len(fynd)}, orders per call: min {min(sizes)} max {max(sizes)} mean {statistics.mean(sizes):.1f}"
        )
        report("  ingest AWS requests", ingest_calls, INVOICES)
        report("  dispatch AWS requests", calls, len(latencies) + INVOICES)


def report(label: str, calls: Counter[str], invoices: int) -> None:
    by_service: Counter[str] = Counter()
    for event_name, count in calls.items():
        by_service[event_name.split(".")[1]] += count
    detail = ", ".join(f"{name.split('.', 1)[1]} {count}" for name, count in sorted(calls.items()))
    per_invoice = ", ".join(
        f"{service} {count / invoices:.2f}" for service, count in sorted(by_service.items())
    )
    print(f"{label}: {detail}")
    print(f"{label} per invoice: {per_invoice}")


def drain(pipeline: LocalPipeline, expected: int, timeout: float = 300) -> None:
    """Wait until `expected` ledger entries are INVOICED (the ledger is the truth)."""
    deadline = time.monotonic() + timeout
    while pipeline.tally().invoiced < expected:
        if time.monotonic() > deadline:
            raise SystemExit(f"not all {expected} invoices were INVOICED within {timeout} s")
        time.sleep(0.5)


if __name__ == "__main__":
    main()
