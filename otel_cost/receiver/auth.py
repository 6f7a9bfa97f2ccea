"""Bearer-token checks for the receiver and the API (constant-time comparison)."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from ..errors import UnauthenticatedError

__all__ = ["BearerTokens"]


class BearerTokens:
    """An empty token list means no authentication."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self._tokens = [token.encode() for token in tokens if token]

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def check(self, authorization: str | None) -> None:
        """Raise UnauthenticatedError unless `authorization` is `Bearer <one of the tokens>`."""
        if not self._tokens:
            return
        if not authorization:
            raise UnauthenticatedError("missing bearer token (send 'Authorization: Bearer <token>')")
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise UnauthenticatedError("the Authorization header must be 'Bearer <token>'")
        offered = credential.strip().encode()
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(offered, token)
        if not matched:
            raise UnauthenticatedError("invalid bearer token")
