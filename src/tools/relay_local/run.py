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
import os
import shlex
import sys
import time
from collections.abc import Mapping
from contextlib import redirect_stdout
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from botocore.exceptions import BotoCoreError, ClientError

from relay_local import saved_run
from relay_local.console import Console, FunctionOutput, wants_colour
from relay_local.environment import RunSettings, SecretOrigin, WritebackTargets
from relay_local.pipeline import DISPATCH, LocalPipeline, PipelineConfig
from relay_local.saved_run import SavedRun
from relay_local.stopping import StopSignal, tick_until_stopped

if TYPE_CHECKING:
    from relay_local.erpnext import LocalErpnext

_SAMPLE = "events/invoice.json"
_SAMPLE_ORDER = "FY-10001"


def pipeline_config(
    settings: RunSettings,
    template: Path,
    parameters: dict[str, str],
    extra_environment: dict[str, str] | None = None,
) -> PipelineConfig:
    """The pipeline `settings` ask for; a kept port that is taken now becomes 0 (any free one).
    `extra_environment` is added to the functions' (the ERPNext simulator's URL and key)."""
    return PipelineConfig(
        webhook_secret=settings.webhook_secret,
        frappe_webhook_secret=settings.frappe_webhook_secret,
        api_port=settings.api_port,
        aws_port=settings.aws_port if saved_run.port_is_free(settings.aws_port) else 0,
        simulator_port=settings.simulator_port if saved_run.port_is_free(settings.simulator_port) else 0,
        fynd_base_url=settings.fynd.base_url,
        fynd_username=settings.fynd.username,
        fynd_password=settings.fynd.password,
        environment={**settings.function_environment, **(extra_environment or {})},
        parameters=parameters,
        template_path=template,
        isolated=True,
        faults=settings.faults,
        writeback=_writeback(settings.writeback, extra_environment or {}),
    )


def _writeback(targets: WritebackTargets, extra_environment: Mapping[str, str]) -> WritebackTargets:
    """The ERPNext simulator, when started and no other site is named, is also where final
    states are written back."""
    url = extra_environment.get("ERPNEXT_URL")
    if targets.erpnext_url or not url:
        return targets
    return replace(
        targets,
        erpnext_url=url,
        erpnext_api_key=extra_environment.get("ERPNEXT_API_KEY", ""),
        erpnext_api_secret=extra_environment.get("ERPNEXT_API_SECRET", ""),
    )


def banner(
    pipeline: LocalPipeline,
    settings: RunSettings,
    startup_seconds: float,
    state: Path = saved_run.DEFAULT_PATH,
) -> str:
    """What a user needs to send a first invoice and to point `relay` at this run; `state` is
    where the secret and ports are kept between runs."""
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
    secret_note = {
        SecretOrigin.GENERATED: f"new, kept in {_shown(state)} for the next runs; FRESH=1 makes a new one",
        SecretOrigin.KEPT: f"kept from the last run in {_shown(state)}; `make run FRESH=1` makes a new one",
        SecretOrigin.ENVIRONMENT: "WEBHOOK_SECRET",
    }[settings.secret_origin]
    env = f"WEBHOOK_SECRET={shlex.quote(settings.webhook_secret)} RELAY_API_URL={pipeline.api_url}"
    exports = (
        f"export RELAY_API_URL={pipeline.api_url} RELAY_AWS_ENDPOINT={pipeline.moto.url}"
        f" WEBHOOK_SECRET={shlex.quote(settings.webhook_secret)}"
    )
    aws_note = ""
    if settings.aws_port and _port_of(pipeline.moto.url) != settings.aws_port:
        aws_note = f"; port {settings.aws_port} of the last run was taken, so RELAY_AWS_ENDPOINT changed"
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
            f"  AWS endpoint  {pipeline.moto.url}  (moto: queue, dead-letter queue, ledger table, secrets{aws_note})",
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
            "For the `relay` command (.venv/bin/relay: status, list, stats, smoke, ...) in another terminal:",
            f"  {exports}",
            "  .venv/bin/relay smoke",
            "",
            "Ctrl-C stops everything.",
            "",
        ]
    )


def run(
    settings: RunSettings,
    template: Path,
    parameters: dict[str, str],
    *,
    raw_logs: bool,
    started: float,
    state: Path = saved_run.DEFAULT_PATH,
) -> int:
    # Installed first and never removed: a signal at any moment from here to exit is a stop request.
    stop = StopSignal().install()
    return _run(stop, settings, template, parameters, raw_logs=raw_logs, started=started, state=state)


def keep(state: Path, settings: RunSettings, pipeline: LocalPipeline) -> None:
    """Keep this run's secret and ports for the next (relay_local.saved_run). A secret from
    WEBHOOK_SECRET is the user's to keep, not ours: then nothing is written."""
    if settings.secret_origin is SecretOrigin.ENVIRONMENT:
        return
    simulator = _port_of(pipeline.simulator.url) if pipeline.simulator is not None else 0
    saved_run.save(state, SavedRun(settings.webhook_secret, _port_of(pipeline.moto.url), simulator))


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is under it (`.local/run.json`)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _run(
    stop: StopSignal,
    settings: RunSettings,
    template: Path,
    parameters: dict[str, str],
    *,
    raw_logs: bool,
    started: float,
    state: Path,
) -> int:
    console = Console(sys.stdout, live=sys.stdout.isatty(), colour=wants_colour(sys.stdout, os.environ))
    output = FunctionOutput(console, raw=raw_logs)
    erpnext = _start_erpnext(settings)
    if erpnext is False:
        return 1
    erp_environment = erpnext.environment(os.environ) if erpnext else {}
    pipeline = LocalPipeline(pipeline_config(settings, template, parameters, erp_environment))
    # The functions write their logs to stdout, as in Lambda; here stdout is the reader.
    with redirect_stdout(output):
        try:
            pipeline.start()
        except OSError as error:
            pipeline.stop()
            if erpnext:
                erpnext.stop()
            print(
                f"run: cannot start: {error} (is RELAY_API_PORT {settings.api_port} in use?)", file=sys.stderr
            )
            return 1
        try:
            if erpnext:
                erpnext.connect(pipeline.api_url)
            try:
                keep(state, settings, pipeline)
            except OSError as error:
                console.warning(f"run: cannot keep the secret and ports in {state}: {error.strerror}")
            console.print(banner(pipeline, settings, time.monotonic() - started, state))
            if erpnext:
                console.print(_erpnext_lines(erpnext, settings, pipeline))
            every = 1.0 if sys.stdout.isatty() else 2.0
            tick_until_stopped(stop, lambda: _show_tally(pipeline, console), every)
            _show_tally(pipeline, console)
        finally:
            console.print("stopping: finishing batches in flight, then the API, simulator and AWS endpoint")
            pipeline.stop()
            if erpnext:
                erpnext.stop()
    console.close()
    summary = output.metrics_summary()
    if summary:
        console.print(summary)
    console.print("stopped")
    stop.ignore_further()
    return 0


def _start_erpnext(settings: RunSettings) -> "LocalErpnext | Literal[False] | None":
    """The ERPNext simulator when ERPNEXT_SIMULATOR=1 (started before the pipeline, so its URL
    reaches the functions' environment); False when its port is taken."""
    if settings.erpnext_simulator_port is None:
        return None
    from relay_local.erpnext import LocalErpnext

    assert settings.frappe_webhook_secret is not None  # run_settings generates one
    try:
        return LocalErpnext(settings.erpnext_simulator_port, settings.frappe_webhook_secret).start()
    except OSError as error:
        print(
            f"run: cannot start the ERPNext simulator: {error}"
            f" (is ERPNEXT_SIMULATOR_PORT {settings.erpnext_simulator_port} in use?)",
            file=sys.stderr,
        )
        return False


def _erpnext_lines(erpnext: "LocalErpnext", settings: RunSettings, pipeline: LocalPipeline) -> str:
    site = erpnext.simulator
    return "\n".join(
        [
            f"  ERPNext       {site.url}  (simulator, docs/erpnext/simulator.md; API key {site.api_key}:{site.api_secret})",
            f"  frappe secret {settings.frappe_webhook_secret}  (the pack's Webhooks sign with it)",
            'Submit an invoice in it (docs/erpnext/README.md, "Try it locally"): its outcome is written back to the',
            "site's Fynd Invoice Sync records, and what the site failed to send is recovered every 15 minutes; now:",
            f"  ERPNEXT_URL={site.url} ERPNEXT_API_KEY={site.api_key} ERPNEXT_API_SECRET={site.api_secret} \\",
            f"    .venv/bin/relay --api-url {pipeline.api_url} --endpoint-url {pipeline.moto.url} recover --since 2000-01-01",
            "",
        ]
    )


def _show_tally(pipeline: LocalPipeline, console: Console) -> float:
    """Show a fresh tally; returns how long reading it took."""
    started = time.monotonic()
    try:
        console.status(f"tally  {pipeline.tally().line()}")
    except (BotoCoreError, ClientError) as error:
        console.print(f"tally unavailable: {error}")
    return time.monotonic() - started
