"""Signature presets (frappe, hmac-sha256) beside Standard Webhooks: who verifies what, and how it refuses."""

import base64
import hashlib
import hmac
import json

import pytest

from frappe_sender import frappe_request
from relay.domain.errors import SchemeRefused, SignatureRefused, SigningSecretMissing
from relay.domain.signatures import FRAPPE_HEADER, MIN_SECRET_BYTES, RequestVerifier, SigningSecrets
from relay_local.signing import new_secret, signed_headers

DATA = {"orderId": "FY-1", "invoiceNumber": "SINV-1", "invoiceType": "sale"}
FRAPPE_SECRET = "frappe-secret-typed-into-erpnext-0001"
NEXT_SECRET = "frappe-secret-typed-into-erpnext-0002"


def verifier(**entries: str) -> RequestVerifier:
    return RequestVerifier(SigningSecrets.from_entries({"local": new_secret(), **entries}))


def hmac_of(secret: str, body: bytes) -> bytes:
    return hmac.new(secret.encode(), body, hashlib.sha256).digest()


def test_frappe_request_verifies_with_the_frappe_entry() -> None:
    # Given a relay with a "frappe" entry and Frappe's exact request
    request = frappe_request(DATA, FRAPPE_SECRET)
    # When it is verified
    scheme = verifier(frappe=FRAPPE_SECRET).verify(request.body, request.headers)
    # Then the frappe preset verified it
    assert scheme == "frappe"


@pytest.mark.parametrize(
    ("secret", "body_change"),
    [("another-secret-of-enough-length-0003", b""), (FRAPPE_SECRET, b" ")],
    ids=["wrong secret", "tampered body"],
)
def test_wrong_secret_or_tampered_body_is_refused_by_frappe_without_leaking(
    secret: str, body_change: bytes
) -> None:
    # Given a Frappe request signed with another secret, or whose body changed after signing
    request = frappe_request(DATA, secret)
    body = request.body + body_change
    # When it is verified
    with pytest.raises(SchemeRefused) as refused:
        verifier(frappe=FRAPPE_SECRET).verify(body, request.headers)
    # Then it is refused naming the scheme, and the expected signature is nowhere in the message
    assert str(refused.value) == "frappe: no matching signature"
    expected = hmac_of(FRAPPE_SECRET, body)
    assert base64.b64encode(expected).decode() not in str(refused.value)
    assert expected.hex() not in str(refused.value)


def test_two_frappe_secrets_verify_side_by_side_for_rotation() -> None:
    # Given the current and the next secret, both configured
    both = verifier(**{"frappe:current": FRAPPE_SECRET, "frappe:next": NEXT_SECRET})
    # When requests signed with either arrive, Then both verify
    for secret in (FRAPPE_SECRET, NEXT_SECRET):
        request = frappe_request(DATA, secret)
        assert both.verify(request.body, request.headers) == "frappe"
    # And once the old one is removed, it is refused
    old = frappe_request(DATA, FRAPPE_SECRET)
    with pytest.raises(SchemeRefused, match="frappe: no matching signature"):
        verifier(**{"frappe:next": NEXT_SECRET}).verify(old.body, old.headers)


def test_a_frappe_signature_that_is_not_base64_is_refused_naming_the_header() -> None:
    request = frappe_request(DATA, FRAPPE_SECRET)
    headers = {**request.headers, FRAPPE_HEADER: "not base64!"}
    with pytest.raises(SchemeRefused, match=f"frappe: {FRAPPE_HEADER} is not the base64"):
        verifier(frappe=FRAPPE_SECRET).verify(request.body, headers)


def test_standard_webhooks_headers_mean_standard_webhooks_only() -> None:
    # Given a valid Frappe signature plus a stray Standard Webhooks header
    request = frappe_request(DATA, FRAPPE_SECRET)
    headers = {**request.headers, "webhook-id": "msg_1"}
    # When it is verified, Then Standard Webhooks refuses it (the preset is never tried)
    with pytest.raises(SchemeRefused, match=r"^standard-webhooks: missing signature header") as refused:
        verifier(frappe=FRAPPE_SECRET).verify(request.body, headers)
    assert refused.value.scheme == "standard-webhooks"


def test_standard_webhooks_still_verifies_beside_a_preset() -> None:
    secret = new_secret()
    body = json.dumps(DATA)
    both = RequestVerifier(SigningSecrets.from_entries({"local": secret, "frappe": FRAPPE_SECRET}))
    assert both.verify(body.encode(), signed_headers(secret, body)) == "standard-webhooks"


def test_frappe_header_without_the_preset_enabled_says_so() -> None:
    request = frappe_request(DATA, FRAPPE_SECRET)
    with pytest.raises(SchemeRefused, match="frappe preset is not enabled") as refused:
        verifier().verify(request.body, request.headers)
    assert refused.value.scheme == "frappe"
    assert (
        str(refused.value)
        == f"frappe: {FRAPPE_HEADER} was sent but the frappe preset is not enabled on this relay"
    )


def test_unsigned_request_is_told_every_scheme_it_could_use() -> None:
    with pytest.raises(SignatureRefused) as refused:
        verifier(frappe=FRAPPE_SECRET).verify(b"{}", {})
    assert "missing signature header(s): webhook-id" in str(refused.value)
    assert f"or {FRAPPE_HEADER} (frappe)" in str(refused.value)


@pytest.mark.parametrize(
    "encode",
    [
        lambda digest: digest.hex(),
        lambda digest: "sha256=" + digest.hex(),
        lambda digest: base64.b64encode(digest).decode(),
        lambda digest: "sha256=" + base64.b64encode(digest).decode(),
    ],
    ids=["hex", "sha256=hex", "base64", "sha256=base64"],
)
def test_generic_hmac_sha256_reads_the_configured_header_in_hex_or_base64(encode) -> None:  # type: ignore[no-untyped-def]
    # Given the generic preset configured for X-Erp-Signature
    body = json.dumps(DATA).encode()
    relay = verifier(**{"hmac-sha256:X-Erp-Signature": FRAPPE_SECRET})
    # When a request carries the signature in any accepted form, in any header case
    headers = {"x-erp-signature": encode(hmac_of(FRAPPE_SECRET, body))}
    # Then it verifies
    assert relay.verify(body, headers) == "hmac-sha256"
    # And a tampered body does not
    with pytest.raises(SchemeRefused, match="hmac-sha256: no matching signature"):
        relay.verify(body + b" ", headers)


def test_generic_hmac_sha256_rotates_with_two_entries_for_one_header() -> None:
    body = json.dumps(DATA).encode()
    relay = verifier(
        **{"hmac-sha256:X-Erp-Signature:old": FRAPPE_SECRET, "hmac-sha256:X-Erp-Signature:new": NEXT_SECRET}
    )
    for secret in (FRAPPE_SECRET, NEXT_SECRET):
        assert relay.verify(body, {"X-Erp-Signature": hmac_of(secret, body).hex()}) == "hmac-sha256"


def test_entries_are_sorted_by_scheme_and_unusable_ones_are_named_not_shown() -> None:
    # Given a signing secret with every kind of entry
    standard = new_secret()
    secrets = SigningSecrets.from_entries(
        {
            "current": standard,
            "frappe": FRAPPE_SECRET,
            "frappe:short": "too-short",
            "hmac-sha256:": FRAPPE_SECRET,
            "hmac-sha256:webhook-signature": FRAPPE_SECRET,
        }
    )
    # Then only the other names are Standard Webhooks secrets: a preset secret never signs that way
    assert secrets.standard == (standard,)
    assert [(preset.scheme, preset.header) for preset in secrets.presets] == [("frappe", FRAPPE_HEADER)]
    # And the unusable entries are named with a reason, never with their value
    assert set(secrets.ignored) == {"frappe:short", "hmac-sha256:", "hmac-sha256:webhook-signature"}
    assert str(MIN_SECRET_BYTES) in secrets.ignored["frappe:short"]
    assert all("too-short" not in reason for reason in secrets.ignored.values())


def test_a_preset_request_without_content_type_is_json() -> None:
    relay = verifier(frappe=FRAPPE_SECRET)
    request = frappe_request(DATA, FRAPPE_SECRET)
    assert "Content-Type" not in request.headers
    assert relay.content_type(request.headers) == "application/json"
    assert relay.content_type({**request.headers, "Content-Type": "text/plain"}) == "text/plain"
    assert relay.content_type(signed_headers(new_secret(), "{}")) is None
    # A Frappe sender with "Enable Security" off is told about the signature (401), not the type
    unsigned = frappe_request(DATA, None).headers
    assert relay.content_type(unsigned) == "application/json"
    # And without any preset, a request without a content type stays one (415)
    assert verifier().content_type(unsigned) is None


def test_only_presets_configured_still_verifies_them_but_not_the_status_api() -> None:
    relay = RequestVerifier(SigningSecrets.from_entries({"frappe": FRAPPE_SECRET}))
    request = frappe_request(DATA, FRAPPE_SECRET)
    assert relay.verify(request.body, request.headers) == "frappe"
    with pytest.raises(SigningSecretMissing):
        relay.standard_webhooks()


def test_no_usable_secret_at_all_is_a_configuration_error() -> None:
    with pytest.raises(SigningSecretMissing):
        RequestVerifier(SigningSecrets.from_entries({"frappe": "short"}))


def test_the_status_api_on_a_relay_with_only_presets_says_no_standard_webhooks_secret_is_set() -> None:
    # Given a relay whose signing secret holds only a frappe entry
    relay = RequestVerifier(SigningSecrets.from_entries({"frappe": FRAPPE_SECRET}))
    # When the status API asks for its Standard Webhooks verifier
    with pytest.raises(SigningSecretMissing) as missing:
        relay.standard_webhooks()
    # Then the configuration error says which secret is missing
    assert str(missing.value) == "no usable Standard Webhooks signing secret is configured"


def test_a_relay_without_standard_webhooks_names_every_preset_it_takes() -> None:
    # Given a relay with two presets and no Standard Webhooks secret
    relay = RequestVerifier(
        SigningSecrets.from_entries({"frappe": FRAPPE_SECRET, "hmac-sha256:X-Erp-Signature": NEXT_SECRET})
    )
    # When an unsigned request arrives
    with pytest.raises(SchemeRefused) as refused:
        relay.verify(b"{}", {})
    # Then it is told each header and scheme the relay verifies, one after another
    assert str(refused.value) == (
        "standard-webhooks: not enabled on this relay; "
        f"{FRAPPE_HEADER} (frappe), or X-Erp-Signature (hmac-sha256)"
    )


def test_a_wrong_standard_webhooks_signature_is_not_told_about_the_presets() -> None:
    # Given a relay with Standard Webhooks and a frappe preset
    relay = verifier(frappe=FRAPPE_SECRET)
    body = json.dumps(DATA)
    headers = signed_headers(new_secret(), body)  # signed with a secret the relay does not hold
    # When a request signed the Standard Webhooks way does not verify
    with pytest.raises(SchemeRefused) as refused:
        relay.verify(body.encode(), headers)
    # Then the refusal is about its signature alone: the presets are offered only to a request
    # that sent no Standard Webhooks signature at all
    assert str(refused.value).startswith("standard-webhooks: ")
    assert FRAPPE_HEADER not in str(refused.value)


def test_a_frappe_signature_in_hex_is_refused_as_frappe_signs_in_base64() -> None:
    # Given the right HMAC of the body, written in hex (only the generic preset reads hex)
    request = frappe_request(DATA, FRAPPE_SECRET)
    headers = {**request.headers, FRAPPE_HEADER: hmac_of(FRAPPE_SECRET, request.body).hex()}
    # When it is verified by the frappe preset
    # Then it is refused: not the base64 Frappe sends
    with pytest.raises(SchemeRefused, match="is not the base64 of an HMAC-SHA256"):
        verifier(frappe=FRAPPE_SECRET).verify(request.body, headers)


def test_a_signature_with_characters_outside_base64_is_refused_not_cleaned_up() -> None:
    # Given the right HMAC in base64 with a character outside the alphabet in the middle
    request = frappe_request(DATA, FRAPPE_SECRET)
    good = base64.b64encode(hmac_of(FRAPPE_SECRET, request.body)).decode()
    headers = {**request.headers, FRAPPE_HEADER: good[:10] + "!" + good[10:]}
    # When it is verified
    # Then it is refused as malformed rather than decoded by dropping the stray character
    with pytest.raises(SchemeRefused, match="is not the base64 of an HMAC-SHA256"):
        verifier(frappe=FRAPPE_SECRET).verify(request.body, headers)
