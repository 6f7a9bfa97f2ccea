"""How commands talk to a running server's API: its address, one way to open a request (https included),
one GET helper and one reading of its error shape.

Tokens: every command that calls the API takes `--token` (env `OTEL_COST_API_TOKEN`) and sends it as
`Authorization: Bearer <token>`. TLS: an `https://` API (the server's `api.tls`) is verified against
the system's certificate authorities, or against the PEM file named by `OTEL_COST_API_CA_FILE` (a
private CA or a self-signed certificate). A certificate that does not verify is an error, never a
reason to fall back to opening the store.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from http.client import HTTPResponse
from pathlib import Path
from typing import Any

from ..config import Config, parse_endpoint
from ..errors import QueryError

__all__ = ["CA_FILE_ENV", "api_error_message", "api_url_for", "get_json", "open_api"]

#: A PEM file of the certificate authorities (or the self-signed certificate) an https API is verified with.
CA_FILE_ENV = "OTEL_COST_API_CA_FILE"


def api_url_for(config: Config) -> str:
    """The API of the server `config` describes, as reached from this machine (https with `api.tls`)."""
    host, port = parse_endpoint(config.api.endpoint)
    if host in ("0.0.0.0", "::", ""):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"{'https' if config.api.tls is not None else 'http'}://{host}:{port}"


def _tls_context() -> ssl.SSLContext | None:
    path = os.environ.get(CA_FILE_ENV)
    if not path:
        return None  # urllib's default: the system's certificate authorities
    if not Path(path).is_file():
        raise QueryError(f"{CA_FILE_ENV}={path!r}: no such file")
    try:
        return ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        raise QueryError(f"{CA_FILE_ENV}={path!r} is not a PEM certificate file: {exc}") from None


def open_api(request: urllib.request.Request, timeout_seconds: float) -> HTTPResponse:
    """urlopen for the API. Raises urllib's errors, except a TLS failure: QueryError, with what to do."""
    try:
        response: HTTPResponse = urllib.request.urlopen(request, timeout=timeout_seconds, context=_tls_context())
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            raise QueryError(
                f"{request.full_url}: TLS failed ({exc.reason}); for a private CA or a self-signed "
                f"certificate, point {CA_FILE_ENV} at its PEM file"
            ) from None
        raise
    return response


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
        with open_api(request, timeout_seconds) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise QueryError(f"{api_url}: {api_error_message(exc)}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
