"""What the simulator answers, decided without I/O, in Frappe's own shapes.

Frappe answers a REST call with `{"data": ...}` (200, also for a create), and an error with
the exception's HTTP status and a body naming it:

    {"exc_type": "DoesNotExistError",
     "exception": "frappe.exceptions.DoesNotExistError: Fynd Invoice Sync FIS-00001 not found",
     "_server_messages": "[\"{\\\"message\\\": \\\"Fynd Invoice Sync FIS-00001 not found\\\", ...}\"]"}

`_server_messages` is a JSON string holding a list of JSON strings, one per message, as
`frappe.local.message_log` is serialised (frappe/app.py, frappe/utils/response.py). A client
that shows the reason reads the first message's `message`.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

FRAPPE_ERRORS: Mapping[str, int] = {
    "AuthenticationError": HTTPStatus.UNAUTHORIZED,
    "PermissionError": HTTPStatus.FORBIDDEN,
    "DoesNotExistError": HTTPStatus.NOT_FOUND,
    "DuplicateEntryError": HTTPStatus.CONFLICT,
    "ValidationError": HTTPStatus.EXPECTATION_FAILED,
    "LinkValidationError": HTTPStatus.EXPECTATION_FAILED,
    "UpdateAfterSubmitError": HTTPStatus.EXPECTATION_FAILED,
    "MandatoryError": HTTPStatus.EXPECTATION_FAILED,
    "TimestampMismatchError": HTTPStatus.EXPECTATION_FAILED,
}
"""Frappe's exceptions the simulator raises, with their `http_status_code` (frappe/exceptions.py)."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: object = None
    drop: bool = False
    """Close the connection without answering (an outage that resets the connection)."""

    def encoded(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body, default=str).encode()


DROPPED = Answer(0, drop=True)


class FrappeError(Exception):
    """A refusal in Frappe's terms: the exception's class name and its message."""

    def __init__(self, exc_type: str, message: str) -> None:
        super().__init__(message)
        self.exc_type = exc_type
        self.message = message

    def answer(self) -> Answer:
        return frappe_error(self.exc_type, self.message)


def data(value: object) -> Answer:
    return Answer(HTTPStatus.OK, {"data": value})


def frappe_error(exc_type: str, message: str) -> Answer:
    status = FRAPPE_ERRORS[exc_type]
    server_message = json.dumps(
        {"message": message, "title": "Message", "indicator": "red", "raise_exception": 1}
    )
    return Answer(
        status,
        {
            "exc_type": exc_type,
            "exception": f"frappe.exceptions.{exc_type}: {message}",
            "_server_messages": json.dumps([server_message]),
        },
    )


def outage(status: int) -> Answer:
    """What a site in trouble answers in front of Frappe (nginx, a gateway): a bare HTML page."""
    return Answer(status, None)
