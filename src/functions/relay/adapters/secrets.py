"""Secrets the relay reads from Secrets Manager: Fynd credentials and webhook signing secrets.

Read through Powertools' parameters cache (five minutes), so a rotated secret is picked up
without a deploy and a warm Lambda does not call Secrets Manager on every invocation.
Nothing here ever puts a secret's value into an exception message or a log line.

Errors are translated here, once, for every read: Secrets Manager failing (Powertools'
GetParameterError, a botocore error past its retries) is SecretUnavailableError, a secret
that holds the wrong thing is SecretFormatError. Ingest answers the first with 503 and
Retry-After; `SecretsCredentials.for_location` turns it into FyndNotSent (nothing was
sent to Fynd, so the dispatcher retries the call).
"""

import json
from typing import Any

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError
from botocore.exceptions import BotoCoreError, ClientError

from relay.adapters.fynd import Credentials
from relay.domain.errors import SecretFormatError, SecretUnavailableError, TargetDown
from relay.domain.fynd import FyndAuthError, FyndNotSent
from relay.domain.standard_webhooks import secret_key
from relay.observability import count

CACHE_SECONDS = 300


def read_json_secret(arn: str, provider: SecretsProvider | None = None) -> Any:
    raw: Any
    try:
        if provider is None:
            raw = parameters.get_secret(arn, max_age=CACHE_SECONDS)
        else:
            raw = provider.get(arn, max_age=CACHE_SECONDS)
    except (GetParameterError, TransformParameterError, BotoCoreError, ClientError) as error:
        # Powertools' message quotes the SDK error, never the secret's value; keep only the type.
        raise SecretUnavailableError(f"secret {arn} could not be read ({type(error).__name__})") from None
    if isinstance(raw, bytes):
        try:
            raw = raw.decode()
        except UnicodeDecodeError:
            raise SecretFormatError(f"secret {arn} is not text") from None
    try:
        return json.loads(str(raw))
    except ValueError:
        raise SecretFormatError(f"secret {arn} is not JSON") from None


class SecretsCredentials:
    """Fynd credentials: location-level where the location has its own, company-level otherwise."""

    def __init__(
        self,
        company_secret_arn: str,
        location_secret_arn: str | None,
        provider: SecretsProvider | None = None,
    ) -> None:
        self._company = company_secret_arn
        self._locations = location_secret_arn
        self._provider = provider

    def for_location(self, location_code: str | None) -> Credentials:
        """The credentials to use; FyndNotSent when Secrets Manager cannot be read now
        (nothing was sent: retry), FyndAuthError when a secret is malformed (an operator must fix it)."""
        try:
            if location_code and self._locations:
                own = read_json_secret(self._locations, self._provider).get(location_code)
                if own:
                    return _credentials(own, location_code)
            return _credentials(read_json_secret(self._company, self._provider), None)
        except SecretUnavailableError as error:
            raise FyndNotSent(f"Fynd credentials could not be read: {error}") from None
        except (SecretFormatError, AttributeError, KeyError, TypeError) as error:
            # No token can be had until an operator fixes the secret: the same alarm as a refusal.
            count("TokenFailures")
            raise FyndAuthError(f"Fynd credentials secret is malformed: {type(error).__name__}") from None


def _credentials(document: Any, location_code: str | None) -> Credentials:
    username, password = document["username"], document["password"]
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        raise TypeError("username and password must be non-empty strings")
    return Credentials(username, password, location_code)


def webhook_secret_entries(arn: str, provider: SecretsProvider | None = None) -> dict[str, str]:
    """Every signing secret by entry name; the name selects the scheme (relay.domain.signatures)."""
    document = read_json_secret(arn, provider)
    if not isinstance(document, dict):
        raise SecretFormatError(f"secret {arn} must be a JSON object of signing secrets")
    return {str(name): value for name, value in document.items() if isinstance(value, str) and value}


def erpnext_token(arn: str, provider: SecretsProvider | None = None) -> str:
    """`<api key>:<api secret>` of the ERPNext user the relay writes back as, from a secret
    {"api_key": "...", "api_secret": "..."}. TargetDown when it cannot be read or is malformed:
    no record can be written until it is, and the write-back retries."""
    try:
        document = read_json_secret(arn, provider)
        key, secret = document["api_key"], document["api_secret"]
    except (SecretUnavailableError, SecretFormatError, KeyError, TypeError) as error:
        raise TargetDown(f"ERPNext API key secret unusable ({type(error).__name__})") from None
    if not isinstance(key, str) or not isinstance(secret, str) or not key or not secret:
        raise TargetDown("ERPNext API key secret needs non-empty api_key and api_secret")
    return f"{key}:{secret}"


def callback_key(arn: str, provider: SecretsProvider | None = None) -> bytes:
    """The key bytes of the callback's signing secret, from {"secret": "whsec_..."} (bare base64
    is taken too: the template generates one). TargetDown when unreadable or unusable."""
    try:
        return secret_key(str(read_json_secret(arn, provider)["secret"]))
    except (SecretUnavailableError, SecretFormatError, KeyError, TypeError, ValueError) as error:
        raise TargetDown(f"callback signing secret unusable ({type(error).__name__})") from None
