"""Security controls end to end (SECURITY.md): tokens and scopes, TLS on the API, signed webhooks with a
replay window, secrets and content kept out of the store, and read-only, bounded SQL."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

import otel_cost.receiver.auth
from otel_cost.cli import cli
from otel_cost.cli.remote import api_url_for
from otel_cost.config import GatewayConfig, load_config
from otel_cost.enforcer.webhooks import WebhookSender
from otel_cost.errors import ConfigError, UnauthenticatedError
from otel_cost.receiver.auth import BearerTokens
from otel_cost.semconv.policy import KINDS, REDACTED, redact_values
from otel_cost.signing import SignatureError, WebhookVerifier, sign, signed_headers
from otel_cost.store import Store

from .helpers import RunningServer, chat_attributes, make_request, make_span, send_with_sdk_span, wait_for
from .test_cli import free_port
from .test_dedup import export
from .tls import make_certificate

READ = "reader-token-0123456789"
ADMIN = "admin-token-0123456789"
DRY_RUN = {"since": "2026-11-01", "until": "2026-12-01", "dry_run": True}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


# --- bearer tokens: constant time, every token compared ------------------------------------------------


def test_a_check_compares_fixed_length_digests_against_every_token(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    real = otel_cost.receiver.auth.hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(otel_cost.receiver.auth.hmac, "compare_digest", recording)
    tokens = BearerTokens(["t", "a-much-longer-token-" * 5, "third"])
    # The first token matches, yet all three are compared; every comparison is digest against digest
    # (32 bytes), whatever the lengths of the offered credential and of the tokens.
    tokens.check("Bearer t")
    assert calls == [(32, 32)] * 3
    for offered in ("x", "t" * 500, "third-and-more", "thir", "a-much-longer-token-"):
        calls.clear()
        with pytest.raises(UnauthenticatedError, match=r"^invalid bearer token$"):
            tokens.check(f"Bearer {offered}")
        assert calls == [(32, 32)] * 3, offered
    tokens.check("bearer   third  ")  # scheme in any case, surrounding spaces ignored
    with pytest.raises(UnauthenticatedError, match="must be 'Bearer <token>'"):
        tokens.check("Basic dGhpcmQ=")
    with pytest.raises(UnauthenticatedError, match="missing bearer token"):
        tokens.check(None)
    assert BearerTokens([]).enabled is False and BearerTokens([]).accepts("Bearer t") is False
    assert (BearerTokens(["a"]) + BearerTokens(["b"])).accepts("Bearer b")


@pytest.mark.parametrize("key", ["read_tokens", "admin_tokens"])
def test_an_empty_api_token_is_a_config_error(key: str) -> None:
    # An unset variable that became "" must not turn authentication off.
    with pytest.raises(ConfigError, match=rf"api\.{key}.*tokens must not be empty"):
        load_config(overrides={"api": {key: ["good-token", " "]}}, environ={})


# --- read and admin scopes ----------------------------------------------------------------------------


def test_read_tokens_read_and_admin_tokens_do_both(make_server: Callable[..., RunningServer]) -> None:
    server = make_server({"api": {"read_tokens": [READ], "admin_tokens": [ADMIN]}})
    api = server.api_url
    reads = [("POST", "/v1/sql", {"query": "SELECT 1"}), ("GET", "/v1/caps", None), ("GET", "/v1/alerts", None)]
    with httpx.Client(base_url=api, timeout=30) as client:
        for method, path, body in reads:
            for token in (READ, ADMIN):
                assert client.request(method, path, json=body, headers=bearer(token)).status_code == 200, path
            assert error_of(client.request(method, path, json=body))[:2] == (401, "unauthenticated"), path
            refused = client.request(method, path, json=body, headers=bearer("nope"))
            assert error_of(refused) == (401, "unauthenticated", "invalid bearer token"), path
        for path in ("/v1/reprice", "/v1/reattribute"):
            assert error_of(client.post(path, json=DRY_RUN, headers=bearer(READ))) == (
                403,
                "forbidden",
                f"{path} needs an api.admin_tokens token; this one may only read",
            )
            assert error_of(client.post(path, json=DRY_RUN))[:2] == (401, "unauthenticated")
            assert error_of(client.post(path, json=DRY_RUN, headers=bearer("nope")))[:2] == (401, "unauthenticated")
            answer = client.post(path, json=DRY_RUN, headers=bearer(ADMIN))
            assert answer.status_code == 200 and answer.json()["dry_run"] is True, path
        # What is open carries no rows, spend or tokens.
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert client.get(path).status_code == 200, path


def test_an_admin_token_alone_guards_the_reads_too(make_server: Callable[..., RunningServer]) -> None:
    server = make_server({"api": {"admin_tokens": [ADMIN]}})
    with httpx.Client(base_url=server.api_url, timeout=30) as client:
        assert client.post("/v1/sql", json={"query": "SELECT 1"}).status_code == 401
        assert client.get("/v1/caps").status_code == 401
        assert client.post("/v1/sql", json={"query": "SELECT 1"}, headers=bearer(ADMIN)).status_code == 200


def _non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (the one its default route leaves from)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent by a UDP connect
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


@pytest.fixture
def outside() -> str:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to call the API from")
    return address


def test_without_admin_tokens_admin_runs_answer_loopback_only(
    make_server: Callable[..., RunningServer], outside: str
) -> None:
    server = make_server({"api": {"endpoint": "0.0.0.0:0"}})
    port = server.server.api_port
    for path in ("/v1/reprice", "/v1/reattribute"):
        refused = httpx.post(f"http://{outside}:{port}{path}", json=DRY_RUN, timeout=30)
        assert error_of(refused) == (
            403,
            "forbidden",
            f"{path} answers only loopback clients while api.admin_tokens is empty; "
            "set api.admin_tokens to run it from another host",
        )
        local = httpx.post(f"http://127.0.0.1:{port}{path}", json=DRY_RUN, timeout=30)
        assert local.status_code == 200 and local.json()["dry_run"] is True
        # A reverse proxy on this host that says whom it forwards for: that client is not loopback.
        proxied = httpx.post(
            f"http://127.0.0.1:{port}{path}", json=DRY_RUN, headers={"X-Forwarded-For": outside}, timeout=30
        )
        assert error_of(proxied)[:2] == (403, "forbidden")
    # A client elsewhere cannot claim to be forwarded for loopback: only a loopback peer's header counts.
    spoofed = httpx.post(
        f"http://{outside}:{port}/v1/reprice", json=DRY_RUN, headers={"X-Forwarded-For": "127.0.0.1"}, timeout=30
    )
    assert error_of(spoofed)[:2] == (403, "forbidden")
    # Reads stay open to every address while no token is configured.
    assert httpx.post(f"http://{outside}:{port}/v1/sql", json={"query": "SELECT 1"}, timeout=30).status_code == 200


def test_with_read_tokens_only_admin_runs_need_loopback_and_a_read_token(
    make_server: Callable[..., RunningServer], outside: str
) -> None:
    server = make_server({"api": {"endpoint": "0.0.0.0:0", "read_tokens": [READ]}})
    port = server.server.api_port
    remote = httpx.post(f"http://{outside}:{port}/v1/reprice", json=DRY_RUN, headers=bearer(READ), timeout=30)
    assert error_of(remote)[:2] == (403, "forbidden")
    local = f"http://127.0.0.1:{port}/v1/reprice"
    assert error_of(httpx.post(local, json=DRY_RUN, timeout=30))[:2] == (401, "unauthenticated")
    assert httpx.post(local, json=DRY_RUN, headers=bearer(READ), timeout=30).status_code == 200


def test_the_cli_sends_its_token_from_the_flag_or_the_environment(make_server: Callable[..., RunningServer]) -> None:
    server = make_server({"api": {"read_tokens": [READ], "admin_tokens": [ADMIN]}})
    common = ["--api", server.api_url, "--store", "chdb:/nonexistent/never-opened"]
    query = ["sql", "SELECT 41 + 1 AS answer", "--format", "json", *common]
    refused = CliRunner().invoke(cli, query, env={"OTEL_COST_API_TOKEN": None})
    assert refused.exit_code == 1 and "missing bearer token" in refused.stderr
    by_flag = CliRunner().invoke(cli, [*query, "--token", READ])
    assert by_flag.exit_code == 0 and json.loads(by_flag.stdout) == [{"answer": 42}]
    by_env = CliRunner().invoke(cli, query, env={"OTEL_COST_API_TOKEN": ADMIN})
    assert by_env.exit_code == 0 and json.loads(by_env.stdout) == [{"answer": 42}]
    for command in ("caps", "alerts"):
        assert CliRunner().invoke(cli, [command, *common], env={"OTEL_COST_API_TOKEN": READ}).exit_code == 0
    for command in ("reprice", "reattribute"):
        run = CliRunner().invoke(cli, [command, "--since", "2026-11-01", "--dry-run", *common, "--token", READ])
        assert run.exit_code == 1
        assert f"refused: /v1/{command} needs an api.admin_tokens token; this one may only read" in run.stderr
        run = CliRunner().invoke(cli, [command, "--since", "2026-11-01", "--dry-run", *common, "--token", ADMIN])
        assert run.exit_code == 0, run.output
    assert "--token" in CliRunner().invoke(cli, ["sql", "--help"]).output


# --- TLS on the API -----------------------------------------------------------------------------------


def test_the_api_over_tls_with_a_generated_certificate(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    cert_file, key_file = make_certificate(tmp_path)
    tls = {"cert_file": str(cert_file), "key_file": str(key_file)}
    server = make_server({"api": {"tls": tls, "read_tokens": [READ]}})
    url = f"https://127.0.0.1:{server.server.api_port}"
    trusted = ssl.create_default_context(cafile=str(cert_file))
    with httpx.Client(base_url=url, verify=trusted, timeout=30) as client:
        assert client.get("/v1/caps", headers=bearer(READ)).status_code == 200
        assert client.get("/v1/caps").status_code == 401
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{url}/healthz", timeout=10)  # the system's CAs do not know a throwaway certificate
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{server.server.api_port}/healthz", timeout=10)  # no plain HTTP

    # The CLI: an https API verified against OTEL_COST_API_CA_FILE; unverifiable is an error, not a
    # reason to open the store instead.
    common = ["--token", READ, "--store", "chdb:/nonexistent/never-opened"]
    answered = CliRunner().invoke(
        cli, ["sql", "SELECT 1 AS one", "--api", url, *common], env={"OTEL_COST_API_CA_FILE": str(cert_file)}
    )
    assert answered.exit_code == 0, answered.output
    assert answered.stderr.strip() == f"(answered by the server at {url})"
    unverified = CliRunner().invoke(
        cli, ["sql", "SELECT 1", "--api", url, *common], env={"OTEL_COST_API_CA_FILE": None}
    )
    assert unverified.exit_code == 1
    assert "TLS failed" in unverified.stderr and "point OTEL_COST_API_CA_FILE at its PEM file" in unverified.stderr
    missing = CliRunner().invoke(
        cli, ["sql", "SELECT 1", "--api", url, *common], env={"OTEL_COST_API_CA_FILE": str(tmp_path / "nope.pem")}
    )
    assert missing.exit_code == 1 and "OTEL_COST_API_CA_FILE=" in missing.stderr and "no such file" in missing.stderr

    # With api.tls in the config, the commands' default API address is https.
    config = tmp_path / "otel-cost.yaml"
    config.write_text(json.dumps({"api": {"endpoint": f"127.0.0.1:{server.server.api_port}", "tls": tls}, "store": {}}))
    assert api_url_for(load_config(config, environ={})) == url
    by_config = CliRunner().invoke(
        cli,
        ["caps", "--config", str(config), "--token", READ, "--format", "json"],
        env={"OTEL_COST_API_CA_FILE": str(cert_file)},
    )
    assert by_config.exit_code == 0, by_config.output
    assert json.loads(by_config.stdout)["caps"] == []


# --- signed webhooks: the receiving side --------------------------------------------------------------

SECRET = "gateway-secret-0123456789"
NOW = 1_796_000_000


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


def test_the_verifier_accepts_a_valid_delivery_and_refuses_the_rest() -> None:
    clock = Clock()
    verifier = WebhookVerifier(SECRET, clock=clock)
    body = b'{"version": 17, "caps": []}'
    headers = signed_headers(SECRET, body, NOW)
    assert verifier.verify(headers, body) == NOW

    def refusal(headers: dict[str, str], body: bytes) -> SignatureError:
        with pytest.raises(SignatureError) as caught:
            verifier.verify(headers, body)
        return caught.value

    replay = refusal(headers, body)  # the same delivery again, inside the window
    assert replay.replayed and replay.message == "replayed delivery: this signature was already accepted"
    tampered = refusal(headers, body.replace(b"17", b"18"))
    assert not tampered.replayed and tampered.message.startswith("bad signature")
    other = refusal(signed_headers("another-secret-0123456789", body, NOW), body)
    assert other.message == "bad signature: the body was changed, or it was signed with another secret"
    old = refusal(signed_headers(SECRET, body, NOW - 301), body)  # validly signed, outside the window
    assert old.message.startswith("stale delivery: signed at 1795999699, 301 s from this clock (the window is 300 s)")
    assert refusal(signed_headers(SECRET, body, NOW + 301), body).message.startswith("stale delivery")
    moved = {**headers, "X-Otel-Cost-Timestamp": str(NOW + 1)}  # a fresh timestamp on an old signature
    assert refusal(moved, body).message.startswith("bad signature")
    assert refusal({}, body).message.startswith("unsigned delivery")
    assert refusal({**headers, "X-Otel-Cost-Timestamp": "soon"}, body).message.startswith(
        "X-Otel-Cost-Timestamp must be Unix seconds"
    )
    # Headers as a framework may hand them over (lower-case), a new delivery of the same body later.
    later = {key.lower(): value for key, value in signed_headers(SECRET, body, NOW + 60).items()}
    assert verifier.verify(later, body) == NOW + 60
    # Once its timestamp has left the window, a remembered signature is refused as stale instead.
    clock.now = NOW + 301
    assert refusal(headers, body).message.startswith("stale delivery")
    assert refusal(later, body).replayed  # still inside its own window


def test_the_verifier_remembers_a_bounded_number_of_signatures() -> None:
    verifier = WebhookVerifier(SECRET, clock=Clock(), max_remembered=2)
    deliveries = [(signed_headers(SECRET, body, NOW), body) for body in (b"1", b"2", b"3")]
    for headers, body in deliveries:
        verifier.verify(headers, body)
    for headers, body in deliveries[1:]:
        with pytest.raises(SignatureError, match="replayed delivery"):
            verifier.verify(headers, body)
    # The oldest was forgotten to stay within the bound (documented: far above what a sender signs).
    assert verifier.verify(*deliveries[0]) == NOW


def test_the_verifier_takes_several_secrets_while_rotating() -> None:
    verifier = WebhookVerifier(["new-secret-0123456789", SECRET], clock=Clock())
    body = b"{}"
    assert verifier.verify(signed_headers(SECRET, body, NOW), body) == NOW
    assert verifier.verify(signed_headers("new-secret-0123456789", body, NOW), body) == NOW
    with pytest.raises(ValueError, match="at least one non-empty secret"):
        WebhookVerifier([])


class VerifyingGateway(http.server.ThreadingHTTPServer):
    """A gateway's webhook endpoint that uses WebhookVerifier: 204 acted on, 200 a replay (acknowledged,
    not acted on), 401 refused."""

    def __init__(self, secret: str) -> None:
        self.verifier = WebhookVerifier(secret)
        self.acted: list[dict[str, Any]] = []
        self.captured: list[tuple[dict[str, str], bytes]] = []
        self.refusals: list[str] = []
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = dict(self.headers.items())
                try:
                    gateway.verifier.verify(headers, body)
                except SignatureError as exc:
                    gateway.refusals.append(exc.message)
                    self.send_response(200 if exc.replayed else 401)
                else:
                    gateway.captured.append((headers, body))
                    gateway.acted.append(json.loads(body))
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.daemon_threads = True
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/caps"


@pytest.fixture
def gateway() -> Iterator[VerifyingGateway]:
    running = VerifyingGateway(SECRET)
    yield running
    running.shutdown()
    running.server_close()


def test_signed_cap_webhooks_are_verified_and_replays_refused(gateway: VerifyingGateway) -> None:
    sender = WebhookSender([GatewayConfig(name="gw", webhook=gateway.url, secret=SECRET)])
    try:
        sender.notify(7, b'{"version": 7, "caps": []}')
        wait_for(lambda: sender.delivered() == {"gw": 7}, what="the delivery")
    finally:
        sender.stop()
    assert gateway.acted == [{"version": 7, "caps": []}] and gateway.refusals == []
    headers, body = gateway.captured[0]
    forward = {key: value for key, value in headers.items() if key.lower().startswith("x-otel-cost")}
    with httpx.Client(timeout=10) as client:
        # Captured on the wire and sent again within the window: acknowledged, not acted on.
        assert client.post(gateway.url, content=body, headers=forward).status_code == 200
        tampered = body.replace(b'"caps": []', b'"caps": [{"action": "allow"}]')
        assert client.post(gateway.url, content=tampered, headers=forward).status_code == 401
        stale = signed_headers(SECRET, body, int(time.time()) - 600)
        assert client.post(gateway.url, content=body, headers=stale).status_code == 401
        forged = signed_headers("not-the-gateway-secret", body)
        assert client.post(gateway.url, content=body, headers=forged).status_code == 401
    assert len(gateway.acted) == 1
    assert [message.split(":")[0] for message in gateway.refusals] == [
        "replayed delivery",
        "bad signature",
        "stale delivery",
        "bad signature",
    ]
    assert headers["X-Otel-Cost-Signature"] == sign(SECRET, int(headers["X-Otel-Cost-Timestamp"]), body)


# --- secrets and content never stored ------------------------------------------------------------------

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_SECRET_2 = "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY"
GITHUB = {prefix: f"{prefix}_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8" for prefix in ("ghp", "gho", "ghu", "ghs", "ghr")}
SECRETS = {
    "openai": "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" * 2,
    "openai legacy": "sk-" + "T3BlbkFJ" * 6,
    "anthropic": "sk-ant-api03-" + "x9Y8z7W6v5U4t3S2r1Q0" * 4 + "-AA",
    "anthropic in resource": "sk-ant-admin01-" + "Qz7Wx6Yv5Ut4" * 4,
    "aws key id": "AKIAIOSFODNN7EXAMPLE",
    "aws session key id": "ASIAY34FZKBOKMUTVV7A",
    "aws secret": AWS_SECRET,
    "aws secret 2": AWS_SECRET_2,
    "google": "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
    "google in another service": "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
    **{f"github {prefix}": token for prefix, token in GITHUB.items()},
    "github fine-grained": "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ",
    "bearer": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXZhbHVl",
    "authorization header": "opaque-session-credential-7f3a9",
    "x-api-key header": "key-material-5c1e8",
    "openai.api_key": "sk-named-by-its-key-0000000000",
    "env api key": "resource-level-key-9d2b",
}


def _leaky_export() -> ExportTraceServiceRequest:
    span = make_span(
        chat_attributes(
            **{
                "app.note": f"using {SECRETS['openai']} today",
                "app.legacy": SECRETS["openai legacy"],
                "app.anthropic": SECRETS["anthropic"],
                "app.aws.pair": f"{SECRETS['aws session key id']}:{AWS_SECRET}",
                "app.aws.env": f"AWS_SECRET_ACCESS_KEY={AWS_SECRET_2}",
                "app.google": SECRETS["google"],
                "app.github": [*GITHUB.values(), SECRETS["github fine-grained"]],
                "app.curl": f"curl -H 'Authorization: Bearer {SECRETS['bearer']}' https://api.example.com",
                "http.request.header.authorization": [f"Bearer {SECRETS['authorization header']}"],
                "http.request.header.x-api-key": [SECRETS["x-api-key header"]],
                "openai.api_key": SECRETS["openai.api_key"],
                "app.feature": "checkout",
            }
        )
    )
    request = make_request(
        [span],
        resource={
            "service.name": "checkout-assistant",
            "team": "payments",
            "deploy.note": f"deployed with {SECRETS['aws key id']}",
            "process.command_args": ["python", "app.py", "--key", SECRETS["anthropic in resource"]],
            "env.OPENAI_API_KEY": SECRETS["env api key"],
        },
    )
    other = make_request(
        [make_span(chat_attributes(**{"app.config": {"maps": SECRETS["google in another service"]}}))],
        resource={"service.name": "search-api", "team": "search"},
    )
    request.resource_spans.extend(other.resource_spans)
    return request


EXPECTED_REDACTIONS = {
    ("checkout-assistant", "openai"): 2,
    ("checkout-assistant", "anthropic"): 2,
    ("checkout-assistant", "aws_access_key"): 2,  # a key id alone, and a "key id:secret" pair
    ("checkout-assistant", "aws_secret_key"): 1,  # under its label
    ("checkout-assistant", "google_api_key"): 1,
    ("checkout-assistant", "github_token"): 6,
    ("checkout-assistant", "bearer"): 1,
    ("checkout-assistant", "secret_attribute"): 4,  # authorization, x-api-key, openai.api_key, env.OPENAI_API_KEY
    ("search-api", "google_api_key"): 1,
}


@pytest.mark.parametrize(
    ("text", "kind", "redacted"),
    [
        (SECRETS["openai"], "openai", REDACTED),
        (SECRETS["anthropic"], "anthropic", REDACTED),
        (f"{SECRETS['aws key id']}:{AWS_SECRET}", "aws_access_key", REDACTED),
        (f"user,{SECRETS['aws key id']},{AWS_SECRET}", "aws_access_key", f"user,{REDACTED}"),  # credentials.csv
        (f"aws_secret_access_key = {AWS_SECRET}", "aws_secret_key", f"aws_secret_access_key = {REDACTED}"),
        (f'{{"SecretAccessKey": "{AWS_SECRET}"}}', "aws_secret_key", f'{{"SecretAccessKey": "{REDACTED}"}}'),
        (SECRETS["google"], "google_api_key", REDACTED),
        *((token, "github_token", REDACTED) for token in GITHUB.values()),
        (SECRETS["github fine-grained"], "github_token", REDACTED),
        (f"Authorization: Bearer {SECRETS['bearer']}", "bearer", f"Authorization: {REDACTED}"),
    ],
)
def test_each_kind_of_secret_is_redacted_and_counted_as_itself(text: str, kind: str, redacted: str) -> None:
    counts: dict[str, int] = {}
    attrs: dict[str, Any] = {"app.value": text}
    assert redact_values(attrs, counts) == 1
    assert attrs == {"app.value": redacted}
    assert set(counts) == {kind}, counts
    assert kind in KINDS


def test_an_aws_environment_line_loses_both_keys() -> None:
    counts: dict[str, int] = {}
    attrs: dict[str, Any] = {"app.env": f"AWS_ACCESS_KEY_ID={SECRETS['aws key id']} AWS_SECRET_ACCESS_KEY={AWS_SECRET}"}
    redact_values(attrs, counts)
    assert attrs == {"app.env": f"AWS_ACCESS_KEY_ID={REDACTED} AWS_SECRET_ACCESS_KEY={REDACTED}"}
    assert counts == {"aws_access_key": 1, "aws_secret_key": 1}


def test_secrets_are_never_stored_and_counted_per_service(make_server: Callable[..., RunningServer]) -> None:
    # A pipeline worker process redacts; its counts cross back to the receiver with the rows.
    server = make_server({"receiver": {"workers": 1}})
    export(server, _leaky_export())  # the real gRPC receiver
    assert server.scalar("SELECT count() FROM requests") == 2
    store = server.server.store
    assert store is not None
    stored = store.query_text("SELECT * FROM requests", "JSONEachRow").decode()
    for name, secret in SECRETS.items():
        assert secret not in stored, name
    rows = {row["service_name"]: row for row in map(json.loads, stored.splitlines())}
    attributes = rows["checkout-assistant"]["attributes"]
    assert attributes["app.note"] == "using [REDACTED] today"
    assert attributes["app.aws.env"] == "AWS_SECRET_ACCESS_KEY=[REDACTED]"
    assert attributes["app.curl"] == "curl -H 'Authorization: [REDACTED]' https://api.example.com"
    assert attributes["http.request.header.authorization"] == "[REDACTED]"
    assert attributes["app.feature"] == "checkout"  # what is not a secret stays
    resource = rows["checkout-assistant"]["resource_attributes"]
    assert resource["deploy.note"] == "deployed with [REDACTED]" and resource["env.OPENAI_API_KEY"] == "[REDACTED]"
    assert (rows["checkout-assistant"]["team"], rows["search-api"]["team"]) == ("payments", "search")

    metrics = httpx.get(f"{server.api_url}/metrics", timeout=10).text
    counted = {
        (sample.labels["service"], sample.labels["kind"]): sample.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "otel_cost_redactions"
        for sample in family.samples
        if sample.name == "otel_cost_redactions_total"
    }
    assert counted == EXPECTED_REDACTIONS


CONTENT = "PATIENT-7731 diagnosis: hypertension"
CONTENT_ATTRIBUTES = {
    "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": CONTENT}]}]),
    "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": CONTENT}]}]),
    "gen_ai.system_instructions": CONTENT,
    "gen_ai.prompt.0.content": CONTENT,
    "gen_ai.completion.0.content": CONTENT,
    "gen_ai.tool.call.arguments": CONTENT,
    "llm.input_messages.0.message.content": CONTENT,
    "input.value": CONTENT,
    "output.value": CONTENT,
    "traceloop.entity.input": CONTENT,
    "ai.prompt.messages": CONTENT,
    "ai.response.text": CONTENT,
}


def test_prompts_and_completions_never_reach_the_store(server: RunningServer) -> None:
    attributes = chat_attributes(**CONTENT_ATTRIBUTES, **{"app.feature": "triage"})
    span_id = send_with_sdk_span(  # the real OTel SDK and OTLP/gRPC exporter
        server, attributes, resource={"service.name": "clinic", "team": "care", "input.value": CONTENT}
    )
    assert server.scalar("SELECT count() FROM requests") == 1
    store = server.server.store
    assert store is not None
    stored = store.query_text("SELECT * FROM requests", "JSONEachRow").decode()
    assert "PATIENT-7731" not in stored and "hypertension" not in stored
    row = json.loads(stored)
    assert row["span_id"] == span_id and row["feature"] == "triage" and row["input_tokens"] == 1200
    assert not set(CONTENT_ATTRIBUTES) & (set(row["attributes"]) | set(row["resource_attributes"]))


# --- read-only, bounded SQL -----------------------------------------------------------------------------


def refused_statements(out: Path) -> list[tuple[str, str]]:
    """(query, what the one-line error says)."""
    return [
        ("INSERT INTO requests SELECT * FROM requests", "INSERT is refused: queries run in readonly mode"),
        ("ALTER TABLE requests DELETE WHERE 1", "ALTER is refused: queries run in readonly mode"),
        ("DROP TABLE requests", "DROP is refused: queries run in readonly mode"),
        ("CREATE TABLE pwned (x UInt8) ENGINE = Memory", "CREATE is refused"),
        ("TRUNCATE TABLE requests", "TRUNCATE is refused"),
        ("SET max_result_rows = 0", "SET is refused"),
        ("SELECT count() FROM requests SETTINGS max_result_rows = 0", "a SETTINGS clause is refused"),
        ("SELECT 1 SETTINGS readonly = 0", "a SETTINGS clause is refused"),
        (f"INSERT INTO FUNCTION file('{out}', 'CSV', 'x UInt8') VALUES (1)", "INSERT is refused"),
        (f"SELECT * FROM numbers(3) INTO OUTFILE '{out}'", "INTO OUTFILE is refused"),
        ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "file() is refused: queries may not read files, URLs"),
        ("SELECT file('/etc/hostname')", "file() is refused"),
        ("SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')", "url() is refused"),
        ("SELECT * FROM remote('127.0.0.1:9000', system.one)", "remote() is refused"),
        ("SELECT * FROM s3('https://bucket.s3.amazonaws.com/x.csv')", "s3() is refused"),
        ("SELECT 1; DROP TABLE requests", "Multi-statements are not allowed"),
        ("KILL QUERY WHERE 1", "KILL is refused"),
        ("USE system", "USE is refused"),
        ("SELECT * FROM system.numbers", "Limit for result exceeded, max rows: 1.00 million"),
        ("SELECT groupArray(number) FROM numbers(1000000000)", "memory limit exceeded"),
    ]


def _check_refusals(store: Store, tmp_path: Path, where: list[str]) -> None:
    out = tmp_path / "exfiltrated.csv"
    before = (store.query("SELECT count() FROM requests").scalar(), store.query("SHOW TABLES").rows)
    for query, message in refused_statements(out):
        result = CliRunner().invoke(cli, ["sql", query, *where])
        assert result.exit_code == 1, (query, result.output)
        error = result.stderr.splitlines()[-1]  # after "(no server at ...; opened ...)" on the store directly
        assert error.startswith("Error: ") and message in error, (query, result.stderr)
        assert "Traceback" not in result.output
    unbounded = CliRunner().invoke(cli, ["sql", "SELECT * FROM system.numbers", *where])
    assert "(queries return at most 1,000,000 rows and 256 MiB: add a LIMIT, or aggregate)" in unbounded.stderr
    # Nothing changed: no rows, no tables, no file, and the session's limits are as they were.
    assert (store.query("SELECT count() FROM requests").scalar(), store.query("SHOW TABLES").rows) == before
    assert not out.exists()
    limits = CliRunner().invoke(
        cli,
        [
            "sql",
            "SELECT name, value FROM system.settings WHERE name IN ('readonly', 'max_result_rows', "
            "'max_execution_time', 'max_memory_usage', 'result_overflow_mode', 'max_result_bytes') ORDER BY name",
            "--format",
            "csv",
            *where,
        ],
    )
    assert limits.stdout.splitlines() == [
        '"name","value"',
        '"max_execution_time","60"',
        '"max_memory_usage","2147483648"',
        '"max_result_bytes","268435456"',
        '"max_result_rows","1000000"',
        '"readonly","1"',
        '"result_overflow_mode","throw"',
    ]
    # Reads still answer, and exactly (a refused query's partial output does not leak into the next).
    for query, expected in [
        ("SELECT 42 AS x", [{"x": 42}]),
        ("  -- a comment\n  select 'INTO OUTFILE file(' AS s /* ; */ ;", [{"s": "INTO OUTFILE file("}]),
        ("WITH 2 AS n SELECT format('{} calls', n) AS text", [{"text": "2 calls"}]),
        ("SELECT count() AS rows FROM numbers(10)", [{"rows": 10}]),
        ("EXISTS TABLE requests", [{"result": 1}]),
    ]:
        result = CliRunner().invoke(cli, ["sql", query, "--format", "json", *where])
        assert result.exit_code == 0 and json.loads(result.stdout) == expected, (query, result.output)
    for query in ("SHOW TABLES", "DESCRIBE TABLE requests", "EXPLAIN SELECT 1"):
        assert CliRunner().invoke(cli, ["sql", query, *where]).exit_code == 0, query


def test_sql_through_the_api_is_read_only_and_bounded(server: RunningServer, tmp_path: Path) -> None:
    export(server, make_request([make_span(chat_attributes())]))
    assert server.server.store is not None
    _check_refusals(server.server.store, tmp_path, ["--api", server.api_url])


def test_sql_on_the_store_directly_is_read_only_and_bounded(
    store_url: str, server: RunningServer, tmp_path: Path
) -> None:
    export(server, make_request([make_span(chat_attributes())]))
    assert server.server.store is not None
    _check_refusals(server.server.store, tmp_path, ["--api", f"http://127.0.0.1:{free_port()}", "--store", store_url])


def test_the_limits_bind_user_queries_only(server: RunningServer) -> None:
    store = server.server.store
    assert store is not None
    # The server's own reads (dedup preload, re-pricing) may return more than a user query may.
    assert store.query_text("SELECT number FROM numbers(1500000)", "TSV").count(b"\n") == 1_500_000
    assert store.poll("SELECT count() FROM (SELECT number FROM numbers(1500000))").scalar() == 1_500_000
    with httpx.Client(base_url=server.api_url, timeout=30) as client:
        refused = client.post("/v1/sql", json={"query": "SELECT number FROM numbers(1500000)", "format": "csv"})
        assert error_of(refused)[:2] == (400, "bad_request")
        assert "Limit for result exceeded" in error_of(refused)[2]
        answer = client.post("/v1/sql", json={"query": "SELECT number FROM numbers(1000000)", "format": "csv"})
        assert answer.status_code == 200 and answer.text.count("\n") == 1_000_001
