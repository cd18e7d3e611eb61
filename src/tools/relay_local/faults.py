"""Faults the local runtime can inject, so a local run meets what AWS does to the relay.

All are off unless configured (PipelineConfig.faults, or the RELAY_LOCAL_FAULT_* variables
of `make run`, docs/local-run.md). Each is a probability from 0 to 1, drawn per request,
per message or per entry from one random generator seeded by `seed`:

| variable (RELAY_LOCAL_FAULT_...) | where | what AWS does that this imitates |
| --- | --- | --- |
| REDELIVER | event source | SQS delivers at least once: a message in one batch is also given to a concurrent batch |
| STALE_DELETE | SQS endpoint | DeleteMessage(Batch) with a stale receipt handle answers success and deletes nothing |
| STALE_VISIBILITY | SQS endpoint | ChangeMessageVisibility(Batch) on a stale receipt handle is refused |
| SEND_BATCH_FAILED | SQS endpoint | SendMessageBatch answers 200 with some entries under `Failed` |
| DYNAMODB_THROTTLE | DynamoDB endpoint | a request is throttled (ProvisionedThroughputExceededException) |
| DYNAMODB_CONFLICT | DynamoDB endpoint | a write meets a concurrent transaction (TransactionConflict) |
| KILL_AFTER_FYND | dispatcher process | the execution environment ends between Fynd's answer and the ledger write |

The endpoint faults are a WSGI layer in front of moto's server (`AwsFaultLayer`): it reads
the request's `X-Amz-Target`, and answers with the error, or forwards a trimmed request and
edits moto's answer. moto itself is not patched. Requests from the local runtime's own
observers (the tally; user agent `relay-local-observer`) are never faulted.
"""

from __future__ import annotations

import io
import json
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from werkzeug.test import run_wsgi_app
from werkzeug.wrappers import Request, Response

from relay_local.counting import Counters

OBSERVER_AGENT = "relay-local-observer"
ENV_PREFIX = "RELAY_LOCAL_FAULT_"
type WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


@dataclass(frozen=True)
class LocalFaults:
    redeliver: float = 0.0
    stale_delete: float = 0.0
    stale_visibility: float = 0.0
    send_batch_failed: float = 0.0
    dynamodb_throttle: float = 0.0
    dynamodb_conflict: float = 0.0
    kill_after_fynd: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name != "seed" and not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"{ENV_PREFIX}{spec.name.upper()} must be a probability from 0 to 1, not {value}"
                )

    @property
    def at_endpoint(self) -> bool:
        sqs = (self.stale_delete, self.stale_visibility, self.send_batch_failed)
        return any((*sqs, self.dynamodb_throttle, self.dynamodb_conflict))

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> LocalFaults:
        """Read RELAY_LOCAL_FAULT_<NAME> variables; raises ValueError naming a malformed one."""
        given: dict[str, Any] = {}
        for spec in fields(cls):
            name = f"{ENV_PREFIX}{spec.name.upper()}"
            text = environ.get(name)
            if not text:
                continue
            try:
                given[spec.name] = int(text) if spec.name == "seed" else float(text)
            except ValueError:
                raise ValueError(f"{name} must be a number, not {text!r}") from None
        return cls(**given)

    def as_environ(self) -> dict[str, str]:
        """The variables that give these faults (for a `make run` started by a harness)."""
        return {
            f"{ENV_PREFIX}{spec.name.upper()}": str(getattr(self, spec.name))
            for spec in fields(self)
            if getattr(self, spec.name)
        }


class Chance:
    """One seeded generator shared by threads."""

    def __init__(self, seed: int | None) -> None:
        self._random = random.Random(seed)  # noqa: S311 - faults, not secrets
        self._lock = threading.Lock()

    def __call__(self, probability: float) -> bool:
        if probability <= 0:
            return False
        with self._lock:
            return self._random.random() < probability


@dataclass(frozen=True)
class FaultCounts:
    """Faults injected at the endpoint since start, by kind (entries of a batch counted one by one)."""

    throttled: int = 0
    """DynamoDB requests answered ProvisionedThroughputExceededException (DYNAMODB_THROTTLE)."""
    conflicts: int = 0
    """DynamoDB writes refused for a concurrent transaction (DYNAMODB_CONFLICT)."""
    stale_deletes: int = 0
    """Deletes answered as done that deleted nothing (STALE_DELETE)."""
    refused_visibility: int = 0
    """Visibility changes refused for a stale receipt handle (STALE_VISIBILITY)."""
    failed_sends: int = 0
    """SendMessageBatch entries answered under `Failed` (SEND_BATCH_FAILED)."""


class AwsFaultLayer:
    """WSGI middleware in front of the local AWS endpoint that injects the endpoint faults."""

    def __init__(self, app: WsgiApp, faults: LocalFaults, chance: Chance) -> None:
        self._app = app
        self._faults = faults
        self._chance = chance
        self._counts = Counters(FaultCounts())

    @property
    def counts(self) -> FaultCounts:
        return self._counts.read()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        if not target or OBSERVER_AGENT in str(environ.get("HTTP_USER_AGENT", "")):
            return self._app(environ, start_response)
        service, _, action = target.partition(".")
        request = Request(environ)
        body = request.get_data()
        environ["wsgi.input"] = io.BytesIO(body)  # moto reads the body again
        environ["CONTENT_LENGTH"] = str(len(body))
        if service.startswith("DynamoDB_"):
            response = self._dynamodb(action, environ, body)
        elif service == "AmazonSQS":
            response = self._sqs(action, environ, body)
        else:
            response = None
        if response is None:
            return self._app(environ, start_response)
        return response(environ, start_response)

    def _dynamodb(self, action: str, environ: dict[str, Any], body: bytes) -> Response | None:
        if self._chance(self._faults.dynamodb_throttle):
            self._counts.add(throttled=1)
            return _error(
                "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded (local fault)",
            )
        writes = ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems")
        if action not in writes or not self._chance(self._faults.dynamodb_conflict):
            return None
        self._counts.add(conflicts=1)
        if action != "TransactWriteItems":
            return _error(
                "com.amazonaws.dynamodb.v20120810#TransactionConflictException",
                "Transaction is ongoing for the item (local fault)",
            )
        items = json.loads(body).get("TransactItems", [])
        conflicted = self._chance_index(len(items))
        reasons = [
            {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
            if index == conflicted
            else {"Code": "None"}
            for index in range(len(items))
        ]
        codes = ", ".join(reason["Code"] for reason in reasons)
        response = _error(
            "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]",
        )
        document = json.loads(response.get_data())
        document["CancellationReasons"] = reasons
        response.set_data(json.dumps(document))
        return response

    def _chance_index(self, size: int) -> int:
        return next((index for index in range(size - 1) if self._chance(1 / (size - index))), size - 1)

    def _sqs(self, action: str, environ: dict[str, Any], body: bytes) -> Response | None:
        if action == "DeleteMessage" and self._chance(self._faults.stale_delete):
            self._counts.add(stale_deletes=1)
            return _json({})
        if action == "ChangeMessageVisibility" and self._chance(self._faults.stale_visibility):
            self._counts.add(refused_visibility=1)
            return _error(
                "com.amazonaws.sqs#MessageNotInflight",
                "Message does not exist or is not available for visibility timeout change (local fault)",
                query_error="AWS.SimpleQueueService.MessageNotInflight;Sender",
            )
        batch_faults = {
            "DeleteMessageBatch": (self._faults.stale_delete, None),
            "ChangeMessageVisibilityBatch": (
                self._faults.stale_visibility,
                ("ReceiptHandleIsInvalid", True, "The receipt handle is no longer valid (local fault)"),
            ),
            "SendMessageBatch": (
                self._faults.send_batch_failed,
                ("InternalError", False, "The request failed (local fault)"),
            ),
        }
        if action not in batch_faults:
            return None
        probability, failure = batch_faults[action]
        request = json.loads(body)
        entries = request.get("Entries", [])
        hit = [entry for entry in entries if self._chance(probability)]
        if not hit:
            return None
        hit_ids = {entry.get("Id") for entry in hit}
        if action == "DeleteMessageBatch":
            self._counts.add(stale_deletes=len(hit))
        elif action == "SendMessageBatch":
            self._counts.add(failed_sends=len(hit))
        else:
            self._counts.add(refused_visibility=len(hit))
        kept = [entry for entry in entries if entry.get("Id") not in hit_ids]
        answer: dict[str, Any] = {"Successful": [], "Failed": []}
        if kept:
            trimmed = json.dumps({**request, "Entries": kept}).encode()
            environ["wsgi.input"] = io.BytesIO(trimmed)
            environ["CONTENT_LENGTH"] = str(len(trimmed))
            app_iter, status, headers = run_wsgi_app(self._app, environ)
            forwarded = b"".join(app_iter)
            if not status.startswith("200"):
                return Response(forwarded, status=status, headers=headers)
            answer = {"Successful": [], "Failed": [], **json.loads(forwarded)}
        if failure is None:  # a stale delete: answered as done, nothing deleted
            answer["Successful"] = [*answer["Successful"], *({"Id": entry["Id"]} for entry in hit)]
        else:
            code, sender_fault, message = failure
            answer["Failed"] = [
                *answer["Failed"],
                *(
                    {"Id": entry["Id"], "SenderFault": sender_fault, "Code": code, "Message": message}
                    for entry in hit
                ),
            ]
        return _json(answer)


def _json(document: dict[str, Any]) -> Response:
    return Response(json.dumps(document), status=200, content_type="application/x-amz-json-1.0")


def _error(error_type: str, message: str, *, query_error: str | None = None) -> Response:
    response = Response(
        json.dumps({"__type": error_type, "message": message}),
        status=400,
        content_type="application/x-amz-json-1.0",
    )
    if query_error:
        response.headers["x-amzn-query-error"] = query_error
    return response
