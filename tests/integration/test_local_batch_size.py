"""The local consumer takes its batch size from template.yaml (issue 3: one source of truth).

Change DispatchBatchSize in a copy of the template, or override the parameter as `sam
deploy --parameter-overrides` would, and the batches the dispatcher receives follow. The
dispatcher is wrapped to record each event it gets; everything else is the real pipeline.
"""

import json
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import urllib3

from relay_local.pipeline import LocalPipeline, PipelineConfig
from relay_local.signing import new_secret, signed_headers
from relay_local.stack import TEMPLATE

INVOICES = [
    {"orderId": f"FY-BATCH-{n}", "invoiceNumber": f"INV-{n}", "invoiceType": "sale"} for n in range(9)
]


def template_with_batch_size(directory: Path, batch_size: int) -> Path:
    """template.yaml with only DispatchBatchSize's default changed."""
    text = TEMPLATE.read_text()
    before = "  DispatchBatchSize:\n    Type: Number\n    Default: 2000\n"
    assert before in text, "template.yaml's DispatchBatchSize moved; update this test"
    copy = directory / "template.yaml"
    copy.write_text(text.replace(before, before.replace("2000", str(batch_size))))
    return copy


def batch_sizes(config: PipelineConfig) -> list[int]:
    """Post 9 invoices in one signed webhook; the Records count of every dispatcher event."""
    sizes: list[int] = []
    lock = threading.Lock()
    with LocalPipeline(config) as pipeline:
        assert pipeline.dispatch is not None
        real = pipeline.dispatch.handler

        def recording(event: dict[str, Any], context: Any) -> Any:
            with lock:
                sizes.append(len(event["Records"]))
            return real(event, context)

        pipeline.dispatch = replace(pipeline.dispatch, handler=recording)
        body = json.dumps(INVOICES)
        headers = {"Content-Type": "application/json", **signed_headers(config.webhook_secret, body)}
        for _ in range(
            5
        ):  # an ERP resends on 503 (moto on a loaded machine can be slower than ingest allows)
            status = urllib3.request(
                "POST", f"{pipeline.api_url}/v1/invoices", body=body, headers=headers, timeout=30
            ).status
            if status != 503:
                break
            time.sleep(1)
        assert status == 202
        pipeline.start_consumer()
        deadline = time.monotonic() + 20
        # Done when every invoice is invoiced and every batch the dispatcher got is settled.
        while (tally := pipeline.tally()).invoiced < len(INVOICES) or tally.batches < len(sizes):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert (tally.invoiced, tally.batches) == (len(INVOICES), len(sizes))
    return sizes


@pytest.mark.parametrize(
    "how",
    ["template default", "parameter override"],
)
def test_the_consumer_batches_follow_the_template_batch_size(tmp_path: Path, how: str) -> None:
    # Given the template's DispatchBatchSize set to 3 (its default edited, or overridden)
    secret = new_secret()
    if how == "template default":
        config = PipelineConfig(secret, template_path=template_with_batch_size(tmp_path, 3), consume=False)
    else:
        config = PipelineConfig(secret, parameters={"DispatchBatchSize": "3"}, consume=False)
    # When 9 invoices are queued at once
    sizes = batch_sizes(config)
    # Then the dispatcher receives them in batches of at most 3
    assert sum(sizes) == 9
    assert max(sizes) == 3
    assert len(sizes) >= 3


def test_the_shipped_template_batches_them_all_at_once() -> None:
    # Given the template as shipped (DispatchBatchSize 2000, a 2 s batching window)
    config = PipelineConfig(new_secret(), consume=False)
    # When 9 invoices are queued at once
    sizes = batch_sizes(config)
    # Then one batch carries them all: the setting above is what made the difference
    assert sizes == [9]
