"""Standard Webhooks verification: the reference package signs, our verifier must agree."""

import base64
import time
from types import SimpleNamespace

import pytest

from relay.domain import standard_webhooks
from relay.domain.errors import SignatureRefused, SigningSecretMissing
from relay.domain.standard_webhooks import WebhookVerifier, request_line, secret_key
from relay_local.signing import new_secret, signed_headers

BODY = '{"orderId": "A"}'


def test_signature_from_the_reference_package_verifies() -> None:
    secret = new_secret()
    WebhookVerifier([secret]).verify(BODY, signed_headers(secret, BODY))


def test_secret_without_prefix_is_accepted_too() -> None:
    secret = new_secret()
    WebhookVerifier([secret.removeprefix("whsec_")]).verify(BODY, signed_headers(secret, BODY))


def test_any_active_secret_verifies_during_rotation() -> None:
    old, new = new_secret(), new_secret()
    verifier = WebhookVerifier([old, new])
    verifier.verify(BODY, signed_headers(old, BODY))
    verifier.verify(BODY, signed_headers(new, BODY))


def test_one_of_several_signatures_in_the_header_may_match() -> None:
    ours, theirs = new_secret(), new_secret()
    headers = signed_headers(ours, BODY, msg_id="msg_1")
    other = signed_headers(theirs, BODY, msg_id="msg_1")["webhook-signature"]
    headers["webhook-signature"] = f"{other} {headers['webhook-signature']}"
    WebhookVerifier([ours]).verify(BODY, headers)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda h, b: (h, b + " "), "no matching signature"),
        (lambda h, b: ({**h, "webhook-id": "msg_other"}, b), "no matching signature"),
        (
            lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b),
            "missing signature header(s): webhook-signature",
        ),
        (
            lambda h, b: ({"webhook-id": h["webhook-id"]}, b),
            "missing signature header(s): webhook-timestamp, webhook-signature",
        ),
        (
            lambda h, b: ({**h, "webhook-signature": "garbage"}, b),
            "webhook-signature is not of the form 'v1,<base64>'",
        ),
        (
            lambda h, b: ({**h, "webhook-timestamp": "yesterday"}, b),
            "webhook-timestamp is not a unix timestamp",
        ),
        (lambda h, b: (h, b + "\ud83d"), "the signed content is not valid Unicode"),
    ],
)
def test_tampered_or_incomplete_requests_are_refused(tamper, reason: str) -> None:  # type: ignore[no-untyped-def]
    # Given a signed request, tampered with or missing a part
    secret = new_secret()
    headers, body = tamper(signed_headers(secret, BODY), BODY)
    # When it is verified
    with pytest.raises(SignatureRefused) as refused:
        WebhookVerifier([secret]).verify(body, headers)
    # Then the refusal (the 401's detail) says exactly why
    assert str(refused.value) == reason


@pytest.mark.parametrize("offset", [-301, 301])
def test_timestamp_more_than_five_minutes_away_is_refused(offset: int) -> None:
    secret = new_secret()
    headers = signed_headers(secret, BODY, at=time.time() + offset)
    with pytest.raises(SignatureRefused) as refused:
        WebhookVerifier([secret]).verify(BODY, headers)
    assert str(refused.value) == "webhook-timestamp is more than 5 minutes away from now"


def test_timestamp_within_five_minutes_is_accepted() -> None:
    secret = new_secret()
    WebhookVerifier([secret]).verify(BODY, signed_headers(secret, BODY, at=time.time() - 290))


def test_wrong_secret_is_refused() -> None:
    with pytest.raises(SignatureRefused) as refused:
        WebhookVerifier([new_secret()]).verify(BODY, signed_headers(new_secret(), BODY))
    assert str(refused.value) == "no matching signature"


def test_no_usable_secret_is_a_configuration_error() -> None:
    with pytest.raises(SigningSecretMissing) as missing:
        WebhookVerifier(["", "whsec_"])
    assert str(missing.value) == "no usable webhook signing secret is configured"


def test_a_timestamp_exactly_five_minutes_away_is_still_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the verifier's clock at a whole second, and requests signed 300 and 301 s before it
    now = 1_800_000_000.0
    monkeypatch.setattr(standard_webhooks, "time", SimpleNamespace(time=lambda: now))
    secret = new_secret()
    # When each is verified / Then 300 s is within the tolerance, 301 s is not
    WebhookVerifier([secret]).verify(BODY, signed_headers(secret, BODY, at=now - 300))
    with pytest.raises(SignatureRefused):
        WebhookVerifier([secret]).verify(BODY, signed_headers(secret, BODY, at=now - 301))


def test_verification_does_not_depend_on_the_machines_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a verifier running where local time is not UTC
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        secret = new_secret()
        # When a request signed now is verified / Then it verifies: the signed time is UTC
        WebhookVerifier([secret]).verify(BODY, signed_headers(secret, BODY))
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_secret_is_read_without_its_padding_and_refused_with_a_stray_character() -> None:
    # Given a secret written without base64's trailing "=", and one with a character outside base64
    secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()  # 32 bytes: one "=" of padding
    unpadded = secret.rstrip("=")
    assert unpadded != secret
    key = secret_key(secret)
    # When each is read
    # Then the unpadded one is the same key, and verifies what the secret signs
    assert secret_key(unpadded) == key
    WebhookVerifier([unpadded]).verify(BODY, signed_headers(secret, BODY))
    # And the other is refused, saying what a secret is, and verifies nothing
    stray = secret[:12] + "!" + secret[12:]
    with pytest.raises(ValueError, match=r"^a signing secret is whsec_ followed by base64$"):
        secret_key(stray)
    with pytest.raises(SigningSecretMissing):
        WebhookVerifier([stray])


def test_a_right_signature_under_another_version_is_not_taken() -> None:
    # Given the right signature, labelled with a version the scheme does not define
    secret = new_secret()
    headers = signed_headers(secret, BODY)
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v1a,", 1)
    # When it is verified / Then it is refused: only `v1,` entries are signatures
    with pytest.raises(SignatureRefused, match="v1,<base64>"):
        WebhookVerifier([secret]).verify(BODY, headers)


def test_a_right_signature_with_a_character_outside_base64_is_refused_not_cleaned_up() -> None:
    # Given the right signature with a stray character in its base64
    secret = new_secret()
    headers = signed_headers(secret, BODY)
    version, encoded = headers["webhook-signature"].split(",", 1)
    headers["webhook-signature"] = f"{version},{encoded[:8]}!{encoded[8:]}"
    # When it is verified / Then the entry is malformed, not decoded by dropping the character
    with pytest.raises(SignatureRefused, match="v1,<base64>"):
        WebhookVerifier([secret]).verify(BODY, headers)


def test_the_status_get_signs_its_request_line_as_sent_with_the_method_in_capitals() -> None:
    assert request_line("get", "/v1/invoices/FY-1", "") == "GET /v1/invoices/FY-1"
    assert request_line("GET", "/v1/invoices/FY-1", "invoiceType=return") == (
        "GET /v1/invoices/FY-1?invoiceType=return"
    )
