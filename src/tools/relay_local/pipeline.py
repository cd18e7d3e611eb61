"""The whole relay on 127.0.0.1: local AWS, the Fynd simulator, the HTTP API and the queue consumer.

`make run`, the integration tests and the benchmarks all start the relay through this one
class, so what the tests prove is what a user runs. The functions run in this process, as
template.yaml describes them (handler, timeout, environment, event source settings).
"""

import json
import os
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import boto3

from fynd_simulator import DEFAULT_PASSWORD, DEFAULT_USERNAME, FyndSimulator
from relay_local.dynamodb_guard import guard_dynamodb
from relay_local.event_source import SqsEventSource
from relay_local.http_api import LocalHttpApi
from relay_local.invocation import traced
from relay_local.lambda_context import LambdaFunction, load_handler
from relay_local.stack import REGION, TEMPLATE, LocalStack, MotoServer, build_stack
from relay_local.tally import Tally, read_tally

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

INGEST = "IngestFunction"
DISPATCH = "DispatchFunction"
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


@dataclass(frozen=True)
class PipelineConfig:
    webhook_secret: str
    """The whsec_... secret the local API verifies."""
    api_port: int = 0
    fynd_base_url: str | None = None
    """Send to this Fynd instead of starting the simulator."""
    fynd_username: str = DEFAULT_USERNAME
    fynd_password: str = DEFAULT_PASSWORD
    parameters: Mapping[str, str] = field(default_factory=dict)
    """Template parameter overrides, e.g. {"DispatchBatchSize": "10"}."""
    environment: Mapping[str, str] = field(default_factory=dict)
    """Extra function environment, e.g. {"RETRY_BASE_SECONDS": "1"} for fast tests."""
    poll_wait_seconds: int = 1
    consume: bool = True
    """Run the queue consumer; tests that drive the dispatcher batch by batch turn it off."""
    serve_api: bool = True
    """Serve the HTTP API; `python -m relay_local invoke` calls the functions directly instead."""
    template_path: Path = TEMPLATE
    """The SAM template the resources and functions are read from (`sam ... -t`)."""


class LocalPipeline:
    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.moto = MotoServer()
        self.simulator: FyndSimulator | None = None
        self.stack: LocalStack | None = None
        self.api: LocalHttpApi | None = None
        self.consumer: SqsEventSource | None = None
        self.dispatch: LambdaFunction | None = None
        self.functions: dict[str, LambdaFunction] = {}
        """Every function of the template by logical id, as the API and the consumer invoke them."""
        self._saved_environment: dict[str, str | None] = {}
        self._invocation_lock = threading.Lock()
        self._observer: tuple[DynamoDBClient, SQSClient] | None = None

    @property
    def api_url(self) -> str:
        assert self.api is not None, "start() first"
        return self.api.url

    @property
    def fynd_base_url(self) -> str:
        if self.config.fynd_base_url:
            return self.config.fynd_base_url
        assert self.simulator is not None, "start() first"
        return self.simulator.url

    def start(self) -> "LocalPipeline":
        self.moto.start()
        guard_dynamodb(self.moto)
        # moto keeps its state per process; a second pipeline in one process starts clean.
        urllib.request.urlopen(urllib.request.Request(f"{self.moto.url}/moto-api/reset", method="POST"))  # noqa: S310
        if not self.config.fynd_base_url:
            self.simulator = FyndSimulator(
                username=self.config.fynd_username, password=self.config.fynd_password
            ).start()
        self.stack = build_stack(
            self.moto.url,
            template_path=self.config.template_path,
            parameters={"FyndBaseUrl": self.fynd_base_url, **self.config.parameters},
            secret_values={
                "WebhookSigningSecret": json.dumps({"local": self.config.webhook_secret}),
                "FyndCredentialsSecret": json.dumps(
                    {"username": self.config.fynd_username, "password": self.config.fynd_password}
                ),
            },
        )
        self._apply_environment(self.stack)
        self.functions = {name: self._function(self.stack, name) for name in self.stack.function_names}
        ingest, dispatch = self.functions[INGEST], self.functions[DISPATCH]
        if self.config.serve_api:
            self.api = LocalHttpApi(ingest, self.stack.function_routes(INGEST), port=self.config.api_port)
            self.api.start()
        self.dispatch = dispatch
        if self.config.consume:
            self.start_consumer()
        return self

    def start_consumer(self) -> SqsEventSource:
        """Start polling the invoice queue, as the template's event source mapping does."""
        assert self.stack is not None, "start() first"
        assert self.dispatch is not None, "start() first"
        self.consumer = SqsEventSource(
            self.sqs(),
            self.stack.event_source(DISPATCH),
            self.dispatch,
            poll_wait_seconds=self.config.poll_wait_seconds,
        )
        self.consumer.start()
        return self.consumer

    def tally(self) -> Tally:
        """Where the invoices are now, read from the ledger, the queues and the consumer."""
        assert self.stack is not None, "start() first"
        if self._observer is None:  # clients are slow to build; a status line reads every second
            self._observer = (self.dynamodb(), self.sqs())
        consumer = self.consumer.tally() if self.consumer is not None else None
        return read_tally(self.stack, *self._observer, consumer)

    def stop(self) -> None:
        """Stop in reverse order: no new requests, finish batches in flight, then AWS and Fynd."""
        for part in (self.api, self.consumer, self.simulator, self.moto):
            if part is not None:
                part.stop()
        self.api = self.consumer = self.simulator = None
        self._observer = None
        for name, value in self._saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environment.clear()

    def __enter__(self) -> "LocalPipeline":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def sqs(self) -> "SQSClient":
        return _session().client("sqs", endpoint_url=self.moto.url)

    def dynamodb(self) -> "DynamoDBClient":
        return _session().client("dynamodb", endpoint_url=self.moto.url)

    def secretsmanager(self) -> "SecretsManagerClient":
        return _session().client("secretsmanager", endpoint_url=self.moto.url)

    def _apply_environment(self, stack: LocalStack) -> None:
        environment = {
            **{
                name: value
                for fn in stack.function_names
                for name, value in stack.function_environment(fn).items()
            },
            **LOCAL_CREDENTIALS,
            "AWS_ENDPOINT_URL": self.moto.url,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here
            **self.config.environment,
        }
        for name, value in environment.items():
            self._saved_environment.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        _forget_cached_clients()

    def _function(self, stack: LocalStack, logical_id: str) -> LambdaFunction:
        return LambdaFunction(
            name=logical_id,
            handler=traced(logical_id, load_handler(stack.function_handler(logical_id))),
            timeout_seconds=stack.function_timeout(logical_id),
            memory_limit_in_mb=int(stack.template["Globals"]["Function"].get("MemorySize", 128)),
            region=REGION,
            # The functions share this process's Powertools metric set: run them one at a time.
            shared_lock=self._invocation_lock,
        )


def _session() -> boto3.Session:
    return boto3.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name=REGION)  # noqa: S106


def _forget_cached_clients() -> None:
    from relay import wiring

    wiring.forget()
