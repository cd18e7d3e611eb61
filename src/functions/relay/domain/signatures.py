"""Who signed a request: the signing secret's entries, each verified by its scheme.

`RequestVerifier` tries Standard Webhooks (relay.domain.standard_webhooks) and the presets
for ERPs that cannot sign the Standard Webhooks way (docs/interface.md):

- `frappe` (ERPNext and every Frappe app): `X-Frappe-Webhook-Signature` carries
  base64(HMAC-SHA256(secret, body)), as Frappe's Webhook sends it when "Enable Security" is on.
- `hmac-sha256` (generic): a configured header carrying hex or base64 HMAC-SHA256 of the body,
  optionally prefixed `sha256=`.

Both are computed over the raw body bytes and compared in constant time. A preset is enabled
only when the signing secret holds an entry for it; the entry's name says which:

| entry name | verified as | value |
| --- | --- | --- |
| `frappe`, `frappe:<label>` | frappe | the secret exactly as typed into the ERP |
| `hmac-sha256:<Header-Name>`, `hmac-sha256:<Header-Name>:<label>` | hmac-sha256, read from that header | the secret |
| any other name | Standard Webhooks | `whsec_...` |

Several entries of one scheme verify side by side: that is how a secret is rotated.

A request carrying any Standard Webhooks header is verified by Standard Webhooks alone, so
adding a preset header can never get around its timestamp window. A preset has no timestamp
and no id: a captured request can be replayed at any time. That is harmless only because an
invoice key is idempotent (the same invoice is a duplicate, never sent twice; a different one
for the key is a conflict), and a preset request may only post invoices, never read a status.
"""

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from relay.domain.errors import SchemeRefused, SignatureRefused, SigningSecretMissing
from relay.domain.standard_webhooks import MIN_SECRET_BYTES, SIGNATURE_HEADERS, WebhookVerifier

STANDARD_WEBHOOKS = "standard-webhooks"
FRAPPE = "frappe"
HMAC_SHA256 = "hmac-sha256"
FRAPPE_HEADER = "X-Frappe-Webhook-Signature"

_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # an RFC 9110 token


@dataclass(frozen=True)
class Preset:
    scheme: str
    header: str
    """The header the signature is read from, as configured (matched ignoring case)."""
    keys: tuple[bytes, ...]

    def verify(self, raw_body: bytes, value: str) -> None:
        given = _digest(value, hex_allowed=self.scheme == HMAC_SHA256)
        if given is None:
            expected_form = "hex or base64" if self.scheme == HMAC_SHA256 else "base64"
            raise SchemeRefused(self.scheme, f"{self.header} is not the {expected_form} of an HMAC-SHA256")
        for key in self.keys:
            if hmac.compare_digest(hmac.new(key, raw_body, hashlib.sha256).digest(), given):
                return
        raise SchemeRefused(self.scheme, "no matching signature")


@dataclass(frozen=True)
class SigningSecrets:
    """The signing secret's entries sorted by scheme; `ignored` names entries that verify nothing."""

    standard: tuple[str, ...]
    presets: tuple[Preset, ...]
    ignored: dict[str, str] = field(default_factory=dict)
    """Entry name -> why it is ignored (never the value)."""

    @classmethod
    def from_entries(cls, entries: Mapping[str, str]) -> "SigningSecrets":
        standard: list[str] = []
        keys: dict[tuple[str, str], tuple[str, list[bytes]]] = {}
        ignored: dict[str, str] = {}
        for name, value in entries.items():
            scheme, _, rest = name.partition(":")
            if scheme not in (FRAPPE, HMAC_SHA256):
                standard.append(value)
                continue
            header = FRAPPE_HEADER if scheme == FRAPPE else rest.partition(":")[0]
            if not _HEADER_NAME.match(header) or header.lower() in (*SIGNATURE_HEADERS, "content-type"):
                ignored[name] = "name it hmac-sha256:<Header-Name> or hmac-sha256:<Header-Name>:<label>"
            elif len(value.encode()) < MIN_SECRET_BYTES:
                ignored[name] = f"a {scheme} secret needs at least {MIN_SECRET_BYTES} bytes"
            else:
                keys.setdefault((scheme, header.lower()), (header, []))[1].append(value.encode())
        presets = tuple(Preset(scheme, header, tuple(found)) for (scheme, _), (header, found) in keys.items())
        return cls(tuple(standard), presets, ignored)


class RequestVerifier:
    """Verifies a POST by Standard Webhooks or by one enabled preset, chosen by the headers sent."""

    def __init__(self, secrets: SigningSecrets) -> None:
        self.presets = secrets.presets
        try:
            self._standard: WebhookVerifier | None = WebhookVerifier(secrets.standard)
        except SigningSecretMissing:
            if not self.presets:
                raise
            self._standard = None

    def standard_webhooks(self) -> WebhookVerifier:
        """Standard Webhooks alone: what the status API takes (a preset cannot sign a GET)."""
        if self._standard is None:
            raise SigningSecretMissing("no usable Standard Webhooks signing secret is configured")
        return self._standard

    def preset_for(self, headers: Mapping[str, str]) -> Preset | None:
        """The preset this request is signed with, or None for Standard Webhooks (or no signature)."""
        sent = {name.lower() for name, value in headers.items() if value}
        if sent.intersection(SIGNATURE_HEADERS):
            return None
        return next((preset for preset in self.presets if preset.header.lower() in sent), None)

    def content_type(self, headers: Mapping[str, str]) -> str | None:
        """The request's content type; a request without one is JSON unless it is signed the
        Standard Webhooks way (Frappe sends none). So a Frappe sender whose signature is off, or
        whose preset is not enabled here, hears why (401), not about its content type (415)."""
        given = _header(headers, "content-type")
        standard = any(_header(headers, name) for name in SIGNATURE_HEADERS)
        if given is None and not standard and (self.presets or _header(headers, FRAPPE_HEADER)):
            return "application/json"
        return given

    def verify(self, raw_body: bytes, headers: Mapping[str, str]) -> str:
        """The scheme that verified the request; raises SignatureRefused naming the scheme tried."""
        preset = self.preset_for(headers)
        if preset is not None:
            preset.verify(raw_body, _header(headers, preset.header) or "")
            return preset.scheme
        if self._standard is None:
            raise SchemeRefused(STANDARD_WEBHOOKS, "not enabled on this relay; " + self._expected())
        if not any(_header(headers, name) for name in SIGNATURE_HEADERS) and _header(headers, FRAPPE_HEADER):
            raise SchemeRefused(
                FRAPPE, f"{FRAPPE_HEADER} was sent but the frappe preset is not enabled on this relay"
            )
        try:
            self._standard.verify(raw_body.decode(), headers)
        except SignatureRefused as error:
            raise SchemeRefused(STANDARD_WEBHOOKS, self._with_alternatives(str(error))) from None
        return STANDARD_WEBHOOKS

    def _with_alternatives(self, reason: str) -> str:
        if not reason.startswith("missing") or not self.presets:
            return reason
        return f"{reason}; or {self._expected()}"

    def _expected(self) -> str:
        return ", or ".join(f"{preset.header} ({preset.scheme})" for preset in self.presets) or "nothing"


def _digest(value: str, *, hex_allowed: bool) -> bytes | None:
    text = value.strip()
    if hex_allowed and text[:7].lower() == "sha256=":
        text = text[7:]
    if hex_allowed and len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        digest = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest if len(digest) == hashlib.sha256().digest_size else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)
