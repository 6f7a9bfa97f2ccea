"""`GET /v1/caps`: the cap state document, with ETag / If-None-Match (304) and `?wait=` long-poll."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from ..enforcer import CapState
from ..errors import UnauthenticatedError
from ..receiver.auth import BearerTokens

__all__ = ["MAX_WAIT_SECONDS", "caps_endpoint"]

#: The longest a long-poll is held (proxies commonly cut idle requests at 60 s).
MAX_WAIT_SECONDS = 55.0


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(candidate.strip().removeprefix("W/") == bare for candidate in header.split(","))


def caps_endpoint(state: CapState, tokens: BearerTokens) -> Callable[[Request], Awaitable[Response]]:
    """The handler, bound to the server's cap state and its read tokens."""
    from .app import error_response  # the API's one error shape (app imports this module)

    async def get_caps(request: Request) -> Response:
        try:
            tokens.check(request.headers.get("authorization"))
        except UnauthenticatedError as exc:
            return error_response(401, exc.message)
        wait_text = request.query_params.get("wait")
        wait = 0.0
        if wait_text is not None:
            try:
                wait = float(wait_text)
            except ValueError:
                return error_response(400, f"wait must be a number of seconds (got {wait_text!r})")
            if not 0 <= wait <= MAX_WAIT_SECONDS:
                return error_response(400, f"wait must be between 0 and {MAX_WAIT_SECONDS:g} seconds")
        version, body = state.snapshot()
        if _matches(request.headers.get("if-none-match"), f'W/"{version}"'):
            if wait:
                await state.wait_for_change(version, wait)
                version, body = state.snapshot()
            if _matches(request.headers.get("if-none-match"), f'W/"{version}"'):
                return Response(status_code=304, headers={"ETag": f'W/"{version}"', "Cache-Control": "no-cache"})
        return Response(
            body, media_type="application/json", headers={"ETag": f'W/"{version}"', "Cache-Control": "no-cache"}
        )

    return get_caps
