"""The whole relay on 127.0.0.1: local AWS, the Fynd simulator, the HTTP API and the queue consumer.

`make run`, the integration tests and the benchmarks all start the relay through this one
class, so what the tests prove is what a user runs. The functions run as template.yaml
describes them (handler, timeout, environment, event source settings, schedules).

With `isolated` (what `make run` and `make chaos` use), each invocation runs in an
execution environment of its own (relay_local.environments): a worker process with the
function's own variables and module state, several at once, killed at its timeout. Without
it, handlers run in threads of this process, one invocation at a time, sharing its
environment and modules: the integration tests use that to reach into the functions'
modules (`relay.wiring`) and to read what they logged.

`faults` (relay_local.faults) makes the run meet what AWS does: redeliveries, stale receipt
handles, partial batch sends, DynamoDB throttling and transaction conflicts, a dispatcher
killed after Fynd answered. All are off by default.
"""

import json
import os
import socket
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from fynd_simulator import DEFAULT_PASSWORD, DEFAULT_USERNAME, FyndSimulator
from relay_local.dynamodb_guard import guard_dynamodb
from relay_local.environment import WritebackTargets
from relay_local.environments import FunctionSpec, IsolatedFunction
from relay_local.event_source import SqsEventSource
from relay_local.faults import OBSERVER_AGENT, AwsFaultLayer, Chance, LocalFaults
from relay_local.http_api import LocalHttpApi
from relay_local.identity import REGION
from relay_local.invocation import traced
from relay_local.lambda_context import Function, LambdaFunction, load_handler
from relay_local.schedules import LocalSchedules
from relay_local.sqs_guard import guard_sqs
from relay_local.stack import TEMPLATE, LocalStack, MotoServer, build_stack
from relay_local.stream_source import DynamoDbStreamSource
from relay_local.tally import Tally, read_tally
from relay_local.worker import FAULT_SEED, KILL_AFTER_FYND

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

INGEST = "IngestFunction"
DISPATCH = "DispatchFunction"
WRITEBACK_FEED = "WritebackFeedFunction"
WRITEBACK = "WritebackFunction"
RECOVER = "RecoverFunction"
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


@dataclass(frozen=True)
class PipelineConfig:
    webhook_secret: str
    """The whsec_... secret the local API verifies."""
    frappe_webhook_secret: str | None = None
    """When set, the `frappe` preset's secret (FRAPPE_WEBHOOK_SECRET): an entry named "frappe"."""
    api_port: int = 0
    aws_port: int = 0
    """The local AWS endpoint's port (0: any free one)."""
    simulator_port: int = 0
    """The Fynd simulator's port (0: any free one)."""
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
    isolated: bool = False
    """Each invocation in an execution environment (worker process) of its own, as Lambda runs it."""
    faults: LocalFaults = field(default_factory=LocalFaults)
    """Faults to inject (relay_local.faults); none by default."""
    visibility_timeout_seconds: int | None = None
    """Overrides the queue's VisibilityTimeout, so a chaos run sees lost batches return in seconds."""
    schedule_period_seconds: float | None = None
    """Run `Schedule` functions this often instead of at the template's rate (None: the template's)."""
    writeback: WritebackTargets = field(default_factory=WritebackTargets)
    """ERPNEXT_URL and RELAY_CALLBACK_URL with their secrets: with either, the ledger's stream
    feeds the write-back functions; with neither, they do not run."""


class LocalPipeline:
    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.moto = MotoServer(port=config.aws_port)
        self.simulator: FyndSimulator | None = None
        self.stack: LocalStack | None = None
        self.api: LocalHttpApi | None = None
        self.consumer: SqsEventSource | None = None
        self.writeback_consumer: SqsEventSource | None = None
        self.writeback_feed: DynamoDbStreamSource | None = None
        self.dispatch: Function | None = None
        self.functions: dict[str, Function] = {}
        """Every function of the template by logical id, as the API and the consumer invoke them."""
        self.schedules: LocalSchedules | None = None
        self.fault_layer: AwsFaultLayer | None = None
        self._chance = Chance(config.faults.seed)
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
        guard_sqs(self.moto)
        # moto keeps its state per process; a second pipeline in one process starts clean.
        self.moto.reset()
        if not self.config.fynd_base_url:
            self.simulator = FyndSimulator(
                port=self.config.simulator_port,
                username=self.config.fynd_username,
                password=self.config.fynd_password,
            ).start()
        writeback = self.config.writeback
        # Recovery reads the rows of the API's own Request URL: its port is chosen before the
        # functions' environment is written.
        api_port = self.config.api_port
        if writeback.erpnext_url and self.config.serve_api and not api_port:
            api_port = _free_port()
        recovery = (
            {"ErpNextWebhookUrl": f"http://127.0.0.1:{api_port}{WEBHOOK_PATH}"}
            if writeback.erpnext_url and self.config.serve_api
            else {}
        )
        self.stack = build_stack(
            self.moto.url,
            template_path=self.config.template_path,
            parameters={
                "FyndBaseUrl": self.fynd_base_url,
                "ErpNextUrl": writeback.erpnext_url or "",
                "CallbackUrl": writeback.callback_url or "",
                **recovery,
                **self.config.parameters,
            },
            secret_values={
                "WebhookSigningSecret": json.dumps(self._signing_secret_entries()),
                "FyndCredentialsSecret": json.dumps(
                    {"username": self.config.fynd_username, "password": self.config.fynd_password}
                ),
                "ErpNextCredentialsSecret": json.dumps(
                    {"api_key": writeback.erpnext_api_key, "api_secret": writeback.erpnext_api_secret}
                ),
                "CallbackSigningSecret": json.dumps({"secret": writeback.callback_secret}),
            },
            streams=writeback.any,
        )
        if self.config.visibility_timeout_seconds is not None:
            self.sqs().set_queue_attributes(
                QueueUrl=self.stack.queue_url,
                Attributes={"VisibilityTimeout": str(self.config.visibility_timeout_seconds)},
            )
        if self.config.faults.at_endpoint:
            self.fault_layer = self.moto.wrap(
                lambda app: AwsFaultLayer(app, self.config.faults, self._chance)
            )
        if self.config.isolated:
            self.functions = {
                logical_id: IsolatedFunction(self._spec(self.stack, logical_id))
                for logical_id in self._function_ids(self.stack)
            }
            self._start_isolated()
        else:
            self._apply_environment(self.stack)
            self.functions = {
                logical_id: self._function(self.stack, logical_id)
                for logical_id in self._function_ids(self.stack)
            }
        if self.config.serve_api:
            ingest = self.functions[INGEST]
            self.api = LocalHttpApi(ingest, self.stack.function_routes(INGEST), port=api_port)
            self.api.start()
        self.dispatch = self.functions[DISPATCH]
        if self.config.consume:
            self.start_consumer()
            if self.config.writeback.any:
                self.start_writeback()
        self.schedules = LocalSchedules(
            [
                (self.functions[logical_id], schedule)
                for logical_id in self.functions
                for schedule in self.stack.function_schedules(logical_id)
            ],
            period_override=self.config.schedule_period_seconds,
        )
        if self.config.consume:
            self.schedules.start()
        return self

    def _start_isolated(self) -> None:
        """One warm environment per function, started in parallel; an import error fails start()."""
        functions = [f for f in self.functions.values() if isinstance(f, IsolatedFunction)]
        with ThreadPoolExecutor(max(1, len(functions)), thread_name_prefix="cold-start") as starting:
            for started in [starting.submit(function.start) for function in functions]:
                started.result()

    def start_consumer(self) -> SqsEventSource:
        """Start polling the invoice queue, as the template's event source mapping does."""
        assert self.stack is not None, "start() first"
        assert self.dispatch is not None, "start() first"
        self.consumer = SqsEventSource(
            self.sqs(),
            self.stack.event_source(DISPATCH),
            self.dispatch,
            poll_wait_seconds=self.config.poll_wait_seconds,
            redeliver=self.config.faults.redeliver,
            chance=self._chance,
        )
        self.consumer.start()
        return self.consumer

    def _function_ids(self, stack: LocalStack) -> list[str]:
        """The template's functions, without the write-back's when nothing is written back and
        without recovery when there is no ERPNext site to read."""
        skipped = () if self.config.writeback.any else (WRITEBACK_FEED, WRITEBACK)
        if not self.config.writeback.erpnext_url:
            skipped = (*skipped, RECOVER)
        return [logical_id for logical_id in stack.function_ids() if logical_id not in skipped]

    def start_writeback(self) -> None:
        """Feed the ledger's stream to WritebackFeedFunction and the write-back queue to
        WritebackFunction, as the template's two event source mappings do."""
        assert self.stack is not None, "start() first"
        self.writeback_feed = DynamoDbStreamSource(
            _session().client("dynamodbstreams", endpoint_url=self.moto.url, config=_config(True)),
            self.stack.stream_source(WRITEBACK_FEED),
            self.functions[WRITEBACK_FEED],
        )
        self.writeback_consumer = SqsEventSource(
            self.sqs(),
            self.stack.event_source(WRITEBACK),
            self.functions[WRITEBACK],
            poll_wait_seconds=self.config.poll_wait_seconds,
        )
        self.writeback_feed.start()
        self.writeback_consumer.start()

    def tally(self) -> Tally:
        """Where the invoices are now, read from the ledger, the queues and the consumer."""
        assert self.stack is not None, "start() first"
        if self._observer is None:  # clients are slow to build; a status line reads every second
            self._observer = (self.dynamodb(observer=True), self.sqs(observer=True))
        consumer = self.consumer.tally() if self.consumer is not None else None
        return read_tally(self.stack, *self._observer, consumer)

    def stop(self) -> None:
        """Stop in reverse order: no new requests, finish batches in flight, end the execution
        environments, then AWS and Fynd."""
        for part in (self.api, self.consumer, self.schedules, self.writeback_feed, self.writeback_consumer):
            if part is not None:
                part.stop()
        for function in self.functions.values():
            if isinstance(function, IsolatedFunction):
                function.stop()
        for service in (self.simulator, self.moto):
            if service is not None:
                service.stop()
        self.api = self.consumer = self.simulator = self.schedules = None
        self.writeback_feed = self.writeback_consumer = None
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

    def sqs(self, *, observer: bool = False) -> "SQSClient":
        """A client of the local SQS; an `observer`'s requests are never faulted."""
        return _session().client("sqs", endpoint_url=self.moto.url, config=_config(observer))

    def dynamodb(self, *, observer: bool = False) -> "DynamoDBClient":
        """A client of the local DynamoDB; an `observer`'s requests are never faulted."""
        return _session().client("dynamodb", endpoint_url=self.moto.url, config=_config(observer))

    def secretsmanager(self) -> "SecretsManagerClient":
        return _session().client("secretsmanager", endpoint_url=self.moto.url)

    def _signing_secret_entries(self) -> dict[str, str]:
        entries = {"local": self.config.webhook_secret}
        if self.config.frappe_webhook_secret:
            entries["frappe"] = self.config.frappe_webhook_secret
        return entries

    def _local_environment(self) -> dict[str, str]:
        """What every function gets locally on top of its template variables."""
        return {
            **LOCAL_CREDENTIALS,
            "AWS_ENDPOINT_URL": self.moto.url,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here
        }

    def _spec(self, stack: LocalStack, logical_id: str) -> FunctionSpec:
        faults = self.config.faults
        inherited = {
            name: value
            for name, value in os.environ.items()
            if name in ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")
        }
        fault_environment = (
            {KILL_AFTER_FYND: str(faults.kill_after_fynd), FAULT_SEED: str(faults.seed)}
            if faults.kill_after_fynd
            else {}
        )
        return FunctionSpec(
            name=logical_id,
            handler=stack.function_handler(logical_id),
            timeout_seconds=stack.function_timeout(logical_id),
            environment={
                **inherited,
                **stack.function_environment(logical_id),
                "AWS_LAMBDA_FUNCTION_NAME": logical_id,
                "AWS_LAMBDA_FUNCTION_TIMEOUT": str(stack.function_timeout(logical_id)),
                **self._local_environment(),
                **self.config.environment,
                **fault_environment,
            },
            memory_limit_in_mb=int(stack.template["Globals"]["Function"].get("MemorySize", 128)),
            region=REGION,
        )

    def _apply_environment(self, stack: LocalStack) -> None:
        environment = {
            **{
                name: value
                for logical_id in stack.function_ids()
                for name, value in stack.function_environment(logical_id).items()
            },
            **self._local_environment(),
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


def _config(observer: bool) -> Config | None:
    return Config(user_agent_extra=OBSERVER_AGENT) if observer else None


WEBHOOK_PATH = "/v1/invoices"


def _free_port() -> int:
    """A port free now on 127.0.0.1, for a server bound a moment later in this process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _session() -> boto3.Session:
    return boto3.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name=REGION)  # noqa: S106


def _forget_cached_clients() -> None:
    from relay import wiring

    wiring.forget()
