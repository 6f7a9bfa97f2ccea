"""The API on port 8318: one error shape everywhere, read-only SQL, metrics, OpenAPI."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from ..helpers import RunningServer, chat_attributes, make_request, make_span


def call(
    url: str, body: Any = None, headers: dict[str, str] | None = None, method: str | None = None
) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            kind = response.headers.get("Content-Type", "")
            return response.status, json.loads(raw) if kind.startswith("application/json") else raw.decode()
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize(
    ("path", "body", "method", "status", "code", "message"),
    [
        ("/v1/sql", b"{oops", None, 400, "bad_request", "body must be JSON"),
        ("/v1/sql", {"sql": "SELECT 1"}, None, 400, "bad_request", "non-empty string field 'query'"),
        ("/v1/sql", {"query": "SELECT 1", "format": "xml"}, None, 400, "bad_request", "format must be 'json' or 'csv'"),
        ("/v1/sql", {"query": "DROP TABLE requests"}, None, 400, "bad_request", "readonly"),
        ("/v1/sql", {"query": "SELECT nope"}, None, 400, "bad_request", "nope"),
        ("/v1/sql", {"query": "SELECT file('/etc/passwd')"}, None, 400, "bad_request", "file() is refused"),
        ("/v1/sql", {"query": "SELECT * FROM system.numbers"}, None, 400, "bad_request", "Limit for result exceeded"),
        ("/v1/sql", {"query": "SELECT 1; SELECT 2"}, None, 400, "bad_request", "Multi-statements are not allowed"),
        ("/v1/sql", b"x" * 2_000_000, None, 413, "too_large", "request body over"),
        ("/v1/reprice", b"x" * 2_000_000, None, 413, "too_large", "request body over"),
        ("/v1/reprice", {"until": "2026-12-01"}, None, 400, "bad_request", '"since": "YYYY-MM-DD"'),
        ("/v1/reprice", {"since": "2026-12-01", "until": "2026-11-01"}, None, 400, "bad_request", "must be before"),
        ("/v1/alerts?since=yesterday", None, None, 400, "bad_request", "since must be a duration (90m, 24h, 7d)"),
        ("/v1/alerts?limit=0", None, None, 400, "bad_request", "limit must be 1-1000 (got 0)"),
        ("/v1/alerts?kind=loops", None, None, 400, "bad_request", "unknown alert kind(s) loops"),
        ("/nowhere", None, None, 404, "not_found", "Not Found"),
        ("/v1/sql", None, "GET", 405, "method_not_allowed", "Method Not Allowed"),
    ],
)
def test_one_error_shape(
    server: RunningServer, path: str, body: Any, method: str | None, status: int, code: str, message: str
) -> None:
    got_status, document = call(f"{server.api_url}{path}", body, method=method)
    assert got_status == status
    assert set(document) == {"error"}
    assert document["error"]["status"] == status
    assert document["error"]["code"] == code
    assert message.lower() in document["error"]["message"].lower()


def test_sql_json_and_csv(server: RunningServer) -> None:
    from ..test_dedup import export

    export(server, make_request([make_span(chat_attributes())]))
    status, document = call(
        f"{server.api_url}/v1/sql", {"query": "SELECT team, sum(cost) AS c FROM requests GROUP BY team"}
    )
    assert status == 200
    assert document == {
        "columns": [{"name": "team", "type": "LowCardinality(String)"}, {"name": "c", "type": "Decimal(38, 24)"}],
        "rows": [["payments", "0.006"]],
    }
    status, text = call(f"{server.api_url}/v1/sql", {"query": "SELECT count() AS n FROM requests", "format": "csv"})
    assert (status, text) == (200, '"n"\n1\n')


def test_sql_bearer_token(make_server: Callable[..., RunningServer]) -> None:
    server = make_server({"api": {"read_tokens": ["reader"]}})
    assert call(f"{server.api_url}/v1/sql", {"query": "SELECT 1"})[0] == 401
    status, _ = call(f"{server.api_url}/v1/sql", {"query": "SELECT 1"}, {"Authorization": "Bearer reader"})
    assert status == 200


def test_health_readiness_metrics_and_openapi(server: RunningServer) -> None:
    from ..test_dedup import export

    assert call(f"{server.api_url}/healthz") == (200, {"status": "ok"})
    status, ready = call(f"{server.api_url}/readyz")
    assert status == 200 and ready["status"] == "ready"
    bad = make_span(chat_attributes(**{"gen_ai.usage.input_tokens": -1}))
    export(server, make_request([make_span(chat_attributes()), bad]))
    status, metrics = call(f"{server.api_url}/metrics")
    assert status == 200
    for line in (
        "otel_cost_spans_received_total 2.0",
        'otel_cost_spans_rejected_total{reason="invalid"} 1.0',
        'otel_cost_calls_stored_total{billable="true"} 1.0',
        "otel_cost_store_rows_inserted_total 1.0",
    ):
        assert line in metrics.splitlines()
    assert "otel_cost_process_peak_resident_memory_bytes" in metrics
    status, openapi = call(f"{server.api_url}/openapi.json")
    assert status == 200 and openapi["openapi"].startswith("3.") and "/v1/sql" in openapi["paths"]


def test_alerts_listing_needs_the_read_token(make_server: Callable[..., RunningServer]) -> None:
    server = make_server({"api": {"read_tokens": ["reader-token"]}})
    status, document = call(f"{server.api_url}/v1/alerts")
    assert status == 401 and document["error"]["code"] == "unauthenticated"
    status, document = call(f"{server.api_url}/v1/alerts?since=7d", headers={"Authorization": "Bearer reader-token"})
    assert status == 200 and document["alerts"] == []


def test_a_read_token_on_an_admin_run_is_forbidden(make_server: Callable[..., RunningServer]) -> None:
    server = make_server({"api": {"read_tokens": ["reader"], "admin_tokens": ["admin"]}})
    for path in ("/v1/reprice", "/v1/reattribute"):
        status, document = call(f"{server.api_url}{path}", {"since": "2026-11-01"}, {"Authorization": "Bearer reader"})
        assert (status, document) == (
            403,
            {
                "error": {
                    "status": 403,
                    "code": "forbidden",
                    "message": f"{path} needs an api.admin_tokens token; this one may only read",
                }
            },
        )
    status, _ = call(f"{server.api_url}/v1/sql", {"query": "SELECT 1"}, {"Authorization": "Bearer admin"})
    assert status == 200  # an admin token reads too
