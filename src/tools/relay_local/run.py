"""`python -m relay_local run` (`make run`): the whole relay on 127.0.0.1 until Ctrl-C.

Starts one LocalPipeline (the same class the tests start), prints a banner with everything
a user needs to send a first invoice, then shows the functions' logs and a tally of where
the invoices are, refreshed every second on a terminal (every two otherwise).

SIGINT (Ctrl-C) and SIGTERM only set a flag; the main thread then stops the pipeline in
order (API, consumer after its batches in flight, simulator, moto), which closes every
listening socket and joins every thread it started, and exits 0. Nothing runs in a child
process, so nothing can be left behind. A second Ctrl-C while stopping is ignored: the
stop is bounded by the batches in flight and never needs forcing.
"""

import json
import shlex
import signal
import sys
import threading
import time
from contextlib import redirect_stdout
from pathlib import Path
from types import FrameType

from botocore.exceptions import BotoCoreError, ClientError

from relay_local.console import Console, FunctionOutput
from relay_local.environment import RunSettings
from relay_local.pipeline import DISPATCH, LocalPipeline, PipelineConfig

_SAMPLE = "events/invoice.json"
_SAMPLE_ORDER = "FY-10001"


def pipeline_config(settings: RunSettings, template: Path, parameters: dict[str, str]) -> PipelineConfig:
    return PipelineConfig(
        webhook_secret=settings.webhook_secret,
        frappe_webhook_secret=settings.frappe_webhook_secret,
        api_port=settings.api_port,
        fynd_base_url=settings.fynd.base_url,
        fynd_username=settings.fynd.username,
        fynd_password=settings.fynd.password,
        environment=settings.function_environment,
        parameters=parameters,
        template_path=template,
    )


def banner(pipeline: LocalPipeline, settings: RunSettings, startup_seconds: float) -> str:
    assert pipeline.stack is not None
    source = pipeline.stack.event_source(DISPATCH)
    queue = pipeline.sqs().get_queue_attributes(
        QueueUrl=source.queue_url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"]
    )["Attributes"]
    max_receives = json.loads(queue.get("RedrivePolicy", "{}")).get("maxReceiveCount", "-")
    fynd = (
        f"{pipeline.fynd_base_url}  (FYND_BASE_URL)"
        if settings.fynd.base_url
        else f"{pipeline.fynd_base_url}  (built-in simulator; its control API is under /_sim/)"
    )
    secret_note = (
        "generated for this run; set WEBHOOK_SECRET to choose"
        if settings.secret_generated
        else "WEBHOOK_SECRET"
    )
    env = f"WEBHOOK_SECRET={shlex.quote(settings.webhook_secret)} RELAY_API_URL={pipeline.api_url}"
    return "\n".join(
        [
            f"Fynd Invoice Relay, local run from {pipeline.config.template_path.name} (no AWS, no Docker)",
            f"  API           {pipeline.api_url}  (POST /v1/invoices, GET /v1/invoices/{{orderId}})",
            f"  secret        {settings.webhook_secret}  ({secret_note})",
            *(
                ["  frappe        preset enabled: X-Frappe-Webhook-Signature, secret FRAPPE_WEBHOOK_SECRET"]
                if settings.frappe_webhook_secret
                else []
            ),
            f"  Fynd          {fynd}",
            f"  AWS endpoint  {pipeline.moto.url}  (moto: queue, dead-letter queue, ledger table, secrets)",
            f"  consumer      batch size {source.batch_size}, window {source.batching_window_seconds} s,"
            f" max concurrency {source.max_concurrency}, visibility {queue.get('VisibilityTimeout')} s,"
            f" maxReceiveCount {max_receives}",
            f"  ready in      {startup_seconds:.1f} s",
            "",
            "Send a signed sample invoice:",
            f"  {env} make send FILE={_SAMPLE}",
            "Then ask for its status (QUEUED, then INVOICED a few seconds later):",
            f"  {env} make status ORDER={_SAMPLE_ORDER}",
            "",
            "Ctrl-C stops everything.",
            "",
        ]
    )


def run(
    settings: RunSettings, template: Path, parameters: dict[str, str], *, raw_logs: bool, started: float
) -> int:
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    console = Console(sys.stdout, live=sys.stdout.isatty())
    output = FunctionOutput(console, raw=raw_logs)
    pipeline = LocalPipeline(pipeline_config(settings, template, parameters))
    # The functions write their logs to stdout, as in Lambda; here stdout is the reader.
    with redirect_stdout(output):
        try:
            pipeline.start()
        except OSError as error:
            pipeline.stop()
            print(
                f"run: cannot start: {error} (is RELAY_API_PORT {settings.api_port} in use?)", file=sys.stderr
            )
            return 1
        try:
            console.print(banner(pipeline, settings, time.monotonic() - started))
            every = interval = 1.0 if sys.stdout.isatty() else 2.0
            while not stop.wait(interval):
                took = _show_tally(pipeline, console)
                # A big ledger takes a while to scan; never spend more than a fifth of the time on it.
                interval = max(every, 5 * took)
            _show_tally(pipeline, console)
        finally:
            console.print("stopping: finishing batches in flight, then the API, simulator and AWS endpoint")
            pipeline.stop()
    console.close()
    summary = output.metrics_summary()
    if summary:
        console.print(summary)
    console.print("stopped")
    return 0


def _show_tally(pipeline: LocalPipeline, console: Console) -> float:
    """Show a fresh tally; returns how long reading it took."""
    started = time.monotonic()
    try:
        console.status(f"tally  {pipeline.tally().line()}")
    except (BotoCoreError, ClientError) as error:
        console.print(f"tally unavailable: {error}")
    return time.monotonic() - started
