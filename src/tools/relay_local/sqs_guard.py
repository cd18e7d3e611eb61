"""moto's SQS is looser than SQS in two ways; the guard makes the local queue behave as SQS does.

1. moto loses messages under concurrent requests. Its queue deletes a message by building a
new list of the others and assigning it (`Queue.delete_message`), outside the lock its
`add_message` takes. A message sent while a delete is between its loop and that assignment
is dropped, and so is one sent while a second delete runs over the list the first one has
already replaced: SendMessage answered with its MessageId, and the message is gone. With a
few thousand messages in flight (a chaos run), a delete's loop takes milliseconds and the
dispatcher's batches delete while ingest sends, so such a run lost messages that the relay
had queued: an entry with no message, which only the reconciler's requeue moved again. Real
SQS never drops a message it accepted. The guard lets one request that changes a queue's
messages run at a time: sends, deletes, visibility changes (which also edit moto's set of
in-flight messages) and purges. ReceiveMessage stays parallel: a long poll waits inside moto,
and holding the guard through it would block every send for as long.

2. moto takes any character. SQS's SendMessage allows only `#x9 | #xA | #xD | #x20-#xD7FF |
#xE000-#xFFFD | #x10000-#x10FFFF` in a message body and a String attribute, and refuses the
rest with `InvalidMessageContents` (API_SendMessage); SendMessageBatch reports such an entry
under `Failed` with that code and sends the others. The guard applies the same rule
(relay.domain.messages.UNCARRIED), so `make run` refuses what AWS refuses: an invoice ingest
let through with U+FFFE would fail here as it would in AWS, not pass unseen.

The guard is WSGI middleware in front of moto's public application (`MotoServer.wrap`), as
relay_local.dynamodb_guard is for DynamoDB; moto itself is not patched.
"""

import io
import json
import threading
from collections.abc import Iterable, Mapping
from typing import Any, cast

from relay.domain.messages import uncarried
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

INVALID_CONTENTS = "InvalidMessageContents"


def guard_sqs(moto: MotoServer) -> None:
    """Put the guard in front of moto's WSGI app: SQS's character rule on every send, and the
    requests that change messages one at a time."""
    moto.wrap(_guard)


def _guard(app: Any) -> Any:
    lock = threading.Lock()

    def locked(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with lock:
            return list(app(environ, start_response))

    def guarded(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        service, _, action = str(environ.get("HTTP_X_AMZ_TARGET", "")).partition(".")
        if service != "AmazonSQS" or action not in CHANGES_MESSAGES:
            return cast(Iterable[bytes], app(environ, start_response))
        if action == "SendMessage":
            return _send_message(environ, start_response, locked)
        if action == "SendMessageBatch":
            return _send_message_batch(environ, start_response, locked)
        return locked(environ, start_response)

    return guarded


def _refusal(entry: Mapping[str, Any]) -> str | None:
    """Why SQS would refuse this message (body or a String attribute); None when it would not."""
    texts = [entry.get("MessageBody", "")]
    for attribute in (entry.get("MessageAttributes") or {}).values():
        if isinstance(attribute, Mapping) and str(attribute.get("DataType", "")).startswith("String"):
            texts.append(attribute.get("StringValue", ""))
    for text in texts:
        if isinstance(text, str) and (character := uncarried(text)):
            return f"Invalid characters found. Invalid unicode character {character} in the message"
    return None


def _read(environ: dict[str, Any]) -> dict[str, Any]:
    size = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(size) if size else b""
    environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(raw), str(len(raw))
    try:
        request = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return request if isinstance(request, dict) else {}


def _replace(environ: dict[str, Any], request: Mapping[str, Any]) -> None:
    raw = json.dumps(request).encode()
    environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(raw), str(len(raw))


def _send_message(environ: dict[str, Any], start_response: Any, locked: Any) -> Iterable[bytes]:
    reason = _refusal(_read(environ))
    if reason is None:
        return cast(Iterable[bytes], locked(environ, start_response))
    body = json.dumps({"__type": f"com.amazonaws.sqs#{INVALID_CONTENTS}", "message": reason}).encode()
    start_response(
        "400 Bad Request",
        [
            ("Content-Type", "application/x-amz-json-1.0"),
            ("Content-Length", str(len(body))),
            ("x-amzn-query-error", f"{INVALID_CONTENTS};Sender"),
        ],
    )
    return [body]


def _send_message_batch(environ: dict[str, Any], start_response: Any, locked: Any) -> Iterable[bytes]:
    """The entries SQS would take go to moto; the others come back under `Failed`, as SQS answers."""
    request = _read(environ)
    entries = request.get("Entries")
    if not isinstance(entries, list):
        return cast(Iterable[bytes], locked(environ, start_response))
    failed = [
        {"Id": entry.get("Id"), "SenderFault": True, "Code": INVALID_CONTENTS, "Message": reason}
        for entry in entries
        if isinstance(entry, Mapping) and (reason := _refusal(entry))
    ]
    if not failed:
        return cast(Iterable[bytes], locked(environ, start_response))
    refused = {entry["Id"] for entry in failed}
    taken = [entry for entry in entries if not (isinstance(entry, Mapping) and entry.get("Id") in refused)]
    answer: dict[str, Any] = {"Successful": [], "Failed": []}
    status, headers = "200 OK", [("Content-Type", "application/x-amz-json-1.0")]
    if taken:
        _replace(environ, {**request, "Entries": taken})
        captured: list[Any] = []

        def capture(status_line: str, response_headers: list[tuple[str, str]], *_: Any) -> Any:
            captured[:] = [status_line, response_headers]
            return lambda _data: None

        body = b"".join(locked(environ, capture))
        if not captured[0].startswith("200"):  # the whole request failed: pass moto's answer on
            start_response(*captured)
            return [body]
        answer = json.loads(body)
        answer.setdefault("Failed", [])
        status = captured[0]
        headers = [(name, value) for name, value in captured[1] if name.lower() != "content-length"]
    answer["Failed"] = [*answer.get("Failed", []), *failed]
    encoded = json.dumps(answer).encode()
    start_response(status, [*headers, ("Content-Length", str(len(encoded)))])
    return [encoded]
