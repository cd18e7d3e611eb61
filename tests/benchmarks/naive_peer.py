"""The naive peer: what a competent Powertools user would write for the same job, for comparison only.

One SQS record, one invoice, one Fynd call. `BatchProcessor` reports partial failures;
`idempotent_function` (DynamoDB persistence) keeps a redelivered invoice from being sent
twice; the ledger entry is set INVOICED so the status API answers as it does for the relay.
It never runs in the product; `make bench` runs it through the same local stack and simulator.
"""

import json
import os
import time
from typing import Any

import boto3
import urllib3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

IDEMPOTENCY_TABLE = "NaivePeerIdempotency"
INVOICE_PATH = "/oms/v3/shipment/invoiceUpdate"
TOKEN_PATH = "/aggregator/v1/token"

logger = Logger(service="naive-peer")
processor = BatchProcessor(event_type=EventType.SQS)
persistence = DynamoDBPersistenceLayer(table_name=IDEMPOTENCY_TABLE)
config = IdempotencyConfig(event_key_jmespath="[orderId, invoiceType]", expires_after_seconds=86_400)
http = urllib3.PoolManager(maxsize=4)
dynamodb = boto3.client("dynamodb")
_token: tuple[str, float] | None = None


def _access_token() -> str:
    global _token
    if _token is None or _token[1] < time.time():
        answer = http.request(
            "GET",
            os.environ["FYND_BASE_URL"] + TOKEN_PATH,
            fields={
                "username": os.environ["NAIVE_FYND_USERNAME"],
                "password": os.environ["NAIVE_FYND_PASSWORD"],
            },
        )
        if answer.status != 200:
            raise RuntimeError(f"token: HTTP {answer.status}")
        _token = (answer.json()["access_token"], time.time() + 3000)
    return _token[0]


@idempotent_function(data_keyword_argument="invoice", persistence_store=persistence, config=config)
def deliver(invoice: dict[str, Any]) -> dict[str, Any]:
    answer = http.request(
        "POST",
        os.environ["FYND_BASE_URL"] + INVOICE_PATH,
        body=json.dumps([{k: v for k, v in invoice.items() if k != "locationCode"}]),
        headers={"Content-Type": "application/json", "x-access-token": _access_token()},
    )
    if answer.status >= 300:
        raise RuntimeError(f"Fynd answered HTTP {answer.status}")
    dynamodb.update_item(
        TableName=os.environ["LEDGER_TABLE_NAME"],
        Key={"pk": {"S": f"{invoice['orderId']}#{invoice['invoiceType']}"}},
        UpdateExpression="SET #s = :s, updatedAt = :t REMOVE statusKey",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "INVOICED"}, ":t": {"N": str(int(time.time()))}},
    )
    return {"orderId": invoice["orderId"], "status": "INVOICED"}


def record_handler(record: SQSRecord) -> None:
    deliver(invoice=json.loads(record.body)["invoice"])


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    config.register_lambda_context(context)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
