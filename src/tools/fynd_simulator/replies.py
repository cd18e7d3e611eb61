"""What the simulator answers over HTTP, decided without any I/O.

`SimulatorState` and the admin routes return a `Reply`; the server only writes it out
(or, for `drop`, closes the connection without writing anything).
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"


class SimulatorConfigError(ValueError):
    """An admin request or constructor argument the simulator refuses (HTTP 400 on the wire)."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: Mapping[str, object] | None = None
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = JSON
    drop: bool = False  # close the connection without answering at all

    def encoded_body(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body).encode()


DROPPED = Reply(status=0, drop=True)


def ok(body: Mapping[str, object]) -> Reply:
    return Reply(HTTPStatus.OK, body)


def problem(status: int, detail: str, headers: tuple[tuple[str, str], ...] = (), **extra: object) -> Reply:
    """An RFC 9457 problem document, the way the simulator reports any whole-call error."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body: dict[str, object] = {"type": "about:blank", "title": title, "status": status}
    body["detail"] = detail
    body.update(extra)
    return Reply(status, body, headers, PROBLEM_JSON)
