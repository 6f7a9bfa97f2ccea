"""Cap state over real HTTP from a real server: spend sent through the real receiver moves budgets along
the ladder; ETag/304 and long-poll; signed webhooks checked by a receiver written from the README."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from otel_cost.cli import cli

from .helpers import RunningServer, send_with_sdk_span

# gpt-4o-mini: 0.15 / 0.60 USD per million tokens -> 1,000,000 input tokens cost 0.15
CALL = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.usage.input_tokens": 1_000_000,
    "gen_ai.usage.output_tokens": 0,
}
LADDER = {
    "name": "payments-hourly",
    "scope": {"team": "payments"},
    "window": "60m",
    "limit": "1.00",
    "alert_at": [0.25],
    "downgrade_at": 0.5,
    "downgrade": {"gpt-4o": "gpt-4o-mini"},
    "block_at": 1.0,
}


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
            return response.status, response.headers, json.loads(body) if body else None
    except urllib.error.HTTPError as error:
        body = error.read()
        return error.code, error.headers, json.loads(body) if body else None


def caps(server: RunningServer) -> dict[str, Any]:
    status, _, document = get(f"{server.api_url}/v1/caps")
    assert status == 200
    return document  # type: ignore[no-any-return]


def wait_for(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def action(server: RunningServer, budget: str = "payments-hourly") -> str:
    return next(cap["action"] for cap in caps(server)["caps"] if cap["budget"] == budget)


def spend(server: RunningServer, calls: int = 1, team: str = "payments") -> None:
    for _ in range(calls):
        send_with_sdk_span(server, CALL, resource={"service.name": "checkout", "team": team})


def test_the_ladder_over_http_as_spend_arrives(make_server: Callable[..., RunningServer]) -> None:
    server = make_server({"budgets": [LADDER]})
    assert action(server) == "allow"
    spend(server)  # 0.15: 15%
    wait_for(lambda: caps(server)["caps"][0]["spent"] == "0.15")
    assert action(server) == "allow"
    spend(server)  # 0.30: past the 25% alert point
    wait_for(lambda: action(server) == "alert")
    spend(server, 2)  # 0.60: past the 50% downgrade point
    wait_for(lambda: action(server) == "downgrade")
    cap = caps(server)["caps"][0]
    assert cap["downgrade"] == {"gpt-4o": "gpt-4o-mini"}
    spend(server, 2, team="search")  # out of scope
    spend(server, 3)  # 1.05: past the hard point
    wait_for(lambda: action(server) == "block")
    cap = caps(server)["caps"][0]
    assert (cap["spent"], cap["limit"], cap["currency"]) == ("1.05", "1", "USD")
    assert cap["reason"].startswith("105% of 1.00 USD spent (hard point 100% reached)")


def test_the_most_severe_of_several_matching_budgets_comes_first(make_server: Callable[..., RunningServer]) -> None:
    soft = {**LADDER, "name": "soft", "limit": "100"}
    hard = {"name": "hard", "scope": {"team": "pay*"}, "window": "60m", "limit": "0.10", "block_at": 1}
    server = make_server({"budgets": [soft, hard]})
    spend(server)
    wait_for(lambda: action(server, "hard") == "block")
    assert [(cap["budget"], cap["action"]) for cap in caps(server)["caps"]] == [("hard", "block"), ("soft", "allow")]


def test_etag_304_and_long_poll(make_server: Callable[..., RunningServer]) -> None:
    server = make_server({"budgets": [LADDER]})
    url = f"{server.api_url}/v1/caps"
    status, headers, document = get(url)
    etag = headers["ETag"]
    assert (status, etag) == (200, f'W/"{document["version"]}"')
    assert get(url, {"If-None-Match": etag})[0] == 304
    started = time.monotonic()
    assert get(f"{url}?wait=0.3", {"If-None-Match": etag})[0] == 304  # nothing changed: held, then 304
    assert 0.25 <= time.monotonic() - started < 5

    changed_at: list[float] = []
    assert server.server.enforcer is not None
    server.server.enforcer.state.on_change(lambda version, body: changed_at.append(time.monotonic()))
    answer: list[tuple[int, Any, Any, float]] = []

    def long_poll() -> None:
        answer.append((*get(f"{url}?wait=30", {"If-None-Match": etag}), time.monotonic()))

    poller = threading.Thread(target=long_poll)
    poller.start()
    time.sleep(0.2)  # the request is waiting in the server
    spend(server, 2)  # 0.30: alert
    poller.join(30)
    status, headers, document, answered_at = answer[0]
    assert status == 200 and headers["ETag"] != etag
    assert [cap["action"] for cap in document["caps"]] == ["alert"]
    assert answered_at - changed_at[0] < 0.1  # returned within 100 ms of the change


def test_caps_require_a_read_token_when_configured(make_server: Callable[..., RunningServer]) -> None:
    server = make_server({"budgets": [LADDER], "api": {"read_tokens": ["reader-token"]}})
    url = f"{server.api_url}/v1/caps"
    assert get(url)[0] == 401
    assert get(url, {"Authorization": "Bearer reader-token"})[0] == 200
    assert get(f"{url}?wait=nope", {"Authorization": "Bearer reader-token"})[0] == 400


# --- webhooks: a receiver written from the README's instructions --------------------------------------


class Receiver(http.server.ThreadingHTTPServer):
    """Verifies each request as the README says: HMAC-SHA256(secret, timestamp + "." + body), sha256=hex,
    constant-time compare, timestamp within 300 s."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.verified: list[tuple[float, dict[str, Any]]] = []
        self.rejected = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                timestamp = self.headers["X-Otel-Cost-Timestamp"]
                expected = (
                    "sha256=" + hmac.new(outer.secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
                )
                fresh = abs(time.time() - int(timestamp)) <= 300
                if fresh and hmac.compare_digest(expected, self.headers["X-Otel-Cost-Signature"]):
                    outer.verified.append((time.monotonic(), json.loads(body)))
                    self.send_response(204)
                else:
                    outer.rejected += 1
                    self.send_response(401)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/caps"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver(b"live-gateway-secret-0123456789")
    yield running
    running.shutdown()
    running.server_close()


@pytest.fixture
def dead_socket() -> Iterator[int]:
    """A port that accepts connections and never answers: the slowest possible gateway."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


def test_signed_webhooks_and_a_dead_target_does_not_delay_a_live_one(
    make_server: Callable[..., RunningServer], receiver: Receiver, dead_socket: int
) -> None:
    gateways = [
        {
            "name": "dead",
            "webhook": f"http://127.0.0.1:{dead_socket}/caps",
            "secret": "dead-gateway-secret-0123",
            "timeout_seconds": 30,
        },
        {"name": "live", "webhook": receiver.url, "secret": "live-gateway-secret-0123456789"},
        {"name": "forged", "webhook": receiver.url, "secret": "some-other-secret-0123456789"},
    ]
    server = make_server({"budgets": [LADDER], "gateways": gateways})
    wait_for(lambda: len(receiver.verified) >= 1)  # the first state
    spend(server, 2)  # alert: a new version
    changed = time.monotonic()
    wait_for(lambda: any(doc["caps"] and doc["caps"][0]["action"] == "alert" for _, doc in receiver.verified))
    delivered = next(at for at, doc in receiver.verified if doc["caps"] and doc["caps"][0]["action"] == "alert")
    assert delivered - changed < 2  # while the dead gateway still waits on its 30 s timeout
    assert receiver.rejected >= 1  # the "forged" gateway signs with another secret: the receiver refuses it


def test_otel_cost_caps_command(make_server: Callable[..., RunningServer]) -> None:
    server = make_server({"budgets": [LADDER]})
    spend(server, 2)
    wait_for(lambda: action(server) == "alert")
    result = CliRunner().invoke(cli, ["caps", "--api", server.api_url])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"(answered by the server at {server.api_url})"
    assert "payments-hourly" in result.stdout and "alert" in result.stdout and "0.3" in result.stdout
    as_json = CliRunner().invoke(cli, ["caps", "--api", server.api_url, "--format", "json"])
    assert json.loads(as_json.stdout)["caps"][0]["action"] == "alert"
