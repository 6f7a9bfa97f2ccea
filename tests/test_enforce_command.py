"""`otel-cost enforce`: the enforcer alone, as its own process, serving the cap state of a store that
receivers elsewhere write to."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from .test_cli import OTEL_COST, free_port


def test_enforce_serves_caps_from_a_store_it_does_not_write(tmp_path: Path) -> None:
    store = tmp_path / "store"
    port = free_port()
    config = tmp_path / "otel-cost.yaml"
    config.write_text(
        json.dumps(
            {
                "api": {"endpoint": f"127.0.0.1:{port}"},
                "budgets": [{"name": "payments-daily", "scope": {"team": "payments"}, "period": "day", "limit": "5"}],
                "enforcer": {"interval_seconds": 0.2},
            }
        )
    )
    process = subprocess.Popen(
        [OTEL_COST, "enforce", "--config", str(config), "--store", f"chdb:{store}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        document = None
        while document is None:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/caps", timeout=5) as response:
                    document = json.loads(response.read())
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "otel-cost enforce did not start"
                time.sleep(0.2)
        (cap,) = document["caps"]
        assert (cap["budget"], cap["action"], cap["spent"]) == ("payments-daily", "allow", "0")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            families = {family.name for family in text_string_to_metric_families(response.read().decode())}
        assert {"otel_cost_enforcer_poll_seconds", "otel_cost_cap_state_version", "otel_cost_alerts_fired"} <= families
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/alerts", timeout=5) as response:
            assert json.loads(response.read())["alerts"] == []
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "enforcing 1 budget(s), alerting to 1 sink(s)" in stderr
