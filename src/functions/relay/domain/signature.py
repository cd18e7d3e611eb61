"""Standard Webhooks verification (standardwebhooks.com) against every active signing secret.

Several secrets may be active at once so a sender can rotate without a gap. The reference
`standardwebhooks` package does the cryptography and the 5-minute timestamp tolerance.
"""

import binascii
import time
from collections.abc import Mapping, Sequence

from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError, WebhookVerificationError

SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
TIMESTAMP_TOLERANCE_SECONDS = 300


class SignatureRefused(Exception):
    """The request is not signed by anyone we trust; the reason is safe to show the sender."""


class SigningSecretMissing(Exception):
    """The relay's own configuration is wrong: no sender could be verified."""


class WebhookVerifier:
    def __init__(self, secrets: Sequence[str]) -> None:
        self._webhooks = []
        for secret in secrets:
            try:
                self._webhooks.append(Webhook(secret))
            except (ValueError, binascii.Error, EmptyWebhookSecretError):
                continue  # a malformed secret verifies nothing; the others still work
        if not self._webhooks:
            raise SigningSecretMissing("no usable webhook signing secret is configured")

    def verify(self, body: str, headers: Mapping[str, str]) -> None:
        lowered = {name.lower(): value for name, value in headers.items()}
        missing = [name for name in SIGNATURE_HEADERS if not lowered.get(name)]
        if missing:
            raise SignatureRefused(f"missing signature header(s): {', '.join(missing)}")
        try:
            sent_at = float(lowered["webhook-timestamp"])
        except ValueError:
            raise SignatureRefused("webhook-timestamp is not a unix timestamp") from None
        # The package checks this too; checking first lets us say why, instead of "no match".
        if abs(time.time() - sent_at) > TIMESTAMP_TOLERANCE_SECONDS:
            raise SignatureRefused("webhook-timestamp is more than 5 minutes away from now")
        for webhook in self._webhooks:
            try:
                webhook.verify(body, lowered, json_parse=False)
            except WebhookVerificationError:
                continue
            except ValueError:
                # The package splits "v1,<sig>" without checking; a header without a comma lands here.
                raise SignatureRefused("webhook-signature is not of the form 'v1,<base64>'") from None
            return
        raise SignatureRefused("no matching signature")
