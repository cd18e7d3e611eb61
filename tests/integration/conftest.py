"""The relay started whole on 127.0.0.1 for each test: moto in server mode with the template's
resources, the Fynd simulator, the HTTP API and the queue consumer, all over real HTTP."""

import dataclasses
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from relay_client import FAST_RETRIES, RelayClient
from relay_local.environment import run_settings
from relay_local.erpnext import LocalErpnext
from relay_local.pipeline import LocalPipeline, PipelineConfig
from relay_local.run import pipeline_config as run_pipeline_config
from relay_local.signing import new_secret
from relay_local.stack import TEMPLATE

FAST_WRITEBACK = {"WRITEBACK_RETRY_BASE_SECONDS": "1", "WRITEBACK_RETRY_MAX_SECONDS": "4"}
"""Write-back's back-off of 30 s to 15 min cut to 1 to 4 s, so an outage of seconds spans retries."""


@pytest.fixture
def pipeline_config(request: pytest.FixtureRequest) -> PipelineConfig:
    """Parametrize indirectly with {"environment": ..., "parameters": ..., "consume": ...} to change the run."""
    overrides: dict[str, Any] = getattr(request, "param", {})
    return PipelineConfig(
        webhook_secret=new_secret(),
        environment={**FAST_RETRIES, **overrides.get("environment", {})},
        parameters=overrides.get("parameters", {}),
        consume=overrides.get("consume", True),
    )


@pytest.fixture
def aws_calls() -> Iterator[Counter[str]]:
    """Every AWS API call the relay's own clients make during the test, e.g. "dynamodb.UpdateItem"."""
    calls: Counter[str] = Counter()

    def count(event_name: str, **_: object) -> None:
        calls[event_name.removeprefix("before-call.")] += 1

    # The relay builds its clients lazily from the default session, after this fixture runs.
    session = boto3.setup_default_session() or boto3.DEFAULT_SESSION
    assert session is not None
    session.events.register("before-call", count)
    yield calls
    session.events.unregister("before-call", count)


@pytest.fixture
def relay(pipeline_config: PipelineConfig) -> Iterator[RelayClient]:
    with LocalPipeline(pipeline_config) as pipeline:
        yield RelayClient(pipeline, pipeline_config.webhook_secret)


@pytest.fixture
def erpnext_and_relay(request: pytest.FixtureRequest) -> Iterator[tuple[LocalErpnext, RelayClient]]:
    """`ERPNEXT_SIMULATOR=1 make run`, as run.py builds it, with the functions in this process.
    Parametrize indirectly with the schedules' period in seconds to run them faster."""
    settings = run_settings(
        {
            "ERPNEXT_SIMULATOR": "1",
            "ERPNEXT_SIMULATOR_PORT": "0",
            "RELAY_API_PORT": "0",
            **FAST_RETRIES,
            **FAST_WRITEBACK,
        }
    )
    assert settings.frappe_webhook_secret is not None
    assert settings.erpnext_simulator_port == 0
    erpnext = LocalErpnext(0, settings.frappe_webhook_secret).start()
    config = run_pipeline_config(settings, TEMPLATE, {}, erpnext.environment({}))
    # run.py points write-back (and so recovery) at the simulator when no other site is named
    assert config.writeback.erpnext_url == erpnext.simulator.url
    config = dataclasses.replace(config, isolated=False)
    if period := getattr(request, "param", None):
        config = dataclasses.replace(config, schedule_period_seconds=period)
    try:
        with LocalPipeline(config) as pipeline:
            erpnext.connect(pipeline.api_url)
            yield erpnext, RelayClient(pipeline, settings.webhook_secret)
    finally:
        erpnext.stop()
