"""Bearer-token checks for the receiver and the API (constant-time comparison).

An offered credential is hashed (SHA-256) and its digest compared with every configured token's
digest with `hmac.compare_digest`, each comparison made whatever the earlier ones found: the time a
check takes does not depend on which token matched, how many leading bytes of one match, or the
length of the offered credential or of any token (every comparison is between two 32-byte digests).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from ..errors import UnauthenticatedError

__all__ = ["BearerTokens"]


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


class BearerTokens:
    """An empty token list means no authentication."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self._digests = [_digest(token.encode()) for token in tokens if token]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def __add__(self, other: BearerTokens) -> BearerTokens:
        """The tokens of both (e.g. a read scope that also accepts the admin tokens)."""
        combined = BearerTokens(())
        combined._digests = [*self._digests, *other._digests]
        return combined

    def accepts(self, authorization: str | None) -> bool:
        """Whether `authorization` is `Bearer <one of the tokens>` (False when there are no tokens)."""
        credential = _credential(authorization)
        return credential is not None and self._matches(credential)

    def check(self, authorization: str | None) -> None:
        """Raise UnauthenticatedError unless `authorization` is `Bearer <one of the tokens>`."""
        if not self._digests:
            return
        if not authorization:
            raise UnauthenticatedError("missing bearer token (send 'Authorization: Bearer <token>')")
        credential = _credential(authorization)
        if credential is None:
            raise UnauthenticatedError("the Authorization header must be 'Bearer <token>'")
        if not self._matches(credential):
            raise UnauthenticatedError("invalid bearer token")

    def _matches(self, credential: bytes) -> bool:
        offered = _digest(credential)
        matched = False
        for digest in self._digests:  # every token, no early exit
            matched |= hmac.compare_digest(offered, digest)
        return matched


def _credential(authorization: str | None) -> bytes | None:
    """The token of `Bearer <token>`, else None."""
    if not authorization:
        return None
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return None
    return credential.strip().encode()
