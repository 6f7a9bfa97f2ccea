"""How commands talk to a running server's API: one GET helper and one reading of its error shape."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from ..errors import QueryError

__all__ = ["api_error_message", "get_json"]


def api_error_message(error: urllib.error.HTTPError) -> str:
    """The message of the API's one error shape (`{"error": {"message": ...}}`), else the status."""
    try:
        return str(json.loads(error.read())["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {error.code}"


def get_json(api_url: str, path: str, token: str | None, timeout_seconds: float = 30) -> Any | None:
    """GET `path` from the API at `api_url`: its JSON document, or None when no server answers there.
    Raises QueryError (with the server's message) when one answers with an error."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{api_url.rstrip('/')}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise QueryError(f"{api_url}: {api_error_message(exc)}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
