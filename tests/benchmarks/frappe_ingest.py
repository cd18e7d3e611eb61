"""Ingest latency as ERPNext sees it: Frappe-exact requests through the local API, p50 to p99.

    .venv/bin/python tests/benchmarks/frappe_ingest.py [--requests 500] [--no-consumer]

Starts the relay as `FRAPPE_WEBHOOK_SECRET=... make run` does (the queue consumer included, as
it shares this process), renders the shipped Webhook body (docs/erpnext/) for distinct
Sales Invoices, and posts them one after another with Frappe's bytes and headers. Frappe
waits 5 s for an answer; docs/erpnext/README.md states what this measures and what AWS adds.
Measured, never asserted: speed is not a test.
"""

import argparse
import dataclasses
import statistics
import sys
import time
import warnings
from pathlib import Path

import urllib3

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src" / "functions"), str(ROOT / "src" / "tools"), str(ROOT / "tests")]

import conftest  # noqa: E402, F401  - the functions' static environment, as in the tests
from frappe_sender import SALE_WEBHOOK, frappe_request, render, sales_invoice, webhook_document  # noqa: E402
from relay_local.environment import run_settings  # noqa: E402
from relay_local.pipeline import LocalPipeline  # noqa: E402
from relay_local.run import pipeline_config  # noqa: E402
from relay_local.stack import TEMPLATE  # noqa: E402

SECRET = "benchmark-only-frappe-secret-000000001"
WARM_UP = 20


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument(
        "--no-consumer", action="store_true", help="leave the queue consumer off: ingest alone"
    )
    arguments = parser.parse_args()
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    settings = run_settings({"FRAPPE_WEBHOOK_SECRET": SECRET, "RELAY_API_PORT": "0"})
    webhook = webhook_document(SALE_WEBHOOK)
    requests = []
    for number in range(WARM_UP + arguments.requests):
        doc = sales_invoice("sales-invoice-return.json", name=f"CN-BENCH-{number:05d}")
        doc["custom_fynd_shipment_id"] = f"FY-BENCH-{number:05d}"
        for row in doc["items"]:
            row["custom_fynd_order_item_id"] = f"FY-BENCH-{number:05d}-1"
        requests.append(frappe_request(render(webhook, doc), SECRET))
    http = urllib3.PoolManager()
    config = pipeline_config(settings, TEMPLATE, {"LogLevel": "WARNING"})
    with LocalPipeline(dataclasses.replace(config, consume=not arguments.no_consumer)) as pipeline:
        url = f"{pipeline.api_url}/v1/invoices"
        samples = []
        for request in requests:
            started = time.perf_counter()
            status = http.request("POST", url, body=request.body, headers=request.headers).status
            samples.append((time.perf_counter() - started) * 1000)
            assert status == 202, status
    cold, measured = samples[0], samples[WARM_UP:]
    consumer = "off" if arguments.no_consumer else "on"
    print(
        f"ingest over the local API, {len(measured)} Frappe requests after {WARM_UP} warm-up ones,"
        f" consumer {consumer} (ms):"
    )
    print(
        f"  p50 {statistics.median(measured):.1f}  p90 {percentile(measured, 0.90):.1f}"
        f"  p99 {percentile(measured, 0.99):.1f}  max {max(measured):.1f}  first (cold) {cold:.1f}"
    )


if __name__ == "__main__":
    main()
