"""Which relay the `relay` command talks to: a `make run` on this machine, or a deployed stack.

A deployed stack is found by its name, through its CloudFormation outputs (ApiUrl,
InvoiceLedgerTableName, InvoiceQueueUrl, InvoiceDeadLetterQueueUrl, WebhookSigningSecretArn),
so an operator needs nothing but the stack name and AWS credentials. The signing secret is
read from Secrets Manager (its `current` value, else the first), never printed.

A local run (`make run`) has no CloudFormation: its resources carry their logical ids as
names on the moto endpoint the banner prints (`AWS endpoint`), and its secret is the one the
banner prints (WEBHOOK_SECRET).
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from relay.adapters.ledger import InvoiceLedger
from relay.adapters.work_index import DEFAULT_WORK_SHARDS
from relay_local.identity import REGION

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

DEFAULT_API_URL = "http://127.0.0.1:3000"
_LOCAL_QUEUE, _LOCAL_DLQ, _LOCAL_TABLE = "InvoiceQueue", "InvoiceDeadLetterQueue", "InvoiceLedgerTable"
_AWS_CONFIG = Config(connect_timeout=3, read_timeout=20, retries={"mode": "standard", "max_attempts": 5})


class TargetError(Exception):
    """The relay cannot be found or reached; the message says what to set or start."""


class TargetNotGiven(TargetError):
    """The command line (or the environment behind it) lacks what the command needs: the
    signing secret, the AWS endpoint, the region. Bad usage (exit 2), not an unreachable relay."""


@dataclass(frozen=True)
class TargetOptions:
    """What the user said (options, or the environment variables behind them)."""

    stack: str | None = None
    region: str | None = None
    api_url: str | None = None
    endpoint_url: str | None = None
    secret: str | None = None


@dataclass(frozen=True)
class Target:
    api_url: str
    table_name: str
    queue_url: str
    dead_letter_queue_url: str
    region: str
    endpoint_url: str | None
    secret: str | None
    description: str
    work_index_shards: int = DEFAULT_WORK_SHARDS
    """The stack's WorkIndexShards (its output of that name); the template's default locally."""

    @cached_property
    def _session(self) -> boto3.Session:
        if self.endpoint_url:  # moto accepts any credentials; never pick up the user's real ones
            return boto3.Session(
                aws_access_key_id="local",
                aws_secret_access_key="local",  # noqa: S106
                region_name=self.region,
            )
        return boto3.Session(region_name=self.region)

    def dynamodb(self) -> "DynamoDBClient":
        return self._session.client("dynamodb", endpoint_url=self.endpoint_url, config=_AWS_CONFIG)

    def sqs(self) -> "SQSClient":
        return self._session.client("sqs", endpoint_url=self.endpoint_url, config=_AWS_CONFIG)

    def ledger(self) -> InvoiceLedger:
        return InvoiceLedger(self.table_name, self.dynamodb(), shards=self.work_index_shards)

    def signing_secret(self) -> str:
        if not self.secret:
            raise TargetNotGiven(
                "no signing secret: set WEBHOOK_SECRET (the whsec_... secret `make run` printed) or --secret"
            )
        return self.secret


def resolve(options: TargetOptions) -> Target:
    if options.stack:
        return _deployed(options)
    return _local(options)


def _local(options: TargetOptions) -> Target:
    api_url = (options.api_url or DEFAULT_API_URL).rstrip("/")
    endpoint = options.endpoint_url
    region = options.region or REGION
    if not endpoint:
        # Only the HTTP commands (send, status, smoke) can work without the AWS endpoint.
        return Target(api_url, _LOCAL_TABLE, "", "", region, None, options.secret, f"local API {api_url}")
    target = Target(api_url, _LOCAL_TABLE, "", "", region, endpoint, options.secret, "")
    sqs = target.sqs()
    try:
        queue_url = sqs.get_queue_url(QueueName=_LOCAL_QUEUE)["QueueUrl"]
        dlq_url = sqs.get_queue_url(QueueName=_LOCAL_DLQ)["QueueUrl"]
    except (BotoCoreError, ClientError) as error:
        raise TargetError(
            f"no local relay at AWS endpoint {endpoint} ({type(error).__name__}): start one with `make run`"
            " and pass the `AWS endpoint` its banner prints as --endpoint-url or RELAY_AWS_ENDPOINT"
        ) from None
    return Target(
        api_url,
        _LOCAL_TABLE,
        queue_url,
        dlq_url,
        region,
        endpoint,
        options.secret,
        f"local relay {api_url} (AWS endpoint {endpoint})",
    )


def _deployed(options: TargetOptions) -> Target:
    assert options.stack is not None
    session = boto3.Session(region_name=options.region) if options.region else boto3.Session()
    region = session.region_name
    if not region:
        raise TargetNotGiven("no AWS region: pass --region or set AWS_REGION")
    try:
        cloudformation = session.client("cloudformation", endpoint_url=options.endpoint_url)
        stacks = cloudformation.describe_stacks(StackName=options.stack)["Stacks"]
    except ClientError as error:
        raise TargetError(f"stack {options.stack!r} not found in {region}: {_aws_reason(error)}") from None
    except BotoCoreError as error:
        raise TargetError(f"cannot ask CloudFormation in {region}: {error}") from None
    outputs = {item["OutputKey"]: item["OutputValue"] for item in stacks[0].get("Outputs", [])}
    wanted = ("ApiUrl", "InvoiceLedgerTableName", "InvoiceQueueUrl", "InvoiceDeadLetterQueueUrl")
    missing = [name for name in wanted if name not in outputs]
    if missing:
        raise TargetError(f"stack {options.stack!r} has no output(s) {', '.join(missing)}: is it the relay?")
    secret = options.secret or _stack_secret(session, options.endpoint_url, outputs)
    return Target(
        outputs["ApiUrl"].rstrip("/"),
        outputs["InvoiceLedgerTableName"],
        outputs["InvoiceQueueUrl"],
        outputs["InvoiceDeadLetterQueueUrl"],
        region,
        options.endpoint_url,
        secret,
        f"stack {options.stack} ({region})",
        int(outputs.get("WorkIndexShards", DEFAULT_WORK_SHARDS)),
    )


def _stack_secret(session: boto3.Session, endpoint_url: str | None, outputs: Mapping[str, str]) -> str | None:
    arn = outputs.get("WebhookSigningSecretArn")
    if not arn:
        return None
    try:
        raw = session.client("secretsmanager", endpoint_url=endpoint_url).get_secret_value(SecretId=arn)
    except (BotoCoreError, ClientError):
        return None  # the HTTP commands say so when they need it; the AWS-only ones do not
    return signing_secret_from(raw.get("SecretString", ""))


def signing_secret_from(secret_string: str) -> str | None:
    """The secret an ERP is given: `whsec_` + the `current` value (else the first) of the JSON object."""
    try:
        document: Any = json.loads(secret_string)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    values = [document.get("current"), *document.values()]
    value = next((item for item in values if isinstance(item, str) and item), None)
    if value is None:
        return None
    return value if value.startswith("whsec_") else f"whsec_{value}"


def _aws_reason(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Message") or error.response.get("Error", {}).get("Code"))
