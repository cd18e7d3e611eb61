"""Standard Webhooks verification: the reference package signs, our verifier must agree."""

import time

import pytest

from relay.domain.errors import SignatureRefused, SigningSecretMissing
from relay.domain.standard_webhooks import WebhookVerifier
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
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b), "missing"),
        (lambda h, b: ({**h, "webhook-signature": "garbage"}, b), "v1,<base64>"),
        (lambda h, b: ({**h, "webhook-timestamp": "yesterday"}, b), "unix timestamp"),
    ],
)
def test_tampered_or_incomplete_requests_are_refused(tamper, reason: str) -> None:  # type: ignore[no-untyped-def]
    secret = new_secret()
    headers, body = tamper(signed_headers(secret, BODY), BODY)
    with pytest.raises(SignatureRefused, match=reason.replace("<", ".").replace(">", ".")):
        WebhookVerifier([secret]).verify(body, headers)


@pytest.mark.parametrize("offset", [-301, 301])
def test_timestamp_more_than_five_minutes_away_is_refused(offset: int) -> None:
    secret = new_secret()
    headers = signed_headers(secret, BODY, at=time.time() + offset)
    with pytest.raises(SignatureRefused, match="5 minutes"):
        WebhookVerifier([secret]).verify(BODY, headers)


def test_timestamp_within_five_minutes_is_accepted() -> None:
    secret = new_secret()
    WebhookVerifier([secret]).verify(BODY, signed_headers(secret, BODY, at=time.time() - 290))


def test_wrong_secret_is_refused() -> None:
    with pytest.raises(SignatureRefused, match="no matching signature"):
        WebhookVerifier([new_secret()]).verify(BODY, signed_headers(new_secret(), BODY))


def test_no_usable_secret_is_a_configuration_error() -> None:
    with pytest.raises(SigningSecretMissing):
        WebhookVerifier(["", "whsec_"])
