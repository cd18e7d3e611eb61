"""Standard Webhooks verification (standardwebhooks.com) against every active signing secret.

Several secrets may be active at once so a sender can rotate without a gap. The reference
`standardwebhooks` package computes the HMAC (`Webhook.sign`); reading the headers is ours,
because the package gives up on the first malformed entry of `webhook-signature` while the
scheme says a receiver tries each one (a sender mid-rotation may send an entry we cannot read).

What is signed is `{webhook-id}.{webhook-timestamp}.{content}`: for a POST the content is the
raw body; for the status GET it is the request line as sent, `GET <path>?<query>` (see
`docs/interface.md`), so a captured signature reads one order and no other.

A secret is usable only with at least MIN_SECRET_BYTES of key (after `whsec_` and base64);
a shorter or malformed one verifies nothing, and the others still work.
"""

import base64
import binascii
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError

from relay.domain.errors import SignatureRefused, SigningSecretMissing

SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
TIMESTAMP_TOLERANCE_SECONDS = 300
MIN_SECRET_BYTES = 24
"""Standard Webhooks secrets are 24 to 64 random bytes; fewer is a key anyone can guess."""

_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


def secret_key(secret: str) -> bytes:
    """The key bytes of a `whsec_<base64>` (or bare base64) secret; ValueError when unusable."""
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a signing secret is whsec_ followed by base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"a signing secret needs at least {MIN_SECRET_BYTES} bytes of key")
    return key


def request_line(method: str, raw_path: str, raw_query: str) -> str:
    """The signed content of a bodiless request: `GET <path>?<query>`, exactly as sent.

    The `?` is part of it only when the request carried a query string."""
    return f"{method.upper()} {raw_path}" + (f"?{raw_query}" if raw_query else "")


class WebhookVerifier:
    def __init__(self, secrets: Sequence[str]) -> None:
        self._webhooks = []
        for secret in secrets:
            try:
                self._webhooks.append(Webhook(secret_key(secret)))
            except (ValueError, EmptyWebhookSecretError):
                continue  # an unusable secret verifies nothing; the others still work
        if not self._webhooks:
            raise SigningSecretMissing("no usable webhook signing secret is configured")

    def verify(self, content: str, headers: Mapping[str, str]) -> None:
        """Pass when one well-formed `v1,<base64>` entry is the signature of `content` by one
        of our secrets, within 5 minutes of now; SignatureRefused (saying why) otherwise."""
        lowered = {name.lower(): value for name, value in headers.items()}
        missing = [name for name in SIGNATURE_HEADERS if not lowered.get(name)]
        if missing:
            raise SignatureRefused(f"missing signature header(s): {', '.join(missing)}")
        timestamp = lowered["webhook-timestamp"].strip()
        if not _TIMESTAMP.match(timestamp):
            raise SignatureRefused("webhook-timestamp is not a unix timestamp")
        if abs(time.time() - int(timestamp)) > TIMESTAMP_TOLERANCE_SECONDS:
            raise SignatureRefused("webhook-timestamp is more than 5 minutes away from now")
        offered = _signatures(lowered["webhook-signature"])
        if not offered:
            raise SignatureRefused("webhook-signature is not of the form 'v1,<base64>'")
        signed_at = datetime.fromtimestamp(int(timestamp), UTC)
        if not _encodable(lowered["webhook-id"]) or not _encodable(content):
            raise SignatureRefused("the signed content is not valid Unicode")
        for webhook in self._webhooks:
            expected = _signatures(webhook.sign(lowered["webhook-id"], signed_at, content))[0]
            if any(hmac.compare_digest(expected, candidate) for candidate in offered):
                return
        raise SignatureRefused("no matching signature")


def _signatures(header: str) -> list[bytes]:
    """Every well-formed `v1,<base64>` entry of a space-separated header, decoded; others skipped."""
    found = []
    for entry in header.split():
        version, comma, encoded = entry.partition(",")
        if version != "v1" or not comma:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
