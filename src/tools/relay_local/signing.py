"""Standard Webhooks signing for the local tools, with the reference `standardwebhooks` package.

The relay verifies with the same package, so a body signed here is signed exactly as an
ERP following standardwebhooks.com would sign it. A status GET has no body: what is signed
is its request line, `GET <path>?<query>` as sent (`status_headers`).

`LOCAL_WEBHOOK_SECRET` signs the events in events/. It is public on purpose: anyone can
read it here, so it must never be configured on a deployed relay. Its bytes say so.
"""

import base64
import hmac
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook

from relay.domain.standard_webhooks import request_line, secret_key

LOCAL_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"LOCAL-ONLY-not-a-secret!").decode()
"""`whsec_TE9DQUwtT05MWS1ub3QtYS1zZWNyZXQh`: 24 fixed bytes reading "LOCAL-ONLY-not-a-secret!"."""


def new_secret() -> str:
    """A fresh signing secret in the Standard Webhooks form: `whsec_` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def check_secret(secret: str) -> None:
    """Raise ValueError unless `secret` is a usable `whsec_<base64>` secret."""
    if not secret.startswith("whsec_"):
        raise ValueError("a signing secret starts with 'whsec_'")
    secret_key(secret)  # the relay's own rule: base64 of at least 24 bytes


def signed_headers(
    secret: str, body: str, *, msg_id: str | None = None, at: float | None = None
) -> dict[str, str]:
    """The three `webhook-*` headers for `body`, signed now (or at `at`, unix seconds)."""
    msg_id = msg_id or f"msg_{secrets.token_hex(12)}"
    timestamp = int(time.time() if at is None else at)
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def status_headers(
    secret: str, path: str, query: str = "", *, msg_id: str | None = None, at: float | None = None
) -> dict[str, str]:
    """The `webhook-*` headers of `GET <path>?<query>`: `path` and `query` exactly as they are sent."""
    return signed_headers(secret, request_line("GET", path, query), msg_id=msg_id, at=at)


def signed_content(event: Mapping[str, Any]) -> str:
    """What an HTTP API (payload 2.0) event is signed over: a POST's body, else its request line."""
    method = str(event.get("requestContext", {}).get("http", {}).get("method", "POST"))
    if method.upper() == "POST":
        return str(event.get("body") or "")
    return request_line(method, str(event.get("rawPath", "")), str(event.get("rawQueryString") or ""))


def signature_matches(secret: str, body: str, headers: Mapping[str, str]) -> bool:
    """True when one of the `webhook-signature` values is `secret`'s signature of `body`.

    Unlike a receiver, this ignores how old the timestamp is: it answers "was this signed
    with that secret?", which is what checking (or re-signing) a stored event needs.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id, timestamp = lowered.get("webhook-id"), lowered.get("webhook-timestamp", "")
    if not msg_id or not timestamp.isdigit():
        return False
    expected = signed_headers(secret, body, msg_id=msg_id, at=int(timestamp))["webhook-signature"]
    return any(hmac.compare_digest(expected, given) for given in lowered.get("webhook-signature", "").split())
