"""`python -m relay_local run` (`make run`): the whole relay on 127.0.0.1 until Ctrl-C.

Starts one LocalPipeline (the same class the tests start), prints a banner with everything
a user needs to send a first invoice, then shows the functions' logs and a tally of where
the invoices are, refreshed every second on a terminal (every two otherwise).

SIGINT (Ctrl-C) and SIGTERM only record a flag and wake the main thread through a
self-pipe (relay_local.stopping: a handler that takes a lock can deadlock on the frame it
interrupted). The main thread then stops the pipeline in order (API, consumer after its
batches in flight, schedules, the functions' worker processes, simulator, moto), which
closes every listening socket, ends every worker process and joins every thread it
started, and exits 0. A second Ctrl-C while stopping is ignored: the stop is bounded by
the batches in flight (each by its function's timeout) and never needs forcing.
"""

import json
import shlex
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from relay_local.console import Console, FunctionOutput
from relay_local.environment import RunSettings
from relay_local.pipeline import DISPATCH, LocalPipeline, PipelineConfig
from relay_local.stopping import StopSignal, tick_until_stopped

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
        isolated=True,
        faults=settings.faults,
        writeback=settings.writeback,
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
    # Installed first and never removed: a signal at any moment from here to exit is a stop request.
    stop = StopSignal().install()
    return _run(stop, settings, template, parameters, raw_logs=raw_logs, started=started)


def _run(
    stop: StopSignal,
    settings: RunSettings,
    template: Path,
    parameters: dict[str, str],
    *,
    raw_logs: bool,
    started: float,
) -> int:
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
            every = 1.0 if sys.stdout.isatty() else 2.0
            tick_until_stopped(stop, lambda: _show_tally(pipeline, console), every)
            _show_tally(pipeline, console)
        finally:
            console.print("stopping: finishing batches in flight, then the API, simulator and AWS endpoint")
            pipeline.stop()
    console.close()
    summary = output.metrics_summary()
    if summary:
        console.print(summary)
    console.print("stopped")
    stop.ignore_further()
    return 0


def _show_tally(pipeline: LocalPipeline, console: Console) -> float:
    """Show a fresh tally; returns how long reading it took."""
    started = time.monotonic()
    try:
        console.status(f"tally  {pipeline.tally().line()}")
    except (BotoCoreError, ClientError) as error:
        console.print(f"tally unavailable: {error}")
    return time.monotonic() - started
