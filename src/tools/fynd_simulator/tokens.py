"""Fynd's credentials and the time-bound tokens they buy. Not locked: SimulatorState is.

Company-level credentials (no location) work for every location; a location-level pair
yields a token scoped to its one location, whatever `locationCode` a call then names.
"""

import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

DEFAULT_USERNAME = "relay-sim"
DEFAULT_PASSWORD = "relay-sim-password"  # noqa: S105 - the simulator's published default
DEFAULT_TOKEN_TTL = 3600


@dataclass(frozen=True)
class Credential:
    """A username/password pair; with a location_code it is location-level (one location)."""

    username: str
    password: str
    location_code: str | None = None

    def __repr__(self) -> str:  # never show the password
        return f"Credential(username={self.username!r}, location_code={self.location_code!r})"


@dataclass(frozen=True)
class Grant:
    """What a live token stands for."""

    expires_at: float
    location_code: str | None  # None: company-level


class TokenIssuer:
    def __init__(self, credentials: Iterable[Credential], ttl: int, clock: Callable[[], float]) -> None:
        self.credentials = list(credentials)
        self.ttl = ttl
        self._clock = clock
        self._grants: dict[str, Grant] = {}

    def issue(self, username: str, password: str) -> str | None:
        """A fresh random token for known credentials, None for anything else."""
        credential = self._match(username, password)
        if credential is None:
            return None
        token = secrets.token_urlsafe(32)
        self._grants[token] = Grant(self._clock() + self.ttl, credential.location_code)
        return token

    def authorise(self, token: str | None) -> Grant | None:
        """The grant behind a live token; None if missing, unknown or expired."""
        if not token:
            return None
        grant = self._grants.get(token)
        if grant is not None and self._clock() >= grant.expires_at:
            del self._grants[token]
            return None
        return grant

    def expire_all(self) -> None:
        self._grants.clear()

    def _match(self, username: str, password: str) -> Credential | None:
        for credential in self.credentials:
            same_user = hmac.compare_digest(credential.username.encode(), username.encode())
            if same_user and hmac.compare_digest(credential.password.encode(), password.encode()):
                return credential
        return None
