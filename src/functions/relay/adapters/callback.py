"""The generic callback: each outcome POSTed to RELAY_CALLBACK_URL, signed the Standard Webhooks way.

The body is the status API's document of the invoice (relay.domain.status), so an ERP reads
one shape whether it asks or is told. The headers are `webhook-id` (the same for every
delivery of one state of one key: a receiver drops a retry it has seen), `webhook-timestamp`
and `webhook-signature` (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, computed by
the `standardwebhooks` package with the callback secret). docs/integrating.md shows how to
verify it.

A 2xx acknowledges. Anything else comes back with a back-off (relay.domain.writeback): a
timeout, no answer, 408, 429 or a 5xx as TargetDown (the rest of the batch does not call
again), any other answer as OutcomeRefused.
"""

import json
from collections.abc import Callable
from datetime import UTC, datetime

import urllib3
from standardwebhooks import Webhook

from relay.domain.errors import OutcomeRefused, TargetDown
from relay.domain.writeback import Outcome


class SignedCallback:
    name = "callback"

    def __init__(
        self,
        url: str,
        secret_key: Callable[[], bytes],
        *,
        http: urllib3.PoolManager | None = None,
        timeout: urllib3.Timeout | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """`secret_key` gives the key bytes of the `whsec_` secret (relay.domain.standard_webhooks
        .secret_key); it raises TargetDown when the secret cannot be read now."""
        self._url = url
        self._secret_key = secret_key
        self._http = http or urllib3.PoolManager(maxsize=2)
        self._timeout = timeout or urllib3.Timeout(connect=3.0, read=10.0)
        self._clock = clock

    def deliver(self, outcome: Outcome) -> None:
        body = json.dumps(outcome.document, separators=(",", ":"))
        now = datetime.fromtimestamp(self._clock(), UTC) if self._clock else datetime.now(UTC)
        signature = Webhook(self._secret_key()).sign(outcome.delivery_id, now, body)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": outcome.delivery_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        try:
            answer = self._http.request(
                "POST",
                self._url,
                body=body.encode(),
                headers=headers,
                timeout=self._timeout,
                retries=False,
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as error:
            raise TargetDown(f"callback POST failed ({type(error).__name__})") from None
        if 200 <= answer.status < 300:
            return
        detail = f"callback POST answered {answer.status}"
        if answer.status in (408, 429) or answer.status >= 500:
            raise TargetDown(detail)
        raise OutcomeRefused(detail)
