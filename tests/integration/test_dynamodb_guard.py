"""The DynamoDB guard in front of the local moto server (relay_local/dynamodb_guard.py): a
cancelled transaction rolls back exactly, though only the items it names are copied for it."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest
from botocore.exceptions import ClientError

from relay_local.dynamodb_guard import guard_dynamodb
from relay_local.stack import MotoServer

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

TABLE = "Guarded"


@pytest.fixture
def dynamodb() -> Iterator["DynamoDBClient"]:
    with MotoServer() as moto:
        guard_dynamodb(moto)
        moto.reset()  # each test starts from an empty moto
        client: DynamoDBClient = moto.client("dynamodb")
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client


def put(dynamodb: "DynamoDBClient", pk: str, status: str) -> None:
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": pk}, "status": {"S": status}})


def status(dynamodb: "DynamoDBClient", pk: str) -> str | None:
    item = dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": pk}}, ConsistentRead=True).get("Item")
    return item["status"]["S"] if item else None


def update(pk: str, value: str, condition: str | None = None) -> dict[str, object]:
    operation: dict[str, object] = {
        "TableName": TABLE,
        "Key": {"pk": {"S": pk}},
        "UpdateExpression": "SET #s = :v",
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": {":v": {"S": value}},
    }
    if condition:
        operation["ConditionExpression"] = condition
    return {"Update": operation}


def test_a_cancelled_transaction_rolls_back_the_items_it_named_and_leaves_the_others(
    dynamodb: "DynamoDBClient",
) -> None:
    # Given three items, one of which the transaction will not name
    for pk in ("A", "B", "C"):
        put(dynamodb, pk, "old")
    # When a transaction updates A, puts D, then fails its condition on B
    with pytest.raises(ClientError) as cancelled:
        dynamodb.transact_write_items(
            TransactItems=[
                update("A", "new"),
                {"Put": {"TableName": TABLE, "Item": {"pk": {"S": "D"}, "status": {"S": "new"}}}},
                update("B", "new", condition="attribute_not_exists(pk)"),
            ]
        )
    # Then it is cancelled for B's condition, and nothing it wrote stays
    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert [status(dynamodb, pk) for pk in ("A", "B", "C", "D")] == ["old", "old", "old", None]
    # And the item it never named is still the live one: later writes to it hold
    put(dynamodb, "C", "later")
    assert status(dynamodb, "C") == "later"


def test_a_transaction_that_succeeds_writes_every_item(dynamodb: "DynamoDBClient") -> None:
    put(dynamodb, "A", "old")
    dynamodb.transact_write_items(
        TransactItems=[
            update("A", "new", condition="attribute_exists(pk)"),
            update("B", "new", condition="attribute_not_exists(pk)"),
        ]
    )
    assert [status(dynamodb, pk) for pk in ("A", "B")] == ["new", "new"]


def test_transactions_and_single_writes_at_once_lose_nothing(dynamodb: "DynamoDBClient") -> None:
    # Given many writers at once: transactions that succeed, transactions that are cancelled,
    # and plain puts, all on one table
    def work(n: int) -> None:
        if n % 3 == 0:
            dynamodb.transact_write_items(TransactItems=[update(f"T-{n}", "done")])
        elif n % 3 == 1:
            put(dynamodb, f"P-{n}", "done")
        else:
            with pytest.raises(ClientError):
                dynamodb.transact_write_items(
                    TransactItems=[
                        update(f"X-{n}", "done"),
                        update(f"T-{n - 2}", "no", "attribute_exists(never)"),
                    ]
                )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(90)))
    # Then every write that succeeded is there, and no cancelled one left a trace
    items = dynamodb.scan(TableName=TABLE)["Items"]
    assert sorted(item["pk"]["S"] for item in items) == sorted(
        [f"T-{n}" for n in range(0, 90, 3)] + [f"P-{n}" for n in range(1, 90, 3)]
    )
    assert {item["status"]["S"] for item in items} == {"done"}
