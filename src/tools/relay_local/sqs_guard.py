"""moto's SQS loses messages under concurrent requests; the guard makes it keep them.

moto's queue deletes a message by building a new list of the others and assigning it
(`Queue.delete_message`), outside the lock its `add_message` takes. A message sent while a
delete is between its loop and that assignment is dropped, and so is one sent while a second
delete runs over the list the first one has already replaced: SendMessage answered with its
MessageId, and the message is gone. With a few thousand messages in flight (a chaos run), a
delete's loop takes milliseconds and the dispatcher's batches delete while ingest sends, so
such a run lost messages that the relay had queued: an entry with no message, which only the
reconciler's requeue moved again. Real SQS never drops a message it accepted.

The guard lets one request that changes a queue's messages run at a time: sends, deletes,
visibility changes (which also edit moto's set of in-flight messages) and purges.
ReceiveMessage stays parallel: a long poll waits inside moto, and holding the guard through it
would block every send for as long.

The guard is WSGI middleware in front of moto's public application (`MotoServer.wrap`), as
relay_local.dynamodb_guard is for DynamoDB; moto itself is not patched.
"""

import threading
from collections.abc import Iterable
from typing import Any, cast

from relay_local.stack import MotoServer

CHANGES_MESSAGES = frozenset(
    {
        "SendMessage",
        "SendMessageBatch",
        "DeleteMessage",
        "DeleteMessageBatch",
        "ChangeMessageVisibility",
        "ChangeMessageVisibilityBatch",
        "PurgeQueue",
    }
)
"""The SQS actions (JSON protocol, `X-Amz-Target: AmazonSQS.<action>`) that run one at a time."""


def guard_sqs(moto: MotoServer) -> None:
    """Put the guard in front of moto's WSGI app: SQS requests that change messages one at a time."""
    moto.wrap(_guard)


def _guard(app: Any) -> Any:
    lock = threading.Lock()

    def guarded(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        service, _, action = str(environ.get("HTTP_X_AMZ_TARGET", "")).partition(".")
        if service != "AmazonSQS" or action not in CHANGES_MESSAGES:
            return cast(Iterable[bytes], app(environ, start_response))
        with lock:
            return list(app(environ, start_response))

    return guarded
