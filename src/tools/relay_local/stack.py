"""The deployed stack's queues, table and secrets, rebuilt on a local AWS endpoint.

Everything here is read from template.yaml itself: queue attributes, the redrive policy,
the table's keys, TTL and backups, the functions' environment and event-source settings.
Change the template and the local run and the integration tests follow, so they cannot
drift from what `sam deploy` creates.
"""

import json
import logging
import re
import secrets
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import boto3
import yaml
from botocore.config import Config
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from relay_local.identity import ACCOUNT_ID, REGION
from relay_local.serving import LocalWsgiServer

TEMPLATE = Path(__file__).resolve().parents[3] / "template.yaml"


class _TemplateLoader(yaml.SafeLoader):
    """YAML loader that turns CloudFormation short tags (!Ref, !GetAtt, !Sub) into their long form."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(cast(yaml.MappingNode, node), deep=True)
    return {name: value}


_TemplateLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template as plain data, intrinsic functions in their long form."""
    return cast(dict[str, Any], yaml.load(path.read_text(), Loader=_TemplateLoader))  # noqa: S506


def template_conditions(template: Mapping[str, Any], parameters: Mapping[str, str]) -> dict[str, bool]:
    """The template's Conditions under `parameters` (Fn::Equals, Fn::Not, Fn::And, Fn::Or of Refs
    and literals: what this template uses)."""

    def value(node: Any) -> Any:
        if isinstance(node, dict) and "Ref" in node:
            return parameters[node["Ref"]]
        return node

    def holds(node: Any) -> bool:
        if isinstance(node, dict) and "Condition" in node:
            return holds(template["Conditions"][node["Condition"]])
        ((name, argument),) = node.items()
        match name:
            case "Fn::Equals":
                return str(value(argument[0])) == str(value(argument[1]))
            case "Fn::Not":
                return not holds(argument[0])
            case "Fn::And":
                return all(holds(item) for item in argument)
            case "Fn::Or":
                return any(holds(item) for item in argument)
        raise ValueError(f"condition function {name} is not supported locally")

    return {name: holds(node) for name, node in template.get("Conditions", {}).items()}


_NO_VALUE = object()


def with_conditions(value: Any, conditions: Mapping[str, bool]) -> Any:
    """`value` with every Fn::If chosen by `conditions` and every AWS::NoValue left out."""
    if isinstance(value, dict) and len(value) == 1:
        ((name, argument),) = value.items()
        if name == "Fn::If":
            condition, when_true, when_false = argument
            return with_conditions(when_true if conditions[condition] else when_false, conditions)
        if name == "Ref" and argument == "AWS::NoValue":
            return _NO_VALUE
    if isinstance(value, dict):
        pairs = ((key, with_conditions(item, conditions)) for key, item in value.items())
        return {key: item for key, item in pairs if item is not _NO_VALUE}
    if isinstance(value, list):
        items = (with_conditions(item, conditions) for item in value)
        return [item for item in items if item is not _NO_VALUE]
    return value


def table_properties(
    logical_id: str = "InvoiceLedgerTable",
    parameters: Mapping[str, str] | None = None,
    template: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A table's Properties as CloudFormation would create it under the parameters' defaults
    overlaid by `parameters` (its conditional indexes chosen)."""
    template = template if template is not None else load_template()
    params = {
        name: str(spec["Default"]) for name, spec in template["Parameters"].items() if "Default" in spec
    }
    params.update(parameters or {})
    props = template["Resources"][logical_id]["Properties"]
    return cast(dict[str, Any], with_conditions(props, template_conditions(template, params)))


def local_indexes(props: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A table's global secondary indexes as the local endpoint creates them: a pre-warming
    (WarmThroughput), which moto does not model, is left out."""
    return [
        {name: value for name, value in index.items() if name != "WarmThroughput"}
        for index in props["GlobalSecondaryIndexes"]
    ]


@dataclass(frozen=True)
class EventSourceConfig:
    """An SQS event source mapping's settings, as the template declares them."""

    queue_url: str
    batch_size: int
    batching_window_seconds: int
    max_concurrency: int
    function_response_types: tuple[str, ...]


@dataclass(frozen=True)
class StreamSourceConfig:
    """A DynamoDB stream event source mapping's settings, as the template declares them."""

    stream_arn: str
    batch_size: int
    starting_position: str
    filters: tuple[dict[str, Any], ...]
    """The FilterCriteria patterns, parsed: a record is delivered when it matches any."""
    function_response_types: tuple[str, ...]


@dataclass(frozen=True)
class Schedule:
    """A function's Schedule event: EventBridge invokes it every `period_seconds`."""

    name: str
    expression: str
    period_seconds: float | None
    """None for a cron() expression, which the local run does not follow."""
    input: str | None = None


_RATE = re.compile(r"rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float | None:
    """Seconds between runs of `rate(5 minutes)`; None for anything else (cron)."""
    found = _RATE.fullmatch(expression.strip())
    if found is None:
        return None
    return int(found.group(1)) * _UNIT_SECONDS[found.group(2).rstrip("s")]


class MotoServer:
    """moto in server mode on 127.0.0.1, so every AWS call in a test crosses real HTTP.

    Served by our own threaded werkzeug server over moto's public WSGI application (what
    `moto_server` itself runs), so middleware can be put in front of it without reaching into
    moto's private attributes.
    """

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._app: Callable[..., Any] = DomainDispatcherApplication(create_backend_app)
        self._server: LocalWsgiServer | None = None
        self.url = ""

    def start(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per AWS call is noise
        self._server = LocalWsgiServer(self._serve, name="moto", port=self._port)
        self._server.start()
        self.url = self._server.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        self._server = None

    def reset(self) -> None:
        """Forget every resource: moto keeps its state per process, so a server started after
        another in the same process would otherwise see the first one's."""
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"))  # noqa: S310

    def client(self, service: str, config: Config | None = None) -> Any:
        """A boto3 client for `service` on this endpoint, in the local account and region."""
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106
            config=config,
        )

    def wrap[T](self, middleware: Callable[[Any], T]) -> T:
        """Put WSGI `middleware(app)` in front of the app served; returns it."""
        wrapped = middleware(self._app)
        self._app = cast(Callable[..., Any], wrapped)
        return wrapped

    def _serve(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self._app(environ, start_response)

    def __enter__(self) -> "MotoServer":
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


@dataclass(frozen=True)
class LocalStack:
    """Where the template's resources live on the local endpoint, and how its functions are set up."""

    endpoint_url: str
    region: str
    template: dict[str, Any]
    parameters: Mapping[str, str]
    references: Mapping[str, str]
    """What `Ref` gives: parameter values, queue URLs, table names, secret ARNs."""
    attributes: Mapping[str, str]
    """What `Fn::GetAtt` gives, keyed "LogicalId.Attribute"."""

    @property
    def queue_url(self) -> str:
        return self.references["InvoiceQueue"]

    @property
    def dead_letter_queue_url(self) -> str:
        return self.references["InvoiceDeadLetterQueue"]

    @property
    def table_name(self) -> str:
        return self.references["InvoiceLedgerTable"]

    @property
    def secret_arns(self) -> dict[str, str]:
        return {
            logical_id: self.references[logical_id]
            for logical_id, resource in self.template["Resources"].items()
            if resource["Type"] == "AWS::SecretsManager::Secret"
        }

    def resolve(self, value: Any) -> Any:
        """A template value with Ref and Fn::GetAtt replaced by the local names, URLs and ARNs."""
        return _resolve(value, self.references, self.attributes)

    def _function(self, logical_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.template["Resources"][logical_id]["Properties"])

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """Globals' variables overlaid by the function's own, every value a string as Lambda gives it."""
        global_vars = self.template["Globals"]["Function"]["Environment"]["Variables"]
        own_vars = self._function(logical_id).get("Environment", {}).get("Variables", {})
        merged = with_conditions(
            {**global_vars, **own_vars}, template_conditions(self.template, self.parameters)
        )
        return {name: _as_env(self.resolve(value)) for name, value in merged.items()}

    def function_ids(self) -> list[str]:
        """Every AWS::Serverless::Function of the template, by logical id."""
        return [
            logical_id
            for logical_id, resource in self.template["Resources"].items()
            if resource["Type"] == "AWS::Serverless::Function"
        ]

    def function_schedules(self, logical_id: str) -> list[Schedule]:
        """The function's enabled `Schedule` / `ScheduleV2` events with a rate() expression."""
        found = []
        for name, event in self._function(logical_id).get("Events", {}).items():
            if event["Type"] not in ("Schedule", "ScheduleV2"):
                continue
            props = self.resolve(event.get("Properties", {}))
            if props.get("Enabled") is False or props.get("State") == "DISABLED":
                continue
            expression = str(props.get("Schedule") or props.get("ScheduleExpression") or "")
            found.append(Schedule(name, expression, rate_seconds(expression), props.get("Input")))
        return found

    def function_handler(self, logical_id: str) -> str:
        return str(self._function(logical_id)["Handler"])

    def function_timeout(self, logical_id: str) -> int:
        return int(self._function(logical_id).get("Timeout", 3))

    def function_routes(self, logical_id: str) -> list[tuple[str, str]]:
        events = self._function(logical_id).get("Events", {}).values()
        return [
            (event["Properties"]["Method"].upper(), event["Properties"]["Path"])
            for event in events
            if event["Type"] == "HttpApi"
        ]

    def event_source(self, logical_id: str) -> EventSourceConfig:
        events = self._function(logical_id)["Events"].values()
        (props,) = [self.resolve(event["Properties"]) for event in events if event["Type"] == "SQS"]
        queue_url = next(
            url
            for name, url in self.references.items()
            if self.attributes.get(f"{name}.Arn") == props["Queue"]
        )
        return EventSourceConfig(
            queue_url=queue_url,
            batch_size=int(props.get("BatchSize", 10)),
            batching_window_seconds=int(props.get("MaximumBatchingWindowInSeconds", 0)),
            max_concurrency=int(props.get("ScalingConfig", {}).get("MaximumConcurrency", 1000)),
            function_response_types=tuple(props.get("FunctionResponseTypes", ())),
        )

    def stream_source(self, logical_id: str) -> StreamSourceConfig:
        """The function's one DynamoDB stream event, as Lambda's mapping would read it."""
        events = self._function(logical_id)["Events"].values()
        (props,) = [self.resolve(event["Properties"]) for event in events if event["Type"] == "DynamoDB"]
        filters = props.get("FilterCriteria", {}).get("Filters", [])
        return StreamSourceConfig(
            stream_arn=str(props["Stream"]),
            batch_size=int(props.get("BatchSize", 100)),
            starting_position=str(props.get("StartingPosition", "LATEST")),
            filters=tuple(json.loads(item["Pattern"]) for item in filters),
            function_response_types=tuple(props.get("FunctionResponseTypes", ())),
        )


_PSEUDO = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT_ID, "AWS::URLSuffix": "amazonaws.com"}


def _resolve(value: Any, references: Mapping[str, str], attributes: Mapping[str, str]) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        ((name, argument),) = value.items()
        if name == "Ref":
            return references[argument]
        if name == "Fn::GetAtt":
            return attributes[".".join(argument)]
        if name == "Fn::Sub" and isinstance(argument, str):
            # A name with no local value (the HTTP API's id) is left as written.
            known = {**_PSEUDO, **references}
            return re.sub(r"\$\{([\w:]+)\}", lambda found: known.get(found[1], found[0]), argument)
    if isinstance(value, dict):
        return {key: _resolve(item, references, attributes) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, references, attributes) for item in value]
    return value


def _as_env(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def build_stack(
    endpoint_url: str,
    *,
    template_path: Path = TEMPLATE,
    parameters: Mapping[str, str] | None = None,
    secret_values: Mapping[str, str] | None = None,
    streams: bool = True,
) -> LocalStack:
    """Create the template's queues, table and secrets on `endpoint_url` and describe them.

    `parameters` override the template's parameter defaults; `secret_values` give a secret's
    string instead of the template's (e.g. the local webhook secret or the simulator's credentials).
    `streams` False leaves a table's stream off (moto keeps every stream record in memory: a
    run that does not read it, with no write-back, need not hold them).
    """
    template = load_template(template_path)
    params = {
        name: str(spec["Default"]) for name, spec in template["Parameters"].items() if "Default" in spec
    }
    params.update(parameters or {})
    missing = sorted(set(template["Parameters"]) - set(params))
    if missing:
        raise ValueError(f"template parameters without a value: {', '.join(missing)}")
    session = boto3.Session(
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106
        region_name=REGION,
    )
    references: dict[str, str] = dict(params)
    attributes: dict[str, str] = {}

    def create(kind: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            (logical_id, resource.get("Properties", {}))
            for logical_id, resource in template["Resources"].items()
            if resource["Type"] == kind
        ]

    sqs = session.client("sqs", endpoint_url=endpoint_url)
    # Dead-letter queues first: a redrive policy names its target's ARN.
    queues = sorted(create("AWS::SQS::Queue"), key=lambda item: "RedrivePolicy" in item[1])
    for logical_id, props in queues:
        # CloudFormation names a FIFO queue with the .fifo suffix SQS demands.
        name = f"{logical_id}.fifo" if props.get("FifoQueue") else logical_id
        url = sqs.create_queue(
            QueueName=name, Attributes=_queue_attributes(_resolve(props, references, attributes))
        )["QueueUrl"]
        references[logical_id] = url
        attributes[f"{logical_id}.Arn"] = f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}"

    dynamodb = session.client("dynamodb", endpoint_url=endpoint_url)
    for logical_id, _ in create("AWS::DynamoDB::Table"):
        props = table_properties(logical_id, params, template)
        # The sparse index the reconciler and `relay list` query (on demand: no throughput of its own)
        indexes: dict[str, Any] = (
            {"GlobalSecondaryIndexes": local_indexes(props)} if "GlobalSecondaryIndexes" in props else {}
        )
        table = dynamodb.create_table(
            TableName=logical_id,
            AttributeDefinitions=props["AttributeDefinitions"],
            KeySchema=props["KeySchema"],
            BillingMode=props["BillingMode"],
            SSESpecification={"Enabled": props.get("SSESpecification", {}).get("SSEEnabled", False)},
            **indexes,
            **_stream(props, streams),
        )["TableDescription"]
        attributes[f"{logical_id}.StreamArn"] = str(table.get("LatestStreamArn", ""))
        if ttl := props.get("TimeToLiveSpecification"):
            dynamodb.update_time_to_live(TableName=logical_id, TimeToLiveSpecification=ttl)
        if pitr := props.get("PointInTimeRecoverySpecification"):
            dynamodb.update_continuous_backups(TableName=logical_id, PointInTimeRecoverySpecification=pitr)
        references[logical_id] = logical_id
        attributes[f"{logical_id}.Arn"] = table["TableArn"]

    secretsmanager = session.client("secretsmanager", endpoint_url=endpoint_url)
    for logical_id, props in create("AWS::SecretsManager::Secret"):
        value = (secret_values or {}).get(logical_id) or _secret_string(props)
        arn = secretsmanager.create_secret(Name=logical_id, SecretString=value)["ARN"]
        references[logical_id] = arn
    return LocalStack(endpoint_url, REGION, template, params, references, attributes)


def _stream(props: Mapping[str, Any], enabled: bool) -> dict[str, Any]:
    """The table's StreamSpecification as CreateTable takes it, or nothing."""
    if not enabled or "StreamSpecification" not in props:
        return {}
    return {"StreamSpecification": {"StreamEnabled": True, **props["StreamSpecification"]}}


def _queue_attributes(props: Mapping[str, Any]) -> dict[Any, str]:
    attributes: dict[Any, str] = {
        name: _as_env(props[name])
        for name in (
            "VisibilityTimeout",
            "MessageRetentionPeriod",
            "ReceiveMessageWaitTimeSeconds",
            "DelaySeconds",
            "MaximumMessageSize",
            "FifoQueue",
            "ContentBasedDeduplication",
        )
        if name in props
    }
    if "RedrivePolicy" in props:
        policy = props["RedrivePolicy"]
        attributes["RedrivePolicy"] = json.dumps(
            {
                "deadLetterTargetArn": policy["deadLetterTargetArn"],
                "maxReceiveCount": int(policy["maxReceiveCount"]),
            }
        )
    return attributes


def _secret_string(props: Mapping[str, Any]) -> str:
    """The secret the template would create: its SecretString, or what GenerateSecretString makes."""
    if "SecretString" in props:
        return str(props["SecretString"])
    spec = props["GenerateSecretString"]
    generated = secrets.token_hex(int(spec.get("PasswordLength", 32)) // 2)
    document = json.loads(spec["SecretStringTemplate"])
    document[spec["GenerateStringKey"]] = generated
    return json.dumps(document)
