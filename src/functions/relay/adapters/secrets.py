"""Secrets the relay reads from Secrets Manager: Fynd credentials and webhook signing secrets.

Read through Powertools' parameters cache (five minutes), so a rotated secret is picked up
without a deploy and a warm Lambda does not call Secrets Manager on every invocation.
Nothing here ever puts a secret's value into an exception message or a log line.
"""

import json
from typing import Any

from aws_lambda_powertools.utilities import parameters

from relay.adapters.fynd import Credentials
from relay.domain.delivery import FyndAuthError
from relay.observability import count

CACHE_SECONDS = 300


class SecretFormatError(Exception):
    """A secret exists but does not hold what the relay expects (says which secret, never its value)."""


def read_json_secret(arn: str) -> Any:
    raw = parameters.get_secret(arn, max_age=CACHE_SECONDS)
    try:
        return json.loads(raw if isinstance(raw, str) else raw.decode())
    except ValueError:
        raise SecretFormatError(f"secret {arn} is not JSON") from None


class SecretsCredentials:
    """Fynd credentials: location-level where the location has its own, company-level otherwise."""

    def __init__(self, company_secret_arn: str, location_secret_arn: str | None) -> None:
        self._company = company_secret_arn
        self._locations = location_secret_arn

    def for_location(self, location_code: str | None) -> Credentials:
        try:
            if location_code and self._locations:
                own = read_json_secret(self._locations).get(location_code)
                if own:
                    return _credentials(own, location_code)
            return _credentials(read_json_secret(self._company), None)
        except (SecretFormatError, AttributeError, KeyError, TypeError) as error:
            # No token can be had until an operator fixes the secret: the same alarm as a refusal.
            count("TokenFailures")
            raise FyndAuthError(f"Fynd credentials secret is malformed: {type(error).__name__}") from None


def _credentials(document: Any, location_code: str | None) -> Credentials:
    username, password = document["username"], document["password"]
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        raise TypeError("username and password must be non-empty strings")
    return Credentials(username, password, location_code)


def webhook_secrets(arn: str) -> list[str]:
    """Every signing secret currently active: the secret is {"<name>": "whsec_...", ...}."""
    document = read_json_secret(arn)
    if not isinstance(document, dict):
        raise SecretFormatError(f"secret {arn} must be a JSON object of signing secrets")
    return [value for value in document.values() if isinstance(value, str) and value]


def webhook_secret_entries(arn: str) -> dict[str, str]:
    """Every signing secret by entry name; the name selects the scheme (relay.domain.presets)."""
    document = read_json_secret(arn)
    if not isinstance(document, dict):
        raise SecretFormatError(f"secret {arn} must be a JSON object of signing secrets")
    return {str(name): value for name, value in document.items() if isinstance(value, str) and value}
