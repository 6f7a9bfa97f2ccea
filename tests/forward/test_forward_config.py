"""The `forward` and `metrics_export` sections: what is refused at start-up, and what `config check` shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from otel_cost.cli import cli
from otel_cost.config import load_config
from otel_cost.errors import ConfigError
from tests.tls import make_certificate


def _load(text: str, tmp_path: Path) -> None:
    path = tmp_path / "otel-cost.yaml"
    path.write_text(text)
    load_config(path, environ={})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "forward:\n  endpoints:\n    - endpoint: tempo:4317\n",
            "otel-cost.yaml:3: forward.endpoints.0.endpoint: must be a URL: http://host:port (plaintext) or "
            "https://host:port (TLS) (got 'tempo:4317')",
        ),
        (
            "forward:\n  endpoints:\n    - endpoint: http://tempo:4317\n      protocol: thrift\n",
            "forward.endpoints.0.protocol: Input should be 'grpc' or 'http/protobuf'",
        ),
        (
            "forward:\n  endpoints:\n    - endpoint: http://tempo:4317\n      headers: {'bad header': x}\n",
            "'bad header' is not a valid header name",
        ),
        (
            "forward:\n  endpoints:\n    - endpoint: http://a:4317\n    - endpoint: http://a:4317\n",
            "endpoints must be unique (give each a name): http://a:4317",
        ),
        (
            "forward:\n  endpoints:\n    - endpoint: http://tempo:4317\n      tls: {ca_file: CA}\n",
            "tls is set but the endpoint is not https:// (TLS): use https://",
        ),
        (
            "forward:\n  endpoints:\n    - endpoint: https://tempo:4317\n      tls: {cert_file: CERT}\n",
            "cert_file and key_file go together (mutual TLS needs both)",
        ),
        (
            "forward:\n  endpoints:\n    - endpoint: https://tempo:4317\n      tls: {ca_file: /nowhere.pem}\n",
            "file '/nowhere.pem' does not exist",
        ),
        ("metrics_export:\n  endpoint: collector:4317\n", "metrics_export.endpoint: must be a URL"),
        ("metrics_export:\n  endpoint: http://c:4317\n  interval_seconds: 0\n", "greater than or equal to 0.05"),
        ("forward:\n  endpoint: http://tempo:4317\n", "unknown key 'endpoint' in 'forward'"),
    ],
)
def test_bad_settings_are_refused_with_their_line(text: str, problem: str, tmp_path: Path) -> None:
    cert, _ = make_certificate(tmp_path)
    text = text.replace("CA", str(cert)).replace("CERT", str(cert))
    with pytest.raises(ConfigError) as raised:
        _load(text, tmp_path)
    assert problem in str(raised.value)


def test_config_check_shows_where_spans_go_without_credentials(tmp_path: Path) -> None:
    path = tmp_path / "otel-cost.yaml"
    path.write_text(
        "forward:\n"
        "  drop_content: true\n"
        "  endpoints:\n"
        "    - endpoint: https://user:hunter2@api.honeycomb.io\n"
        "      protocol: http/protobuf\n"
        "      headers: {x-honeycomb-team: secret-key-1}\n"
        "    - endpoint: http://tempo:4317\n"
        "metrics_export:\n"
        "  endpoint: http://collector:4317\n"
        "  interval_seconds: 15\n"
    )
    result = CliRunner().invoke(cli, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert (
        "  forward       https://api.honeycomb.io (http/protobuf, 1 header), http://tempo:4317 (grpc); "
        "content dropped, secrets redacted"
    ) in lines
    assert "  metrics       /metrics, and OTLP to http://collector:4317 (grpc) every 15s" in lines
    assert "hunter2" not in result.output and "secret-key-1" not in result.output
